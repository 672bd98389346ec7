//===- HFImport.cpp - Hugging Face config.json to a loom Model ------------===//
//
// Maps the keys of transformers' config classes onto the Model schema. Only
// shape-bearing keys are read; keys that change behaviour but not parameters
// (rope_scaling, sliding_window, use_parallel_residual, rotary_pct, router
// scoring) are ignored. DeepSeek-V3's multi-token-prediction module
// (num_nextn_predict_layers) is not part of the main model and is left out.
//
//===----------------------------------------------------------------------===//

#include "SpecInternal.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <limits>

namespace loom::spec {

namespace {

using json = nlohmann::json;

constexpr const char *kSupported =
    "llama, mistral, mixtral, qwen2, gpt2, gpt_neox, deepseek_v3";

/// Typed access to config keys; every error names the file and the key.
class HFConfig {
public:
  HFConfig(const json &config, std::string_view file)
      : config(config), file(file) {}

  [[noreturn]] void fail(const std::string &what) const {
    throw SpecError(fmt::format("{}: {}", file, what));
  }

  /// A required size such as hidden_size.
  uint32_t size(const char *key) const {
    const json *value = find(key);
    if (!value)
      fail(fmt::format("missing key '{}' (needed for model_type '{}')", key,
                       modelType));
    return toSize(key, *value);
  }
  /// An optional size; absent and null both take `fallback`.
  uint32_t size(const char *key, uint32_t fallback) const {
    const json *value = find(key);
    return value ? toSize(key, *value) : fallback;
  }
  bool flag(const char *key, bool fallback) const {
    const json *value = find(key);
    if (!value)
      return fallback;
    if (!value->is_boolean())
      fail(fmt::format("'{}' must be true or false, got {}", key,
                       value->dump()));
    return value->get<bool>();
  }
  std::string text(const char *key, std::string fallback) const {
    const json *value = find(key);
    if (!value)
      return fallback;
    if (!value->is_string())
      fail(fmt::format("'{}' must be a string, got {}", key, value->dump()));
    return value->get<std::string>();
  }

  std::string modelType;

private:
  const json *find(const char *key) const {
    auto it = config.find(key);
    return it == config.end() || it->is_null() ? nullptr : &*it;
  }
  uint32_t toSize(const char *key, const json &value) const {
    if (!value.is_number_unsigned() ||
        value.get<uint64_t>() > std::numeric_limits<uint32_t>::max())
      fail(fmt::format("'{}' must be a non-negative 32-bit integer, got {}",
                       key, value.dump()));
    return value.get<uint32_t>();
  }

  const json &config;
  std::string_view file;
};

DType dtypeOf(const HFConfig &cfg) {
  // Newer transformers write "dtype"; without either, transformers loads fp32.
  std::string name = cfg.text("dtype", cfg.text("torch_dtype", "float32"));
  if (name == "float32")
    return FP32;
  if (name == "bfloat16")
    return BF16;
  if (name == "float16")
    return FP16;
  cfg.fail(fmt::format(
      "unsupported torch_dtype '{}' (float32, bfloat16, float16)", name));
}

/// Activation of a two-matrix MLP (GPT-2, GPT-NeoX).
Activation plainActivation(const HFConfig &cfg, const char *key,
                           const char *fallback) {
  std::string act = cfg.text(key, fallback);
  if (act.starts_with("gelu"))
    return GELU;
  if (act == "relu")
    return RELU;
  if (act == "silu" || act == "swish")
    return SILU;
  cfg.fail(fmt::format("unsupported {} '{}' (gelu*, relu, silu)", key, act));
}

/// Activation of a gated MLP (Llama and its descendants): gate * act(up).
Activation gatedActivation(const HFConfig &cfg) {
  std::string act = cfg.text("hidden_act", "silu");
  if (act == "silu" || act == "swish")
    return SWIGLU;
  if (act.starts_with("gelu"))
    return GEGLU;
  cfg.fail(fmt::format("unsupported hidden_act '{}' (silu, gelu*)", act));
}

void importGpt2(const HFConfig &cfg, Model &model) {
  const uint32_t h = cfg.size("n_embd");
  model.set_hidden_size(h);
  model.set_vocab_size(cfg.size("vocab_size"));
  model.set_max_seq_len(cfg.size("n_positions"));
  model.set_norm(LAYERNORM);
  model.set_position(LEARNED);
  model.set_tied_embeddings(cfg.flag("tie_word_embeddings", true));
  Block *block = model.add_blocks();
  block->set_count(cfg.size("n_layer"));
  block->mutable_attention()->set_heads(cfg.size("n_head"));
  block->mutable_attention()->set_qkv_bias(true);
  block->mutable_attention()->set_out_bias(true);
  Mlp *mlp = block->mutable_mlp();
  mlp->set_ffn_hidden(cfg.size("n_inner", 4 * h)); // null means 4h
  mlp->set_activation(plainActivation(cfg, "activation_function", "gelu_new"));
  mlp->set_bias(true);
}

void importGptNeox(const HFConfig &cfg, Model &model) {
  model.set_hidden_size(cfg.size("hidden_size"));
  model.set_vocab_size(cfg.size("vocab_size"));
  model.set_max_seq_len(cfg.size("max_position_embeddings"));
  model.set_norm(LAYERNORM);
  model.set_position(ROPE); // partial rotary (rotary_pct) has no parameters
  model.set_tied_embeddings(cfg.flag("tie_word_embeddings", false));
  Block *block = model.add_blocks();
  block->set_count(cfg.size("num_hidden_layers"));
  bool bias = cfg.flag("attention_bias", true);
  block->mutable_attention()->set_heads(cfg.size("num_attention_heads"));
  block->mutable_attention()->set_qkv_bias(bias);
  block->mutable_attention()->set_out_bias(bias);
  Mlp *mlp = block->mutable_mlp();
  mlp->set_ffn_hidden(cfg.size("intermediate_size"));
  mlp->set_activation(plainActivation(cfg, "hidden_act", "gelu"));
  mlp->set_bias(true);
}

/// DeepSeek-V3: the first first_k_dense_replace layers have a dense MLP, the
/// rest an MoE with routed and shared experts; all use multi-head latent
/// attention.
void addDeepSeekBlocks(const HFConfig &cfg, const Attention &attention,
                       Activation act, Model &model) {
  if (cfg.size("moe_layer_freq", 1) != 1)
    cfg.fail("moe_layer_freq other than 1 is not supported");
  const uint32_t layers = cfg.size("num_hidden_layers");
  const uint32_t dense = cfg.size("first_k_dense_replace");
  if (dense > layers)
    cfg.fail(
        fmt::format("first_k_dense_replace ({}) exceeds num_hidden_layers ({})",
                    dense, layers));
  Attention mla = attention;
  mla.set_kv_heads(0); // keys and values come from the latent, one per head
  mla.set_q_lora_rank(cfg.size("q_lora_rank", 0)); // null: full-rank queries
  mla.set_kv_lora_rank(cfg.size("kv_lora_rank"));
  mla.set_qk_rope_head_dim(cfg.size("qk_rope_head_dim"));
  mla.set_qk_nope_head_dim(cfg.size("qk_nope_head_dim"));
  mla.set_v_head_dim(cfg.size("v_head_dim"));
  if (dense) {
    Block *block = model.add_blocks();
    block->set_count(dense);
    *block->mutable_attention() = mla;
    block->mutable_mlp()->set_ffn_hidden(cfg.size("intermediate_size"));
    block->mutable_mlp()->set_activation(act);
  }
  if (layers > dense) {
    Block *block = model.add_blocks();
    block->set_count(layers - dense);
    *block->mutable_attention() = mla;
    Moe *moe = block->mutable_moe();
    moe->set_experts(cfg.size("n_routed_experts"));
    moe->set_top_k(cfg.size("num_experts_per_tok"));
    moe->set_shared_experts(cfg.size("n_shared_experts", 0));
    moe->set_expert_ffn_hidden(cfg.size("moe_intermediate_size"));
    moe->set_activation(act);
  }
}

/// Llama and the architectures that kept its layout: RMSNorm, RoPE, gated MLP,
/// grouped-query attention.
void importLlamaFamily(const HFConfig &cfg, Model &model) {
  const std::string &type = cfg.modelType;
  model.set_hidden_size(cfg.size("hidden_size"));
  model.set_vocab_size(cfg.size("vocab_size"));
  model.set_max_seq_len(cfg.size("max_position_embeddings"));
  model.set_norm(RMSNORM);
  model.set_position(ROPE);
  model.set_tied_embeddings(cfg.flag("tie_word_embeddings", false));
  Attention attention;
  attention.set_heads(cfg.size("num_attention_heads"));
  attention.set_kv_heads(cfg.size("num_key_value_heads", attention.heads()));
  attention.set_head_dim(cfg.size("head_dim", 0));
  // Qwen2 biases q/k/v but not the output projection; Llama makes both
  // optional.
  bool attentionBias = cfg.flag("attention_bias", false);
  attention.set_qkv_bias(type == "qwen2" || attentionBias);
  attention.set_out_bias(attentionBias);
  const Activation act = gatedActivation(cfg);

  if (type == "deepseek_v3") {
    addDeepSeekBlocks(cfg, attention, act, model);
    return;
  }
  Block *block = model.add_blocks();
  block->set_count(cfg.size("num_hidden_layers"));
  *block->mutable_attention() = attention;
  if (type == "mixtral") {
    Moe *moe = block->mutable_moe();
    moe->set_experts(cfg.size("num_local_experts"));
    moe->set_top_k(cfg.size("num_experts_per_tok"));
    moe->set_expert_ffn_hidden(cfg.size("intermediate_size"));
    moe->set_activation(act);
    return;
  }
  Mlp *mlp = block->mutable_mlp();
  mlp->set_ffn_hidden(cfg.size("intermediate_size"));
  mlp->set_activation(act);
  mlp->set_bias(cfg.flag("mlp_bias", false));
}

/// "_name_or_path" when the file has one, else the directory of a config.json
/// (HF checkouts are named after the model), else the file's stem.
std::string modelName(const HFConfig &cfg, std::string_view displayName) {
  std::string recorded = cfg.text("_name_or_path", "");
  if (!recorded.empty())
    return recorded;
  std::filesystem::path path(displayName);
  if (path.filename() == "config.json" && path.has_parent_path())
    return path.parent_path().filename().string();
  return path.stem().string();
}

} // namespace

Model importHFConfig(std::string_view jsonText, std::string_view displayName) {
  const json config = detail::parseJson(jsonText, displayName);
  HFConfig cfg(config, displayName);
  if (!config.is_object())
    cfg.fail("expected a JSON object (an HF config.json)");
  cfg.modelType = cfg.text("model_type", "");
  if (cfg.modelType.empty())
    cfg.fail(
        fmt::format("missing key 'model_type' (supported: {})", kSupported));

  Model model;
  model.set_family(cfg.modelType);
  model.set_source(fmt::format("Hugging Face config.json ({})", displayName));
  model.set_dtype(dtypeOf(cfg));
  const std::string &type = cfg.modelType;
  if (type == "gpt2")
    importGpt2(cfg, model);
  else if (type == "gpt_neox")
    importGptNeox(cfg, model);
  else if (type == "llama" || type == "mistral" || type == "mixtral" ||
           type == "qwen2" || type == "deepseek_v3")
    importLlamaFamily(cfg, model);
  else
    cfg.fail(fmt::format("unsupported model_type '{}' (supported: {})", type,
                         kSupported));
  model.set_name(modelName(cfg, displayName));
  validateModel(model, displayName);
  return model;
}

} // namespace loom::spec
