//===- VSchedule.cpp - ZB-V: the V-shape zero-bubble schedule --------------===//
//
// ZB-V [ZB §5, Fig. 8] puts two chunks on each of p ranks in a V (rank r runs
// stage r and stage 2p-1-r), so the first and last stage share rank 0, and
// holds 1F1B's activation memory (2p chunk activations a rank). With F = B = W
// its bubble all but vanishes. This builder follows the construction of the
// paper's reference scheduler (sail-sg/zero-bubble-pipeline-parallelism,
// scheduler/zbv.py), re-expressed in loom's terms and priced with per-stage
// costs and per-link p2p times:
//
//  1. warm-up: every rank runs its first chunk-0 forward; then, from the last
//     rank back to the first, each rank fits as many further chunk-0 forwards
//     as memory (leaving room for the V's return) and the arrival of its first
//     chunk-1 input allow, then its first chunk-1 forward; then ranks run
//     forwards of both chunks in turn until each has as many as its
//     predecessor;
//  2. steady state, 2m rounds of: one backward (input gradient) per rank —
//     chunk 1's while chunk 0's is not yet possible, ranks whose chunk-0
//     backward is ready going first, from the last rank — then one forward per
//     rank; before each, the rank runs pending weight gradients while its
//     input is still on the way, or when waiting would make it the most idle
//     rank so far (the paper's rule); memory is kept by running a weight
//     gradient before a forward that would exceed it;
//  3. the remaining weight gradients.
// Runs with and without the optional fills, each refined once with the bubbles
// it found as the allowance, are compared; zeroBubbleV keeps the best of these
// and of the list scheduler (ListScheduler.cpp) by simulated makespan.
//
//  [ZB] Qi et al., "Zero Bubble (Almost) Pipeline Parallelism", ICLR 2024.
//
//===----------------------------------------------------------------------===//

#include "loom/Schedule/Generators.h"
#include "loom/Schedule/Simulator.h"

#include <algorithm>
#include <array>
#include <deque>
#include <optional>

namespace loom::sched {
namespace {

class VBuilder {
public:
  VBuilder(int32_t ranks, int32_t microBatches, const Costs &costs, bool fillF, bool fillB,
           std::vector<double> approved)
      : p(ranks), m(microBatches), costs(costs), layout(vShapeLayout(ranks, microBatches)),
        fillF(fillF), fillB(fillB), approved(std::move(approved)) {
    size_t stages = 2 * size_t(p);
    endF.assign(stages, std::vector<double>(m, -1));
    endB.assign(stages, std::vector<double>(m, -1));
    cur.assign(p, 0);
    mem.assign(p, 0);
    bubble.assign(p, 0);
    count.assign(p, {0, 0, 0, 0});
    pendingW.resize(p);
    order.resize(p);
    limit = double(p); // 1F1B's: p microbatches of a rank's layers
    if (this->approved.empty())
      this->approved.assign(p, -1);
    maxApproved = *std::max_element(this->approved.begin(), this->approved.end());
  }

  /// Builds the schedule; false when the construction does not apply (a
  /// dependency it expects is missing, or memory runs out with no W to run).
  bool build() {
    // 1. Warm-up.
    for (int32_t r = 0; r < p; ++r)
      if (!forward(r, 0))
        return false;
    const double unit = layout.activationUnits[0];
    for (int32_t r = p - 1; r >= 0; --r) {
      if (r < p - 1) {
        double arrives = endF[stageOf(r + 1, 1)][0] + link(r + 1, r);
        while (mem[r] + unit * (2 + 2 * r) <= limit + kEps &&
               cur[r] + costs.forward[stageOf(r, 0)] <= arrives + kEps && count[r][0] < m)
          for (int32_t j = 0; j <= r; ++j)
            if (!forward(j, 0))
              return false;
      }
      if (!forward(r, 1))
        return false;
    }
    int chunk = 0;
    for (int32_t r = 1; r < p; ++r)
      while (count[r][0] + count[r][1] < count[r - 1][0] + count[r - 1][1] ||
             (count[r][1] <= count[r - 1][1] && count[r - 1][1] < m)) {
        for (int32_t j = p - 1; j >= r; --j)
          if (count[j][chunk] < m && !forward(j, chunk))
            return false;
        chunk = 1 - chunk;
      }

    // 2. Steady state.
    for (int32_t round = 0; round < 2 * m; ++round) {
      std::vector<std::pair<int32_t, int>> backwards; // (rank, chunk)
      std::vector<int32_t> secondChunk, firstChunk;
      for (int32_t r = 0; r < p; ++r) {
        if (count[r][2] >= count[r][3]) {
          firstChunk.push_back(r); // chunk 1's backward comes first on the way back
        } else if (r == p - 1) {
          secondChunk.push_back(r);
        } else {
          int32_t mb = count[r][2];
          if (endB[stageOf(r + 1, 0)][mb] >= 0 || count[r][3] >= m)
            secondChunk.push_back(r);
          else
            firstChunk.push_back(r);
        }
      }
      for (auto r = secondChunk.rbegin(); r != secondChunk.rend(); ++r)
        backwards.push_back({*r, 0});
      for (int32_t r : firstChunk)
        backwards.push_back({r, 1});
      for (auto [r, c] : backwards) {
        if (count[r][2 + c] >= m)
          continue;
        if (!fillBefore(r, inputOfBackward(r, c), c == 0 || fillB) || !backward(r, c))
          return false;
      }
      for (int32_t r = 0; r < p; ++r) {
        if (count[r][1] >= m)
          continue;
        int c = -1;
        if (count[r][1] >= count[r][0])
          c = 0;
        else if (r == p - 1 || endF[stageOf(r + 1, 1)][count[r][1]] >= 0)
          c = 1;
        else if (count[r][0] < m && (r == 0 || endF[stageOf(r - 1, 0)][count[r][0]] >= 0))
          c = 0;
        if (c < 0)
          continue;
        while (mem[r] + unit > limit + kEps)
          if (!weight(r))
            return false;
        if (!fillBefore(r, inputOfForward(r, c), fillF) || !forward(r, c))
          return false;
      }
    }
    // 3. The weight gradients left.
    for (int32_t r = 0; r < p; ++r)
      while (!pendingW[r].empty())
        weight(r);
    return true;
  }

  double maxBubble() const { return *std::max_element(bubble.begin(), bubble.end()); }
  const std::vector<double> &bubbles() const { return bubble; }

  Schedule schedule() && {
    for (int32_t r = 0; r < p; ++r) {
      layout.programs[r] = std::move(order[r]);
      layout.programs[r].push_back({Op::Optimizer});
    }
    layout.name = "zb-v";
    return std::move(layout);
  }

private:
  static constexpr double kEps = 1e-9;

  int32_t stageOf(int32_t r, int chunk) const { return chunk == 0 ? r : 2 * p - 1 - r; }
  double link(int32_t from, int32_t to) const { return costs.link(from, to); }

  /// When the input of rank r's next forward (or backward) of `chunk` arrives:
  /// -1 when its producer has not been placed, 0 when it has none.
  double inputOfForward(int32_t r, int chunk) const {
    int32_t s = stageOf(r, chunk), mb = count[r][chunk];
    if (s == 0)
      return 0;
    double done = endF[s - 1][mb];
    return done < 0 ? -1 : done + link(layout.stageRank[s - 1], r);
  }
  double inputOfBackward(int32_t r, int chunk) const {
    int32_t s = stageOf(r, chunk), mb = count[r][2 + chunk];
    if (s == 2 * p - 1)
      return endF[s][mb]; // the loss: after its own forward
    double done = endB[s + 1][mb];
    return done < 0 ? -1 : done + link(layout.stageRank[s + 1], r);
  }

  /// The bubble a rank may still take: the largest any rank has taken (or the
  /// allowance of an earlier run), less its own.
  double allowance(int32_t r) const {
    double most = maxBubble();
    if (maxApproved >= 0)
      most = std::max(most, maxApproved - approved[r]);
    return most - bubble[r];
  }

  /// Weight gradients before an action whose input arrives at `input`: those
  /// that finish before it does, and one more if the wait would exceed the
  /// rank's allowance and `fill` is on.
  bool fillBefore(int32_t r, double input, bool fill) {
    if (input < 0)
      return false;
    while (!pendingW[r].empty() &&
           input >= cur[r] + costs.weight[pendingW[r].front().first] - kEps)
      weight(r);
    if (fill && !pendingW[r].empty() && input - cur[r] > allowance(r) + kEps)
      weight(r);
    return true;
  }

  /// Places an action on rank r starting no earlier than `ready`.
  void place(int32_t r, Action a, double ready, double seconds) {
    double start = std::max(cur[r], ready);
    if (count[r][0] > 0)
      bubble[r] += start - cur[r];
    cur[r] = start + seconds;
    order[r].push_back(a);
  }

  bool forward(int32_t r, int chunk) {
    int32_t s = stageOf(r, chunk), mb = count[r][chunk];
    double ready = inputOfForward(r, chunk);
    if (mb >= m || ready < 0)
      return false;
    place(r, {Op::F, mb, s}, ready, costs.forward[s]);
    endF[s][mb] = cur[r];
    mem[r] += layout.activationUnits[s];
    ++count[r][chunk];
    return true;
  }
  bool backward(int32_t r, int chunk) {
    int32_t s = stageOf(r, chunk), mb = count[r][2 + chunk];
    double ready = inputOfBackward(r, chunk);
    if (mb >= m || ready < 0 || endF[s][mb] < 0)
      return false;
    place(r, {Op::B, mb, s}, ready, costs.backward[s]);
    endB[s][mb] = cur[r];
    pendingW[r].push_back({s, mb});
    ++count[r][2 + chunk];
    return true;
  }
  bool weight(int32_t r) {
    if (pendingW[r].empty())
      return false;
    auto [s, mb] = pendingW[r].front();
    pendingW[r].pop_front();
    place(r, {Op::W, mb, s}, 0, costs.weight[s]);
    mem[r] -= layout.activationUnits[s];
    return true;
  }

  int32_t p, m;
  const Costs &costs;
  Schedule layout;
  bool fillF, fillB;
  std::vector<double> approved;
  double maxApproved = -1, limit = 0;
  std::vector<std::vector<double>> endF, endB;
  std::vector<double> cur, mem, bubble;
  std::vector<std::array<int32_t, 4>> count; // F chunk 0, F chunk 1, B chunk 0, B chunk 1
  std::vector<std::deque<std::pair<int32_t, int32_t>>> pendingW; // (stage, microbatch)
  std::vector<std::vector<Action>> order;
};

/// One construction, refined once with its own bubbles as the allowance.
std::optional<Schedule> construct(int32_t ranks, int32_t microBatches, const Costs &costs,
                                  bool fillF, bool fillB) {
  VBuilder first(ranks, microBatches, costs, fillF, fillB, {});
  if (!first.build())
    return std::nullopt;
  VBuilder refined(ranks, microBatches, costs, fillF, fillB, first.bubbles());
  if (refined.build() && refined.maxBubble() < first.maxBubble())
    return std::move(refined).schedule();
  return std::move(first).schedule();
}

} // namespace

Schedule zeroBubbleV(int32_t ranks, int32_t microBatches, const Costs &costs) {
  Schedule best = zeroBubbleAuto(vShapeLayout(ranks, microBatches), costs, ranks);
  best.name = "zb-v";
  std::optional<Timeline> bestTime = simulate(best, costs);
  for (bool fillB : {true, false})
    for (bool fillF : {true, false}) {
      std::optional<Schedule> s = construct(ranks, microBatches, costs, fillF, fillB);
      if (!s)
        continue;
      std::optional<Timeline> t = simulate(*s, costs);
      if (!t)
        continue;
      // Within 1F1B's memory, as the list scheduler's run is.
      bool fits = true;
      for (int32_t r = 0; r < ranks && fits; ++r)
        for (double units : inFlightProfile(*s, r, s->activationUnits))
          fits = fits && units <= double(ranks) + 1e-9;
      if (fits && (!bestTime || t->makespan < bestTime->makespan - 1e-12)) {
        best = std::move(*s);
        bestTime = t;
      }
    }
  return best;
}

} // namespace loom::sched
