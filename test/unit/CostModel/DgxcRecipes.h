//===- DgxcRecipes.h - NVIDIA's tuned H100 recipes as they ran -------------===//
//
// NVIDIA's DGX Cloud benchmarking recipes (github.com/NVIDIA/dgxc-benchmarking,
// tag v25.02, commit 8f5cbb3799): bf16 pre-training on DGX H100 with NeMo
// (Megatron-Core and Transformer Engine underneath), every setting that
// matters here from the YAML beside each README: t, p, cp, virtual stages,
// micro-batch and global batch, sequence length, recomputation, sequence
// parallelism (on wherever t > 1), Transformer Engine's tensor-parallel
// overlap (ub_tp_comm_overlap), the distributed optimizer with overlapped
// gradient reduction and parameter gather, and bf16 gradient buffers
// (grad_sync_dtype: bf16). The READMEs give the step time, the last of a
// 50-step run. Containers: NeMo 24.12, and 24.09 for Nemotron-4 340B, which
// v25.02 kept. Used by CostModelTests (the step times) and PlannerTests (the
// layouts).
//
//===----------------------------------------------------------------------===//

#ifndef LOOM_TEST_COSTMODEL_DGXCRECIPES_H
#define LOOM_TEST_COSTMODEL_DGXCRECIPES_H

#include "loom/CostModel/FromStrategy.h"
#include "loom/Spec/Spec.h"

#include <string>

namespace loom::cost::published {

struct Recipe {
  const char *name;
  int64_t gpus, batch, seq, mbs, t, p, cp, vpp;
  Recompute recompute;
  bool tpOverlap, bf16Grads;
  double stepSeconds; // measured
  /// NVIDIA's next release ran this model faster in another layout: the
  /// recipe after this one.
  bool superseded = false;
};

// READMEs at v25.02: llama3.1/README_{8b,70b,405b}.md, nemo_megatron/
// README_175b.md, nemotron/README_{15b,340b}.md; settings from the YAML beside
// each. Each model at its smallest scale that runs the full model (405B's
// smaller rows cut its layers). Nemotron-4 15B also as v25.04 (commit
// 741c886025, nemotron/README.md; NeMo 25.02.01) retuned it: t = 2 at
// micro-batch 2, the tensor-parallel overlap and bf16 gradients of NeMo 2.0's
// performance recipe (nemo/collections/llm/recipes/nemotron4_15b.py,
// pretrain_performance_optimizations, NeMo commit 132f217987), 5% faster.
inline const Recipe kRecipes[] = {
    {"llama3.1-8b", 8, 128, 8192, 1, 1, 1, 2, 1, Recompute::None, false, true, 12.78},
    {"llama3.1-70b", 64, 128, 8192, 1, 4, 4, 2, 5, Recompute::None, true, true, 14.61},
    {"llama3.1-405b", 576, 252, 8192, 1, 8, 9, 2, 7, Recompute::None, true, true, 17.50},
    {"gpt3-175b", 128, 256, 2048, 1, 4, 8, 1, 6, Recompute::None, true, true, 8.309},
    {"nemotron4-15b", 16, 64, 4096, 4, 4, 1, 1, 1, Recompute::None, true, false, 2.812, true},
    {"nemotron4-15b@v25.04", 16, 64, 4096, 2, 2, 1, 1, 1, Recompute::None, true, true, 2.66},
    {"nemotron4-340b", 256, 64, 4096, 1, 8, 8, 1, 12, Recompute::Selective, false, true, 4.67},
};

/// Nemotron-4 (nemotron/nemotron4-*-synth.yaml): squared-ReLU MLP of 4h
/// (priced as any plain two-matrix MLP), no biases, LayerNorm, RoPE, 8 query
/// groups, untied 256000-token embeddings, no dropout.
inline spec::Model nemotron4(const char *name, uint32_t layers, uint32_t hidden, uint32_t heads) {
  spec::Model m = spec::loadModel("llama3-8b");
  m.set_name(name);
  m.set_vocab_size(256000);
  m.set_hidden_size(hidden);
  m.set_norm(spec::LAYERNORM);
  spec::Block *block = m.mutable_blocks(0);
  block->set_count(layers);
  block->mutable_attention()->set_heads(heads);
  block->mutable_attention()->set_kv_heads(8);
  block->mutable_mlp()->set_ffn_hidden(4ull * hidden);
  block->mutable_mlp()->set_activation(spec::RELU);
  return m;
}

inline spec::Model modelOf(const Recipe &r) {
  std::string name = r.name;
  if (name == "llama3.1-8b")
    return spec::loadModel("llama3-8b");
  if (name == "llama3.1-70b")
    return spec::loadModel("llama3-70b");
  if (name == "llama3.1-405b") {
    spec::Model m = spec::loadModel("llama3-405b");
    m.mutable_blocks(0)->mutable_attention()->set_kv_heads(16); // num_query_groups: 16
    return m;
  }
  if (name == "gpt3-175b") {
    // NeMo's GPT-3: bf16, the GPT-2 vocabulary padded to 51200, dropout 0.1.
    spec::Model m = spec::loadModel("gpt3-175b");
    m.set_dtype(spec::BF16);
    m.set_vocab_size(51200);
    return m;
  }
  if (name.rfind("nemotron4-15b", 0) == 0)
    return nemotron4("nemotron4-15b", 32, 6144, 48);
  return nemotron4("nemotron4-340b", 96, 18432, 96);
}

/// The recipe's training: its batch, sequence and gradient buffers.
inline spec::Training trainingOf(const Recipe &r, const spec::Model &model) {
  spec::Training training = spec::defaultTraining(model);
  training.set_seq_len(uint32_t(r.seq));
  training.set_global_batch(uint64_t(r.batch));
  training.set_grad_reduce_in_bf16(r.bf16Grads);
  return training;
}

/// The recipe's cluster: DGX H100 nodes.
inline spec::Cluster clusterOf(const Recipe &r) {
  return spec::loadCluster("dgx-h100:nodes=" + std::to_string(r.gpus / 8));
}

} // namespace loom::cost::published

#endif // LOOM_TEST_COSTMODEL_DGXCRECIPES_H
