//===- Estimate.h - step time, throughput and memory of a workload -*- C++ -*-===//
//
// Step time = pipeline critical path (analytic per schedule family, until the
// schedule simulator replaces it) + exposed data-parallel communication +
// optimizer step. Per-micro-batch stage time = F + B + W (+ recomputation) +
// exposed tensor/context/expert communication + pipeline sends.
//
// Throughput conventions (both reported):
//  * tflops_per_gpu: FLOPs the GPUs execute, recomputation included — what
//    Megatron-LM's SC'21 paper reports;
//  * mfu: model FLOPs (6 x parameters that do matmuls per token, LM head
//    included, input embedding excluded, MoE counting active experts, plus
//    12 x layers x seq x attention width for attention, PaLM's convention)
//    over peak.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_COSTMODEL_ESTIMATE_H
#define LOOM_COSTMODEL_ESTIMATE_H

#include "loom/CostModel/Memory.h"
#include "loom/CostModel/Workload.h"

#include <span>
#include <vector>

namespace loom::cost {

struct EstimateOptions {
  MemoryOptions memory;
  /// Data-parallel gradient reduction overlaps the backward pass of the last
  /// micro-batch (Megatron-LM --overlap-grad-reduce, DeepSpeed's default);
  /// off, it runs after the pipeline drains.
  bool overlapGradReduce = true;
  /// ...but only without a pipeline: Megatron-LM of 2021 (commit de7dc40f88,
  /// training.py: "We only support local DDP with multiple micro-batches")
  /// ran PyTorch's DDP, which reduces under the last micro-batch's backward,
  /// only when pp = 1, and its own local DDP, which reduces after the
  /// pipeline drains, otherwise. SC'21's Table 1 runs used both that way.
  bool overlapGradReduceOnlyWithoutPipeline = false;
  /// ZeRO-1/2: the gather of the updated parameters overlaps the next step's
  /// first forward pass, each bucket arriving before the layers that use it
  /// (Megatron-Core --overlap-param-gather); off, it runs after the optimizer
  /// step (DeepSpeed's ZeRO-1/2, Megatron-LM without the flag). It cannot hide
  /// behind the backward pass: the step it follows needs that pass's gradients.
  bool overlapParamGather = true;
};

/// One pipeline rank, per micro-batch unless noted.
struct RankTime {
  double f = 0, b = 0, w = 0, recompute = 0;   // compute, seconds
  double tpComm = 0, cpComm = 0, epComm = 0;   // exposed communication
  double p2p = 0;                              // pipeline transfers
  double crossDcBytes = 0;                     // sent between datacenters
  double total() const { return f + b + w + recompute + tpComm + cpComm + epComm + p2p; }
  double flops = 0;                            // executed FLOPs on one GPU
  double dpComm = 0;                           // per step, before overlap
  double dpExposed = 0;                        // per step
  double optimizer = 0;                        // per step
  double dpCrossDcBytes = 0;                   // per step, between datacenters
};

struct Estimate {
  double stepTime = 0;
  double tokensPerSecond = 0;
  double tflopsPerGpu = 0;
  double mfu = 0;
  double hardwareFlops = 0; // per step, all GPUs
  double modelFlops = 0;    // per step, PaLM convention
  // Where the step goes (slowest pipeline rank).
  double pipeline = 0, bubble = 0, dpExposed = 0, optimizer = 0;
  /// Bytes sent between datacenters per step, all GPUs together (0 on one
  /// datacenter): pipeline activations and gradients on hops that cross, and
  /// the cross-datacenter share of every collective.
  double crossDcBytes = 0;
  int64_t microBatches = 0;
  // Memory.
  double peakMemoryBytes = 0;
  int64_t peakRank = 0;
  double capacityBytes = 0, usableBytes = 0; // usable = capacity minus headroom
  bool fits = false;
  std::vector<MemoryBreakdown> memory; // per pipeline rank
  std::vector<RankTime> time;          // per pipeline rank
};

Estimate estimate(const Workload &workload, const ComputeModel &compute,
                  const EstimateOptions &options = {});
/// With a compute model per GPU type: pipeline rank r runs on
/// computes[workload.stageDevice[r]] (heterogeneous clusters); a type
/// without a model falls back to computes[0].
Estimate estimate(const Workload &workload, std::span<const ComputeModel> computes,
                  const EstimateOptions &options = {});

/// Bytes one rank sends to the next pipeline stage per micro-batch (and the
/// gradient it gets back): the part boundary activations, split by tp under
/// sequence parallelism.
double pipelineMessageBytes(const Workload &workload);

/// Adds one part's per-micro-batch time on its rank to `t`: F, B, W,
/// recomputation and exposed tensor, context and expert communication, all
/// `part.count` of them (the building block of estimate(), also used to
/// price layers one by one for stage partitioning).
void addPartTime(RankTime &t, const Workload &workload, const Part &part,
                 const ComputeModel &compute);

} // namespace loom::cost

#endif // LOOM_COSTMODEL_ESTIMATE_H
