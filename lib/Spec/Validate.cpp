//===- Validate.cpp - semantic checks of model, cluster and training ------===//
//
// What the schema cannot say: sizes that must be positive, heads that must
// divide, names that must resolve. Each check fails on the first problem with
// the path of the offending field, so a parsed file's error carries that
// field's line.
//
//===----------------------------------------------------------------------===//

#include "SpecInternal.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <set>

namespace loom::spec::detail {

namespace {

template <typename T>
void requirePositive(const Locator &at, const std::string &path, T value) {
  if (!(value > 0))
    at.fail(path, fmt::format("must be > 0, got {}", value));
}

template <typename T>
void requireNonNegative(const Locator &at, const std::string &path, T value) {
  if (value < 0)
    at.fail(path, fmt::format("must be >= 0, got {}", value));
}

/// proto3 enums read 0 when the key was left out; the planner needs a real
/// value.
template <typename Enum>
void requireEnum(const Locator &at, const std::string &path, Enum value,
                 const google::protobuf::EnumDescriptor *desc) {
  if (static_cast<int>(value) == 0)
    at.fail(path, fmt::format("must be given (one of {})",
                              fmt::join(enumNames(desc), ", ")));
}

void validateAttention(const Model &model, const Attention &attn,
                       const std::string &path, const Locator &at) {
  requirePositive(at, path + ".heads", attn.heads());
  bool mla = attn.q_lora_rank() || attn.kv_lora_rank() ||
             attn.qk_rope_head_dim() || attn.qk_nope_head_dim() ||
             attn.v_head_dim();
  if (mla) {
    // q_lora_rank may stay 0: DeepSeek-V2-Lite projects queries at full rank.
    requirePositive(at, path + ".kv_lora_rank", attn.kv_lora_rank());
    requirePositive(at, path + ".qk_rope_head_dim", attn.qk_rope_head_dim());
    requirePositive(at, path + ".qk_nope_head_dim", attn.qk_nope_head_dim());
    requirePositive(at, path + ".v_head_dim", attn.v_head_dim());
    if (attn.kv_heads() && attn.kv_heads() != attn.heads())
      at.fail(
          path + ".kv_heads",
          fmt::format("latent attention (kv_lora_rank set) expands keys and "
                      "values to every head; leave kv_heads unset or equal "
                      "to heads ({}), got {}",
                      attn.heads(), attn.kv_heads()));
    if (attn.head_dim())
      at.fail(path + ".head_dim",
              "latent attention takes its head sizes from qk_nope_head_dim, "
              "qk_rope_head_dim and v_head_dim; leave head_dim unset");
    return;
  }
  if (attn.kv_heads() > attn.heads() ||
      (attn.kv_heads() && attn.heads() % attn.kv_heads()))
    at.fail(path + ".kv_heads", fmt::format("must divide heads ({}), got {}",
                                            attn.heads(), attn.kv_heads()));
  if (!attn.head_dim() && model.hidden_size() % attn.heads())
    at.fail(path + ".heads",
            fmt::format("hidden_size ({}) is not a multiple of heads ({}); set "
                        "head_dim",
                        model.hidden_size(), attn.heads()));
}

void validateBlock(const Model &model, const Block &block,
                   const std::string &path, const Locator &at) {
  requirePositive(at, path + ".count", block.count());
  validateAttention(model, block.attention(), path + ".attention", at);
  const auto *activation = Activation_descriptor();
  switch (block.ffn_case()) {
  case Block::kMlp:
    requirePositive(at, path + ".mlp.ffn_hidden", block.mlp().ffn_hidden());
    requireEnum(at, path + ".mlp.activation", block.mlp().activation(),
                activation);
    return;
  case Block::kMoe: {
    const Moe &moe = block.moe();
    requirePositive(at, path + ".moe.experts", moe.experts());
    requirePositive(at, path + ".moe.top_k", moe.top_k());
    if (moe.top_k() > moe.experts())
      at.fail(path + ".moe.top_k",
              fmt::format("must be <= experts ({}), got {}", moe.experts(),
                          moe.top_k()));
    requirePositive(at, path + ".moe.expert_ffn_hidden",
                    moe.expert_ffn_hidden());
    requireEnum(at, path + ".moe.activation", moe.activation(), activation);
    if (moe.capacity_factor() != 0 && moe.capacity_factor() < 1)
      at.fail(path + ".moe.capacity_factor",
              fmt::format("must be 0 (dropless) or >= 1, got {}", moe.capacity_factor()));
    return;
  }
  case Block::FFN_NOT_SET:
    break;
  }
  at.fail(path, "needs an 'mlp' or a 'moe' section");
}

/// A name that must resolve: empty and unknown names fail with the known ones.
void requireKnown(const Locator &at, const std::string &path,
                  const std::string &kind, const std::string &name, bool found,
                  const std::vector<std::string> &known) {
  if (name.empty())
    at.fail(path, fmt::format("must name a {} (one of {})", kind,
                              fmt::join(known, ", ")));
  if (!found)
    at.fail(path, fmt::format("unknown {} '{}'{}; known: {}", kind, name,
                              didYouMean(name, known), fmt::join(known, ", ")));
}

/// Names a cluster can refer to: its own entries, then the catalog's.
template <typename T>
std::vector<std::string>
knownNames(const google::protobuf::RepeatedPtrField<T> &own,
           const std::vector<T> &catalog) {
  std::vector<std::string> names;
  for (const T &item : own)
    names.push_back(item.name());
  for (const T &item : catalog)
    if (std::find(names.begin(), names.end(), item.name()) == names.end())
      names.push_back(item.name());
  return names;
}

/// Names given in a list must be present and distinct, since others refer to
/// them.
void requireUniqueName(const Locator &at, const std::string &path,
                       const std::string &name, std::set<std::string> &seen) {
  if (name.empty())
    at.fail(path, "must be given");
  if (!seen.insert(name).second)
    at.fail(path, fmt::format("'{}' is defined twice", name));
}

} // namespace

void validateModel(const Model &model, const Locator &at) {
  requirePositive(at, "model.vocab_size", model.vocab_size());
  requirePositive(at, "model.hidden_size", model.hidden_size());
  requirePositive(at, "model.max_seq_len", model.max_seq_len());
  requireEnum(at, "model.dtype", model.dtype(), DType_descriptor());
  requireEnum(at, "model.norm", model.norm(), NormKind_descriptor());
  requireEnum(at, "model.position", model.position(),
              PositionKind_descriptor());
  if (model.blocks().empty())
    at.fail("model.blocks", "must list at least one block of layers");
  uint64_t layers = 0;
  for (int i = 0; i < model.blocks_size(); ++i) {
    validateBlock(model, model.blocks(i), fmt::format("model.blocks[{}]", i),
                  at);
    layers += model.blocks(i).count();
  }
  // Planning is linear in the layers (a million take 19 s on 8 GPUs) and
  // per-layer counts are 32-bit; the deepest published transformers have
  // about a thousand layers.
  if (layers > kMaxLayers)
    at.fail("model.blocks",
            fmt::format("{} layers in all; loom takes at most {}", layers, kMaxLayers));
}

void validateCluster(const Cluster &cluster, const Locator &at) {
  std::set<std::string> seen;
  for (int i = 0; i < cluster.gpu_types_size(); ++i) {
    const GpuType &gpu = cluster.gpu_types(i);
    std::string path = fmt::format("cluster.gpu_types[{}]", i);
    requireUniqueName(at, path + ".name", gpu.name(), seen);
    requirePositive(at, path + ".bf16_tflops", gpu.bf16_tflops());
    requireNonNegative(at, path + ".fp16_tflops", gpu.fp16_tflops());
    requireNonNegative(at, path + ".fp8_tflops", gpu.fp8_tflops());
    requireNonNegative(at, path + ".fp32_tflops", gpu.fp32_tflops());
    requireNonNegative(at, path + ".tf32_tflops", gpu.tf32_tflops());
    requirePositive(at, path + ".hbm_gib", gpu.hbm_gib());
    requirePositive(at, path + ".hbm_gbytes_per_s", gpu.hbm_gbytes_per_s());
    if (gpu.gemm_8192_efficiency() < 0 || gpu.gemm_8192_efficiency() > 1)
      at.fail(path + ".gemm_8192_efficiency",
              fmt::format("must be in (0, 1], a share of peak, got {}",
                          gpu.gemm_8192_efficiency()));
    requireNonNegative(at, path + ".exp_per_second", gpu.exp_per_second());
  }
  seen.clear();
  for (int i = 0; i < cluster.links_size(); ++i) {
    const LinkTier &link = cluster.links(i);
    std::string path = fmt::format("cluster.links[{}]", i);
    requireUniqueName(at, path + ".name", link.name(), seen);
    requirePositive(at, path + ".bandwidth_gbps", link.bandwidth_gbps());
    requireNonNegative(at, path + ".latency_us", link.latency_us());
    if (link.efficiency() < 0 || link.efficiency() > 1)
      at.fail(path + ".efficiency",
              fmt::format("must be in (0, 1], the share of the line rate collectives "
                          "reach, got {}",
                          link.efficiency()));
  }
  if (cluster.datacenters().empty())
    at.fail("cluster.datacenters", "must list at least one datacenter");
  std::vector<std::string> gpus =
      knownNames(cluster.gpu_types(), catalogGpus());
  std::vector<std::string> links = knownNames(cluster.links(), catalogLinks());
  seen.clear();
  for (int d = 0; d < cluster.datacenters_size(); ++d) {
    const Datacenter &dc = cluster.datacenters(d);
    std::string dcPath = fmt::format("cluster.datacenters[{}]", d);
    requireUniqueName(at, dcPath + ".name", dc.name(), seen);
    if (dc.node_groups().empty())
      at.fail(dcPath + ".node_groups", "must list at least one node group");
    for (int g = 0; g < dc.node_groups_size(); ++g) {
      const NodeGroup &group = dc.node_groups(g);
      std::string path = fmt::format("{}.node_groups[{}]", dcPath, g);
      requirePositive(at, path + ".count", group.count());
      requirePositive(at, path + ".gpus_per_node", group.gpus_per_node());
      requireKnown(at, path + ".gpu", "GPU", group.gpu(),
                   findGpu(cluster, group.gpu()), gpus);
      requireKnown(at, path + ".intra_node_link", "link",
                   group.intra_node_link(),
                   findLink(cluster, group.intra_node_link()), links);
      requireKnown(at, path + ".inter_node_link", "link",
                   group.inter_node_link(),
                   findLink(cluster, group.inter_node_link()), links);
    }
  }
  if (cluster.datacenters_size() > 1 && cluster.inter_dc_link().empty())
    at.fail("cluster.inter_dc_link",
            fmt::format("must name the link between datacenters (there are {})",
                        cluster.datacenters_size()));
  if (!cluster.inter_dc_link().empty())
    requireKnown(at, "cluster.inter_dc_link", "link", cluster.inter_dc_link(),
                 findLink(cluster, cluster.inter_dc_link()), links);
}

void validateTraining(const Training &training, const Locator &at) {
  requirePositive(at, "training.global_batch", training.global_batch());
  requirePositive(at, "training.seq_len", training.seq_len());
  if (training.global_batch() > kMaxGlobalBatch)
    at.fail("training.global_batch", fmt::format("must be at most {} sequences, got {}",
                                                 kMaxGlobalBatch, training.global_batch()));
  if (training.seq_len() > kMaxSeqLen)
    at.fail("training.seq_len",
            fmt::format("must be at most {} tokens, got {}", kMaxSeqLen, training.seq_len()));
  if (training.micro_batch() > training.global_batch())
    at.fail("training.micro_batch",
            fmt::format("must be <= global_batch ({}), got {}",
                        training.global_batch(), training.micro_batch()));
  if (training.grad_reduce_in_bf16()) {
    std::string why = bf16GradsConflict(training);
    if (!why.empty())
      at.fail("training.grad_reduce_in_bf16", why);
  }
}

} // namespace loom::spec::detail

namespace loom::spec {

void validateModel(const Model &model, std::string_view where) {
  detail::validateModel(model, detail::Locator(where));
}

void validateCluster(const Cluster &cluster, std::string_view where) {
  detail::validateCluster(cluster, detail::Locator(where));
}

void validateTraining(const Training &training, std::string_view where) {
  detail::validateTraining(training, detail::Locator(where));
}

std::string bf16GradsConflict(const Training &training) {
  switch (training.precision()) {
  case FP16_MIXED:
    return "needs bf16 or fp8 precision, got fp16";
  case FP32_FULL:
    return "needs bf16 or fp8 precision, got fp32";
  default:
    return "";
  }
}

} // namespace loom::spec
