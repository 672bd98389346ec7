//===- Partition.h - layers onto pipeline stages, exactly -------*- C++ -*-===//
//
// Which layers does each pipeline stage run, and (on a heterogeneous cluster) on
// which device group? The slowest stage paces a 1F1B pipeline, so the objective is
// the largest per-micro-batch stage time, subject to every stage fitting in its
// device's memory:
//
//   stageSeconds[p] = sum(layerSeconds over the stage) / speed(device) + overhead
//   stageBytes[p]   = sum(static) + sum(activation) * inflight[p] <= memoryBytes
//
// Stages hold contiguous, non-empty layer ranges in pipeline order; the embedding
// and the LM head are ordinary (heavier) entries at either end. Position p's device
// group holds `inflight[p]` micro-batches of activations (1F1B: pp - p), which is
// why on mixed clusters the large-memory devices belong at the front.
//
// Two exact solvers:
//  * partitionByDynamicProgramming keeps the devices in the given order: the
//    min-max contiguous-split DP of PipeDream (Narayanan et al., SOSP'19, §3.1) and
//    Alpa's stage slicing (Zheng et al., OSDI'22, §5), with a per-position device
//    speed and memory cap. O(L^2 S), usually far less thanks to pruning.
//  * partitionByZ3 also chooses which device goes to which position (a
//    permutation), as heterogeneous planners such as Cephalo (Guo et al.,
//    arXiv 2411.01075) and Holmes (Yang et al., ICPP'24, arXiv 2312.03549) must.
//    Bisection over the finite set of achievable stage times, one Z3 check per
//    bound; identical devices are one class, so permutations among them are never
//    explored.
//
// Plain C++ with no dependency on the rest of loom; the header is exception-free
// (Z3 stays inside PartitionZ3.cpp).
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SEARCH_PARTITION_H
#define LOOM_SEARCH_PARTITION_H

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace loom::search {

/// One pipeline rank's device group (e.g. the tp GPUs of one type).
struct PartitionDevice {
  std::string name; // "h100", "a100", ...; only used in messages
  /// Throughput relative to the device `layerSeconds` were measured on.
  double speed = 1;
  /// Usable bytes on one GPU of the group. Infinite unless set, so a problem that
  /// only balances time needs no memory figures; 0 really means no memory.
  double memoryBytes = std::numeric_limits<double>::infinity();
};

struct PartitionProblem {
  /// Per micro-batch forward+backward(+weight-gradient) time of each layer on the
  /// reference device. Embedding first, LM head last.
  std::vector<double> layerSeconds;
  /// Parameters + gradients + optimizer state per layer on one GPU; empty = zeros.
  std::vector<double> layerStaticBytes;
  /// Activation bytes per layer per in-flight micro-batch; empty = zeros.
  std::vector<double> layerActivationBytes;
  /// Per pipeline position: micro-batches in flight (1F1B: pp - position).
  std::vector<int64_t> inflight;
  /// One per position. The DP keeps this order; Z3 permutes it.
  std::vector<PartitionDevice> devices;
  /// Per stage per micro-batch (p2p send/receive), added to every stage.
  double stageOverheadSeconds = 0;
  /// Positions that price their layers another way (the pipeline ranks that do
  /// not recompute): per-position flags, and the layers' seconds and activation
  /// bytes there. Empty: every position uses the lists above. Only the DP takes
  /// them, since its positions are fixed.
  std::vector<bool> alternate;
  std::vector<double> alternateLayerSeconds, alternateActivationBytes;
  /// Whether `position` prices its layers by the alternate lists.
  bool alternateAt(int64_t position) const {
    return !alternate.empty() && alternate[size_t(position)];
  }
};

struct Partition {
  bool feasible = false;
  /// The answer (optimum, or that nothing fits) is exact. Always so for the DP;
  /// false from Z3 when the time limit cut the bisection short, in which case the
  /// partition is the best one found.
  bool proven = false;
  /// One line saying why not feasible, e.g. which stage is over memory by how much.
  std::string error;
  /// Per position, the first layer; position p holds [firstLayer[p],
  /// firstLayer[p+1]), the last one up to the number of layers.
  std::vector<int64_t> firstLayer;
  /// Per position, the index into `devices` of the group that runs it.
  std::vector<int64_t> deviceOf;
  std::vector<double> stageSeconds; // per position
  std::vector<double> stageBytes;   // per position, on one GPU of its group
  double maxStageSeconds = 0;       // the objective
};

/// Any contiguous stage's time and memory in O(1), from prefix sums over the
/// layers. Both solvers and evaluatePartition price stages through this, so a
/// partition is never judged by two different roundings.
class StageCosts {
public:
  explicit StageCosts(const PartitionProblem &problem);
  int64_t numLayers() const { return int64_t(seconds_[0].size()) - 1; }
  /// Layers [first, end) on `device`, including the per-stage overhead;
  /// `alternate`: priced by the problem's alternate lists.
  double seconds(int64_t first, int64_t end, const PartitionDevice &device,
                 bool alternate = false) const;
  /// Layers [first, end) at a position holding `inflight` micro-batches.
  double bytes(int64_t first, int64_t end, int64_t inflight, bool alternate = false) const;

private:
  double overhead_;
  // Prefix sums; [1] the alternate pricing (empty without one).
  std::vector<double> seconds_[2], staticBytes_, activationBytes_[2];
};

/// Returns "" for a well-formed problem, else one line naming the defect (sizes
/// that disagree, negative figures, fewer layers than stages, ...).
std::string validateProblem(const PartitionProblem &problem);

/// Prices a given partition: fills stage times, bytes and the maximum; infeasible
/// with a one-line error if a stage exceeds its device's memory. The solvers
/// report their results through this, so every caller sees the same arithmetic.
Partition evaluatePartition(const PartitionProblem &problem,
                            std::vector<int64_t> firstLayer,
                            std::vector<int64_t> deviceOf);

/// `problem` with each run of `width` consecutive layers merged into one (the
/// last run may be shorter): times and bytes add up, so a stage of whole runs
/// costs what its layers do. Deep models are split on runs to keep the solvers'
/// work bounded; run r starts at layer r * width.
PartitionProblem mergeLayers(const PartitionProblem &problem, int64_t width);

/// Exact: contiguous stages, device i at position i, minimum slowest stage subject
/// to memory. If nothing fits, the error takes the split whose worst memory
/// overflow is smallest and names that stage, its bytes and the excess.
Partition partitionByDynamicProgramming(const PartitionProblem &problem);

/// Exact: as the DP, but the devices may be placed at positions in any order.
/// Returns the proven optimum (`proven`) unless a limit stops the bisection
/// first: `resourcesPerCheck` (Z3's deterministic rlimit units per satisfiability
/// check; 0: none) gives the same answer on a busy machine as on an idle one,
/// `timeLimitSeconds` is the wall-clock safety net.
Partition partitionByZ3(const PartitionProblem &problem, double timeLimitSeconds = 10,
                        unsigned resourcesPerCheck = 0);

} // namespace loom::search

#endif // LOOM_SEARCH_PARTITION_H
