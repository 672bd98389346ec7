//===- SC21TradeoffTest.cpp - SC'21's own layout trade-off measurements ----===//
//
// Section 5.4 of Narayanan et al. (SC'21, arXiv 2104.04473) holds one model
// and 64 A100-80GB GPUs (eight DGX A100 nodes) fixed and trades GPUs between
// two dimensions, measuring throughput per GPU. The runs are Megatron-LM's
// artifact scripts (examples/sc21/run_figure_13.sh, _14.sh, _15.sh and
// CONFIG.sh at commit de7dc40f88): micro-batch 1, full recomputation, fp16,
// the non-interleaved 1F1B schedule, local DDP (gradients reduced after the
// pipeline drains), sequences of 2048 tokens, vocabulary 51200. Section 5.3's
// Figure 12 (run_figure_12.sh) sets the interleaved schedule against 1F1B the
// same way.
//
//  * Figure 12, interleaving: GPT-3 175B on 96 GPUs, t = 8, p = 12, two
//    layers a model chunk against one chunk a rank. Interleaving is ahead at
//    every batch and its lead shrinks as the batch grows.
//  * Figure 13, tensor against pipeline: 162.2B (32 layers, hidden 20480, 128
//    heads), (p, t) from (2, 32) to (32, 2), batches 32 and 128. The paper
//    reports its peak at t = 8, the GPUs of one node (takeaway #1).
//  * Figure 14, pipeline against data: 5.9B (32 layers, hidden 3840, 32
//    heads), t = 1, p from 2 to 32 with d = 64 / p, batches 32 and 512.
//    Throughput falls as p grows, at each batch.
//  * Figure 15, tensor against data: the same 5.9B, p = 1, t from 2 to 32
//    with d = 64 / t, batches 32, 128 and 512. Throughput falls as t grows.
//
// The orders are the measured facts checked here. Figure 13's batch-128 case
// is where loom and the paper part: loom prices (p, t) = (16, 4) level with
// (8, 8), the same lean towards deeper pipelines and smaller t that keeps
// Table 1's 18.4B and 39.1B layouts out of loom's top five (PlannerTest).
//
//===----------------------------------------------------------------------===//

#include "Megatron2021.h"
#include "loom/Spec/Spec.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

using namespace loom;
using namespace loom::cost;

namespace {

/// The catalog's megatron-529.6b (hidden 20480, 128 heads) cut to 32 layers.
spec::Model figure13Model() {
  spec::Model m = spec::loadModel("megatron-529.6b");
  m.set_name("megatron-162.2b");
  m.mutable_blocks(0)->set_count(32);
  return m;
}

/// The catalog's megatron-145.6b (hidden 12288, 96 heads) at 96 layers: GPT-3
/// 175B with Megatron-LM's 51200-token vocabulary.
spec::Model figure12Model() {
  spec::Model m = spec::loadModel("megatron-145.6b");
  m.set_name("megatron-175b");
  m.mutable_blocks(0)->set_count(96);
  return m;
}

/// The catalog's megatron-7.5b (32 heads) at hidden 3840 and 32 layers.
spec::Model figure14And15Model() {
  spec::Model m = spec::loadModel("megatron-7.5b");
  m.set_name("megatron-5.9b");
  m.set_hidden_size(3840);
  m.mutable_blocks(0)->set_count(32);
  m.mutable_blocks(0)->mutable_mlp()->set_ffn_hidden(4 * 3840);
  return m;
}

/// Throughput per GPU of (t, p), with vpp model chunks per rank, on DGX A100
/// nodes (eight unless given), as the artifact ran.
double tflops(const spec::Model &model, int64_t t, int64_t p, uint64_t batch, int64_t vpp = 1,
              int64_t nodes = 8) {
  spec::Cluster cluster = spec::loadCluster(fmt::format("dgx-a100:nodes={}", nodes));
  spec::Training training = spec::defaultTraining(model);
  training.set_seq_len(2048);
  training.set_global_batch(batch);
  WorkloadResult w = fromStrategy(model, cluster, training, published::megatron2021(t, p, 1, vpp));
  EXPECT_TRUE(w.ok()) << w.error;
  if (!w.ok())
    return 0;
  Estimate e = estimate(w.workload, computeModelFor(cluster, training), published::afterTheDrain());
  EXPECT_TRUE(e.fits) << fmt::format("{} t={} p={} ran, but loom needs {:.1f} GiB", model.name(),
                                     t, p, e.peakMemoryBytes / double(1ull << 30));
  return e.tflopsPerGpu;
}

/// One batch's sweep: the (t, p) pairs in the figure's order and their prices.
struct Sweep {
  std::vector<std::pair<int64_t, int64_t>> layouts;
  std::vector<double> tflops;
  std::string row(uint64_t batch) const {
    std::string s = fmt::format("batch {:>3}:", batch);
    for (size_t i = 0; i < layouts.size(); ++i)
      s += fmt::format("  (t={},p={}) {:.1f}", layouts[i].first, layouts[i].second, tflops[i]);
    return s + "\n";
  }
};

Sweep sweep(const spec::Model &model, const std::vector<std::pair<int64_t, int64_t>> &layouts,
            uint64_t batch) {
  Sweep s{layouts, {}};
  for (auto [t, p] : layouts)
    s.tflops.push_back(tflops(model, t, p, batch));
  return s;
}

/// Whether each price is below the one before it.
bool falling(const std::vector<double> &v) {
  for (size_t i = 1; i < v.size(); ++i)
    if (!(v[i] < v[i - 1]))
      return false;
  return true;
}

TEST(SC21Tradeoffs, Figure14ThroughputFallsAsPipelineReplacesData) {
  spec::Model model = figure14And15Model();
  std::string report;
  for (uint64_t batch : {32u, 512u}) {
    Sweep s = sweep(model, {{1, 2}, {1, 4}, {1, 8}, {1, 16}, {1, 32}}, batch);
    report += s.row(batch);
    EXPECT_TRUE(falling(s.tflops)) << s.row(batch);
  }
  std::printf("%s", report.c_str());
}

TEST(SC21Tradeoffs, Figure15ThroughputFallsAsTensorReplacesData) {
  spec::Model model = figure14And15Model();
  std::string report;
  for (uint64_t batch : {32u, 128u, 512u}) {
    Sweep s = sweep(model, {{2, 1}, {4, 1}, {8, 1}, {16, 1}, {32, 1}}, batch);
    report += s.row(batch);
    EXPECT_TRUE(falling(s.tflops)) << s.row(batch);
  }
  std::printf("%s", report.c_str());
}

TEST(SC21Tradeoffs, Figure12InterleavingGainsMostAtSmallBatches) {
  // GPT-3 175B on 96 GPUs, t = 8, p = 12, micro-batch 1 (run_figure_12.sh):
  // the interleaved schedule with two layers a model chunk (vpp = 4) against
  // one chunk a rank. The paper: interleaving is ahead at every batch size and
  // the gap closes as the batch grows (the default schedule's bubble shrinks,
  // and interleaving sends vpp times as much between stages).
  spec::Model model = figure12Model();
  std::string report;
  double lastGain = 0;
  for (uint64_t batch : {12u, 24u, 36u, 48u, 60u}) {
    double plain = tflops(model, 8, 12, batch, 1, 12);
    double interleaved = tflops(model, 8, 12, batch, 4, 12);
    double gain = interleaved / plain - 1;
    report += fmt::format("batch {:>2}: 1F1B {:.1f}, interleaved {:.1f} ({:+.1f}%)\n", batch, plain,
                          interleaved, 100 * gain);
    EXPECT_GT(gain, 0) << "batch " << batch;
    if (batch > 12)
      EXPECT_LT(gain, lastGain) << "batch " << batch;
    lastGain = gain;
  }
  std::printf("%s", report.c_str());
}

TEST(SC21Tradeoffs, Figure13TensorWithinTheNodeThenPipeline) {
  spec::Model model = figure13Model();
  const std::vector<std::pair<int64_t, int64_t>> layouts = {
      {32, 2}, {16, 4}, {8, 8}, {4, 16}, {2, 32}};
  const size_t node = 2; // (t, p) = (8, 8)
  std::string report;
  for (uint64_t batch : {32u, 128u}) {
    Sweep s = sweep(model, layouts, batch);
    report += s.row(batch);
    double best = *std::max_element(s.tflops.begin(), s.tflops.end());
    // Tensor parallelism across nodes (t = 16, 32) loses to t = 8 at both
    // batches, and so does the deepest pipeline (t = 2, p = 32).
    for (size_t i : {size_t(0), size_t(1), size_t(4)})
      EXPECT_LT(s.tflops[i], s.tflops[node]) << s.row(batch);
    if (batch == 32) {
      // Four micro-batches a stage at p = 8, two at p = 16: the bubble
      // decides, and t = 8 is loom's peak as it was the paper's.
      EXPECT_EQ(s.tflops[node], best) << s.row(batch);
    } else {
      // The paper's peak is still t = 8; loom puts t = 4, p = 16 level with
      // it: at t = 8 a GPU's exposed all-reduces carry 2.3 times the bytes of
      // t = 4's (twice the layers, ring factor 7/4 against 3/2), and that
      // weighs as much as the deeper pipeline's bubble.
      // This bound records today's gap: tighten it, never loosen it.
      EXPECT_GE(s.tflops[node], 0.98 * best) << s.row(batch);
    }
  }
  std::printf("%s", report.c_str());
}

} // namespace
