//===- Compute.h - time of a layer's forward and backward passes -*- C++ -*-===//
//
// FLOPs of each transformer part, split into forward (F), input-gradient (B)
// and weight-gradient (W) passes as zero-bubble pipelines need, and their time:
// GEMMs at an achievable fraction of peak that depends on their shape (small
// per-rank GEMMs after tensor/expert splitting run far below peak), memory-bound
// elementwise work (norms, activations, softmax, dropout) at HBM bandwidth.
// Plain C++: seconds, FLOPs, bytes.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_COSTMODEL_COMPUTE_H
#define LOOM_COSTMODEL_COMPUTE_H

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <string>
#include <string_view>
#include <vector>

namespace loom::spec {
class GpuType;
} // namespace loom::spec

namespace loom::cost {

struct GemmShape {
  int64_t m = 0, n = 0, k = 0; // (m x k) * (k x n), 2*m*n*k FLOPs
  double flops() const { return 2.0 * double(m) * double(n) * double(k); }
};

/// Achievable throughput of one GPU type.
class ComputeModel {
public:
  /// The built-in curve for a catalog GPU (a100-40g, a100-80g, h100-sxm, h200,
  /// b200, mi300x), at `peakTflops` for the training dtype and `hbmGBps` HBM
  /// bandwidth. Unknown GPUs get a generic curve scaled to their peak.
  static ComputeModel forGpu(std::string_view gpu, double peakTflops, double hbmGBps);
  /// The curve described by `gpu`'s own fields (a catalog entry or a GPU type
  /// defined in a cluster spec).
  static ComputeModel forGpu(const spec::GpuType &gpu, double peakTflops, double hbmGBps);

  /// Overrides from a CSV of measurements: header `m,n,k,seconds`, one GEMM a
  /// line. A GEMM whose (m,n,k) is listed takes the measured time; others are
  /// scaled by the efficiency of the nearest measured shape. Returns an empty
  /// string, or a one-line error naming the file and line (the model is then
  /// unchanged). A later call replaces the earlier calibration.
  std::string loadCalibrationCsv(const std::string &path);

  /// Fraction of peak a GEMM of this shape reaches, in (0, 1] (0 for an empty
  /// GEMM); always flops / (peak * gemmSeconds).
  double gemmEfficiency(const GemmShape &shape) const;
  double gemmSeconds(const GemmShape &shape) const;
  /// `groups` independent GEMMs of one shape in one launch (a grouped or
  /// batched GEMM: the experts of an MoE layer, the heads of attention). Their
  /// tiles share the GPU, so many small GEMMs fill it where one would not.
  double groupedGemmSeconds(const GemmShape &shape, int64_t groups) const;
  /// The same matmuls inside a fused kernel (flash attention): a tile is a
  /// block of rows by all of n (one head), operands stay on chip, so no HBM
  /// bound, and the loop over K carries state (the running softmax), so it is
  /// never split across SMs. No launch latency: the kernel pays it once.
  double fusedGemmSeconds(const GemmShape &shape, int64_t groups) const;
  /// One fused attention kernel: its matmuls' time, the `exponentials` of its
  /// softmax, which run on the special-function units, overlapped with the
  /// matmuls where the GPU's kernels do so (FlashAttention-3 and later), after
  /// them where they do not (FlashAttention-2), and `bytes` of HBM traffic
  /// streamed underneath; plus one launch.
  double fusedAttentionSeconds(double matmulSeconds, double exponentials, double bytes) const;
  /// Time of memory-bound work moving `bytes` through HBM.
  double memorySeconds(double bytes) const;
  double rowReductionSeconds(double bytes) const;
  /// Offloaded optimizer state: `bytes` over this GPU's host link, and a CPU
  /// step moving `bytes` through this GPU's share of host memory bandwidth.
  double hostLinkSeconds(double bytes) const { return bytes / hostLinkBytesPerS_; }
  double hostMemorySeconds(double bytes) const { return bytes / hostMemoryBytesPerS_; }
  /// The fixed time of one kernel on the GPU (launch gap, ramp-up and drain),
  /// included in gemmSeconds; elementwise kernels pay it too.
  double kernelLatency() const { return launchLatency_; }

  double peakFlops() const { return peakFlops_; }
  double hbmBytesPerSecond() const { return hbmBytesPerS_; }
  /// Seconds of compute lost while `overlapped` seconds of communication run
  /// beside it: the concurrent kernels run overlapSlowdown times slower.
  double overlapPenalty(double overlapped) const {
    return overlapped * (1.0 - 1.0 / overlapSlowdown_);
  }
  /// Seconds `comm` adds when it may hide behind `window` seconds of compute:
  /// what does not fit, plus the slowdown of the compute it runs beside.
  double exposedSeconds(double comm, double window) const {
    double hidden = comm < window ? comm : window;
    return (comm - hidden) + overlapPenalty(hidden);
  }

private:
  /// A measured GEMM for the nearest-shape search: log dimensions and
  /// model seconds / measured seconds.
  struct CalibrationPoint {
    double logM, logN, logK, speedup;
  };

  /// Seconds of a launch by the curve: the library's best tiling and K split,
  /// each bounded below by its HBM traffic, plus the launch latency; or, when
  /// `fused` (matmuls inside a kernel), the math of its best tiling alone.
  double modelSeconds(const GemmShape &shape, int64_t groups, bool fused) const;
  /// modelSeconds corrected by the calibration: a measured shape's own time,
  /// else the curve scaled by the nearest measured shape's speedup.
  double launchSeconds(const GemmShape &shape, int64_t groups, bool fused) const;
  double uncachedLaunchSeconds(const GemmShape &shape, int64_t groups, bool fused) const;

  double peakFlops_ = 0, hbmBytesPerS_ = 0;
  double hostLinkBytesPerS_ = 32e9, hostMemoryBytesPerS_ = 50e9;
  // Curve parameters and calibration points are private to Compute.cpp.
  double maxEfficiency_ = 0, launchLatency_ = 0;
  int64_t sms_ = 0, tileM_ = 0, tileN_ = 0; // wave size and the library's largest tile
  double expPerSecond_ = 0;                 // special-function unit throughput
  bool overlapsSoftmax_ = false;
  double overlapSlowdown_ = 1;
  std::map<std::tuple<int64_t, int64_t, int64_t>, double> measured_;
  std::vector<CalibrationPoint> calibration_;
  /// launchSeconds by shape, direct-mapped: a search prices the same GEMMs
  /// for many tuples (ZeRO stages, recomputation, schedules). Shared by
  /// copies, which price alike; not thread-safe.
  struct LaunchCache;
  mutable std::shared_ptr<LaunchCache> cache_;
};

/// One rank's share of a transformer part for one micro-batch.
struct PartShape {
  int64_t microBatch = 1, seq = 0, hidden = 0;
  int64_t heads = 0, kvHeads = 0, headDim = 0; // attention (0: heads, hidden/heads)
  // MLA (DeepSeek-V2/V3) when kvLoraRank > 0: headDim is then the no-rope
  // query/key head width; queries come through a qLoraRank bottleneck (0: a
  // direct projection), keys and values through kvLoraRank, and ropeHeadDim
  // extra query/key width carries positions; values are vHeadDim wide (0:
  // headDim).
  int64_t qLoraRank = 0, kvLoraRank = 0, ropeHeadDim = 0, vHeadDim = 0;
  int64_t ffn = 0;                             // MLP or one expert
  bool gated = false;                          // SwiGLU/GeGLU: 3 matrices
  int64_t experts = 0, topK = 0, sharedExperts = 0; // MoE
  double capacityFactor = 0;                   // MoE token capacity per expert (0: dropless)
  int64_t vocab = 0;                           // embedding / head
  int64_t tp = 1, cp = 1, ep = 1;              // splits this rank sees
  bool sequenceParallel = false;
  bool flashAttention = true;                  // no s^2 scores kept or moved
  bool dropout = false;                        // on attention probabilities and block outputs
  bool inBias = false, outBias = false;        // biases on the input and output projections
  int64_t bytesPerElement = 2;
};

/// FLOPs and seconds of one pass of one part on one rank.
struct PassCost {
  double f = 0, b = 0, w = 0;             // seconds: forward, input grad, weight grad
  double flopsF = 0, flopsB = 0, flopsW = 0;
  /// The attention core's share of f and b (softmax(QK^T)V and its
  /// gradients): what ring attention's key/value exchange can hide behind.
  double coreF = 0, coreB = 0;
  /// The FLOPs of the core's forward (selective recomputation repeats them).
  double coreFlopsF = 0;
  /// The column-parallel linear's (QKV, fc1) input- and weight-gradient
  /// GEMMs, which asynchronous tensor-parallel communication hides behind
  /// (Workload::syncTpBackward); 0 where a part has none.
  double columnB = 0, columnW = 0;
};

PassCost attentionCost(const ComputeModel &model, const PartShape &shape);
PassCost mlpCost(const ComputeModel &model, const PartShape &shape);
PassCost moeCost(const ComputeModel &model, const PartShape &shape);
/// Output projection to the vocabulary, softmax and cross-entropy.
PassCost headCost(const ComputeModel &model, const PartShape &shape);

} // namespace loom::cost

#endif // LOOM_COSTMODEL_COMPUTE_H
