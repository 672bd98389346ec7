//===- Graph.h - dependencies between the actions of a schedule -*- C++ -*-===//
//
// Internal to lib/Schedule. The verifier and the simulator both need to know,
// for every action, which actions must have run before it, and to execute the
// rank programs in an order that honours those dependencies. Both live here so
// that the two can never disagree on what a schedule means.
//
// Dependencies (each action names its producers by (slot, microbatch, stage)):
//   F(mb, s)          F(mb, prev(s))            the activation it consumes
//   B(mb, s), BW      F(mb, s), B(mb, next(s))  its activations, the output gradient
//   W(mb, s)          B(mb, s)
//   SendAct(mb, s)    F(mb, s);  RecvAct(mb, t)  SendAct(mb, prev(t))
//   SendGrad(mb, t)   B(mb, t);  RecvGrad(mb, s) SendGrad(mb, next(s))
//   Optimizer         a barrier: every rank that has one must reach it.
// Sends never block (isend); a recv waits for its send; compute waits for its
// producers, so explicit and implicit communication mean the same thing.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_LIB_SCHEDULE_GRAPH_H
#define LOOM_LIB_SCHEDULE_GRAPH_H

#include "loom/Schedule/Schedule.h"

#include <array>
#include <cstdint>
#include <vector>

namespace loom::sched::detail {

enum Slot : uint8_t { SlotF, SlotB, SlotW, SlotSendAct, SlotRecvAct, SlotSendGrad, SlotRecvGrad, NumSlots };

/// The slot an op fills; BW fills B's (W's slot then stays empty).
Slot slotOf(Op op);

struct Loc {
  int32_t rank = -1, index = -1;
  bool found() const { return rank >= 0; }
};

class Graph {
public:
  /// Indexes the schedule. Actions outside the stage/microbatch ranges are
  /// skipped (the verifier reports them); the first of duplicates wins.
  explicit Graph(const Schedule &schedule);

  const Schedule &schedule() const { return s_; }
  bool inRange(const Action &a) const;
  /// Position of `stage` on the microbatch's path, -1 when the path skips it.
  int32_t position(int32_t mb, int32_t stage) const { return pos_[index(mb, stage)]; }
  /// Neighbours on the path, -1 at its ends.
  int32_t prevStage(int32_t mb, int32_t stage) const;
  int32_t nextStage(int32_t mb, int32_t stage) const;

  int32_t key(Slot slot, int32_t mb, int32_t stage) const {
    return static_cast<int32_t>(index(mb, stage) * slots_ + slot);
  }
  int32_t keyOf(const Action &a) const { return key(slotOf(a.op), a.microBatch, a.stage); }
  Loc located(int32_t key) const { return loc_[key]; }
  /// Action a key names, for messages.
  Action actionOf(int32_t key) const;

  /// Producer keys of `a` (Optimizer has none: it is a barrier). `remote`
  /// says whether data crosses ranks on that edge (a p2p transfer).
  struct Dep {
    int32_t key;
    bool remote;
  };
  int deps(const Action &a, std::array<Dep, 2> &out) const;

  int32_t numKeys() const { return static_cast<int32_t>(loc_.size()); }

private:
  // Stage-major, so that a rank walking its microbatches touches
  // neighbouring entries.
  size_t index(int32_t mb, int32_t stage) const {
    return static_cast<size_t>(stage) * s_.numMicroBatches() + mb;
  }
  const Schedule &s_;
  // Without explicit send/recv only the F, B and W slots can be filled.
  int32_t slots_;
  std::vector<int32_t> pos_;
  std::vector<Loc> loc_;
};

/// A rank that could not finish: the action it is stuck at and the producer
/// key it waits for (-1 for the optimizer barrier).
struct Stall {
  int32_t rank, index, waitsFor;
};

/// Runs the programs to completion in some order that respects every
/// dependency, calling visit(rank, index, deps, numDeps) for each action as
/// it executes (deps as Graph::deps gives them; none for the optimizer). The
/// barrier releases the optimizer steps of all ranks together, visited in
/// rank order. Returns the stalled ranks (empty when all finished): a cycle of
/// waits, or a wait for an action no rank runs.
template <typename Visit>
std::vector<Stall> replay(const Graph &g, Visit &&visit) {
  const Schedule &s = g.schedule();
  const int32_t n = s.numRanks;
  std::vector<int32_t> pc(n, 0);
  std::vector<uint8_t> done(g.numKeys(), 0);
  // Ranks waiting on a key, as singly linked lists threaded through waitNext.
  std::vector<int32_t> waitHead(g.numKeys(), -1), waitNext(n, -1), waitKey(n, -1);
  std::vector<int32_t> work;
  work.reserve(n);
  int32_t barrierRanks = 0, atBarrier = 0;
  for (const auto &prog : s.programs)
    for (const Action &a : prog)
      if (a.op == Op::Optimizer) {
        ++barrierRanks;
        break;
      }
  for (int32_t r = n - 1; r >= 0; --r)
    work.push_back(r);

  std::array<Graph::Dep, 2> deps;
  auto complete = [&](int32_t r, int nd) {
    const Action &a = s.programs[r][pc[r]];
    visit(r, pc[r], deps, nd);
    ++pc[r];
    if (a.op == Op::Optimizer || !g.inRange(a))
      return;
    int32_t k = g.keyOf(a);
    done[k] = 1;
    for (int32_t w = waitHead[k]; w >= 0;) {
      int32_t next = waitNext[w];
      waitKey[w] = -1;
      work.push_back(w);
      w = next;
    }
    waitHead[k] = -1;
  };
  while (!work.empty()) {
    int32_t r = work.back();
    work.pop_back();
    const auto &prog = s.programs[r];
    while (pc[r] < static_cast<int32_t>(prog.size())) {
      const Action &a = prog[pc[r]];
      if (a.op == Op::Optimizer) {
        if (++atBarrier < barrierRanks)
          break;
        // Everyone is there: release the barrier in rank order.
        for (int32_t q = 0; q < n; ++q)
          if (pc[q] < static_cast<int32_t>(s.programs[q].size()) &&
              s.programs[q][pc[q]].op == Op::Optimizer) {
            complete(q, 0);
            if (q != r)
              work.push_back(q);
          }
        continue;
      }
      int32_t blocker = -1;
      int nd = 0;
      if (g.inRange(a)) {
        nd = g.deps(a, deps);
        for (int i = 0; i < nd && blocker < 0; ++i)
          if (!done[deps[i].key])
            blocker = deps[i].key;
      }
      if (blocker >= 0) {
        waitKey[r] = blocker;
        waitNext[r] = waitHead[blocker];
        waitHead[blocker] = r;
        break;
      }
      complete(r, nd);
    }
  }
  std::vector<Stall> stalls;
  for (int32_t r = 0; r < n; ++r)
    if (pc[r] < static_cast<int32_t>(s.programs[r].size()))
      stalls.push_back({r, pc[r], waitKey[r]});
  return stalls;
}

} // namespace loom::sched::detail

#endif // LOOM_LIB_SCHEDULE_GRAPH_H
