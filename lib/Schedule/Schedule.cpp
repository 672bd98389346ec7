//===- Schedule.cpp - layouts, costs and explicit communication -----------===//

#include "loom/Schedule/Schedule.h"

#include "Graph.h"

#include <cassert>
#include <numeric>

namespace loom::sched {

const char *opName(Op op) {
  switch (op) {
  case Op::F:
    return "F";
  case Op::B:
    return "B";
  case Op::W:
    return "W";
  case Op::BW:
    return "BW";
  case Op::SendAct:
    return "SendAct";
  case Op::RecvAct:
    return "RecvAct";
  case Op::SendGrad:
    return "SendGrad";
  case Op::RecvGrad:
    return "RecvGrad";
  case Op::Optimizer:
    return "Optimizer";
  }
  return "?";
}

bool isCompute(Op op) {
  return op == Op::F || op == Op::B || op == Op::W || op == Op::BW || op == Op::Optimizer;
}

std::string Action::str() const {
  std::string s = opName(op);
  if (op == Op::Optimizer)
    return s;
  s += "(mb " + std::to_string(microBatch) + ", stage " + std::to_string(stage);
  if (op == Op::SendAct || op == Op::SendGrad)
    s += " -> " + std::to_string(peerStage);
  else if (op == Op::RecvAct || op == Op::RecvGrad)
    s += " <- " + std::to_string(peerStage);
  return s + ")";
}

bool Schedule::hasExplicitCommunication() const {
  for (const auto &prog : programs)
    for (const Action &a : prog)
      if (!isCompute(a.op))
        return true;
  return false;
}

namespace {
Schedule layout(std::string name, int32_t ranks, std::vector<int32_t> stageRank, double units,
                int32_t microBatches) {
  Schedule s;
  s.name = std::move(name);
  s.numRanks = ranks;
  s.stageRank = std::move(stageRank);
  s.activationUnits.assign(s.stageRank.size(), units);
  std::vector<int32_t> full(s.stageRank.size());
  std::iota(full.begin(), full.end(), 0);
  s.paths.assign(microBatches, full);
  s.programs.assign(ranks, {});
  return s;
}
} // namespace

Schedule linearLayout(int32_t ranks, int32_t microBatches) {
  std::vector<int32_t> stageRank(ranks);
  std::iota(stageRank.begin(), stageRank.end(), 0);
  return layout("linear", ranks, std::move(stageRank), 1.0, microBatches);
}

Schedule interleavedLayout(int32_t ranks, int32_t virtualStages, int32_t microBatches) {
  std::vector<int32_t> stageRank(static_cast<size_t>(ranks) * virtualStages);
  for (size_t s = 0; s < stageRank.size(); ++s)
    stageRank[s] = static_cast<int32_t>(s % ranks);
  return layout("interleaved", ranks, std::move(stageRank), 1.0 / virtualStages, microBatches);
}

Schedule vShapeLayout(int32_t ranks, int32_t microBatches) {
  std::vector<int32_t> stageRank(2 * static_cast<size_t>(ranks));
  for (int32_t s = 0; s < 2 * ranks; ++s)
    stageRank[s] = s < ranks ? s : 2 * ranks - 1 - s;
  return layout("v-shape", ranks, std::move(stageRank), 0.5, microBatches);
}

Schedule bidirectionalLayout(int32_t ranks, int32_t microBatches) {
  Schedule s = vShapeLayout(ranks, microBatches);
  s.name = "bidirectional";
  s.activationUnits.assign(s.stageRank.size(), 1.0);
  std::vector<int32_t> forward(ranks), reverse(ranks);
  std::iota(forward.begin(), forward.end(), 0);
  std::iota(reverse.begin(), reverse.end(), ranks);
  for (int32_t mb = 0; mb < microBatches; ++mb)
    s.paths[mb] = mb < microBatches / 2 ? forward : reverse;
  return s;
}

double Costs::seconds(const Action &a) const {
  switch (a.op) {
  case Op::F:
    return forward[a.stage];
  case Op::B:
    return backward[a.stage];
  case Op::W:
    return weight[a.stage];
  case Op::BW:
    return backward[a.stage] + weight[a.stage];
  case Op::Optimizer:
    return optimizer;
  default:
    return 0; // p2p overlaps compute; its time sits on the edge (link())
  }
}

Costs Costs::uniform(const Schedule &layout, double f, double b, double w, double comm) {
  Costs c;
  size_t stages = layout.stageRank.size();
  c.forward.assign(stages, f);
  c.backward.assign(stages, b);
  c.weight.assign(stages, w);
  c.numRanks = layout.numRanks;
  c.p2p.assign(static_cast<size_t>(c.numRanks) * c.numRanks, comm);
  return c;
}

void addCommunication(Schedule &schedule) {
  if (schedule.hasExplicitCommunication())
    return;
  detail::Graph g(schedule);
  auto remote = [&](int32_t a, int32_t b) {
    return b >= 0 && schedule.stageRank[a] != schedule.stageRank[b];
  };
  for (auto &prog : schedule.programs) {
    std::vector<Action> out;
    out.reserve(prog.size() * 2);
    for (const Action &a : prog) {
      if (a.op == Op::Optimizer || !g.inRange(a)) {
        out.push_back(a);
        continue;
      }
      int32_t prev = g.prevStage(a.microBatch, a.stage);
      int32_t next = g.nextStage(a.microBatch, a.stage);
      bool forward = a.op == Op::F;
      bool backward = a.op == Op::B || a.op == Op::BW;
      if (forward && remote(a.stage, prev))
        out.push_back({Op::RecvAct, a.microBatch, a.stage, prev});
      if (backward && remote(a.stage, next))
        out.push_back({Op::RecvGrad, a.microBatch, a.stage, next});
      out.push_back(a);
      if (forward && remote(a.stage, next))
        out.push_back({Op::SendAct, a.microBatch, a.stage, next});
      if (backward && remote(a.stage, prev))
        out.push_back({Op::SendGrad, a.microBatch, a.stage, prev});
    }
    prog = std::move(out);
  }
}

std::vector<double> inFlightProfile(const Schedule &schedule, int32_t rank,
                                    const std::vector<double> &perStage) {
  const auto &prog = schedule.programs[rank];
  std::vector<double> out(prog.size());
  double held = 0;
  for (size_t i = 0; i < prog.size(); ++i) {
    const Action &a = prog[i];
    bool valid = a.stage >= 0 && a.stage < static_cast<int32_t>(perStage.size());
    if (valid && a.op == Op::F)
      held += perStage[a.stage];
    else if (valid && (a.op == Op::W || a.op == Op::BW))
      held -= perStage[a.stage];
    out[i] = held;
  }
  return out;
}

} // namespace loom::sched
