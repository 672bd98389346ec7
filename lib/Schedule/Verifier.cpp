//===- Verifier.cpp - checks a schedule can run and means training --------===//
//
// Checks run in layers: later checks assume earlier ones passed (the
// symbolic execution needs every producer to exist, or it would report a
// "deadlock" that is really a missing action), so the verifier stops after
// the first layer that found problems.
//
//===----------------------------------------------------------------------===//

#include "loom/Schedule/Verifier.h"

#include "Graph.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

namespace loom::sched {

using detail::Graph;
using detail::Loc;

std::string Diagnostic::str() const {
  if (rank < 0)
    return message;
  std::string s = "rank " + std::to_string(rank);
  if (index >= 0)
    s += ", action " + std::to_string(index);
  return s + ": " + message;
}

namespace {

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

class Verifier {
public:
  Verifier(const Schedule &s, const VerifyOptions &o) : s_(s), opts_(o) {}

  std::vector<Diagnostic> run() {
    if (!checkLayout())
      return std::move(diags_);
    Graph g(s_);
    checkPlacement(g);
    if (!diags_.empty())
      return std::move(diags_);
    checkCompleteness(g);
    checkCommunication(g);
    checkOptimizer();
    if (!diags_.empty())
      return std::move(diags_);
    checkExecution(g);
    checkMemory();
    if (opts_.pathRules)
      for (Diagnostic &d : verifyPaths(s_.paths, s_.numStages(), *opts_.pathRules))
        diags_.push_back(std::move(d));
    return std::move(diags_);
  }

private:
  void error(int32_t rank, int32_t index, std::string msg) {
    diags_.push_back({rank, index, std::move(msg)});
  }
  std::string at(const Graph &g, int32_t key) const {
    Loc l = g.located(key);
    return g.actionOf(key).str() + " (rank " + std::to_string(l.rank) + ", action " +
           std::to_string(l.index) + ")";
  }

  bool checkLayout() {
    const int32_t stages = s_.numStages();
    if (s_.numRanks <= 0 || static_cast<int32_t>(s_.programs.size()) != s_.numRanks)
      error(-1, -1, "schedule has " + std::to_string(s_.programs.size()) + " programs for " +
                        std::to_string(s_.numRanks) + " ranks");
    if (static_cast<int32_t>(s_.activationUnits.size()) != stages)
      error(-1, -1, "activation units are given for " + std::to_string(s_.activationUnits.size()) +
                        " of " + std::to_string(stages) + " stages");
    for (int32_t st = 0; st < stages; ++st)
      if (s_.stageRank[st] < 0 || s_.stageRank[st] >= s_.numRanks)
        error(-1, -1, "stage " + std::to_string(st) + " is hosted on rank " +
                          std::to_string(s_.stageRank[st]) + ", which does not exist");
    for (int32_t mb = 0; mb < s_.numMicroBatches(); ++mb) {
      const auto &path = s_.paths[mb];
      std::string who = "microbatch " + std::to_string(mb);
      if (path.empty())
        error(-1, -1, who + " has an empty path");
      std::vector<bool> seen(stages, false);
      for (int32_t st : path) {
        if (st < 0 || st >= stages) {
          error(-1, -1, who + " visits stage " + std::to_string(st) + ", which does not exist");
          continue;
        }
        if (seen[st])
          error(-1, -1, who + " visits stage " + std::to_string(st) + " twice");
        seen[st] = true;
      }
    }
    return diags_.empty();
  }

  void checkPlacement(const Graph &g) {
    std::vector<uint8_t> seen(g.numKeys(), 0);
    for (int32_t r = 0; r < s_.numRanks; ++r) {
      const auto &prog = s_.programs[r];
      for (int32_t i = 0; i < static_cast<int32_t>(prog.size()); ++i) {
        const Action &a = prog[i];
        if (a.op == Op::Optimizer)
          continue;
        if (!g.inRange(a)) {
          error(r, i, a.str() + " names a microbatch or stage that does not exist");
          continue;
        }
        if (s_.stageRank[a.stage] != r) {
          error(r, i, a.str() + " belongs to rank " + std::to_string(s_.stageRank[a.stage]));
          continue;
        }
        if (g.position(a.microBatch, a.stage) < 0) {
          error(r, i, a.str() + ": stage " + std::to_string(a.stage) + " is not on microbatch " +
                          std::to_string(a.microBatch) + "'s path");
          continue;
        }
        if (std::exchange(seen[g.keyOf(a)], 1))
          error(r, i, a.str() + " runs a second time (first at " + at(g, g.keyOf(a)) + ")");
        if (!isCompute(a.op))
          checkPeer(g, r, i, a);
      }
    }
  }

  /// A send/recv must name the path neighbour on another rank it talks to.
  void checkPeer(const Graph &g, int32_t r, int32_t i, const Action &a) {
    bool towardsLoss = a.op == Op::SendAct || a.op == Op::RecvGrad;
    int32_t want = towardsLoss ? g.nextStage(a.microBatch, a.stage)
                               : g.prevStage(a.microBatch, a.stage);
    if (want < 0 || s_.stageRank[want] == r)
      error(r, i, a.str() + ": the path has no edge to another rank there");
    else if (a.peerStage != want)
      error(r, i, a.str() + ": the path's neighbour is stage " + std::to_string(want));
  }

  void checkCompleteness(const Graph &g) {
    using namespace detail;
    for (int32_t mb = 0; mb < s_.numMicroBatches(); ++mb)
      for (int32_t st : s_.paths[mb]) {
        int32_t r = s_.stageRank[st];
        Loc f = g.located(g.key(SlotF, mb, st));
        Loc b = g.located(g.key(SlotB, mb, st));
        Loc w = g.located(g.key(SlotW, mb, st));
        Action probe{Op::F, mb, st};
        if (!f.found())
          error(r, -1, "no action runs " + probe.str());
        if (!b.found()) {
          probe.op = Op::B;
          error(r, -1, "no action runs the backward " + probe.str());
          continue;
        }
        bool fused = s_.programs[b.rank][b.index].op == Op::BW;
        if (fused && w.found())
          error(w.rank, w.index, g.actionOf(g.key(SlotW, mb, st)).str() +
                                     " repeats the weight gradient its BW already computed");
        if (!fused && !w.found()) {
          probe.op = Op::W;
          error(r, -1, "no action runs " + probe.str());
        }
        if (f.found() && b.index < f.index)
          error(b.rank, b.index, g.actionOf(g.key(SlotB, mb, st)).str() + " runs before its F at action " +
                                     std::to_string(f.index));
        if (w.found() && w.index < b.index)
          error(w.rank, w.index, g.actionOf(g.key(SlotW, mb, st)).str() + " runs before its B at action " +
                                     std::to_string(b.index));
      }
  }

  /// With explicit communication every edge between ranks needs its send
  /// after the producer and its recv before the consumer, and nothing else.
  void checkCommunication(const Graph &g) {
    using namespace detail;
    if (!s_.hasExplicitCommunication())
      return;
    for (int32_t mb = 0; mb < s_.numMicroBatches(); ++mb) {
      const auto &path = s_.paths[mb];
      for (size_t k = 0; k + 1 < path.size(); ++k) {
        int32_t from = path[k], to = path[k + 1];
        if (s_.stageRank[from] == s_.stageRank[to])
          continue;
        edge(g, g.key(SlotF, mb, from), g.key(SlotSendAct, mb, from),
             g.key(SlotRecvAct, mb, to), g.key(SlotF, mb, to), {Op::SendAct, mb, from, to},
             {Op::RecvAct, mb, to, from});
        edge(g, g.key(SlotB, mb, to), g.key(SlotSendGrad, mb, to), g.key(SlotRecvGrad, mb, from),
             g.key(SlotB, mb, from), {Op::SendGrad, mb, to, from}, {Op::RecvGrad, mb, from, to});
      }
    }
  }
  void edge(const Graph &g, int32_t producer, int32_t send, int32_t recv, int32_t consumer,
            const Action &sendAction, const Action &recvAction) {
    Loc p = g.located(producer), sd = g.located(send), rv = g.located(recv),
        c = g.located(consumer);
    if (!sd.found() && rv.found())
      error(rv.rank, rv.index, recvAction.str() + " has no matching " + sendAction.str() +
                                   " on rank " + std::to_string(s_.stageRank[sendAction.stage]));
    if (sd.found() && !rv.found())
      error(sd.rank, sd.index, sendAction.str() + " has no matching " + recvAction.str() +
                                   " on rank " + std::to_string(s_.stageRank[recvAction.stage]));
    if (!sd.found() && !rv.found() && c.found())
      error(c.rank, c.index, g.actionOf(consumer).str() + " consumes data from rank " +
                                 std::to_string(s_.stageRank[sendAction.stage]) +
                                 " that no send/recv pair carries");
    if (sd.found() && p.found() && sd.index < p.index)
      error(sd.rank, sd.index, sendAction.str() + " runs before the action that produces it");
    if (rv.found() && c.found() && rv.index > c.index)
      error(c.rank, c.index, g.actionOf(consumer).str() + " runs before its " + recvAction.str());
  }

  void checkOptimizer() {
    int32_t with = 0;
    for (int32_t r = 0; r < s_.numRanks; ++r) {
      const auto &prog = s_.programs[r];
      int32_t count = 0;
      for (int32_t i = 0; i < static_cast<int32_t>(prog.size()); ++i) {
        if (prog[i].op != Op::Optimizer)
          continue;
        if (++count > 1)
          error(r, i, "second optimizer step");
        else if (i + 1 != static_cast<int32_t>(prog.size()))
          error(r, i, "optimizer step before the end of the rank's program");
      }
      with += count > 0;
    }
    if (with != 0 && with != s_.numRanks)
      error(-1, -1, "only " + std::to_string(with) + " of " + std::to_string(s_.numRanks) +
                        " ranks take the optimizer step");
  }

  void checkExecution(const Graph &g) {
    std::vector<detail::Stall> stalls = detail::replay(g, [](int32_t, int32_t, const auto &, int) {});
    if (stalls.empty())
      return;
    std::vector<int32_t> waitsOn(s_.numRanks, -1);
    for (const detail::Stall &st : stalls) {
      const Action &a = s_.programs[st.rank][st.index];
      if (st.waitsFor < 0) {
        error(st.rank, st.index, "waits at the optimizer barrier for ranks that never arrive");
        continue;
      }
      Loc l = g.located(st.waitsFor);
      waitsOn[st.rank] = l.rank;
      error(st.rank, st.index, a.str() + " waits for " + at(g, st.waitsFor) + ", which never runs");
    }
    // Follow the waits from the first stalled rank to name the cycle.
    std::vector<int32_t> order, seenAt(s_.numRanks, -1);
    for (int32_t r = stalls.front().rank; r >= 0 && seenAt[r] < 0; r = waitsOn[r]) {
      seenAt[r] = static_cast<int32_t>(order.size());
      order.push_back(r);
      if (waitsOn[r] >= 0 && seenAt[waitsOn[r]] >= 0) {
        std::string cycle = "deadlock: rank";
        for (size_t k = seenAt[waitsOn[r]]; k < order.size(); ++k)
          cycle += " " + std::to_string(order[k]) + " waits for rank";
        error(-1, -1, cycle + " " + std::to_string(waitsOn[r]));
        break;
      }
    }
  }

  void checkMemory() {
    if (std::isinf(opts_.memoryLimit))
      return;
    for (int32_t r = 0; r < s_.numRanks; ++r) {
      std::vector<double> held = inFlightProfile(s_, r, s_.activationUnits);
      for (size_t i = 0; i < held.size(); ++i)
        if (held[i] > opts_.memoryLimit + 1e-9) {
          error(r, static_cast<int32_t>(i),
                number(held[i]) + " activation units in flight after " + s_.programs[r][i].str() +
                    ", limit " + number(opts_.memoryLimit));
          break;
        }
    }
  }

  const Schedule &s_;
  const VerifyOptions &opts_;
  std::vector<Diagnostic> diags_;
};

} // namespace

std::vector<Diagnostic> verify(const Schedule &schedule, const VerifyOptions &options) {
  return Verifier(schedule, options).run();
}

std::vector<Diagnostic> verifyPaths(const std::vector<std::vector<int32_t>> &paths,
                                    int32_t numStages, const PathRules &rules) {
  std::vector<Diagnostic> out;
  auto error = [&](std::string msg) { out.push_back({-1, -1, std::move(msg)}); };
  std::vector<int32_t> visits(numStages, 0);
  const int32_t middle = std::max(numStages - 2, 0);
  for (size_t mb = 0; mb < paths.size(); ++mb) {
    const auto &path = paths[mb];
    std::string who = "microbatch " + std::to_string(mb);
    if (path.empty() || path.front() != 0 || path.back() != numStages - 1) {
      error(who + " must start at stage 0 and end at stage " + std::to_string(numStages - 1));
      continue;
    }
    std::vector<bool> seen(numStages, false);
    int32_t swaps = 0;
    for (size_t i = 0; i < path.size(); ++i) {
      if (path[i] < 0 || path[i] >= numStages || seen[path[i]]) {
        error(who + " visits stage " + std::to_string(path[i]) + " twice or out of range");
        continue;
      }
      seen[path[i]] = true;
      ++visits[path[i]];
      for (size_t j = 0; j < i; ++j)
        swaps += path[j] > path[i];
    }
    int32_t skipped = numStages - static_cast<int32_t>(path.size());
    if (skipped > std::floor(rules.maxSkipFraction * middle + 1e-9))
      error(who + " skips " + std::to_string(skipped) + " of " + std::to_string(middle) +
            " middle stages, more than " + number(rules.maxSkipFraction * 100) + "%");
    if (swaps > rules.maxSwaps)
      error(who + " visits " + std::to_string(swaps) + " pairs of stages out of order, limit " +
            std::to_string(rules.maxSwaps));
  }
  double need = std::ceil(rules.minStageShare * static_cast<double>(paths.size()) - 1e-9);
  for (int32_t st = 0; st < numStages; ++st)
    if (visits[st] < need)
      error("stage " + std::to_string(st) + " runs " + std::to_string(visits[st]) + " of " +
            std::to_string(paths.size()) + " microbatches, fewer than the required " +
            number(rules.minStageShare * 100) + "%");
  return out;
}

} // namespace loom::sched
