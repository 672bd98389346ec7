//===- PartitionZ3.cpp - layer->stage split with device placement, by Z3 --===//
//
// On a heterogeneous cluster the device order is a decision too: position p holds
// inflight[p] micro-batches of activations, so which device sits first changes
// what fits, and speed changes how many layers each stage should take (Cephalo,
// Guo et al., arXiv 2411.01075; Holmes, Yang et al., ICPP'24, arXiv 2312.03549).
// The DP cannot choose a permutation; Z3 can.
//
// Why bisection with z3::solver rather than z3::optimize. The optimum is one of
// the finitely many achievable stage times (some range's seconds on some device
// type), so bisecting over that sorted set proves the optimum in about
// log2(L^2 K / 2) checks. With the bound T fixed, everything numeric becomes a
// constant table: for position p, device class k and first layer i, the largest
// last layer whose time is <= T and whose bytes fit. The solver only sees layer
// indices (integers), device-class Booleans and those table entries, so:
//  * there is no scaling of seconds or bytes to integers at all: every time and
//    byte comparison is made in double by StageCosts, the arithmetic the DP uses,
//    so the two solvers agree on the objective to the last bit (scaling to
//    nanoseconds would round each layer and could flip a tie against the DP);
//  * no stage-time sums or divisions by speed reach Z3. Measured on this machine
//    (loom-bench-partition's instances): z3::optimize minimising an integer-ns
//    bound over sum-of-ite stage terms per (position, device class) took 0.14 s
//    for 16 layers x 4 groups and 2.6 s for 32 x 8; this bisection takes 0.03 s
//    and 0.12 s for the same proven optima;
//  * a bound that was satisfiable stays asserted (every later bound is lower), so
//    the solver keeps tightening the same problem instead of starting over.
//
// Symmetry: devices with equal speed and memory form one class; Z3 chooses a
// class per position with a count per class, never a permutation of identical
// devices. Within a class, devices are handed out in index order.
//
//===----------------------------------------------------------------------===//

#include "loom/Search/Partition.h"

#include <z3++.h>

#include <algorithm>
#include <chrono>

namespace loom::search {

namespace {
struct DeviceClasses {
  std::vector<int64_t> representative; // per class, its first device
  std::vector<int64_t> count;          // per class
  std::vector<std::vector<int64_t>> members;
};

DeviceClasses classify(const std::vector<PartitionDevice> &devices) {
  DeviceClasses c;
  for (int64_t d = 0; d < int64_t(devices.size()); ++d) {
    auto same = [&](int64_t r) {
      return devices[r].speed == devices[d].speed &&
             devices[r].memoryBytes == devices[d].memoryBytes;
    };
    auto it = std::find_if(c.representative.begin(), c.representative.end(), same);
    size_t k = it - c.representative.begin();
    if (it == c.representative.end()) {
      c.representative.push_back(d);
      c.count.push_back(0);
      c.members.emplace_back();
    }
    ++c.count[k];
    c.members[k].push_back(d);
  }
  return c;
}

class BoundModel {
public:
  BoundModel(const PartitionProblem &problem, const DeviceClasses &classes,
             unsigned resourcesPerCheck)
      : problem_(problem), classes_(classes), costs_(problem), solver_(ctx_),
        resourcesPerCheck_(resourcesPerCheck),
        layers_(int64_t(problem.layerSeconds.size())),
        stages_(int64_t(problem.devices.size())) {
    for (int64_t p = 1; p < stages_; ++p) {
      boundary_.push_back(ctx_.int_const(("b" + std::to_string(p)).c_str()));
      // Every earlier stage has a layer and every later one has one left.
      solver_.add(first(p) >= int(p) && first(p) <= int(layers_ - (stages_ - p)));
      solver_.add(first(p) > first(p - 1));
    }
    int64_t numClasses = int64_t(classes_.count.size());
    for (int64_t p = 0; p < stages_; ++p) {
      z3::expr_vector row(ctx_);
      isClass_.emplace_back();
      for (int64_t k = 0; k < numClasses; ++k) {
        isClass_[p].push_back(ctx_.bool_const(
            ("c" + std::to_string(p) + "_" + std::to_string(k)).c_str()));
        row.push_back(isClass_[p][k]);
      }
      solver_.add(z3::atleast(row, 1) && z3::atmost(row, 1));
    }
    for (int64_t k = 0; k < numClasses; ++k) {
      z3::expr_vector column(ctx_);
      for (int64_t p = 0; p < stages_; ++p)
        column.push_back(isClass_[p][k]);
      std::vector<int> ones(stages_, 1);
      solver_.add(z3::pbeq(column, ones.data(), int(classes_.count[k])));
    }
  }

  /// Asserts that every stage takes at most `bound` seconds (in a new scope) and
  /// checks. On sat, fills `result` and keeps the scope, since later bounds are
  /// only ever lower; otherwise drops it.
  z3::check_result check(double bound, double secondsLeft, Partition &result) {
    solver_.push();
    for (int64_t p = 0; p < stages_; ++p) {
      int64_t lastStart = layers_ - (stages_ - p), lastEnd = lastStart + 1;
      for (int64_t k = 0; k < int64_t(classes_.count.size()); ++k) {
        const PartitionDevice &d = problem_.devices[classes_.representative[k]];
        for (int64_t i = p; i <= lastStart; ++i) {
          // Time and bytes grow with the end, so the allowed ends are a prefix.
          int64_t j = i;
          while (j < lastEnd && costs_.seconds(i, j + 1, d) <= bound &&
                 costs_.bytes(i, j + 1, problem_.inflight[p]) <= d.memoryBytes)
            ++j;
          if (j == lastEnd)
            continue;
          z3::expr here = isClass_[p][k] && first(p) == int(i);
          solver_.add(z3::implies(here, first(p + 1) <= int(j)));
        }
      }
    }
    z3::params params(ctx_);
    params.set("timeout", unsigned(std::max(1.0, secondsLeft * 1000)));
    if (resourcesPerCheck_ > 0)
      params.set("rlimit", resourcesPerCheck_);
    solver_.set(params);
    z3::check_result answer = solver_.check();
    if (answer != z3::sat) {
      solver_.pop();
      return answer;
    }
    z3::model m = solver_.get_model();
    std::vector<int64_t> firstLayer(stages_), deviceOf(stages_);
    std::vector<size_t> handedOut(classes_.count.size(), 0);
    for (int64_t p = 0; p < stages_; ++p) {
      firstLayer[p] = m.eval(first(p), true).get_numeral_int64();
      for (size_t k = 0; k < classes_.count.size(); ++k)
        if (m.eval(isClass_[p][k], true).is_true())
          deviceOf[p] = classes_.members[k][handedOut[k]++];
    }
    result = evaluatePartition(problem_, std::move(firstLayer), std::move(deviceOf));
    return answer;
  }

private:
  /// First layer of position p as a term; positions 0 and S are fixed numerals.
  z3::expr first(int64_t p) {
    if (p == 0)
      return ctx_.int_val(0);
    if (p == stages_)
      return ctx_.int_val(int(layers_));
    return boundary_[p - 1];
  }

  const PartitionProblem &problem_;
  const DeviceClasses &classes_;
  StageCosts costs_;
  z3::context ctx_;
  z3::solver solver_;
  unsigned resourcesPerCheck_;
  int64_t layers_, stages_;
  std::vector<z3::expr> boundary_; // first layer of positions 1..S-1
  std::vector<std::vector<z3::expr>> isClass_; // [position][class]
};
} // namespace

Partition partitionByZ3(const PartitionProblem &problem, double timeLimitSeconds,
                         unsigned resourcesPerCheck) {
  auto start = std::chrono::steady_clock::now();
  auto secondsLeft = [&] {
    return timeLimitSeconds -
           std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
               .count();
  };
  std::string error = validateProblem(problem);
  if (error.empty() && !problem.alternate.empty())
    error = "positions priced two ways (alternate) are fixed: use the DP";
  if (!error.empty()) {
    Partition r;
    r.error = std::move(error);
    return r;
  }
  // The given order is a valid placement: its DP optimum bounds the search from
  // above, and its error explains an infeasible problem.
  Partition inOrder = partitionByDynamicProgramming(problem);
  DeviceClasses classes = classify(problem.devices);

  StageCosts costs(problem);
  int64_t layers = int64_t(problem.layerSeconds.size());
  std::vector<double> candidates;
  for (int64_t rep : classes.representative)
    for (int64_t i = 0; i < layers; ++i)
      for (int64_t j = i + 1; j <= layers; ++j)
        candidates.push_back(costs.seconds(i, j, problem.devices[rep]));
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()),
                   candidates.end());
  auto indexOf = [&](double seconds) {
    return int64_t(std::upper_bound(candidates.begin(), candidates.end(), seconds) -
                   candidates.begin()) - 1;
  };

  try {
    BoundModel model(problem, classes, resourcesPerCheck);
    Partition best;
    int64_t lo = 0, hi;
    if (inOrder.feasible) {
      best = inOrder;
      hi = indexOf(best.maxStageSeconds);
    } else {
      // The largest candidate bounds no stage: this asks only whether some order
      // of the devices fits in memory.
      hi = int64_t(candidates.size()) - 1;
      z3::check_result answer = model.check(candidates[hi], secondsLeft(), best);
      if (answer != z3::sat) {
        Partition r;
        r.proven = answer == z3::unsat;
        r.error = r.proven ? "no order of the devices fits in memory (given order: " +
                                 inOrder.error + ")"
                           : "Z3 found no placement within the time limit";
        return r;
      }
      hi = indexOf(best.maxStageSeconds);
    }
    // Invariant: `best` achieves candidates[hi]; every bound below lo is refuted.
    while (lo < hi) {
      if (secondsLeft() <= 0)
        break;
      int64_t mid = lo + (hi - lo) / 2;
      Partition found;
      z3::check_result answer = model.check(candidates[mid], secondsLeft(), found);
      if (answer == z3::unknown)
        break;
      if (answer == z3::unsat) {
        lo = mid + 1;
        continue;
      }
      best = std::move(found);
      hi = indexOf(best.maxStageSeconds);
    }
    best.proven = lo >= hi;
    return best;
  } catch (const z3::exception &e) {
    Partition r;
    r.error = std::string("Z3: ") + e.msg();
    return r;
  }
}

} // namespace loom::search
