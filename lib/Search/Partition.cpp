//===- Partition.cpp - contiguous layer->stage split by dynamic programming ===//
//
// The min-max split of a layer sequence into S contiguous non-empty stages, as in
// PipeDream's partitioner (Narayanan et al., SOSP'19, §3.1) and Alpa's stage
// slicing (Zheng et al., OSDI'22, §5): best[s][j] is the smallest possible slowest
// stage when positions 0..s hold layers [0, j), and
//
//   best[s][j] = min over i of max(best[s-1][i], cost(s, [i, j)))
//
// Position s has its own device (speed, memory) and in-flight count, which is all
// a heterogeneous cluster needs once the device order is fixed; choosing the order
// is partitionByZ3's job.
//
//===----------------------------------------------------------------------===//

#include "loom/Search/Partition.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace loom::search {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(int64_t(1) << 30));
  return buf;
}

std::vector<double> prefixSums(const std::vector<double> &values, size_t n) {
  std::vector<double> sums(n + 1, 0);
  for (size_t i = 0; i < n; ++i)
    sums[i + 1] = sums[i] + (values.empty() ? 0 : values[i]);
  return sums;
}

/// Minimises the largest cost(s, first, end) over all splits of `layers` into
/// `stages` contiguous non-empty ranges; returns the first layer of each stage, or
/// nothing if every split has an infinite (forbidden) stage. `cost` must not
/// decrease as a stage grows at its front: that lets the inner loop stop at the
/// first range that alone is no better than the best found, which removes most of
/// the L^2 S work on balanced instances.
template <typename Cost>
std::vector<int64_t> minMaxSplit(int64_t layers, int64_t stages, Cost cost) {
  auto at = [layers](int64_t s, int64_t j) { return s * (layers + 1) + j; };
  std::vector<double> best(stages * (layers + 1), kInf);
  std::vector<int64_t> from(best.size(), -1);
  // Position s ends at j: it needs s layers before it and leaves one per later stage.
  for (int64_t j = 1; j <= layers - (stages - 1); ++j)
    best[at(0, j)] = cost(0, 0, j);
  for (int64_t s = 1; s < stages; ++s) {
    for (int64_t j = s + 1; j <= layers - (stages - 1 - s); ++j) {
      double b = kInf;
      int64_t arg = -1;
      for (int64_t i = j - 1; i >= s; --i) {
        double c = cost(s, i, j);
        if (c >= b)
          break;
        double v = std::max(best[at(s - 1, i)], c);
        if (v < b) {
          b = v;
          arg = i;
        }
      }
      best[at(s, j)] = b;
      from[at(s, j)] = arg;
    }
  }
  if (best[at(stages - 1, layers)] == kInf)
    return {};
  std::vector<int64_t> first(stages, 0);
  for (int64_t s = stages - 1, j = layers; s > 0; --s)
    j = first[s] = from[at(s, j)];
  return first;
}
} // namespace

StageCosts::StageCosts(const PartitionProblem &problem)
    : overhead_(problem.stageOverheadSeconds) {
  size_t n = problem.layerSeconds.size();
  seconds_[0] = prefixSums(problem.layerSeconds, n);
  staticBytes_ = prefixSums(problem.layerStaticBytes, n);
  activationBytes_[0] = prefixSums(problem.layerActivationBytes, n);
  if (!problem.alternate.empty()) {
    seconds_[1] = prefixSums(problem.alternateLayerSeconds, n);
    activationBytes_[1] = prefixSums(problem.alternateActivationBytes, n);
  }
}

double StageCosts::seconds(int64_t first, int64_t end, const PartitionDevice &device,
                           bool alternate) const {
  const std::vector<double> &sums = seconds_[alternate ? 1 : 0];
  return (sums[end] - sums[first]) / device.speed + overhead_;
}

double StageCosts::bytes(int64_t first, int64_t end, int64_t inflight, bool alternate) const {
  const std::vector<double> &act = activationBytes_[alternate ? 1 : 0];
  return staticBytes_[end] - staticBytes_[first] + (act[end] - act[first]) * double(inflight);
}

std::string validateProblem(const PartitionProblem &p) {
  size_t layers = p.layerSeconds.size(), stages = p.devices.size();
  if (stages == 0)
    return "no devices: a pipeline needs at least one stage";
  if (p.inflight.size() != stages)
    return std::to_string(p.inflight.size()) + " in-flight counts for " +
           std::to_string(stages) + " devices: give one per pipeline position";
  if (layers < stages)
    return std::to_string(layers) + " layers cannot fill " + std::to_string(stages) +
           " stages: every stage needs at least one layer";
  auto sizeOk = [layers](const std::vector<double> &v) {
    return v.empty() || v.size() == layers;
  };
  if (!sizeOk(p.layerStaticBytes) || !sizeOk(p.layerActivationBytes))
    return "per-layer byte lists must be empty or have one entry per layer (" +
           std::to_string(layers) + ")";
  if (!p.alternate.empty() &&
      (p.alternate.size() != stages || p.alternateLayerSeconds.size() != layers ||
       !sizeOk(p.alternateActivationBytes)))
    return "an alternate pricing needs one flag per position and one time per layer";
  // The DP's early exit and the Z3 model's end-of-stage bounds both rely on a
  // stage never getting cheaper as it grows.
  for (const std::vector<double> *v :
       {&p.layerSeconds, &p.layerStaticBytes, &p.layerActivationBytes,
        &p.alternateLayerSeconds, &p.alternateActivationBytes})
    for (size_t i = 0; i < v->size(); ++i)
      if (!(std::isfinite((*v)[i]) && (*v)[i] >= 0))
        return "layer " + std::to_string(i) +
               " has a negative or non-finite time or byte count";
  for (size_t s = 0; s < stages; ++s)
    if (p.inflight[s] < 1)
      return "position " + std::to_string(s) + " has " +
             std::to_string(p.inflight[s]) +
             " micro-batches in flight: it needs at least one";
  for (const PartitionDevice &d : p.devices)
    if (!(d.speed > 0 && std::isfinite(d.speed)) || !(d.memoryBytes >= 0))
      return "device '" + d.name + "' needs a positive speed and non-negative memory";
  if (!(p.stageOverheadSeconds >= 0 && std::isfinite(p.stageOverheadSeconds)))
    return "stage overhead must be a non-negative number of seconds";
  return "";
}

Partition evaluatePartition(const PartitionProblem &problem,
                            std::vector<int64_t> firstLayer,
                            std::vector<int64_t> deviceOf) {
  Partition r;
  r.error = validateProblem(problem);
  if (!r.error.empty())
    return r;
  int64_t layers = int64_t(problem.layerSeconds.size());
  int64_t stages = int64_t(problem.devices.size());
  if (int64_t(firstLayer.size()) != stages || int64_t(deviceOf.size()) != stages) {
    r.error = "a partition needs a first layer and a device for each of the " +
              std::to_string(stages) + " positions";
    return r;
  }
  std::vector<bool> used(stages, false);
  for (int64_t s = 0; s < stages; ++s) {
    int64_t end = s + 1 < stages ? firstLayer[s + 1] : layers;
    if ((s == 0 && firstLayer[0] != 0) || firstLayer[s] >= end || end > layers) {
      r.error = "stage " + std::to_string(s) +
                " does not hold a non-empty range continuing the previous stage";
      return r;
    }
    int64_t d = deviceOf[s];
    if (d < 0 || d >= stages || used[d]) {
      r.error = "device " + std::to_string(d) + " at position " + std::to_string(s) +
                " is out of range or already placed";
      return r;
    }
    used[d] = true;
  }

  StageCosts costs(problem);
  r.firstLayer = std::move(firstLayer);
  r.deviceOf = std::move(deviceOf);
  double worstOver = 0;
  for (int64_t s = 0; s < stages; ++s) {
    int64_t end = s + 1 < stages ? r.firstLayer[s + 1] : layers;
    const PartitionDevice &d = problem.devices[r.deviceOf[s]];
    r.stageSeconds.push_back(costs.seconds(r.firstLayer[s], end, d, problem.alternateAt(s)));
    r.stageBytes.push_back(costs.bytes(r.firstLayer[s], end, problem.inflight[s], problem.alternateAt(s)));
    r.maxStageSeconds = std::max(r.maxStageSeconds, r.stageSeconds.back());
    // Name the stage furthest over, not the first: that is the one to fix.
    double over = r.stageBytes.back() - d.memoryBytes;
    if (over > worstOver) {
      worstOver = over;
      r.error = "stage " + std::to_string(s) + " (" + d.name + ", layers " +
                std::to_string(r.firstLayer[s]) + "-" + std::to_string(end - 1) +
                ") needs " + gib(r.stageBytes.back()) + " but has " +
                gib(d.memoryBytes) + " (" + gib(over) + " over)";
    }
  }
  r.feasible = r.error.empty();
  return r;
}

PartitionProblem mergeLayers(const PartitionProblem &problem, int64_t width) {
  PartitionProblem merged = problem;
  if (width <= 1)
    return merged;
  auto merge = [width](const std::vector<double> &v) {
    std::vector<double> runs;
    runs.reserve((v.size() + size_t(width) - 1) / size_t(width));
    for (size_t i = 0; i < v.size(); ++i) {
      if (i % size_t(width) == 0)
        runs.push_back(0);
      runs.back() += v[i];
    }
    return runs;
  };
  merged.layerSeconds = merge(problem.layerSeconds);
  merged.layerStaticBytes = merge(problem.layerStaticBytes);
  merged.layerActivationBytes = merge(problem.layerActivationBytes);
  merged.alternateLayerSeconds = merge(problem.alternateLayerSeconds);
  merged.alternateActivationBytes = merge(problem.alternateActivationBytes);
  return merged;
}

Partition partitionByDynamicProgramming(const PartitionProblem &problem) {
  if (std::string error = validateProblem(problem); !error.empty()) {
    Partition r;
    r.error = std::move(error);
    return r;
  }
  int64_t layers = int64_t(problem.layerSeconds.size());
  int64_t stages = int64_t(problem.devices.size());
  std::vector<int64_t> order(stages);
  for (int64_t s = 0; s < stages; ++s)
    order[s] = s;
  StageCosts costs(problem);

  std::vector<int64_t> first =
      minMaxSplit(layers, stages, [&](int64_t s, int64_t i, int64_t j) {
        const PartitionDevice &d = problem.devices[s];
        if (costs.bytes(i, j, problem.inflight[s], problem.alternateAt(s)) > d.memoryBytes)
          return kInf;
        return costs.seconds(i, j, d, problem.alternateAt(s));
      });
  if (!first.empty()) {
    Partition r = evaluatePartition(problem, std::move(first), std::move(order));
    r.proven = true;
    return r;
  }

  // Nothing fits. The split that minimises the worst overflow says how far from
  // fitting the model is; its worst stage is the one the message names. Overflow
  // can be negative (room to spare) but never infinite here: some stage overflows.
  first = minMaxSplit(layers, stages, [&](int64_t s, int64_t i, int64_t j) {
    return costs.bytes(i, j, problem.inflight[s], problem.alternateAt(s)) - problem.devices[s].memoryBytes;
  });
  Partition r = evaluatePartition(problem, std::move(first), std::move(order));
  r.feasible = false;
  r.proven = true;
  r.error = "no split fits in memory; in the least overfull one, " + r.error;
  return r;
}

} // namespace loom::search
