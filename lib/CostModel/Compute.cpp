//===- Compute.cpp - time of a layer's forward and backward passes --------===//
//
// GEMM time. A GEMM runs as tiles of its output, one thread block per SM,
// each tile looping over K [MMB §2]. Its math runs at
//
//   peak * maxEfficiency * padding * occupancy
//
//   padding    useful share of the tiles: m*n over the tiles' area, the tile
//              quantization of [MMB §3.1];
//   occupancy  tiles (or K splits of them) over the SM slots of the waves
//              that run them, the wave quantization of [MMB §3.2]: one tile
//              past a full wave costs a whole extra wave.
//
// The library picks the fastest of its largest tile and a square one half as
// big [MMB §2.3 lists both], splitting K when too few tiles fill the SMs
// (split-K, as cuBLAS does for narrow GEMMs; the splits' fp32 partial sums
// cost HBM traffic). The GEMM cannot beat its HBM traffic (A, B and C once
// each), and pays it on top of the math when its K loop is too short to
// pipeline; every kernel pays a fixed latency (launch gap, ramp-up, drain).
// That latency is fitted to the square-size curve of [ZZC]; maxEfficiency is
// then set so the curve passes through a published measurement of a large
// GEMM on each GPU (GpuType.gemm_8192_efficiency in the catalog,
// lib/Spec/catalog/gpus.yaml), sustained where one is published ([FRYER] on
// H100: short bursts run up to 9% faster than a GPU held at its power limit).
// No per-configuration factor enters.
// Elementwise work runs at an achievable fraction of HBM bandwidth [NVF];
// kernels that reduce along rows at a lower one [QUACK, PT87445].
//
// Flash attention [FA2] is the same tiling with a block of queries by the
// whole head as its tile and the keys as its loop, which it never splits. Its
// scores stay on chip; their exponentials run on the special-function units,
// 128 (A100) to 256 (H100) times slower than the tensor cores [CUDA, FA3]:
// after the matmuls in FlashAttention-2, hidden behind them from
// FlashAttention-3 on [FA3].
//
// Per-part costs split each pass as zero-bubble pipelines need [ZB]: F the
// forward, B the input gradients (for every weight GEMM one GEMM of the same
// FLOPs, plus all of the attention core's backward, which has no weights),
// W the weight gradients (one GEMM per weight matrix). Forward FLOPs of a GPT
// layer come out as 24bsh^2 + 4bs^2h [NAR21 §5.1] split over the tp ranks.
// Causal masking is not used to skip score blocks: the counts are the
// standard model FLOPs.
//
// Sources:
//  [MMB]   NVIDIA, "Matrix Multiplication Background User's Guide"
//          (DU-09799-001): tiled GEMMs, cuBLAS tile sizes, tile and wave
//          quantization.
//  [CUT1025] NVIDIA/cutlass issue #1025 (2023): kernel names such as
//          ..._128x128_32x4_... (CUTLASS) and ..._stages_64x6_... (cuBLAS)
//          give the k-block depth and the number of pipeline stages.
//  [HE24]  Horace He, "Strangely, Matrix Multiplications on GPUs Run Faster
//          When Given 'Predictable' Data!", thonking.ai, 2024: cuBLAS 8192^3
//          on A100 with random inputs, 258 TFLOP/s.
//  [FAST]  pranjalssh/fast.cu README, "Handwritten H100 matmul kernels": H100
//          SXM, bf16, N(0,1) inputs, cuBLAS 8192^3 797.8 TFLOP/s (eight calls
//          after a 5 s rest: a burst); its best kernels use 128x256 tiles
//          (m64n256k16 wgmma).
//  [FRYER] huggingface/gpu-fryer README (commit 2b6fb06): cuBLAS 8192^3 bf16
//          on every GPU of an 8 x H100 80GB HBM3 node for 60 s, ~730 TFLOP/s:
//          the rate at the power limit, which training runs at. H100's anchor.
//  [ZZC]   zzc0721/torch-performance-test-data issue #79, H100 80GB HBM3,
//          torch 2.7, bf16 square matmuls: 2048^3 676.59, 8192^3 797.51
//          TFLOP/s.
//  [MAMF]  Stas Bekman, "Machine Learning Engineering",
//          compute/accelerator/README.md: Maximum Achievable Matmul FLOPS
//          table, bf16, best shape, mean of 100 iterations (B200 SXM 1745.0 of
//          2250, MI300X 668.4 of 1300, and "H200 is the same" as H100 SXM);
//          SM counts (A100 108, H100 132).
//  [CNC]   Chips and Cheese, "Nvidia's B200: Keeping the CUDA Juggernaut
//          Rolling", 2025: 74 SMs enabled per die, 148 per GPU.
//  [AMD]   AMD Instinct MI300X data sheet: 304 compute units.
//  [NVF]   NVIDIA developer forums, "Trouble to Reach Peak Bandwidth of A100":
//          a streaming read kernel reaches 1.80 of 2.04 TB/s (88%, confirmed
//          by Nsight Compute); the thread cites a GTC talk where no kernel
//          passed ~90%.
//  [QUACK] Guo, Zadouri, Dao, "Getting Memory-bound Kernels to
//          Speed-of-Light", Princeton SysML blog, 2025: on H100, reduction
//          kernels near speed of light are 33-50% faster than torch.compile
//          and Liger.
//  [PT87445] pytorch/pytorch PR #87445, "Layer norm backward speed gain with
//          warp shuffles": A100 fp16 LayerNorm forward + backward, e.g.
//          8192x4096 in 509 us, 8192x3072 in 347 us.
//  [NAR21] Narayanan et al., "Efficient Large-Scale Language Model Training
//          on GPU Clusters Using Megatron-LM", SC'21 (arXiv 2104.04473).
//  [FA2]   Dao, "FlashAttention-2" (arXiv 2307.08691), §3: the forward runs
//          blocks of queries over all keys; the backward runs blocks of keys
//          over all queries and recomputes the scores (5 matmuls, forward 2).
//  [FA3]   Shah et al., "FlashAttention-3" (arXiv 2407.08608), §3.1: H100
//          SXM5 does 989 TFLOPS of FP16 matmul but 3.9 TFLOPS of special
//          functions such as exp; pingpong scheduling overlaps one warpgroup's
//          softmax with another's GEMMs.
//  [CUDA]  NVIDIA CUDA C++ Programming Guide, arithmetic instruction
//          throughput: 16 exp2 results per clock per SM.
//  [ZB]    Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024.
//
// The planner prices parts millions of times: nothing here allocates.
//
//===----------------------------------------------------------------------===//

#include "loom/CostModel/Compute.h"

#include "loom/Spec/Spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <utility>

using namespace loom::cost;

namespace {

/// What a GPU's curve is built from: the catalog's GpuType fields (sources
/// beside each figure in lib/Spec/catalog/gpus.yaml).
struct GpuCurve {
  int64_t sms;          // SMs (CUs): tiles per wave
  int64_t tileM, tileN; // the library's largest output tile
  double anchor;        // measured efficiency of an 8192^3 bf16 GEMM
  double expPerSecond;  // softmax exponentials per second (0: peak / 256)
  bool overlapsSoftmax; // its attention kernels hide them behind the matmuls
};

// GPUs whose spec gives no curve: an H100-like layout at the median efficiency
// of [MAMF]'s twelve bf16 rows (77.6% and 78.6% either side of the middle).
constexpr GpuCurve kGeneric = {132, 128, 256, 0.78, 0, true};

GpuCurve curveOf(const loom::spec::GpuType &gpu) {
  if (gpu.sms() == 0 || gpu.gemm_8192_efficiency() <= 0)
    return kGeneric;
  return {int64_t(gpu.sms()), int64_t(gpu.gemm_tile_m() ? gpu.gemm_tile_m() : kGeneric.tileM),
          int64_t(gpu.gemm_tile_n() ? gpu.gemm_tile_n() : kGeneric.tileN),
          gpu.gemm_8192_efficiency(), gpu.exp_per_second(), gpu.attention_overlaps_softmax()};
}

constexpr int64_t kAnchorDim = 8192;
// Seconds every kernel pays. [ZZC]'s H100 squares take 25.4 us (2048^3),
// 174.3 us (4096^3) and 1.379 ms (8192^3); all fill the SMs alike (0.97), so
// time = flops / rate + latency, and the least-squares fit is 4 us (it then
// gives 677, 782 and 798 TFLOP/s). A latency, not a throughput: taken for
// every GPU.
constexpr double kLaunchLatency = 4e-6;
// Fraction of HBM bandwidth streaming kernels reach [NVF].
constexpr double kHbmFraction = 0.88;
// Kernels that reduce along rows (norms, softmax, the loss's max and sum)
// reach less: production kernels of that kind (torch.compile's and Liger's
// RMSNorm, softmax and cross-entropy) run 33-50% slower than ones at ~90% of
// bandwidth [QUACK], i.e. at 0.60-0.68; PyTorch's fp16 LayerNorm forward and
// backward (14 bytes an element in three kernels) moves 0.92-1.02 TB/s on an
// A100 [PT87445], 0.59-0.66 of the 40 GB part's 1.555 TB/s. The low end of
// both.
constexpr double kRowReductionFraction = 0.6;
// GEMM operands are the training dtype (bf16); only the HBM bound uses it.
// Split-K partial sums are fp32.
constexpr double kOperandBytes = 2, kPartialBytes = 4;
// A K split shorter than one k-block of a tile pipeline (64 deep in CUTLASS's
// bf16 tiles) has nothing to pipeline.
constexpr int64_t kMinSplitDepth = 64;
// A K loop no longer than a pipeline's prologue has no steady state: cuBLAS's
// Ampere tensor-core kernels stage 3 to 6 k-blocks of 32 or 64 ahead of the
// math (their names end in stages_64x3, stages_32x4 [CUT1025]), so the first
// two 64-deep blocks load before any math starts. A GEMM whose K (or K
// split) fits in them - the attention scores Q K^T and dP = dO V^T, whose K
// is a head - loads, multiplies and stores its tiles back to back: math plus
// HBM time rather than the larger of the two.
constexpr int64_t kPipelineDepth = 2 * kMinSplitDepth;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

} // namespace

//===----------------------------------------------------------------------===//
// ComputeModel
//===----------------------------------------------------------------------===//

ComputeModel ComputeModel::forGpu(std::string_view gpu, double peakTflops, double hbmGBps) {
  const spec::GpuType *known = spec::findCatalogGpu(gpu);
  spec::GpuType unknown;
  return forGpu(known ? *known : unknown, peakTflops, hbmGBps);
}

ComputeModel ComputeModel::forGpu(const spec::GpuType &gpu, double peakTflops, double hbmGBps) {
  const GpuCurve curve = curveOf(gpu);

  ComputeModel model;
  model.peakFlops_ = peakTflops * 1e12;
  model.hbmBytesPerS_ = hbmGBps * 1e9;
  model.sms_ = curve.sms;
  model.tileM_ = curve.tileM;
  model.tileN_ = curve.tileN;
  model.expPerSecond_ = curve.expPerSecond > 0 ? curve.expPerSecond : model.peakFlops_ / 256;
  model.overlapsSoftmax_ = curve.overlapsSoftmax;
  // Pass through the anchor: the 8192^3 GEMM is compute-bound, so its
  // measured time less the latency is its math at maxEfficiency.
  GemmShape anchor{kAnchorDim, kAnchorDim, kAnchorDim};
  model.maxEfficiency_ = 1;
  double unitMath = model.modelSeconds(anchor, 1, /*fused=*/false);
  double measured = anchor.flops() / (model.peakFlops_ * curve.anchor);
  model.maxEfficiency_ = std::min(1.0, unitMath / (measured - kLaunchLatency));
  model.launchLatency_ = kLaunchLatency;
  model.overlapSlowdown_ = std::max(1.0, gpu.overlap_slowdown());
  if (gpu.host_link_gbytes_per_s() > 0)
    model.hostLinkBytesPerS_ = gpu.host_link_gbytes_per_s() * 1e9;
  if (gpu.host_memory_gbytes_per_s() > 0)
    model.hostMemoryBytesPerS_ = gpu.host_memory_gbytes_per_s() * 1e9;
  return model;
}

double ComputeModel::modelSeconds(const GemmShape &shape, int64_t groups, bool fused) const {
  const double g = double(groups), m = double(shape.m), n = double(shape.n), k = double(shape.k);
  const double mathAtPeak = shape.flops() * g / (peakFlops_ * maxEfficiency_);
  const double operands = kOperandBytes * g * (m * k + k * n + m * n);
  const int64_t square = std::min(tileM_, tileN_);
  std::pair<int64_t, int64_t> tilings[] = {{tileM_, tileN_}, {square, square}};
  int candidates = 2;
  if (fused) {
    // An attention kernel's tile is a block of queries by the whole head.
    tilings[0] = {square, shape.n};
    candidates = 1;
  }
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < candidates; ++i) {
    auto [tm, tn] = tilings[i];
    int64_t rows = ceilDiv(shape.m, tm), cols = ceilDiv(shape.n, tn);
    double padding = m * n / (double(rows * tm) * double(cols * tn));
    int64_t tiles = groups * rows * cols;
    for (int64_t splits = 1;; splits *= 2) {
      int64_t units = tiles * splits;
      double occupancy = double(units) / double(ceilDiv(units, sms_) * sms_);
      double seconds = mathAtPeak / (padding * occupancy);
      if (!fused) {
        double partials = splits > 1 ? 2 * kPartialBytes * double(splits) * g * m * n : 0;
        double memory = memorySeconds(operands + partials);
        seconds = shape.k <= kPipelineDepth * splits ? seconds + memory : std::max(seconds, memory);
      }
      best = std::min(best, seconds);
      // More splits help only while a wave has idle SMs; a fused kernel's
      // loop carries state and is never split.
      if (fused || 2 * units > sms_ || shape.k < 2 * splits * kMinSplitDepth)
        break;
    }
  }
  return fused ? best : best + launchLatency_;
}

struct ComputeModel::LaunchCache {
  struct Entry {
    int64_t m = 0, n = 0, k = 0, groups = 0;
    bool fused = false;
    double seconds = 0;
  };
  static constexpr size_t kSize = 4096; // a power of two
  Entry entries[kSize];
};

double ComputeModel::launchSeconds(const GemmShape &shape, int64_t groups, bool fused) const {
  double flops = shape.flops() * double(groups);
  if (flops <= 0)
    return 0;
  if (!cache_)
    cache_ = std::make_shared<LaunchCache>();
  uint64_t h = uint64_t(shape.m) * 0x9E3779B97F4A7C15ull ^ uint64_t(shape.n) * 0xC2B2AE3D27D4EB4Full ^
               uint64_t(shape.k) * 0x165667B19E3779F9ull ^ uint64_t(groups) * 0x27D4EB2F165667C5ull ^
               uint64_t(fused);
  LaunchCache::Entry &slot = cache_->entries[(h ^ (h >> 29)) & (LaunchCache::kSize - 1)];
  if (slot.groups == groups && slot.m == shape.m && slot.n == shape.n && slot.k == shape.k &&
      slot.fused == fused)
    return slot.seconds;
  double seconds = uncachedLaunchSeconds(shape, groups, fused);
  slot = {shape.m, shape.n, shape.k, groups, fused, seconds};
  return seconds;
}

double ComputeModel::uncachedLaunchSeconds(const GemmShape &shape, int64_t groups,
                                           bool fused) const {
  double flops = shape.flops() * double(groups);
  if (groups == 1 && !fused && !measured_.empty()) {
    auto it = measured_.find({shape.m, shape.n, shape.k});
    if (it != measured_.end())
      return it->second;
  }
  double seconds = modelSeconds(shape, groups, fused);
  if (!calibration_.empty()) {
    double lm = std::log(double(shape.m)), ln = std::log(double(shape.n)),
           lk = std::log(double(shape.k));
    const CalibrationPoint *nearest = nullptr;
    double nearestDistance = std::numeric_limits<double>::infinity();
    for (const CalibrationPoint &p : calibration_) {
      double d = (lm - p.logM) * (lm - p.logM) + (ln - p.logN) * (ln - p.logN) +
                 (lk - p.logK) * (lk - p.logK);
      if (d < nearestDistance) {
        nearestDistance = d;
        nearest = &p;
      }
    }
    seconds /= nearest->speedup;
  }
  // A measurement faster than the model must not push a GEMM past peak.
  return std::max(seconds, flops / peakFlops_);
}

double ComputeModel::gemmSeconds(const GemmShape &shape) const {
  return launchSeconds(shape, 1, /*fused=*/false);
}

double ComputeModel::groupedGemmSeconds(const GemmShape &shape, int64_t groups) const {
  return launchSeconds(shape, groups, /*fused=*/false);
}

double ComputeModel::fusedGemmSeconds(const GemmShape &shape, int64_t groups) const {
  return launchSeconds(shape, groups, /*fused=*/true);
}

double ComputeModel::fusedAttentionSeconds(double matmulSeconds, double exponentials,
                                           double bytes) const {
  double softmax = exponentials / expPerSecond_;
  double compute = overlapsSoftmax_ ? std::max(matmulSeconds, softmax) : matmulSeconds + softmax;
  return std::max(compute, memorySeconds(bytes)) + launchLatency_;
}

double ComputeModel::gemmEfficiency(const GemmShape &shape) const {
  double seconds = gemmSeconds(shape);
  return seconds > 0 ? shape.flops() / (peakFlops_ * seconds) : 0;
}

double ComputeModel::memorySeconds(double bytes) const {
  return bytes / (hbmBytesPerS_ * kHbmFraction);
}

double ComputeModel::rowReductionSeconds(double bytes) const {
  return bytes / (hbmBytesPerS_ * kRowReductionFraction);
}

std::string ComputeModel::loadCalibrationCsv(const std::string &path) {
  std::ifstream in(path);
  if (!in)
    return fmt::format("{}: cannot open calibration file", path);

  // Fields of one line, spaces around them and a trailing CR dropped.
  auto split = [](std::string_view line, std::string_view(&fields)[5]) {
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    int count = 0;
    while (count < 5) {
      size_t comma = line.find(',');
      std::string_view field = line.substr(0, comma);
      field.remove_prefix(std::min(field.find_first_not_of(' '), field.size()));
      field.remove_suffix(field.size() - std::min(field.find_last_not_of(' ') + 1, field.size()));
      fields[count++] = field;
      if (comma == std::string_view::npos)
        break;
      line.remove_prefix(comma + 1);
    }
    return count;
  };

  std::string line;
  std::string_view fields[5];
  std::getline(in, line);
  if (split(line, fields) != 4 || fields[0] != "m" || fields[1] != "n" || fields[2] != "k" ||
      fields[3] != "seconds")
    return fmt::format("{}:1: expected the header 'm,n,k,seconds', got '{}'", path, line);

  std::map<std::tuple<int64_t, int64_t, int64_t>, double> measured;
  std::map<std::tuple<int64_t, int64_t, int64_t>, int64_t> firstLine;
  std::vector<CalibrationPoint> calibration;
  static constexpr std::string_view kColumns[] = {"m", "n", "k"};
  for (int64_t lineNo = 2; std::getline(in, line); ++lineNo) {
    if (line.find_first_not_of(" \r") == std::string::npos)
      continue;
    int count = split(line, fields);
    if (count != 4)
      return fmt::format("{}:{}: expected 4 fields (m,n,k,seconds), got {}{}", path, lineNo, count,
                         count == 5 ? " or more" : "");
    int64_t dims[3];
    for (int i = 0; i < 3; ++i) {
      std::string_view f = fields[i];
      auto [end, ec] = std::from_chars(f.data(), f.data() + f.size(), dims[i]);
      if (ec != std::errc() || end != f.data() + f.size() || dims[i] <= 0)
        return fmt::format("{}:{}: {} must be a positive integer, got '{}'", path, lineNo,
                           kColumns[i], f);
    }
    std::string_view f = fields[3];
    double seconds = 0;
    auto [end, ec] = std::from_chars(f.data(), f.data() + f.size(), seconds);
    if (ec != std::errc() || end != f.data() + f.size() || !std::isfinite(seconds))
      return fmt::format("{}:{}: seconds must be a number, got '{}'", path, lineNo, f);
    if (seconds <= 0)
      return fmt::format("{}:{}: seconds must be positive, got {}", path, lineNo, fields[3]);
    auto key = std::make_tuple(dims[0], dims[1], dims[2]);
    auto [it, fresh] = firstLine.emplace(key, lineNo);
    if (!fresh)
      return fmt::format("{}:{}: {}x{}x{} is measured twice (first on line {})", path, lineNo,
                         dims[0], dims[1], dims[2], it->second);
    measured[key] = seconds;
    GemmShape shape{dims[0], dims[1], dims[2]};
    calibration.push_back({std::log(double(dims[0])), std::log(double(dims[1])),
                           std::log(double(dims[2])),
                           modelSeconds(shape, 1, /*fused=*/false) / seconds});
  }
  if (measured.empty())
    return fmt::format("{}:2: no measurements after the header", path);
  measured_ = std::move(measured);
  calibration_ = std::move(calibration);
  cache_.reset(); // copies made before keep their own prices
  return "";
}

//===----------------------------------------------------------------------===//
// Per-part costs
//===----------------------------------------------------------------------===//

namespace {

enum Pass { F, B, W };

/// A part's cost on one rank built term by term, each charged to the pass that
/// runs it: GEMMs by their shape, elementwise work by the HBM bytes it moves
/// and the kernels it launches.
class Tally {
public:
  explicit Tally(const ComputeModel &model) : model_(model) {}

  void gemm(Pass pass, const GemmShape &shape, int64_t groups = 1) {
    flops_[pass] += shape.flops() * double(groups);
    seconds_[pass] += model_.groupedGemmSeconds(shape, groups);
  }
  /// A fused attention kernel: matmuls `count` times `shape` (operands on
  /// chip), softmax exponentials, and the bytes it streams from HBM.
  struct Matmuls {
    GemmShape shape;
    int count;
  };
  void fusedAttention(Pass pass, std::initializer_list<Matmuls> matmuls, int64_t groups,
                      double exponentials, double bytes) {
    double seconds = 0;
    for (const Matmuls &mm : matmuls) {
      flops_[pass] += mm.count * mm.shape.flops() * double(groups);
      seconds += mm.count * model_.fusedGemmSeconds(mm.shape, groups);
    }
    seconds_[pass] += model_.fusedAttentionSeconds(seconds, exponentials, bytes);
  }
  /// Memory-bound work: `kernels` launches moving `bytes` through HBM.
  void elementwise(Pass pass, double bytes, int kernels) {
    seconds_[pass] += model_.memorySeconds(bytes) + kernels * model_.kernelLatency();
  }
  /// Memory-bound work that reduces along rows (norms, softmax).
  void rowReduction(Pass pass, double bytes, int kernels) {
    seconds_[pass] += model_.rowReductionSeconds(bytes) + kernels * model_.kernelLatency();
  }

  /// A weight [in, out] applied to `tokens` rows, in each of `groups`
  /// independent GEMMs: y = x w, dx = dy w^T, dw = x^T dy. Returns the
  /// seconds of its input- and weight-gradient GEMMs.
  struct Backward {
    double b = 0, w = 0;
  };
  Backward linear(int64_t tokens, int64_t in, int64_t out, int64_t groups = 1) {
    double b0 = seconds_[B], w0 = seconds_[W];
    gemm(F, {tokens, out, in}, groups);
    gemm(B, {tokens, in, out}, groups);
    gemm(W, {in, out, tokens}, groups);
    return {seconds_[B] - b0, seconds_[W] - w0};
  }

  double seconds(Pass pass) const { return seconds_[pass]; }
  double flops(Pass pass) const { return flops_[pass]; }

  PassCost result() const {
    PassCost cost;
    cost.f = seconds_[F];
    cost.b = seconds_[B];
    cost.w = seconds_[W];
    cost.flopsF = flops_[F];
    cost.flopsB = flops_[B];
    cost.flopsW = flops_[W];
    return cost;
  }

private:
  const ComputeModel &model_;
  double seconds_[3] = {}, flops_[3] = {};
};

/// Tokens of one micro-batch on this rank: the local sequence chunk.
int64_t localTokens(const PartShape &s) { return s.microBatch * s.seq / s.cp; }

/// A norm over `tokens` hidden-wide rows: each tp rank normalizes all of them,
/// or its 1/t share under sequence parallelism. Forward reads x, writes y (2
/// elements a row element); backward reads x and dy, writes dx (3). One
/// kernel each way.
double normElements(const PartShape &s, int64_t tokens) {
  return double(tokens) * double(s.hidden) / (s.sequenceParallel ? double(s.tp) : 1.0);
}

void norm(Tally &tally, const PartShape &s, int64_t tokens) {
  double e = double(s.bytesPerElement), x = normElements(s, tokens);
  tally.rowReduction(F, 2 * e * x, 1);
  tally.rowReduction(B, 3 * e * x, 1);
}

/// The pre-norm residual wrapper of a block: the norm, and the add of the
/// block's output to its input. Forward: the add reads two tensors and writes
/// one (3), dropout fused into it writes a 1-byte mask. Backward: the residual
/// gradient is summed with the norm's (read 2, write 1), dropout's backward
/// (a second kernel) reads dy and the mask and writes dx (2 elements + 1 byte).
void residualBlock(Tally &tally, const PartShape &s, int64_t tokens) {
  norm(tally, s, tokens);
  double e = double(s.bytesPerElement), x = normElements(s, tokens);
  double dropoutBytes = s.dropout ? 1 : 0;
  tally.elementwise(F, x * (3 * e + dropoutBytes), 1);
  tally.elementwise(B, x * (3 * e + (s.dropout ? 2 * e + 1 : 0)), s.dropout ? 2 : 1);
}

/// The gradient of a bias added to `elements` outputs (tokens x width): a sum
/// over the tokens, in the weight gradient pass beside its matrix's. Each
/// thread accumulates a column down the rows, so unlike the row reductions
/// it streams the output's gradient at the elementwise rate.
void biasGrad(Tally &tally, const PartShape &s, double elements) {
  tally.elementwise(W, elements * double(s.bytesPerElement), 1);
}

/// Outputs of a row-parallel projection back to the hidden width: every tp
/// rank's, or its 1/t share of the tokens under sequence parallelism.
double hiddenOutputs(const PartShape &s, double tokens) {
  return tokens * double(s.hidden) / (s.sequenceParallel ? double(s.tp) : 1.0);
}

/// A two-layer MLP of width `width` (already split by tp) on `tokens` rows, in
/// `groups` independent copies (MoE experts). Gated units fuse gate and up
/// into one GEMM. Activation: GeLU reads and writes one ffn-wide tensor (2
/// elements), a gated unit reads gate and up and writes their product (3);
/// backward reads the inputs and dy and writes the input gradients (3; gated
/// 5). One kernel each way. Returns its column-parallel (first) linear's
/// backward GEMMs.
Tally::Backward ffn(Tally &tally, const PartShape &s, int64_t tokens, int64_t width,
                    int64_t groups) {
  Tally::Backward column = tally.linear(tokens, s.hidden, s.gated ? 2 * width : width, groups);
  tally.linear(tokens, width, s.hidden, groups);
  double e = double(s.bytesPerElement);
  double elements = double(groups) * double(tokens) * double(width);
  tally.elementwise(F, (s.gated ? 3 : 2) * e * elements, 1);
  tally.elementwise(B, (s.gated ? 5 : 3) * e * elements, 1);
  if (s.inBias)
    biasGrad(tally, s, (s.gated ? 2 : 1) * elements);
  if (s.outBias)
    biasGrad(tally, s, hiddenOutputs(s, double(groups) * double(tokens)));
  return column;
}

/// softmax(Q K^T) V over this rank's `heads` query heads (sharing `kvHeads`
/// key/value heads): the local query chunk s/cp against all s keys.
void attentionCore(Tally &tally, const PartShape &s, int64_t heads, int64_t kvHeads, int64_t dqk,
                   int64_t dv) {
  const int64_t sq = s.seq / s.cp, skv = s.seq, groups = s.microBatch * heads;
  const double e = double(s.bytesPerElement);
  // Score elements, each one exponential in the forward and again when the
  // flash backward recomputes P.
  const double z = double(groups) * double(sq) * double(skv);
  if (s.flashAttention) {
    // HBM sees Q, K, V in and O out; the backward reads those and dO and
    // writes dQ, dK, dV: twice the forward's bytes.
    double b = double(s.microBatch);
    double qkvo = e * b *
                  (double(sq) * double(heads) * double(dqk + dv) +
                   double(skv) * double(kvHeads) * double(dqk + dv));
    // [FA2]: a block of queries sweeps the keys, so both forward products loop
    // over skv (S = Q K^T, O = P V); a block of keys sweeps the queries in the
    // backward: S = Q K^T again, dK = dS^T Q, dQ = dS K over dqk, and
    // dP = dO V^T, dV = P^T dO over dv.
    tally.fusedAttention(F, {{{sq, dqk, skv}, 1}, {{sq, dv, skv}, 1}}, groups, z, qkvo);
    tally.fusedAttention(B, {{{skv, dqk, sq}, 3}, {{skv, dv, sq}, 2}}, groups, z, 2 * qkvo);
    return;
  }
  tally.gemm(F, {sq, skv, dqk}, groups); // S = Q K^T
  tally.gemm(F, {sq, dv, skv}, groups);  // O = P V
  tally.gemm(B, {sq, dqk, skv}, groups); // dQ = dS K
  tally.gemm(B, {skv, dqk, sq}, groups); // dK = dS^T Q
  tally.gemm(B, {sq, skv, dv}, groups);  // dP = dO V^T
  tally.gemm(B, {skv, dv, sq}, groups);  // dV = P^T dO
  // The scores go through HBM: forward, the fused scale-mask-softmax reads S
  // and writes P (2), dropout (its own kernel) reads P, writes it and a 1-byte
  // mask; backward, dropout reads dP and the mask and writes, softmax's
  // backward reads P and dP and writes dS (3). Softmax reduces along rows.
  tally.rowReduction(F, z * 2 * e, 1);
  tally.rowReduction(B, z * 3 * e, 1);
  if (s.dropout) {
    tally.elementwise(F, z * (2 * e + 1), 1);
    tally.elementwise(B, z * (2 * e + 1), 1);
  }
}

} // namespace

PassCost loom::cost::attentionCost(const ComputeModel &model, const PartShape &s) {
  Tally tally(model);
  const int64_t tokens = localTokens(s), h = s.hidden;
  // A rank holds whole heads; key/value heads fewer than tp are replicated.
  const int64_t heads = ceilDiv(s.heads, s.tp);
  const int64_t kvHeads = ceilDiv(s.kvHeads > 0 ? s.kvHeads : s.heads, s.tp);
  const int64_t d = s.headDim > 0 ? s.headDim : h / s.heads;
  Tally::Backward column; // the QKV projection's (MLA: none counted)
  if (s.kvLoraRank > 0) {
    // MLA: the down-projections to the latents (and the shared rope key) are
    // replicated on every tp rank; the up-projections split by head.
    const int64_t dqk = d + s.ropeHeadDim, dv = s.vHeadDim > 0 ? s.vHeadDim : d;
    if (s.qLoraRank > 0) {
      tally.linear(tokens, h, s.qLoraRank);
      tally.linear(tokens, s.qLoraRank, heads * dqk);
    } else {
      tally.linear(tokens, h, heads * dqk);
    }
    tally.linear(tokens, h, s.kvLoraRank + s.ropeHeadDim);
    tally.linear(tokens, s.kvLoraRank, heads * (d + dv));
    tally.linear(tokens, heads * dv, h);
    // The latents' norms (one kernel each): read and write forward (2),
    // backward 3.
    double latent = double(tokens) * double(s.qLoraRank + s.kvLoraRank) * double(s.bytesPerElement);
    int norms = s.qLoraRank > 0 ? 2 : 1;
    tally.rowReduction(F, 2 * latent, norms);
    tally.rowReduction(B, 3 * latent, norms);
  } else {
    column = tally.linear(tokens, h, (heads + 2 * kvHeads) * d);
    tally.linear(tokens, heads * d, h);
    if (s.inBias)
      biasGrad(tally, s, double(tokens) * double((heads + 2 * kvHeads) * d));
  }
  if (s.outBias)
    biasGrad(tally, s, hiddenOutputs(s, double(tokens)));
  double f0 = tally.seconds(F), b0 = tally.seconds(B), flops0 = tally.flops(F);
  if (s.kvLoraRank > 0)
    attentionCore(tally, s, heads, heads, d + s.ropeHeadDim, s.vHeadDim > 0 ? s.vHeadDim : d);
  else
    attentionCore(tally, s, heads, kvHeads, d, d);
  double coreF = tally.seconds(F) - f0, coreB = tally.seconds(B) - b0,
         coreFlopsF = tally.flops(F) - flops0;
  residualBlock(tally, s, tokens);
  PassCost cost = tally.result();
  cost.coreF = coreF;
  cost.coreFlopsF = coreFlopsF;
  cost.coreB = coreB;
  cost.columnB = column.b;
  cost.columnW = column.w;
  return cost;
}

PassCost loom::cost::mlpCost(const ComputeModel &model, const PartShape &s) {
  Tally tally(model);
  const int64_t tokens = localTokens(s);
  Tally::Backward column = ffn(tally, s, tokens, ceilDiv(s.ffn, s.tp), 1);
  residualBlock(tally, s, tokens);
  PassCost cost = tally.result();
  cost.columnB = column.b;
  cost.columnW = column.w;
  return cost;
}

PassCost loom::cost::moeCost(const ComputeModel &model, const PartShape &s) {
  Tally tally(model);
  const int64_t tokens = localTokens(s);
  // The router is replicated on the tp ranks.
  tally.linear(tokens, s.hidden, s.experts);
  // The ep ranks hold different tokens (ep lives inside data parallelism); the
  // all-to-all pools them, so with balanced routing each of this rank's
  // experts sees ep * tokens * topK / experts of them. Many experts make
  // these GEMMs small; the grouped launch lets them share the SMs.
  const int64_t localExperts = ceilDiv(s.experts, s.ep);
  const int64_t perExpert = ceilDiv(s.ep * tokens * s.topK, s.experts);
  ffn(tally, s, perExpert, ceilDiv(s.ffn, s.tp), localExperts);
  if (s.sharedExperts > 0)
    ffn(tally, s, tokens, ceilDiv(s.sharedExperts * s.ffn, s.tp), 1);
  // Routing traffic, four kernels each way. The router's softmax and top-k
  // (row reductions) read and write the tokens x experts scores (2; backward
  // 3). Dispatch
  // copies each routed token into expert order (read, write: 2 rows); combine
  // reads the routed outputs and writes the weighted sum per token. The
  // backward mirrors both.
  const double e = double(s.bytesPerElement), h = double(s.hidden);
  const double scores = double(tokens) * double(s.experts);
  const double routed = double(localExperts) * double(perExpert);
  const double moved = (2 * routed + routed + double(tokens)) * h;
  tally.rowReduction(F, e * 2 * scores, 2);
  tally.rowReduction(B, e * 3 * scores, 2);
  tally.elementwise(F, e * moved, 2);
  tally.elementwise(B, e * moved, 2);
  residualBlock(tally, s, tokens);
  return tally.result();
}

PassCost loom::cost::headCost(const ComputeModel &model, const PartShape &s) {
  Tally tally(model);
  const int64_t tokens = localTokens(s);
  const int64_t vocab = ceilDiv(s.vocab, s.tp); // vocab-parallel
  norm(tally, s, tokens);                       // the final norm
  tally.linear(tokens, s.hidden, vocab);
  // Vocab-parallel cross-entropy in fp32, six kernels (Megatron-LM's
  // _VocabParallelCrossEntropy, 2021 to mcore): the upcast reads the logits
  // (e) and writes them (4); the max reads them (4); subtracting it in place
  // reads and writes (8); exp in place reads and writes (8); the sum reads
  // (4); normalizing in place reads and writes (8). The max and the sum are
  // row reductions. Backward, two kernels: scaling the softmax by the loss's
  // gradient in place (8), and the upcast's backward, which reads that (4)
  // and writes the logits' gradient (e).
  const double logits = double(tokens) * double(vocab), e = double(s.bytesPerElement);
  tally.elementwise(F, logits * (e + 28), 4);
  tally.rowReduction(F, logits * 8, 2);
  tally.elementwise(B, logits * (12 + e), 2);
  return tally.result();
}
