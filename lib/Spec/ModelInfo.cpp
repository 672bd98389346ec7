//===- ModelInfo.cpp - parameter counts and other derived facts -----------===//
//
// Parameter counts follow the architectures weight by weight (they are checked
// against published totals in the unit tests), since memory estimates and
// checkpoint layouts both build on them.
//
//===----------------------------------------------------------------------===//

#include "loom/Spec/Spec.h"

#include <algorithm>
#include <numeric>

namespace loom::spec {

namespace {

/// LayerNorm has a weight and a bias per channel, RMSNorm a weight only.
uint64_t normParameters(const Model &model, uint64_t width) {
  return model.norm() == LAYERNORM ? 2 * width : width;
}

/// One MLP (or one expert): gated activations have separate gate and up
/// matrices.
uint64_t mlpParameters(uint64_t h, uint64_t ffn, Activation act, bool bias) {
  const uint64_t inputs = (act == SWIGLU || act == GEGLU) ? 2 : 1;
  return inputs * h * ffn + ffn * h + (bias ? inputs * ffn + h : 0);
}

/// The MLP, or the MoE's router, shared experts and `routed` of its experts,
/// with the pre-norm.
uint64_t ffnWithExperts(const Model &model, const Block &block,
                        uint64_t routed) {
  const uint64_t h = model.hidden_size();
  uint64_t norm = normParameters(model, h);
  if (block.has_mlp()) {
    const Mlp &mlp = block.mlp();
    return norm +
           mlpParameters(h, mlp.ffn_hidden(), mlp.activation(), mlp.bias());
  }
  const Moe &moe = block.moe();
  uint64_t expert =
      mlpParameters(h, moe.expert_ffn_hidden(), moe.activation(), moe.bias());
  uint64_t router = h * moe.experts();
  return norm + router + (routed + moe.shared_experts()) * expert;
}

} // namespace

AttentionShape attentionShape(const Model &model, const Block &block) {
  const Attention &a = block.attention();
  AttentionShape shape;
  shape.heads = a.heads();
  shape.mla = a.kv_lora_rank() > 0;
  if (shape.mla) {
    // Latent keys/values are expanded per head; scores use nope + rope dims.
    shape.kvHeads = a.heads();
    shape.headDim = a.qk_nope_head_dim() + a.qk_rope_head_dim();
    return shape;
  }
  shape.kvHeads = a.kv_heads() ? a.kv_heads() : a.heads();
  shape.headDim = a.head_dim()
                      ? a.head_dim()
                      : (a.heads() ? model.hidden_size() / a.heads() : 0);
  return shape;
}

uint64_t attentionParameters(const Model &model, const Block &block) {
  const Attention &a = block.attention();
  const uint64_t h = model.hidden_size();
  const uint64_t norm = normParameters(model, h);
  AttentionShape shape = attentionShape(model, block);
  if (shape.mla) {
    // DeepSeek-V2/V3 multi-head latent attention: queries through an optional
    // low-rank bottleneck with its norm, keys and values through a shared
    // latent (plus the decoupled RoPE key), then per-head expansions.
    const uint64_t heads = a.heads(), qkDim = shape.headDim;
    const uint64_t qLora = a.q_lora_rank(), kvLora = a.kv_lora_rank();
    uint64_t query =
        qLora ? h * qLora + normParameters(model, qLora) + qLora * heads * qkDim
              : h * heads * qkDim;
    uint64_t keyValue =
        h * (kvLora + a.qk_rope_head_dim()) + normParameters(model, kvLora) +
        kvLora * heads * (a.qk_nope_head_dim() + a.v_head_dim());
    uint64_t out = heads * a.v_head_dim() * h + (a.out_bias() ? h : 0);
    return norm + query + keyValue + out;
  }
  const uint64_t qWidth = uint64_t(shape.heads) * shape.headDim;
  const uint64_t kvWidth = uint64_t(shape.kvHeads) * shape.headDim;
  uint64_t qkv =
      h * (qWidth + 2 * kvWidth) + (a.qkv_bias() ? qWidth + 2 * kvWidth : 0);
  uint64_t out = qWidth * h + (a.out_bias() ? h : 0);
  return norm + qkv + out;
}

uint64_t ffnParameters(const Model &model, const Block &block) {
  return ffnWithExperts(model, block,
                        block.has_moe() ? block.moe().experts() : 0);
}

uint64_t routedExpertParameters(const Model &model, const Block &block) {
  return ffnParameters(model, block) - ffnWithExperts(model, block, 0);
}

uint64_t ffnActiveParameters(const Model &model, const Block &block) {
  return ffnWithExperts(model, block,
                        block.has_moe() ? block.moe().top_k() : 0);
}

uint64_t layerParameters(const Model &model, const Block &block) {
  return attentionParameters(model, block) + ffnParameters(model, block);
}

ParamCount countParameters(const Model &model) {
  const uint64_t h = model.hidden_size();
  ParamCount count;
  count.embedding =
      model.vocab_size() * h +
      (model.position() == LEARNED ? uint64_t(model.max_seq_len()) * h : 0);
  for (const Block &block : model.blocks()) {
    count.perLayer += block.count() * layerParameters(model, block);
    count.activePerLayer += block.count() * (attentionParameters(model, block) +
                                             ffnActiveParameters(model, block));
  }
  count.finalNorm = normParameters(model, h);
  count.lmHead = model.tied_embeddings() ? 0 : model.vocab_size() * h;
  return count;
}

uint32_t numLayers(const Model &model) {
  uint32_t layers = 0;
  for (const Block &block : model.blocks())
    layers += block.count();
  return layers;
}

ClusterSize clusterSize(const Cluster &cluster) {
  ClusterSize size;
  size.datacenters = cluster.datacenters_size();
  size.uniform = !cluster.datacenters().empty();
  size.shapeRegular = size.uniform;
  const NodeGroup *reference = nullptr;
  uint64_t firstDcNodes = 0;
  for (int d = 0; d < cluster.datacenters_size(); ++d) {
    uint64_t nodes = 0;
    for (const NodeGroup &group : cluster.datacenters(d).node_groups()) {
      nodes += group.count();
      size.gpus += uint64_t(group.count()) * group.gpus_per_node();
      if (!reference)
        reference = &group;
      size.shapeRegular &= group.gpus_per_node() == reference->gpus_per_node();
      size.uniform &= group.gpu() == reference->gpu() &&
                      group.gpus_per_node() == reference->gpus_per_node() &&
                      group.intra_node_link() == reference->intra_node_link() &&
                      group.inter_node_link() == reference->inter_node_link();
    }
    if (d == 0)
      firstDcNodes = nodes;
    size.unequalDcs |= nodes != firstDcNodes;
    size.cellNodes = std::gcd(size.cellNodes, nodes);
    size.nodes += nodes;
  }
  // Unequal DCs still take a mesh over cells, as long as no DC is empty.
  size.shapeRegular &= size.cellNodes > 0;
  size.regular = size.uniform && !size.unequalDcs;
  return size;
}

double effectiveGbps(const LinkTier &tier) {
  return tier.bandwidth_gbps() * (tier.efficiency() > 0 ? tier.efficiency() : 1.0);
}

std::vector<ClusterLevel> clusterLevels(const Cluster &cluster) {
  ClusterSize size = clusterSize(cluster);
  if (!size.shapeRegular)
    return {};
  // Mixed node groups: collectives run at the pace of the slowest link.
  auto slowest = [&](auto linkOf) {
    const LinkTier *worst = nullptr;
    for (const Datacenter &dc : cluster.datacenters())
      for (const NodeGroup &group : dc.node_groups()) {
        const LinkTier *tier = findLink(cluster, linkOf(group));
        if (tier && (!worst || effectiveGbps(*tier) < effectiveGbps(*worst)))
          worst = tier;
      }
    return worst;
  };
  const NodeGroup &group = cluster.datacenters(0).node_groups(0);
  std::vector<ClusterLevel> levels;
  if (size.datacenters > 1) {
    ClusterLevel dc{"dc", int64_t(size.nodes / size.cellNodes),
                    findLink(cluster, cluster.inter_dc_link()), {}};
    if (size.unequalDcs)
      for (int d = 0; d < cluster.datacenters_size(); ++d) {
        uint64_t nodes = 0;
        for (const NodeGroup &g : cluster.datacenters(d).node_groups())
          nodes += g.count();
        dc.cellDc.insert(dc.cellDc.end(), nodes / size.cellNodes, d);
      }
    levels.push_back(std::move(dc));
  }
  levels.push_back({"node", int64_t(size.cellNodes),
                    slowest([](const NodeGroup &g) { return g.inter_node_link(); }), {}});
  levels.push_back({"gpu", int64_t(group.gpus_per_node()),
                    slowest([](const NodeGroup &g) { return g.intra_node_link(); }), {}});
  return levels;
}

NodeTypes nodeTypes(const Cluster &cluster) {
  NodeTypes out;
  for (const Datacenter &dc : cluster.datacenters())
    for (const NodeGroup &group : dc.node_groups()) {
      const GpuType *gpu = findGpu(cluster, group.gpu());
      auto at = std::find(out.gpus.begin(), out.gpus.end(), gpu);
      int type = int(at - out.gpus.begin());
      if (at == out.gpus.end())
        out.gpus.push_back(gpu);
      out.nodeType.insert(out.nodeType.end(), group.count(), type);
    }
  return out;
}

double peakTflops(const GpuType &gpu, Precision precision) {
  switch (precision) {
  case FP32_FULL:
    return gpu.tf32_tflops() > 0 ? gpu.tf32_tflops() : gpu.fp32_tflops();
  case FP8_MIXED:
    return gpu.fp8_tflops();
  case FP16_MIXED:
    return gpu.fp16_tflops();
  default:
    return gpu.bf16_tflops();
  }
}

std::string dtypeName(DType dtype) {
  switch (dtype) {
  case FP32:
    return "fp32";
  case BF16:
    return "bf16";
  case FP16:
    return "fp16";
  case FP8:
    return "fp8";
  default:
    return "unspecified";
  }
}

} // namespace loom::spec
