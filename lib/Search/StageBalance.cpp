//===- StageBalance.cpp - uneven stages from the cost model ---------------===//

#include "loom/Search/StageBalance.h"

#include <algorithm>

using namespace loom;
using namespace loom::search;

namespace {

/// What one transformer layer costs on one rank, the embedding folded into
/// the first layer and the head into the last (they cannot move stages).
struct LayerCosts {
  std::vector<std::vector<double>> seconds; // [GPU type][layer], per micro-batch
  std::vector<double> staticBytes, activationBytes;
};

LayerCosts priceLayers(const cost::Workload &w, std::span<const cost::ComputeModel> computes) {
  int64_t layers = 0;
  for (const cost::Part &part : w.parts)
    if (part.firstLayer >= 0)
      layers = std::max(layers, part.firstLayer + part.count);
  LayerCosts c;
  c.seconds.assign(computes.size(), std::vector<double>(layers, 0.0));
  c.staticBytes.assign(layers, 0.0);
  c.activationBytes.assign(layers, 0.0);
  for (const cost::Part &grouped : w.parts) {
    cost::Part one = grouped;
    one.count = 1;
    cost::MemoryBreakdown state;
    cost::addStateBytes(state, w, one);
    double bytes = state.params + state.grads + state.optim;
    double act = cost::activationBytes(one, w.recomputeOf(one));
    std::vector<double> secs;
    for (const cost::ComputeModel &compute : computes) {
      cost::RankTime t;
      cost::addPartTime(t, w, one, compute);
      secs.push_back(t.total());
    }
    int64_t first = grouped.firstLayer, count = grouped.count;
    if (first < 0) { // embedding or head: one of them, on an end layer
      first = grouped.kind == cost::PartKind::Embedding ? 0 : layers - 1;
      count = 1;
    }
    for (int64_t l = first; l < first + count; ++l) {
      for (size_t d = 0; d < computes.size(); ++d)
        c.seconds[d][l] += secs[d];
      c.staticBytes[l] += bytes;
      c.activationBytes[l] += act;
    }
  }
  return c;
}

/// The best split with equal middle stages: m layers on each of the pp - 2
/// middle stages, the rest shared by the first and the last stage in any
/// proportion; the least slowest stage, then the least memory on the fullest.
Partition firstLastSplit(const PartitionProblem &problem, int64_t pp) {
  const int64_t layers = int64_t(problem.layerSeconds.size());
  std::vector<int64_t> inOrder(static_cast<size_t>(pp));
  for (int64_t s = 0; s < pp; ++s)
    inOrder[size_t(s)] = s;
  auto worse = [](const Partition &a, const Partition &b) {
    double aBytes = *std::max_element(a.stageBytes.begin(), a.stageBytes.end());
    double bBytes = *std::max_element(b.stageBytes.begin(), b.stageBytes.end());
    return std::make_pair(a.maxStageSeconds, aBytes) > std::make_pair(b.maxStageSeconds, bBytes);
  };
  // Every middle stage holds m >= 1 layers and the ends at least one each; with
  // pp = 2 there is no middle (m = 0 once).
  const int64_t middles = pp - 2, most = middles > 0 ? (layers - 2) / middles : 0;
  Partition best;
  for (int64_t m = middles > 0 ? 1 : 0; m <= most; ++m) {
    int64_t rest = layers - middles * m;
    for (int64_t first = 1; first < rest; ++first) {
      std::vector<int64_t> starts{0};
      for (int64_t s = 1; s < pp; ++s)
        starts.push_back(first + (s - 1) * m);
      Partition p = evaluatePartition(problem, std::move(starts), inOrder);
      if (p.feasible && (!best.feasible || worse(best, p)))
        best = std::move(p);
    }
  }
  return best;
}

/// `out` with the partition's layer counts and stage order, and whether they
/// differ from fromStrategy's even split (layer l on stage l * pp / layers).
StageBalance finish(StageBalance out, const cost::Workload &w, int64_t layers) {
  if (!out.partition.feasible)
    return out;
  const Partition &p = out.partition;
  for (int64_t s = 0; s < w.pp; ++s) {
    int64_t end = s + 1 < w.pp ? p.firstLayer[s + 1] : layers;
    out.stageLayers.push_back(end - p.firstLayer[s]);
  }
  bool identity = true;
  for (int64_t s = 0; s < w.pp; ++s)
    identity &= p.deviceOf[s] == s;
  if (!identity)
    out.stageOrder = p.deviceOf;
  for (int64_t s = 0; s < w.pp && !out.changed; ++s) {
    int64_t first = (s * layers + w.pp - 1) / w.pp;
    out.changed = p.firstLayer[s] != first;
  }
  out.changed |= !identity;
  return out;
}

} // namespace

StageBalance loom::search::balanceStages(const cost::Workload &w,
                                         std::span<const cost::ComputeModel> computes,
                                         const cost::Estimate &even,
                                         const cost::EstimateOptions &options,
                                         StageShapes shapes) {
  const bool permuteDevices = shapes == StageShapes::Reordered;
  StageBalance out;
  if (w.pp < 2 || w.vpp != 1)
    return out;
  // Recomputation on the first ranks only belongs to the positions, not the
  // layers: price every layer with it, and again without for the other ranks.
  const bool partial = w.recomputeRanks > 0 && w.recompute != cost::Recompute::None;
  auto pricedOnEveryRank = [&](cost::Recompute recompute) {
    cost::Workload copy = w; // only for partial recomputation, which is rare
    copy.recomputeRanks = 0;
    copy.recompute = recompute;
    return priceLayers(copy, computes);
  };
  LayerCosts costs = partial ? pricedOnEveryRank(w.recompute) : priceLayers(w, computes);
  int64_t layers = int64_t(costs.staticBytes.size());
  if (layers < w.pp)
    return out;

  PartitionProblem problem;
  problem.layerSeconds = costs.seconds[0]; // reference: GPU type 0
  problem.layerStaticBytes = costs.staticBytes;
  problem.layerActivationBytes = costs.activationBytes;
  if (partial && computes.size() == 1 && !permuteDevices) {
    LayerCosts plain = pricedOnEveryRank(cost::Recompute::None);
    problem.alternateLayerSeconds = plain.seconds[0];
    problem.alternateActivationBytes = plain.activationBytes;
    for (int64_t s = 0; s < w.pp; ++s)
      problem.alternate.push_back(s >= w.recomputeRanks);
  }
  double reference = 0;
  for (double s : costs.seconds[0])
    reference += s;
  // Per-stage bytes the layers do not explain (allowances, communication
  // buffers, ZeRO-3 gathers): taken from the even split, the largest for all.
  double fixedBytes = 0;
  for (int64_t s = 0; s < w.pp; ++s) {
    double layerBytes = 0;
    for (const cost::Part &part : w.parts)
      if (part.stage == s) {
        cost::MemoryBreakdown state;
        cost::addStateBytes(state, w, part);
        layerBytes += state.params + state.grads + state.optim +
                      double(part.count) * cost::activationBytes(part, w.recomputeOf(part)) *
                          double(even.memory[s].inflight);
      }
    fixedBytes = std::max(fixedBytes, even.memory[s].total() - layerBytes);
  }
  for (int64_t s = 0; s < w.pp; ++s) {
    int device = w.stageDevice.empty() ? 0 : w.stageDevice[s];
    double total = 0;
    for (double sec : costs.seconds[device])
      total += sec;
    PartitionDevice d;
    d.name = "rank " + std::to_string(s);
    d.speed = total > 0 ? reference / total : 1.0;
    double capacity = w.stageHbmBytes.empty() ? w.hbmBytes : w.stageHbmBytes[s];
    d.memoryBytes = capacity * (1.0 - options.memory.headroom) - fixedBytes;
    problem.devices.push_back(d);
    problem.inflight.push_back(even.memory[s].inflight);
  }

  if (shapes == StageShapes::FirstLast) {
    out.partition = firstLastSplit(problem, w.pp);
    return finish(std::move(out), w, layers);
  }

  // Z3 starts from the DP's answer and only improves on it. Each check gets a
  // budget of Z3's resource units, so a plan does not depend on how busy the
  // machine is (a wall-clock limit made the stage order vary under load); the
  // time limit is only a safety net. On the A100 + H100 cluster the budget
  // finds the same plans as an unlimited search: Llama 3 70B's whole search
  // took 1.05 s with it, 3.2 s with 0.25 s of wall clock per partition, and
  // 122 s without limits (docs/planner.md).
  constexpr double kZ3SafetySeconds = 2;
  constexpr unsigned kZ3ResourcesPerCheck = 100000;
  // Both solvers grow with the square of the layers. Past kFinestLayers (twice
  // the deepest published LLMs), stages start on runs of consecutive layers, at
  // most kFinestLayers runs, and the split is then priced layer by layer.
  constexpr int64_t kFinestLayers = 256;
  int64_t width = (layers + kFinestLayers - 1) / kFinestLayers;
  if ((layers + width - 1) / width < w.pp)
    width = 1;
  PartitionProblem merged;
  const PartitionProblem &solved = width > 1 ? (merged = mergeLayers(problem, width)) : problem;
  out.partition = permuteDevices
                      ? partitionByZ3(solved, kZ3SafetySeconds, kZ3ResourcesPerCheck)
                      : partitionByDynamicProgramming(solved);
  if (width > 1 && !out.partition.firstLayer.empty()) {
    for (int64_t &first : out.partition.firstLayer)
      first *= width;
    out.partition = evaluatePartition(problem, std::move(out.partition.firstLayer),
                                      std::move(out.partition.deviceOf));
  }
  return finish(std::move(out), w, layers);
}
