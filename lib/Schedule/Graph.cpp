//===- Graph.cpp - dependencies between the actions of a schedule ---------===//

#include "Graph.h"

namespace loom::sched::detail {

Slot slotOf(Op op) {
  switch (op) {
  case Op::F:
    return SlotF;
  case Op::B:
  case Op::BW:
    return SlotB;
  case Op::W:
    return SlotW;
  case Op::SendAct:
    return SlotSendAct;
  case Op::RecvAct:
    return SlotRecvAct;
  case Op::SendGrad:
    return SlotSendGrad;
  case Op::RecvGrad:
  case Op::Optimizer:
    break;
  }
  return SlotRecvGrad;
}

Graph::Graph(const Schedule &schedule)
    : s_(schedule), slots_(schedule.hasExplicitCommunication() ? NumSlots : SlotW + 1) {
  const int32_t stages = s_.numStages();
  pos_.assign(static_cast<size_t>(s_.numMicroBatches()) * stages, -1);
  for (int32_t mb = 0; mb < s_.numMicroBatches(); ++mb) {
    const auto &path = s_.paths[mb];
    for (int32_t i = 0; i < static_cast<int32_t>(path.size()); ++i)
      if (path[i] >= 0 && path[i] < stages && pos_[index(mb, path[i])] < 0)
        pos_[index(mb, path[i])] = i;
  }
  loc_.assign(pos_.size() * slots_, Loc{});
  for (int32_t r = 0; r < static_cast<int32_t>(s_.programs.size()); ++r) {
    const auto &prog = s_.programs[r];
    for (int32_t i = 0; i < static_cast<int32_t>(prog.size()); ++i) {
      if (prog[i].op == Op::Optimizer || !inRange(prog[i]))
        continue;
      Loc &l = loc_[keyOf(prog[i])];
      if (!l.found())
        l = {r, i};
    }
  }
}

bool Graph::inRange(const Action &a) const {
  return a.microBatch >= 0 && a.microBatch < s_.numMicroBatches() && a.stage >= 0 &&
         a.stage < s_.numStages();
}

int32_t Graph::prevStage(int32_t mb, int32_t stage) const {
  int32_t p = position(mb, stage);
  return p > 0 ? s_.paths[mb][p - 1] : -1;
}

int32_t Graph::nextStage(int32_t mb, int32_t stage) const {
  int32_t p = position(mb, stage);
  const auto &path = s_.paths[mb];
  return p >= 0 && p + 1 < static_cast<int32_t>(path.size()) ? path[p + 1] : -1;
}

Action Graph::actionOf(int32_t key) const {
  static constexpr Op kOps[NumSlots] = {Op::F,       Op::B,       Op::W,       Op::SendAct,
                                        Op::RecvAct, Op::SendGrad, Op::RecvGrad};
  Action a;
  a.op = kOps[key % slots_];
  size_t cell = key / slots_;
  a.microBatch = static_cast<int32_t>(cell % s_.numMicroBatches());
  a.stage = static_cast<int32_t>(cell / s_.numMicroBatches());
  if (Loc l = located(key); l.found())
    a = s_.programs[l.rank][l.index];
  return a;
}

int Graph::deps(const Action &a, std::array<Dep, 2> &out) const {
  const int32_t mb = a.microBatch, st = a.stage;
  auto remote = [&](int32_t other) { return s_.stageRank[other] != s_.stageRank[st]; };
  int n = 0;
  switch (a.op) {
  case Op::F:
    if (int32_t p = prevStage(mb, st); p >= 0)
      out[n++] = {key(SlotF, mb, p), remote(p)};
    break;
  case Op::B:
  case Op::BW:
    out[n++] = {key(SlotF, mb, st), false};
    if (int32_t nx = nextStage(mb, st); nx >= 0)
      out[n++] = {key(SlotB, mb, nx), remote(nx)};
    break;
  case Op::W:
    out[n++] = {key(SlotB, mb, st), false};
    break;
  case Op::SendAct:
    out[n++] = {key(SlotF, mb, st), false};
    break;
  case Op::RecvAct:
    if (int32_t p = prevStage(mb, st); p >= 0)
      out[n++] = {key(SlotSendAct, mb, p), true};
    break;
  case Op::SendGrad:
    out[n++] = {key(SlotB, mb, st), false};
    break;
  case Op::RecvGrad:
    if (int32_t nx = nextStage(mb, st); nx >= 0)
      out[n++] = {key(SlotSendGrad, mb, nx), true};
    break;
  case Op::Optimizer:
    break;
  }
  return n;
}

} // namespace loom::sched::detail
