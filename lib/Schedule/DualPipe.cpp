//===- DualPipe.cpp - bidirectional pipeline of DeepSeek-V3 ---------------===//
//
// DualPipe (DeepSeek-AI, "DeepSeek-V3 Technical Report", arXiv 2412.19437,
// §3.2.1; deepseek-ai/DualPipe, dualpipe/dualpipe.py, DualPipe.step) feeds
// half of the microbatches from each end of the pipeline. Every rank holds
// its model stage twice, one copy per direction (bidirectionalLayout), so a
// rank's forward of one direction can overlap another direction's backward.
//
// The rank program below follows DualPipe.step's eight phases. "Phase 0" on
// the first half of the ranks is the forward direction and on the second
// half the reverse one, so both halves run mirror images of one program.
// With zero-bubble splitting ("enable_zb"), a backward runs B and queues its
// W; _weight_chunk pops the queue in order. DualPipe overlaps a forward and
// a backward of the two directions inside one kernel stream ("F&B"); this
// model runs them one after the other, so its bubble is an upper bound.
//
//===----------------------------------------------------------------------===//

#include "loom/Schedule/Generators.h"

#include <cassert>
#include <deque>

namespace loom::sched {

namespace {

class DualPipeRank {
public:
  DualPipeRank(Schedule &s, int32_t rank) : s_(s), rank_(rank) {
    const int32_t p = s.numRanks, m = s.numMicroBatches();
    for (int32_t phase = 0; phase < 2; ++phase) {
      bool forwardDirection = (rank < p / 2) == (phase == 0);
      base_[phase] = forwardDirection ? 0 : m / 2;
      stage_[phase] = forwardDirection ? rank : 2 * p - 1 - rank;
    }
  }

  void forward(int phase) { emit(Op::F, base_[phase] + forwards_[phase]++, stage_[phase]); }
  void backward(int phase, bool zeroBubble) {
    int32_t mb = base_[phase] + backwards_[phase]++;
    emit(zeroBubble ? Op::B : Op::BW, mb, stage_[phase]);
    if (zeroBubble)
      weights_.push_back({Op::W, mb, stage_[phase]});
  }
  void weight() {
    assert(!weights_.empty());
    s_.programs[rank_].push_back(weights_.front());
    weights_.pop_front();
  }

private:
  void emit(Op op, int32_t mb, int32_t stage) { s_.programs[rank_].push_back({op, mb, stage}); }

  Schedule &s_;
  int32_t rank_;
  int32_t base_[2], stage_[2], forwards_[2] = {0, 0}, backwards_[2] = {0, 0};
  std::deque<Action> weights_;
};

} // namespace

Schedule dualPipe(int32_t p, int32_t m) {
  assert(p % 2 == 0 && m % 2 == 0 && m >= 2 * p);
  Schedule s = bidirectionalLayout(p, m);
  const int32_t half = p / 2, perDirection = m / 2;
  for (int32_t r = 0; r < p; ++r) {
    DualPipeRank rank(s, r);
    const int32_t h = std::min(r, p - 1 - r); // distance from the nearer end
    // 1: nF0 — fill the pipeline from this rank's own end.
    for (int32_t i = 0; i < (half - h - 1) * 2; ++i)
      rank.forward(0);
    // 2: nF0F1 — start the other direction.
    for (int32_t i = 0; i < h + 1; ++i) {
      rank.forward(0);
      rank.forward(1);
    }
    // 3: nB1W1F1 — first backwards, with their Ws right behind.
    for (int32_t i = 0; i < half - h - 1; ++i) {
      rank.backward(1, true);
      rank.weight();
      rank.forward(1);
    }
    // 4: nF0B1F1B0 — steady state, forward of one direction beside the
    // backward of the other.
    for (int32_t i = 0; i < perDirection - p + h + 1; ++i) {
      rank.forward(0);
      rank.backward(1, false);
      rank.forward(1);
      rank.backward(0, false);
    }
    // 5: nB1F1B0
    for (int32_t i = 0; i < half - h - 1; ++i) {
      rank.backward(1, false);
      rank.forward(1);
      rank.backward(0, false);
    }
    // 6: nB1B0 — the second half of these backwards defer their Ws.
    const int32_t step6 = h + 1;
    bool zeroBubble = false;
    for (int32_t i = 0; i < step6; ++i) {
      if (i == step6 / 2 && h % 2 == 1)
        zeroBubble = true;
      rank.backward(1, zeroBubble);
      if (i == step6 / 2 && h % 2 == 0)
        zeroBubble = true;
      rank.backward(0, zeroBubble);
    }
    // 7: nWB0 — drain Ws while the last backwards arrive.
    for (int32_t i = 0; i < half - h - 1; ++i) {
      rank.weight();
      rank.backward(0, true);
    }
    // 8: nW
    for (int32_t i = 0; i < h + 1; ++i)
      rank.weight();
    s.programs[r].push_back({Op::Optimizer});
  }
  s.name = "dualpipe";
  return s;
}

} // namespace loom::sched
