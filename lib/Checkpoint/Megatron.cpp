//===- Megatron.cpp - Megatron-LM checkpoint directories -------------------===//
#include "loom/Checkpoint/Megatron.h"

#include "MegatronCommon.h"

#include "loom/Checkpoint/TorchZip.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"

#include <cmath>
#include <map>
#include <set>
#include <tuple>

using namespace loom::ckpt;
using namespace loom::ckpt::megatron;

llvm::StringRef loom::ckpt::megatronSplitName(MegatronSplit split) {
  switch (split) {
  case MegatronSplit::Replicated:
    return "replicated";
  case MegatronSplit::Column:
    return "column";
  case MegatronSplit::Row:
    return "row";
  case MegatronSplit::Vocab:
    return "vocab";
  case MegatronSplit::FusedQKV:
    return "fused-qkv";
  case MegatronSplit::FusedGateUp:
    return "fused-gate-up";
  }
  return "";
}

namespace {
/// One parameter kind: its name under each naming scheme (after "layers.N." for
/// layer parameters), its split, and the HF name(s) it unshards to.
struct NameRule {
  const char *legacy, *mcore;
  MegatronSplit split;
  const char *hf; // comma-separated for fused parameters
  /// Megatron-DeepSpeed's name when it differs from the legacy one: it kept the
  /// norm names Megatron-LM had before it renamed them (megatron/model/transformer.py,
  /// ParallelTransformerLayer: input_layernorm, post_attention_layernorm, final_layernorm).
  const char *deepspeed = nullptr;
};

constexpr NameRule kLayerRules[] = {
    {"input_norm.weight", "self_attention.linear_qkv.layer_norm_weight",
     MegatronSplit::Replicated, "input_layernorm.weight", "input_layernorm.weight"},
    {"input_norm.bias", "self_attention.linear_qkv.layer_norm_bias", MegatronSplit::Replicated,
     "input_layernorm.bias", "input_layernorm.bias"},
    {"self_attention.query_key_value.weight", "self_attention.linear_qkv.weight",
     MegatronSplit::FusedQKV, "self_attn.q_proj.weight,self_attn.k_proj.weight,self_attn.v_proj.weight"},
    {"self_attention.query_key_value.bias", "self_attention.linear_qkv.bias",
     MegatronSplit::FusedQKV, "self_attn.q_proj.bias,self_attn.k_proj.bias,self_attn.v_proj.bias"},
    {"self_attention.dense.weight", "self_attention.linear_proj.weight", MegatronSplit::Row,
     "self_attn.o_proj.weight"},
    {"self_attention.dense.bias", "self_attention.linear_proj.bias", MegatronSplit::Replicated,
     "self_attn.o_proj.bias"},
    {"post_attention_norm.weight", "mlp.linear_fc1.layer_norm_weight", MegatronSplit::Replicated,
     "post_attention_layernorm.weight", "post_attention_layernorm.weight"},
    {"post_attention_norm.bias", "mlp.linear_fc1.layer_norm_bias", MegatronSplit::Replicated,
     "post_attention_layernorm.bias", "post_attention_layernorm.bias"},
    // Column, or FusedGateUp with SwiGLU (the HF names are chosen then).
    {"mlp.dense_h_to_4h.weight", "mlp.linear_fc1.weight", MegatronSplit::Column, "mlp.up_proj.weight"},
    {"mlp.dense_h_to_4h.bias", "mlp.linear_fc1.bias", MegatronSplit::Column, "mlp.up_proj.bias"},
    {"mlp.dense_4h_to_h.weight", "mlp.linear_fc2.weight", MegatronSplit::Row, "mlp.down_proj.weight"},
    {"mlp.dense_4h_to_h.bias", "mlp.linear_fc2.bias", MegatronSplit::Replicated, "mlp.down_proj.bias"},
};

/// The order a layer registers its parameters in, as indices into kLayerRules, which
/// decides where the distributed optimizer's grad buffer puts them and how the
/// mixed-precision optimizer numbers their states. Legacy Megatron's
/// ParallelAttention builds query_key_value, then dense (megatron/legacy/model/
/// transformer.py). mcore's Attention.__init__ builds linear_proj, and SelfAttention
/// builds linear_qkv only after it (megatron/core/transformer/attention.py);
/// TransformerEngine's LayerNormLinear registers layer_norm_weight and
/// layer_norm_bias before weight and bias (transformer_engine/pytorch/module/
/// layernorm_linear.py).
constexpr unsigned kLegacyOrder[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
constexpr unsigned kMCoreOrder[] = {4, 5, 0, 1, 2, 3, 6, 7, 8, 9, 10, 11};
static_assert(std::size(kLegacyOrder) == std::size(kLayerRules) &&
              std::size(kMCoreOrder) == std::size(kLayerRules));

constexpr NameRule kModelRules[] = {
    {"embedding.word_embeddings.weight", "embedding.word_embeddings.weight", MegatronSplit::Vocab,
     "model.embed_tokens.weight"},
    {"embedding.position_embeddings.weight", "embedding.position_embeddings.weight",
     MegatronSplit::Replicated, "model.embed_positions.weight"},
    {"encoder.final_norm.weight", "decoder.final_layernorm.weight", MegatronSplit::Replicated,
     "model.norm.weight", "encoder.final_layernorm.weight"},
    {"encoder.final_norm.bias", "decoder.final_layernorm.bias", MegatronSplit::Replicated,
     "model.norm.bias", "encoder.final_layernorm.bias"},
    {"output_layer.weight", "output_layer.weight", MegatronSplit::Vocab, "lm_head.weight"},
};

/// A MoE layer's parameters beside its experts, with Mixtral's HF names: mcore's
/// TransformerLayer gives a MoE layer a norm of its own before the MLP,
/// pre_mlp_layernorm (not fused into linear_fc1 as a dense layer's is;
/// megatron/core/models/gpt/gpt_layer_specs.py), and MoELayer's TopKRouter holds the
/// gate (megatron/core/transformer/moe/router.py). In registration order.
constexpr NameRule kMoERules[] = {
    {nullptr, "pre_mlp_layernorm.weight", MegatronSplit::Replicated,
     "post_attention_layernorm.weight"},
    {nullptr, "pre_mlp_layernorm.bias", MegatronSplit::Replicated, "post_attention_layernorm.bias"},
    {nullptr, "mlp.router.weight", MegatronSplit::Replicated, "block_sparse_moe.gate.weight"},
};

/// A MoE layer's shared experts (SharedExpertMLP, megatron/core/transformer/moe/
/// shared_experts.py, with --moe-shared-expert-intermediate-size): one MLP of that
/// many rows that every token takes, split over tp as the dense MLP is and held alike
/// by every expert-parallel rank, with Qwen2-MoE's HF names. MoELayer registers it
/// after the routed experts; its optional sigmoid gate (--moe-shared-expert-gate,
/// [1, hidden], replicated) is a parameter of its own, so it comes before the linears.
constexpr NameRule kSharedExpertRules[] = {
    {nullptr, "mlp.shared_experts.gate_weight", MegatronSplit::Replicated,
     "mlp.shared_expert_gate.weight"},
    {nullptr, "mlp.shared_experts.linear_fc1.weight", MegatronSplit::Column,
     "mlp.shared_expert.up_proj.weight"},
    {nullptr, "mlp.shared_experts.linear_fc2.weight", MegatronSplit::Row,
     "mlp.shared_expert.down_proj.weight"},
};

/// Gives `param` the split and HF names of `rule` in the layer whose HF names start
/// with `prefix`. With SwiGLU a Column fc1 is [gate; up] per rank: FusedGateUp, its
/// gate named as its up with gate_proj for up_proj.
void layerParam(MegatronParam &param, const NameRule &rule, const std::string &prefix,
                bool swiglu) {
  param.split = rule.split;
  param.fullNames.clear();
  llvm::StringRef hf = rule.hf;
  if (swiglu && rule.split == MegatronSplit::Column) {
    auto [before, after] = hf.split("up_proj");
    param.split = MegatronSplit::FusedGateUp;
    param.fullNames = {prefix + before.str() + "gate_proj" + after.str(), prefix + hf.str()};
    return;
  }
  llvm::SmallVector<llvm::StringRef, 3> names;
  hf.split(names, ',');
  for (llvm::StringRef n : names)
    param.fullNames.push_back(prefix + n.str());
}

/// A routed expert's parameter after "decoder.layers.N.": SequentialMLP's
/// mlp.experts.local_experts.<i>.linear_fc<k>.{weight,bias} or TEGroupedMLP's
/// mlp.experts.linear_fc<k>.{weight,bias}<i> (megatron/core/transformer/moe/
/// experts.py; biases with --add-bias-linear: each local expert is an MLP of its own in
/// SequentialMLP, and TransformerEngine's GroupedLinear registers bias<i> beside each
/// weight<i>).
struct ExpertName {
  int64_t local = 0;
  bool fc2 = false, grouped = false, bias = false;
};

std::optional<ExpertName> expertOf(llvm::StringRef suffix) {
  ExpertName e;
  if (suffix.consume_front("mlp.experts.local_experts.")) {
    auto [index, rest] = suffix.split('.');
    if (index.getAsInteger(10, e.local) || !rest.consume_front("linear_fc"))
      return std::nullopt;
    e.fc2 = rest.consume_front("2");
    if ((!e.fc2 && !rest.consume_front("1")) || (rest != ".weight" && rest != ".bias"))
      return std::nullopt;
    e.bias = rest == ".bias";
    return e;
  }
  if (!suffix.consume_front("mlp.experts.linear_fc"))
    return std::nullopt;
  e.grouped = true;
  e.fc2 = suffix.consume_front("2");
  if (!e.fc2 && !suffix.consume_front("1"))
    return std::nullopt;
  e.bias = suffix.consume_front(".bias");
  if ((!e.bias && !suffix.consume_front(".weight")) || suffix.empty() ||
      suffix.getAsInteger(10, e.local))
    return std::nullopt;
  return e;
}

std::string expertSuffix(const ExpertName &e) {
  const char *fc = e.fc2 ? "linear_fc2" : "linear_fc1";
  const char *kind = e.bias ? "bias" : "weight";
  return e.grouped ? llvm::formatv("mlp.experts.{0}.{1}{2}", fc, kind, e.local).str()
                   : llvm::formatv("mlp.experts.local_experts.{0}.{1}.{2}", e.local, fc, kind)
                         .str();
}

/// Expert `expert`'s parameter as Mixtral names it under "model.layers.N.": fc1 is
/// [w1 (gate); w3 (up)] per TP rank with SwiGLU, fc2 is w2 (down). A bias takes its
/// weight's name with ".bias" (Mixtral has none; loom's extension): fc1's is cut as
/// its weight's rows are, fc2's (row-parallel) is whole on every rank.
void expertParam(MegatronParam &param, const std::string &layerPrefix, int64_t expert, bool fc2,
                 bool swiglu, bool bias = false) {
  std::string base = layerPrefix + "block_sparse_moe.experts." + std::to_string(expert) + ".";
  const char *kind = bias ? ".bias" : ".weight";
  param.expert = expert;
  if (fc2) {
    param.split = bias ? MegatronSplit::Replicated : MegatronSplit::Row;
    param.fullNames = {base + "w2" + kind};
  } else if (swiglu) {
    param.split = MegatronSplit::FusedGateUp;
    param.fullNames = {base + "w1" + kind, base + "w3" + kind};
  } else {
    param.split = MegatronSplit::Column;
    param.fullNames = {base + "w1" + kind};
  }
}

/// A shard's tensors by local name (collectTensors paths with the wrappers stripped).
using ShardTensors = std::map<std::string, Tensor>;

/// The last stage's copy of the tied word embeddings (MegatronParam::tiedCopy).
MegatronParam tiedCopyParam(MegatronNaming naming, unsigned stage) {
  MegatronParam param;
  param.localName =
      naming == MegatronNaming::Legacy ? "word_embeddings_for_head.weight" : "output_layer.weight";
  param.stage = stage;
  param.split = MegatronSplit::Vocab;
  param.fullNames = {"model.embed_tokens.weight"};
  param.tiedCopy = true;
  return param;
}

std::optional<int64_t> intArg(const DictValue &args, llvm::StringRef key) {
  ValuePtr value = args.find(key);
  if (value && value->get<int64_t>())
    return *value->get<int64_t>();
  return std::nullopt;
}

bool boolArg(const DictValue &args, llvm::StringRef key) {
  ValuePtr value = args.find(key);
  return value && value->get<bool>() && *value->get<bool>();
}

class Unsharder {
public:
  Unsharder(std::string dir, const MegatronLayout &layout) : dir(std::move(dir)), layout(layout) {}

  /// Concatenates `shards` (one per TP rank) as `param` says and appends the full
  /// tensors to `out`.
  llvm::Error run(const MegatronParam &param, llvm::ArrayRef<const Tensor *> shards,
                  std::vector<NamedTensor> &out) {
    const Tensor &first = *shards[0];
    for (unsigned rank = 0; rank < shards.size(); ++rank) {
      const Tensor &t = *shards[rank];
      if (t.dtype != first.dtype || t.shape != first.shape)
        return error(param, "TP rank " + llvm::Twine(rank) + " holds a different shape or dtype than rank 0");
      if (auto reason = t.checkView())
        return error(param, *reason);
    }
    if (param.split == MegatronSplit::Replicated) {
      out.push_back({param.fullNames[0], first});
      return llvm::Error::success();
    }
    if (first.shape.empty() || (param.split == MegatronSplit::Row && first.shape.size() != 2))
      return error(param, "rank " + llvm::Twine(first.shape.size()) + " cannot be " +
                              megatronSplitName(param.split) + "-split");
    int64_t rows = first.shape[0];
    uint64_t rowBytes = first.nbytes() / std::max<int64_t>(rows, 1);
    std::vector<std::vector<uint8_t>> bytes;
    for (const Tensor *t : shards)
      bytes.push_back(t->toBytes());
    auto rowsOf = [&](unsigned rank, int64_t begin, int64_t count) {
      return llvm::ArrayRef<uint8_t>(bytes[rank]).slice(begin * rowBytes, count * rowBytes);
    };
    auto make = [&](std::string name, std::vector<uint8_t> data, int64_t fullRows) {
      llvm::SmallVector<int64_t, 4> shape = first.shape;
      shape[0] = fullRows;
      out.push_back({std::move(name), Tensor::contiguous(first.dtype, shape,
                                                         std::make_shared<Storage>(std::move(data)))});
    };
    unsigned tp = shards.size();
    switch (param.split) {
    case MegatronSplit::Column:
    case MegatronSplit::Vocab: {
      std::vector<uint8_t> data;
      for (unsigned rank = 0; rank < tp; ++rank)
        llvm::append_range(data, bytes[rank]);
      int64_t full = rows * tp;
      if (param.split == MegatronSplit::Vocab) {
        if (full != layout.dims.paddedVocab)
          return error(param, "has " + llvm::Twine(full) + " vocabulary rows, args say " +
                                  llvm::Twine(layout.dims.paddedVocab));
        full = layout.dims.vocab; // padding rows are dropped
        data.resize(full * rowBytes);
      }
      make(param.fullNames[0], std::move(data), full);
      return llvm::Error::success();
    }
    case MegatronSplit::Row: {
      std::vector<uint8_t> data;
      data.reserve(first.nbytes() * tp);
      uint64_t elementBytes = dtypeSize(first.dtype);
      for (int64_t r = 0; r < rows; ++r)
        for (unsigned rank = 0; rank < tp; ++rank)
          llvm::append_range(data, rowsOf(rank, r, 1).take_front(first.shape[1] * elementBytes));
      out.push_back({param.fullNames[0],
                     Tensor::contiguous(first.dtype, {rows, first.shape[1] * tp},
                                        std::make_shared<Storage>(std::move(data)))});
      return llvm::Error::success();
    }
    case MegatronSplit::FusedQKV: {
      const MegatronDims &d = layout.dims;
      int64_t qPerGroup = d.heads / d.queryGroups, groupsPerRank = d.queryGroups / tp;
      int64_t groupRows = (qPerGroup + 2) * d.headDim;
      if (rows != groupsPerRank * groupRows)
        return error(param, "has " + llvm::Twine(rows) + " rows per rank, expected " +
                                llvm::Twine(groupsPerRank * groupRows) + " for " +
                                llvm::Twine(d.queryGroups) + " query groups");
      std::vector<uint8_t> q, k, v;
      for (unsigned rank = 0; rank < tp; ++rank)
        for (int64_t g = 0; g < groupsPerRank; ++g) {
          int64_t base = g * groupRows;
          llvm::append_range(q, rowsOf(rank, base, qPerGroup * d.headDim));
          llvm::append_range(k, rowsOf(rank, base + qPerGroup * d.headDim, d.headDim));
          llvm::append_range(v, rowsOf(rank, base + (qPerGroup + 1) * d.headDim, d.headDim));
        }
      make(param.fullNames[0], std::move(q), d.heads * d.headDim);
      make(param.fullNames[1], std::move(k), d.queryGroups * d.headDim);
      make(param.fullNames[2], std::move(v), d.queryGroups * d.headDim);
      return llvm::Error::success();
    }
    case MegatronSplit::FusedGateUp: {
      if (rows % 2)
        return error(param, "has an odd number of rows; SwiGLU fc1 is [gate; up]");
      std::vector<uint8_t> gate, up;
      for (unsigned rank = 0; rank < tp; ++rank) {
        llvm::append_range(gate, rowsOf(rank, 0, rows / 2));
        llvm::append_range(up, rowsOf(rank, rows / 2, rows / 2));
      }
      make(param.fullNames[0], std::move(gate), rows / 2 * tp);
      make(param.fullNames[1], std::move(up), rows / 2 * tp);
      return llvm::Error::success();
    }
    case MegatronSplit::Replicated:
      break;
    }
    return llvm::Error::success();
  }

private:
  llvm::Error error(const MegatronParam &param, const llvm::Twine &message) {
    return fileError(dir, "stage " + llvm::Twine(param.stage) + ": " + param.localName + ": " +
                              message);
  }
  std::string dir;
  const MegatronLayout &layout;
};
} // namespace

bool loom::ckpt::isMegatronCheckpoint(const llvm::Twine &directory) {
  std::string dir = directory.str();
  if (llvm::sys::fs::exists(dir + "/latest_checkpointed_iteration.txt"))
    return true;
  llvm::StringRef base = llvm::sys::path::filename(dir);
  return llvm::sys::fs::is_directory(dir) && (base.starts_with("iter_") || base == "release") &&
         (llvm::sys::fs::exists(dir + "/mp_rank_00") ||
          llvm::sys::fs::exists(dir + "/mp_rank_00_000") ||
          llvm::sys::fs::exists(dir + "/mp_rank_00_000_000"));
}

llvm::Expected<std::pair<std::string, int64_t>> megatron::iterationDir(const std::string &directory) {
  std::string tracker = directory + "/latest_checkpointed_iteration.txt";
  if (!llvm::sys::fs::exists(tracker)) {
    llvm::StringRef base = llvm::sys::path::filename(directory);
    int64_t iteration = 0;
    if (base != "release" &&
        (!base.consume_front("iter_") || base.getAsInteger(10, iteration)))
      return fileError(directory, "neither latest_checkpointed_iteration.txt nor an iter_XXXXXXX directory");
    return std::pair{directory, iteration};
  }
  auto text = llvm::MemoryBuffer::getFile(tracker);
  if (!text)
    return fileError(tracker, text.getError().message());
  llvm::StringRef content = (*text)->getBuffer().trim();
  if (content == "release")
    return std::pair{directory + "/release", int64_t(0)};
  int64_t iteration = 0;
  if (content.getAsInteger(10, iteration) || iteration < 0)
    return fileError(tracker, "expected an iteration number or 'release'");
  return std::pair{llvm::formatv("{0}/iter_{1:d7}", directory, iteration).str(), iteration};
}

/// Local parameter name: the collectTensors path without "model." and, in legacy
/// checkpoints, "language_model.".
static std::string localName(llvm::StringRef path, MegatronNaming naming) {
  path.consume_front("model.");
  if (naming == MegatronNaming::Legacy)
    path.consume_front("language_model.");
  return path.str();
}

std::optional<MegatronParam> megatron::classify(llvm::StringRef name, MegatronNaming naming,
                                                bool swiglu, int64_t layerOffset,
                                                int64_t expertOffset) {
  auto pick = [&](const NameRule &rule) {
    return llvm::StringRef(naming == MegatronNaming::Legacy ? rule.legacy : rule.mcore);
  };
  MegatronParam param;
  param.localName = name.str();
  llvm::StringRef rest = name;
  llvm::StringRef layersPrefix = naming == MegatronNaming::Legacy ? "encoder.layers." : "decoder.layers.";
  if (rest.consume_front(layersPrefix)) {
    auto [index, suffix] = rest.split('.');
    int64_t local = 0;
    if (index.getAsInteger(10, local))
      return std::nullopt;
    param.layer = layerOffset + local;
    std::string prefix = "model.layers." + std::to_string(param.layer) + ".";
    for (const NameRule &rule : kLayerRules)
      if (suffix == pick(rule)) {
        layerParam(param, rule, prefix, swiglu);
        return param;
      }
    if (naming == MegatronNaming::Legacy)
      return std::nullopt;
    for (llvm::ArrayRef<NameRule> rules :
         {llvm::ArrayRef(kMoERules), llvm::ArrayRef(kSharedExpertRules)})
      for (const NameRule &rule : rules)
        if (suffix == rule.mcore) {
          layerParam(param, rule, prefix, swiglu);
          return param;
        }
    if (auto expert = expertOf(suffix)) {
      expertParam(param, prefix, expertOffset + expert->local, expert->fc2, swiglu, expert->bias);
      return param;
    }
    return std::nullopt;
  }
  for (const NameRule &rule : kModelRules)
    if (name == pick(rule)) {
      param.split = rule.split;
      param.fullNames = {rule.hf};
      return param;
    }
  // Legacy names the tied copy apart; mcore's is output_layer.weight, which the
  // caller tells from an untied one by the args.
  if (naming == MegatronNaming::Legacy && name == "word_embeddings_for_head.weight")
    return tiedCopyParam(naming, 0);
  return std::nullopt;
}

std::optional<MegatronSplit> loom::ckpt::megatronSplitOfName(llvm::StringRef name) {
  auto spelled = [](llvm::StringRef text, const NameRule &rule) {
    for (const char *spelling : {rule.legacy, rule.mcore, rule.deepspeed})
      if (spelling && text == spelling)
        return true;
    return false;
  };
  // A layer parameter: what follows "layers.<N>." names its kind.
  for (size_t at = name.find("layers."); at != llvm::StringRef::npos;
       at = name.find("layers.", at + 1)) {
    if (at != 0 && name[at - 1] != '.')
      continue;
    auto [index, suffix] = name.drop_front(at + 7).split('.');
    unsigned layer = 0;
    if (index.getAsInteger(10, layer))
      continue;
    for (const NameRule &rule : kLayerRules)
      if (spelled(suffix, rule))
        return rule.split;
  }
  // A model parameter: a rule's name ends it, after any wrapper prefix.
  for (const NameRule &rule : kModelRules)
    for (const char *spelling : {rule.legacy, rule.mcore, rule.deepspeed})
      if (spelling && (name == spelling || name.ends_with("." + std::string(spelling))))
        return rule.split;
  return std::nullopt;
}

namespace {
/// A Megatron checkpoint with every shard opened (tensors mapped, not copied) and
/// every parameter classified.
struct LoadedMegatron {
  /// (TP rank, stage, expert-parallel rank).
  using Rank = std::tuple<unsigned, unsigned, unsigned>;
  std::string dir;
  MegatronLayout layout;
  std::map<Rank, std::string> shardDirs;
  std::map<Rank, ShardTensors> shards;

  std::string shardFile(unsigned tpRank, unsigned stage, unsigned epRank = 0) const {
    return shardDirs.at({tpRank, stage, epRank}) + "/model_optim_rng.pt";
  }
  /// The folder holding TP rank `t`'s dense shard of `stage`: the one rank t writes
  /// (see megatronFolderWriter).
  Rank denseRank(unsigned t, unsigned stage) const {
    return {t, stage, (t / layout.etp) % layout.ep};
  }
  /// The folder holding expert-TP piece `j` of expert-parallel rank `e`'s experts:
  /// the one rank j + etp·e (expert-data-parallel rank 0) writes.
  Rank expertRank(unsigned j, unsigned stage, unsigned e) const {
    return {(j + layout.etp * e) % layout.tp, stage, e};
  }
  /// The folders holding `param`'s pieces (or copies), piece by piece: a routed
  /// expert's are cut over etp, the rest over tp.
  llvm::SmallVector<Rank, 8> piecesOf(const MegatronParam &param) const {
    llvm::SmallVector<Rank, 8> ranks;
    bool expert = param.expert >= 0;
    for (unsigned i = 0; i < (expert ? layout.etp : layout.tp); ++i)
      ranks.push_back(expert ? expertRank(i, param.stage, param.epRank)
                             : denseRank(i, param.stage));
    return ranks;
  }
};
} // namespace

llvm::json::Object megatron::plainEntries(const DictValue &dict, llvm::StringRef skip) {
  llvm::json::Object out;
  for (const auto &[key, value] : dict.entries) {
    const std::string *name = key->get<std::string>();
    if (!name || *name == skip)
      continue;
    if (auto json = plainJson(*value))
      out[*name] = std::move(*json);
  }
  return out;
}

const DictValue *megatron::argsState(const Value &root) {
  const DictValue *top = root.get<DictValue>();
  ValuePtr args = top ? top->find("args") : nullptr;
  const ObjectValue *object = args ? args->get<ObjectValue>() : nullptr;
  return object && object->state ? object->state->get<DictValue>() : nullptr;
}

std::optional<llvm::json::Object> loom::ckpt::megatronArgs(const Value &root) {
  const DictValue *state = megatron::argsState(root);
  if (!state)
    return std::nullopt;
  return megatron::plainEntries(*state);
}

std::string megatron::argsToJson(const DictValue &state) {
  return llvm::formatv("{0}", llvm::json::Value(plainEntries(state))).str();
}

bool loom::ckpt::megatronNoWeightDecay(llvm::StringRef localName, size_t rank) {
  return rank == 1 || localName.ends_with(".bias");
}

std::string loom::ckpt::megatronDistBufferPath(unsigned index, DType paramDType,
                                               DType gradDType) {
  return llvm::formatv("{0}.(torch.{1}, torch.{2})", index, torchDTypeName(paramDType),
                       torchDTypeName(gradDType))
      .str();
}

/// A torch.dtype as pickled (the global torch.<name>), or nullopt.
static std::optional<DType> pickledDType(const Value &value) {
  const GlobalValue *global = value.get<GlobalValue>();
  if (!global || global->module != "torch")
    return std::nullopt;
  return dtypeFromTorchName(global->name);
}

namespace {
using ShapeMap = std::map<std::string, llvm::SmallVector<int64_t, 4>>;

/// What a ChainedOptimizer's part `index` is called in messages: its place in the
/// list and whose parameters it holds.
std::string chainedPart(size_t index) {
  return llvm::formatv("item {0} (the {1} optimizer's)", index,
                       index ? "experts'" : "dense parameters'")
      .str();
}

/// The ChainedOptimizer list a mixture of experts' `value` must be (see
/// MegatronOptimizer): its two items, or an error naming what `value` is instead.
/// `what` names the value ("the 'optimizer' entry"; empty: the file's root) and
/// `saver` the Megatron function that writes it.
llvm::Expected<std::pair<const Value *, const Value *>>
chainedParts(const Value &value, const std::string &file, llvm::StringRef what,
             llvm::StringRef saver) {
  const std::vector<ValuePtr> *items = value.sequence();
  if (items && items->size() == 2)
    return std::pair{(*items)[0].get(), (*items)[1].get()};
  std::string held = items ? llvm::formatv("lists {0} optimizers' states", items->size()).str()
                           : "holds a " + describe(value);
  return fileError(file, llvm::formatv("{0}{1} where a mixture of experts' ChainedOptimizer "
                                       "keeps a list of 2, the dense parameters' optimizer's "
                                       "then the experts' (megatron/core/optimizer/"
                                       "optimizer.py, ChainedOptimizer.{2})",
                                       what.empty() ? std::string() : what.str() + " ", held,
                                       saver));
}

/// One optimizer's get_parameter_state_dp_zero dict in distrib_optim.pt `file` (see
/// MegatronOptimizer): appends its grad buffers to `buffers` and their tensors'
/// shapes to `shapes`, keyed by their collectTensors paths with `prefix` before them.
/// `subject` begins messages about the dict ("" when it is the file's root).
llvm::Error readDistState(const Value &root, const std::string &file, const std::string &prefix,
                          const std::string &subject, std::vector<MegatronDistBuffer> &buffers,
                          ShapeMap &shapes) {
  auto bad = [&](const llvm::Twine &why) {
    return fileError(file, subject + why + " (Megatron's DistributedOptimizer.save_parameter_state "
                                           "writes {\"buckets_coalesced\": True, 0: {(param dtype, "
                                           "grad dtype): {\"param\", \"exp_avg\", \"exp_avg_sq\", "
                                           "\"numel_unpadded\"}}})");
  };
  const DictValue *top = root.get<DictValue>();
  if (!top)
    return bad("holds a " + describe(root) + ", not a dict");
  ValuePtr coalesced = top->find("buckets_coalesced");
  if (!coalesced || !coalesced->get<bool>() || !*coalesced->get<bool>())
    return bad("has no buckets_coalesced=True: it is the layout Megatron-LM wrote before "
               "Feb 2024 (load and save it once with Megatron's "
               "--ckpt-convert-update-legacy-dist-opt-format)");
  size_t first = buffers.size();
  for (const auto &[key, value] : top->entries) {
    const int64_t *index = key->get<int64_t>();
    if (!index) {
      if (key->get<std::string>() && *key->get<std::string>() == "buckets_coalesced")
        continue;
      return bad("has the key " + describe(*key) + "; expected grad-buffer indices");
    }
    if (*index != int64_t(buffers.size() - first))
      return bad("has grad buffer " + llvm::Twine(*index) + " where " +
                 llvm::Twine(buffers.size() - first) + " comes next");
    const DictValue *byDType = value->get<DictValue>();
    const TupleValue *dtypes =
        byDType && byDType->entries.size() == 1 ? byDType->entries[0].first->get<TupleValue>() : nullptr;
    std::optional<DType> paramDType, gradDType;
    if (dtypes && dtypes->items.size() == 2) {
      paramDType = pickledDType(*dtypes->items[0]);
      gradDType = pickledDType(*dtypes->items[1]);
    }
    if (!paramDType || !gradDType)
      return bad("grad buffer " + llvm::Twine(*index) +
                 " is not one entry keyed by (param dtype, grad dtype)");
    MegatronDistBuffer buffer{*paramDType, *gradDType, 0};
    std::string path = prefix + megatronDistBufferPath(*index, *paramDType, *gradDType);
    const DictValue *states = byDType->entries[0].second->get<DictValue>();
    std::optional<int64_t> numel =
        states ? integerOf(states->find("numel_unpadded")) : std::nullopt;
    if (!numel || *numel < 0)
      return bad(path + " has no numel_unpadded");
    buffer.numel = *numel;
    for (const char *name : {"param", "exp_avg", "exp_avg_sq"}) {
      ValuePtr state = states->find(name);
      const TensorValue *tensor = state ? state->get<TensorValue>() : nullptr;
      if (!tensor)
        return bad(path + " has no tensor '" + name + "'");
      const Tensor &t = tensor->tensor;
      if (t.dtype != DType::Float32 || t.shape.size() != 1 || t.shape[0] != *numel)
        return fileError(file, llvm::formatv("{0}.{1} is not a float32 vector of "
                                             "numel_unpadded = {2} elements",
                                             path, name, *numel));
      shapes[path + "." + name] = t.shape;
    }
    buffers.push_back(buffer);
  }
  if (buffers.size() == first)
    return bad("holds no grad buffer");
  return llvm::Error::success();
}

/// What Megatron saves in one shard folder (see megatronFolderWriter).
struct FolderRole {
  /// The rank that writes it, within its pipeline stage.
  unsigned writer = 0;
  /// The first folder read of its (stage, expert-parallel rank): the shapes of its
  /// optimizer tensors are recorded, the other folders' checked against them.
  bool primary = true;
  /// tp and etp·ep: a ChainedOptimizer's distrib_optim.pt holds the dense optimizer's
  /// states when writer < tp, the experts' when writer < etp·ep, else None.
  unsigned tp = 1, expertRanks = 1;
};

/// The states a ChainedOptimizer's distrib_optim.pt `file` of a folder of `role` keeps
/// (see MegatronOptimizer): each optimizer's where the writer is its data-parallel
/// rank 0, None elsewhere.
llvm::Error readChainedDistStates(const Value &root, const std::string &file,
                                  const FolderRole &role,
                                  std::vector<MegatronDistBuffer> &buffers, ShapeMap &shapes) {
  auto parts = chainedParts(root, file, "", "save_parameter_state");
  if (!parts)
    return parts.takeError();
  const auto [dense, experts] = *parts;
  for (size_t o = 0; o < 2; ++o) {
    const Value *part = o ? experts : dense;
    bool held = role.writer < (o ? role.expertRanks : role.tp);
    std::string whose = o ? "the experts'" : "the dense parameters'";
    std::string ranks = o ? llvm::formatv("etp * ep = {0}", role.expertRanks).str()
                          : llvm::formatv("tp = {0}", role.tp).str();
    if (bool(part->get<NoneValue>()) == held)
      return fileError(file, held ? llvm::formatv("item {0} is None where {1} optimizer "
                                                  "states belong: rank {2} writes this folder "
                                                  "and is that optimizer's data-parallel rank "
                                                  "0 (the ranks below {3} are)",
                                                  o, whose, role.writer, ranks)
                                        .str()
                                  : llvm::formatv("item {0} holds {1} optimizer states, which "
                                                  "Megatron saves only where that optimizer's "
                                                  "data-parallel rank is 0 (the ranks below "
                                                  "{2}); rank {3} writes this folder and saves "
                                                  "None",
                                                  o, whose, ranks, role.writer)
                                        .str());
    if (held)
      if (llvm::Error err = readDistState(*part, file, o ? "1." : "0.", chainedPart(o) + " ",
                                          buffers, shapes))
        return err;
  }
  return llvm::Error::success();
}

/// `shapes` without the ChainedOptimizer parts ("0." dense, "1." experts) that
/// `other` does not hold: two folders' distrib_optim.pt agree where both hold states.
ShapeMap commonParts(const ShapeMap &shapes, const ShapeMap &other) {
  std::set<char> held;
  for (const auto &entry : other)
    held.insert(entry.first.front());
  ShapeMap out;
  for (const auto &[key, shape] : shapes)
    if (held.count(key.front()))
      out.emplace(key, shape);
  return out;
}

/// The first path where two files' optimizer tensors differ in presence or shape, and
/// their element counts there (0: absent).
std::optional<std::tuple<std::string, int64_t, int64_t>> firstDifference(const ShapeMap &a,
                                                                         const ShapeMap &b) {
  auto numel = [](const ShapeMap &m, const std::string &key) -> int64_t {
    auto found = m.find(key);
    return found == m.end() ? 0 : int64_t(*checkedNumel(found->second));
  };
  for (const ShapeMap *m : {&a, &b})
    for (const auto &[key, shape] : *m) {
      const ShapeMap &other = m == &a ? b : a;
      auto found = other.find(key);
      if (found == other.end() || found->second != shape)
        return std::tuple{key, numel(a, key), numel(b, key)};
    }
  return std::nullopt;
}
} // namespace

/// Reads the distributed optimizer's distrib_optim.pt of shard folder `dir` of `role`,
/// file `slot` (stage · ep + expert-parallel rank): checks that it is
/// get_parameter_state_dp_zero's dict, or with a ChainedOptimizer
/// save_parameter_state's list of them (see MegatronOptimizer), and records its
/// buffers and their tensors' shapes for the slot's primary folder, or checks that
/// another folder's file has the same. The tensors stay in the file until a program
/// reads them.
static llvm::Error readDistribOptim(const std::string &dir, const FolderRole &role,
                                    unsigned slot, MegatronOptimizer &optimizer) {
  std::string file = dir + "/distrib_optim.pt";
  if (!llvm::sys::fs::exists(file))
    return fileError(file, "missing: model_optim_rng.pt holds the distributed optimizer's "
                           "groups, whose parameter states this file keeps (copy it from the "
                           "run that saved the checkpoint)");
  auto root = readTorchZip(file, {/*verifyChecksums=*/false, {}});
  if (!root)
    return root.takeError();
  std::vector<MegatronDistBuffer> buffers;
  ShapeMap shapes;
  if (optimizer.chained) {
    if (llvm::Error err = readChainedDistStates(**root, file, role, buffers, shapes))
      return err;
  } else if (const std::vector<ValuePtr> *items = (*root)->sequence()) {
    return fileError(file, llvm::formatv("holds a list of {0} optimizers' states (a "
                                         "ChainedOptimizer's) where the args give a dense "
                                         "model (no args.num_experts), whose one optimizer's "
                                         "dict loom reads",
                                         items->size()));
  } else if (llvm::Error err = readDistState(**root, file, "", "", buffers, shapes)) {
    return err;
  }
  if (optimizer.stageShapes.size() <= slot)
    optimizer.stageShapes.resize(slot + 1);
  if (optimizer.stageBuffers.size() <= slot)
    optimizer.stageBuffers.resize(slot + 1);
  if (role.primary) {
    optimizer.stageShapes[slot] = std::move(shapes);
    optimizer.stageBuffers[slot] = std::move(buffers);
    return llvm::Error::success();
  }
  const ShapeMap &primary = optimizer.stageShapes[slot];
  auto differs = optimizer.chained
                     ? firstDifference(commonParts(primary, shapes), commonParts(shapes, primary))
                     : firstDifference(primary, shapes);
  if (differs)
    return fileError(file, llvm::formatv("{0} differs from TP rank 0's ({1} elements there, "
                                         "{2} here): the TP ranks of a stage hold buffers of "
                                         "equal shards",
                                         std::get<0>(*differs), std::get<1>(*differs),
                                         std::get<2>(*differs)));
  return llvm::Error::success();
}

/// Reads one optimizer's state_dict(), `value` (called `what` in messages): the kind
/// of optimizer, which must be the first one's, and when `record` its group settings
/// (appended to `settings`) and step.
static llvm::Expected<std::optional<int64_t>>
readOptimizerDict(const Value &value, const std::string &file, const std::string &what,
                  bool record, MegatronOptimizer &optimizer, llvm::json::Array &settings) {
  const DictValue *top = value.get<DictValue>();
  ValuePtr inner = top ? top->find("optimizer") : nullptr;
  const DictValue *torchState = inner ? inner->get<DictValue>() : nullptr;
  ValuePtr groups = torchState ? torchState->find("param_groups") : nullptr;
  ValuePtr states = torchState ? torchState->find("state") : nullptr;
  bool mixed = groups && groups->sequence() && states && states->get<DictValue>() &&
               top->find("fp32_from_fp16_params");
  // DistributedOptimizer.state_dict(): the groups alone, "state" left out.
  bool distributed = groups && groups->sequence() && !states && !top->find("fp32_from_fp16_params");
  if (!mixed && !distributed)
    return fileError(file, what + " is neither Megatron's mixed-precision optimizer state "
                                  "(optimizer.state, optimizer.param_groups and "
                                  "fp32_from_fp16_params) nor its distributed optimizer's "
                                  "(optimizer.param_groups, the states in distrib_optim.pt)");
  if (optimizer.distributed != distributed)
    return fileError(file, what + " holds the " +
                               (distributed ? "distributed" : "mixed-precision") +
                               " optimizer's state where the first shard's holds the " +
                               (distributed ? "mixed-precision" : "distributed") + " one's");
  std::optional<int64_t> step;
  if (!record)
    return step;
  for (const ValuePtr &group : *groups->sequence()) {
    const DictValue *g = group->get<DictValue>();
    if (!g)
      return fileError(file, what + ": optimizer.param_groups holds a " + describe(*group) +
                                 ", not a dict");
    settings.push_back(plainEntries(*g, "params"));
    if (!step)
      step = stepNumber(g->find("step"));
  }
  if (mixed)
    for (const auto &entry : states->get<DictValue>()->entries) {
      const DictValue *state = entry.second->get<DictValue>();
      if (auto stateStep = state ? stepNumber(state->find("step")) : std::nullopt) {
        step = stateStep;
        break;
      }
    }
  return step;
}

/// Reads the optimizer state of shard `file` of a folder of `role` (the value under
/// its "optimizer" key), file `slot` of `optimizer.stageShapes` (stage · ep +
/// expert-parallel rank): the step and group settings from the first shard, the
/// tensors' shapes from each slot's primary folder. A ChainedOptimizer's entry is the
/// list of its optimizers' (see MegatronOptimizer). The distributed optimizer's states
/// come from distrib_optim.pt beside `file`.
static llvm::Error readOptimizer(const Value &value, const std::string &file,
                                 const FolderRole &role, unsigned slot, bool first,
                                 MegatronOptimizer &optimizer) {
  llvm::SmallVector<const Value *, 2> parts{&value};
  if (optimizer.chained) {
    auto chained = chainedParts(value, file, "the 'optimizer' entry", "state_dict");
    if (!chained)
      return chained.takeError();
    parts = {chained->first, chained->second};
  }
  if (first) {
    const DictValue *top = parts[0]->get<DictValue>();
    optimizer.distributed = top && !top->find("fp32_from_fp16_params");
  }
  bool record = optimizer.groupsJson.empty();
  llvm::json::Array settings;
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string what = optimizer.chained ? "the 'optimizer' entry's " + chainedPart(i) + " state"
                                         : "the 'optimizer' entry";
    auto step = readOptimizerDict(*parts[i], file, what, record, optimizer, settings);
    if (!step)
      return step.takeError();
    // ChainedOptimizer steps its optimizers together (and _synchronize_steps).
    if (i > 0 && *step && optimizer.step && **step != *optimizer.step)
      return fileError(file, llvm::formatv("{0} is at step {1} where the dense parameters' "
                                           "optimizer is at step {2}; a ChainedOptimizer "
                                           "steps both together",
                                           what, **step, *optimizer.step));
    if (!optimizer.step)
      optimizer.step = *step;
  }
  if (record)
    optimizer.groupsJson = llvm::formatv("{0}", llvm::json::Value(std::move(settings))).str();
  if (optimizer.distributed)
    return readDistribOptim(llvm::sys::path::parent_path(file).str(), role, slot, optimizer);
  if (role.primary) {
    if (optimizer.stageShapes.size() <= slot)
      optimizer.stageShapes.resize(slot + 1);
    for (NamedTensor &named : collectTensors(value))
      optimizer.stageShapes[slot]["optimizer." + named.name] = named.tensor.shape;
  }
  return llvm::Error::success();
}

/// args.moe_layer_freq as one flag per layer (see MegatronDims::moeLayers): empty
/// when every layer is a MoE layer, an error naming the field when it is neither a
/// positive int nor a list of num_layers zeros and ones.
static llvm::Expected<std::vector<bool>> moeLayerPattern(const DictValue &state,
                                                         const std::string &file,
                                                         int64_t layers) {
  ValuePtr freq = state.find("moe_layer_freq");
  std::vector<bool> pattern;
  if (!freq || freq->get<NoneValue>())
    return pattern;
  if (const int64_t *n = freq->get<int64_t>()) {
    if (*n <= 0)
      return fileError(file, llvm::formatv("args.moe_layer_freq is {0}; Megatron takes a "
                                           "positive int N (every Nth layer a MoE layer) or "
                                           "a list of 0/1 per layer",
                                           *n));
    for (int64_t i = 0; i < layers; ++i)
      pattern.push_back(i % *n == 0);
  } else if (const std::vector<ValuePtr> *items = freq->sequence()) {
    for (const ValuePtr &item : *items) {
      const int64_t *flag = item->get<int64_t>();
      if (!flag || (*flag != 0 && *flag != 1))
        return fileError(file, "args.moe_layer_freq holds " + describe(*item) +
                                   "; Megatron's layer pattern is 1 (MoE) or 0 (dense) per "
                                   "layer (gpt_layer_specs.py, get_gpt_decoder_layer_specs)");
      pattern.push_back(*flag == 1);
    }
    if (int64_t(pattern.size()) != layers)
      return fileError(file, llvm::formatv("args.moe_layer_freq lists {0} layers where "
                                           "args.num_layers is {1}",
                                           pattern.size(), layers));
  } else {
    return fileError(file, "args.moe_layer_freq holds " + describe(*freq) +
                               ", neither an int nor a list of 0/1 per layer");
  }
  if (llvm::all_of(pattern, [](bool moe) { return moe; }))
    pattern.clear();
  return pattern;
}

llvm::Expected<MegatronDims> megatron::dimsFromArgs(const DictValue &state,
                                                   const std::string &file, unsigned tp,
                                                   bool mixedLayers) {
  MegatronDims d;
  d.numLayers = intArg(state, "num_layers").value_or(0);
  d.hidden = intArg(state, "hidden_size").value_or(0);
  d.heads = intArg(state, "num_attention_heads").value_or(0);
  d.queryGroups = boolArg(state, "group_query_attention")
                      ? intArg(state, "num_query_groups").value_or(0)
                      : d.heads;
  d.headDim = intArg(state, "kv_channels").value_or(d.heads ? d.hidden / d.heads : 0);
  d.ffn = intArg(state, "ffn_hidden_size").value_or(4 * d.hidden);
  d.paddedVocab = intArg(state, "padded_vocab_size").value_or(0);
  d.vocab = intArg(state, "vocab_size").value_or(d.paddedVocab);
  d.swiglu = boolArg(state, "swiglu");
  d.experts = intArg(state, "num_experts").value_or(0);
  d.moeFfn = intArg(state, "moe_ffn_hidden_size").value_or(d.ffn);
  d.topK = intArg(state, "moe_router_topk").value_or(d.experts ? 2 : 0);
  d.groupedGemm = boolArg(state, "moe_grouped_gemm");
  d.sharedFfn = intArg(state, "moe_shared_expert_intermediate_size").value_or(0);
  d.sharedGate = d.sharedFfn && boolArg(state, "moe_shared_expert_gate");
  if (d.experts < 0 || (d.experts && d.moeFfn <= 0) || d.sharedFfn < 0 ||
      (d.sharedFfn && !d.experts))
    return fileError(file, llvm::formatv("args describe an impossible mixture of experts "
                                         "(num_experts {0}, moe_ffn_hidden_size {1}, "
                                         "moe_shared_expert_intermediate_size {2})",
                                         d.experts, d.moeFfn, d.sharedFfn));
  if (d.experts) {
    // Features that change which parameters a MoE layer has, or where they live.
    auto pattern = moeLayerPattern(state, file, d.numLayers);
    if (!pattern)
      return pattern.takeError();
    d.moeLayers = std::move(*pattern);
    if (!d.moeLayers.empty() && !mixedLayers)
      return fileError(file, "args.moe_layer_freq is not 1: this reader takes MoE models whose "
                             "every layer is a MoE layer (the torch format reads dense layers "
                             "between them)");
    if (boolArg(state, "use_grouped_gemm_for_shared_expert"))
      return fileError(file, "args.use_grouped_gemm_for_shared_expert is set: its fused SwiGLU "
                             "takes the shared experts' linear_fc1 rows interleaved (args."
                             "moe_shared_expert_glu_interleave_size), not as [gate; up], which "
                             "loom does not read");
  }
  if (d.heads <= 0 || d.queryGroups <= 0 || d.headDim <= 0 || d.heads % d.queryGroups ||
      d.queryGroups % tp || d.paddedVocab <= 0 || d.vocab > d.paddedVocab)
    return fileError(file, llvm::formatv("args describe an impossible model (heads {0}, "
                                         "query groups {1}, tp {2}, vocab {3}/{4})",
                                         d.heads, d.queryGroups, tp, d.vocab, d.paddedVocab));
  return d;
}

/// Whether two tensors hold the same values, byte for byte; contiguous ones (a
/// mapped shard's) are compared in place. The same view of two torch zip records
/// (each usually a whole tensor) whose CRC-32s agree is taken as equal without
/// being read, so the copies of a large tensor cost nothing when they agree. Those
/// CRCs may be unchecked (a layout is read without verifying), which is fine: a
/// conversion checks the CRC of the one copy it keeps when it reads it and writes
/// nothing of the others, of which only whether they were saved equal matters, and
/// their CRCs say that (but for a 2^-32 chance). Other CRCs fall back to the bytes.
static bool sameBytes(const Tensor &a, const Tensor &b) {
  if (a.dtype != b.dtype || a.shape != b.shape)
    return false;
  if (a.storage && b.storage && a.storage->recordCrc() &&
      a.storage->recordCrc() == b.storage->recordCrc() &&
      a.storage->bytes().size() == b.storage->bytes().size() && a.offset == b.offset &&
      a.strides == b.strides)
    return true;
  if (a.isContiguous() && b.isContiguous())
    return a.contiguousBytes() == b.contiguousBytes();
  return a.toBytes() == b.toBytes();
}

namespace {
/// The ranks whose copy of a tensor differs from the one it should equal, and the
/// largest difference among them (none when a shape or dtype differs).
struct Divergence {
  std::vector<std::string> ranks;
  std::optional<double> most = 0.0;

  void compare(const Tensor &expected, const Tensor &copy, unsigned rank) {
    if (sameBytes(expected, copy))
      return;
    ranks.push_back(std::to_string(rank));
    std::optional<double> difference = maxAbsDifference(expected, copy);
    if (!difference)
      most.reset();
    else if (most && (std::isnan(*difference) || *difference > *most))
      most = difference;
  }
  /// "TP rank 1's copy differs from <reference> (largest difference 0.5)", or "the
  /// copies of TP ranks 1, 2 differ ...": `held` is what a rank holds, in the
  /// singular and plural.
  std::string describe(llvm::StringRef rank, std::pair<llvm::StringRef, llvm::StringRef> held,
                       llvm::StringRef reference) const {
    std::string who =
        ranks.size() == 1
            ? llvm::formatv("{0} {1}'s {2} differs", rank, ranks[0], held.first).str()
            : llvm::formatv("the {0} of {1}s {2} differ", held.second, rank, llvm::join(ranks, ", "))
                  .str();
    std::string how = most ? llvm::formatv("largest difference {0}", llvm::format("%g", *most)).str()
                           : "another shape or dtype";
    return llvm::formatv("{0} from {1} ({2})", who, reference, how).str();
  }
};
} // namespace

/// The tensor `path` of the folder of `rank`, or null when the folder or the
/// tensor is missing or not a valid view, which the unsharder names.
static const Tensor *tensorIn(const LoadedMegatron &loaded, const LoadedMegatron::Rank &rank,
                              const std::string &path) {
  auto shard = loaded.shards.find(rank);
  if (shard == loaded.shards.end())
    return nullptr;
  auto found = shard->second.find(path);
  if (found == shard->second.end() || found->second.checkView())
    return nullptr;
  return &found->second;
}

/// The copies of `param` its folders hold, piece by piece; empty when one is
/// missing or not a valid view.
static llvm::SmallVector<const Tensor *, 8> copiesOf(const LoadedMegatron &loaded,
                                                     const MegatronParam &param) {
  std::string path = megatronKey(loaded.layout.naming, param);
  llvm::SmallVector<const Tensor *, 8> copies;
  for (const LoadedMegatron::Rank &rank : loaded.piecesOf(param)) {
    const Tensor *copy = tensorIn(loaded, rank, path);
    if (!copy)
      return {};
    copies.push_back(copy);
  }
  return copies;
}

/// Records in layout.divergentReplicas the dense parameters' copies that differ
/// between expert-parallel ranks. Rank r writes folder (r % tp, (r / etp) % ep) and
/// holds dense TP piece r % tp, so every folder (t, stage, e) holds piece t of each
/// dense parameter of its stage; the reader unshards the one of denseRank(t, stage)
/// (the first of them) and Megatron keeps the others equal to it (they are the same
/// piece on other data-parallel ranks). Copies whose records' CRCs agree are not
/// read (sameBytes); a folder without the parameter is skipped.
static void findDivergentExpertParallelCopies(LoadedMegatron &loaded) {
  MegatronLayout &layout = loaded.layout;
  for (const MegatronParam &param : layout.params) {
    if (param.expert >= 0)
      continue;
    std::string path = megatronKey(layout.naming, param);
    for (unsigned t = 0; t < layout.tp; ++t) {
      LoadedMegatron::Rank reference = loaded.denseRank(t, param.stage);
      const Tensor *kept = tensorIn(loaded, reference, path);
      if (!kept)
        continue;
      Divergence divergence;
      for (unsigned e = 0; e < layout.ep; ++e)
        if (LoadedMegatron::Rank rank{t, param.stage, e}; rank != reference)
          if (const Tensor *copy = tensorIn(loaded, rank, path))
            divergence.compare(*kept, *copy, e);
      if (divergence.ranks.empty())
        continue;
      std::string keptRank = "EP rank " + std::to_string(std::get<2>(reference)) + "'s";
      layout.divergentReplicas.push_back(
          {llvm::formatv("{0}: stage {1}: {2}, which every expert-parallel rank holds: {3}{4}",
                         loaded.dir, param.stage, param.localName,
                         layout.tp > 1 ? "TP piece " + std::to_string(t) + ": " : "",
                         divergence.describe("EP rank", {"copy", "copies"}, keptRank)),
           keptRank + " copy"});
    }
  }
}

/// Records in layout.divergentReplicas the copies Megatron keeps equal that are not:
/// a replicated parameter's on each TP rank against TP rank 0's, and the last
/// stage's copy of tied word embeddings (MegatronParam::tiedCopy) against the first
/// stage's embedding, TP rank by TP rank, and the dense parameters' copies in other
/// expert-parallel ranks' folders (findDivergentExpertParallelCopies). Byte for byte
/// where the records' CRCs differ or are unknown (sameBytes): replicated parameters
/// are small (vectors, a router).
static void findDivergentReplicas(LoadedMegatron &loaded) {
  MegatronLayout &layout = loaded.layout;
  const MegatronParam *embedding = nullptr;
  for (const MegatronParam &param : layout.params)
    if (!param.tiedCopy && param.fullNames == std::vector<std::string>{"model.embed_tokens.weight"})
      embedding = &param;
  for (const MegatronParam &param : layout.params) {
    if (param.split != MegatronSplit::Replicated && !(param.tiedCopy && embedding))
      continue;
    llvm::SmallVector<const Tensor *, 8> copies = copiesOf(loaded, param);
    if (copies.empty())
      continue;
    Divergence divergence;
    std::string what;
    if (param.tiedCopy) {
      llvm::SmallVector<const Tensor *, 8> originals = copiesOf(loaded, *embedding);
      if (originals.size() != copies.size())
        continue;
      for (unsigned i = 0; i < copies.size(); ++i)
        divergence.compare(*originals[i], *copies[i], i);
      std::string reference =
          llvm::formatv("stage {0}'s {1}", embedding->stage, embedding->localName).str();
      what = "the last stage's copy of the tied word embeddings: " +
             divergence.describe("TP rank", {"piece", "pieces"}, reference);
    } else {
      for (unsigned i = 1; i < copies.size(); ++i)
        divergence.compare(*copies[0], *copies[i], i);
      std::string rank = param.expert >= 0 ? "expert-TP rank" : "TP rank";
      what = "which every " + rank + " holds whole: " +
             divergence.describe(rank, {"copy", "copies"}, rank + " 0's");
    }
    if (!divergence.ranks.empty())
      layout.divergentReplicas.push_back(
          {llvm::formatv("{0}: stage {1}: {2}, {3}", loaded.dir, param.stage, param.localName, what),
           param.tiedCopy ? "stage 0's embedding" : "TP rank 0's copy"});
  }
  findDivergentExpertParallelCopies(loaded);
}

std::string loom::ckpt::summarizeDivergence(llvm::ArrayRef<DivergentReplica> replicas) {
  if (replicas.size() == 1)
    return replicas[0].what;
  return llvm::formatv("{0}; and {1} more replicated tensors differ", replicas[0].what,
                       replicas.size() - 1);
}

std::string loom::ckpt::keptCopies(llvm::ArrayRef<DivergentReplica> replicas) {
  std::vector<llvm::StringRef> kept;
  for (const DivergentReplica &replica : replicas)
    if (!llvm::is_contained(kept, replica.kept))
      kept.push_back(replica.kept);
  return llvm::join(kept, ", ");
}

/// Opens every shard of the checkpoint in `directory`; `verify` CRC-checks their
/// records on open (a full pass over the data, which a layout alone does not need:
/// the resharder checks each record as it reads it).
static llvm::Expected<LoadedMegatron> loadMegatron(const llvm::Twine &directory, bool verify) {
  auto located = iterationDir(directory.str());
  if (!located)
    return located.takeError();
  LoadedMegatron loaded;
  auto &[dir, layout, shardDirs, shards] = loaded;
  std::tie(dir, layout.iteration) = *located;

  // The shard folders mp_rank_TT[_PPP][_EEE], by their numbers.
  std::map<llvm::SmallVector<unsigned, 3>, std::string> folders;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec)) {
    llvm::StringRef base = llvm::sys::path::filename(it->path());
    if (!base.consume_front("mp_rank_"))
      continue;
    llvm::SmallVector<llvm::StringRef, 3> texts;
    base.split(texts, '_');
    llvm::SmallVector<unsigned, 3> parts(texts.size());
    for (size_t i = 0; i < texts.size(); ++i)
      if (texts.size() > 3 || texts[i].getAsInteger(10, parts[i]))
        return fileError(it->path(), "shard folder is not mp_rank_TT[_PPP][_EEE]");
    if (!folders.empty() && folders.begin()->first.size() != parts.size())
      return fileError(it->path(), "shard folder has " + llvm::Twine(parts.size()) +
                                       " numbers where " + folders.begin()->second + " has " +
                                       llvm::Twine(folders.begin()->first.size()));
    folders[parts] = it->path();
  }
  if (ec)
    return fileError(dir, ec.message());
  if (folders.empty())
    return fileError(dir, "no mp_rank_* shard folders");

  // Args come from the first rank's file; they say whether the number after TT is a
  // stage or an expert-parallel rank when there is one.
  size_t numbers = folders.begin()->first.size();
  auto firstRank = folders.find(llvm::SmallVector<unsigned, 3>(numbers, 0));
  if (firstRank == folders.end())
    return fileError(dir, "no first rank's shard folder (mp_rank_00, mp_rank_00_000 or "
                          "mp_rank_00_000_000)");
  std::string firstFile = firstRank->second + "/model_optim_rng.pt";
  auto firstRoot = readTorchZip(firstFile, {verify, {}, /*releaseChecked=*/true});
  if (!firstRoot)
    return firstRoot.takeError();
  const DictValue *state = argsState(**firstRoot);
  if (!state)
    return fileError(firstFile, "no argparse 'args' entry to read the model shape from");
  bool secondIsExpert = numbers == 2 &&
                        intArg(*state, "expert_model_parallel_size").value_or(1) > 1 &&
                        intArg(*state, "pipeline_model_parallel_size").value_or(1) == 1;
  for (const auto &[parts, path] : folders) {
    unsigned second = numbers > 1 ? parts[1] : 0;
    LoadedMegatron::Rank rank{parts[0], secondIsExpert ? 0 : second,
                              numbers == 3     ? parts[2]
                              : secondIsExpert ? second
                                               : 0};
    shardDirs[rank] = path;
    layout.tp = std::max(layout.tp, std::get<0>(rank) + 1);
    layout.pp = std::max(layout.pp, std::get<1>(rank) + 1);
    layout.ep = std::max(layout.ep, std::get<2>(rank) + 1);
  }
  // The degrees are the args' when they are larger (a missing last folder is then
  // named as such); smaller ones are refused below.
  for (auto [key, degree] : {std::pair{"tensor_model_parallel_size", &layout.tp},
                             std::pair{"pipeline_model_parallel_size", &layout.pp},
                             std::pair{"expert_model_parallel_size", &layout.ep}})
    if (auto value = intArg(*state, key); value && *value > int64_t(*degree) && *value <= 4096)
      *degree = unsigned(*value);
  // The experts' own tensor-parallel degree decides which folders Megatron writes
  // (megatronFolderWriter); a dense model's is tp.
  layout.etp = layout.tp;
  if (intArg(*state, "num_experts").value_or(0) > 0)
    if (auto etp = intArg(*state, "expert_tensor_parallel_size")) {
      if (*etp <= 0 || *etp > int64_t(layout.tp))
        return fileError(firstFile,
                         llvm::formatv("args.expert_tensor_parallel_size is {0} where "
                                       "tensor_model_parallel_size is {1}: with more expert-TP "
                                       "than TP ranks several ranks write one mp_rank folder "
                                       "with other pieces of the experts and the last write "
                                       "wins, so the torch format lacks experts' shards "
                                       "(save with etp <= tp, or with --ckpt-format torch_dist)",
                                       *etp, layout.tp));
      layout.etp = unsigned(*etp);
    }
  std::string degrees =
      llvm::formatv("tp={0}, pp={1}{2}{3}", layout.tp, layout.pp,
                    layout.ep > 1 ? ", ep=" + std::to_string(layout.ep) : "",
                    layout.etp != layout.tp ? ", etp=" + std::to_string(layout.etp) : "")
          .str();
  for (unsigned p = 0; p < layout.pp; ++p)
    for (unsigned t = 0; t < layout.tp; ++t)
      for (unsigned e = 0; e < layout.ep; ++e) {
        bool written = megatronFolderWriter(t, e, layout.tp, layout.ep, layout.etp).has_value();
        auto found = shardDirs.find({t, p, e});
        if (written && found == shardDirs.end())
          return fileError(dir, llvm::formatv("missing shard {0} ({1})",
                                              megatronRankDir(t, p, e, layout.pp, layout.ep),
                                              degrees));
        if (!written && found != shardDirs.end())
          return fileError(found->second,
                           llvm::formatv("is a shard folder Megatron does not write at {0}: "
                                         "rank r writes mp_rank folder (r % tp, (r / etp) % ep) "
                                         "for r below max(tp, etp * ep); remove it or fix "
                                         "args.expert_tensor_parallel_size",
                                         degrees));
      }
  layout.argsJson = argsToJson(*state);
  // args.untie_embeddings_and_output_weights False: the output layer is the word
  // embeddings, and the last of several stages holds their copy as output_layer.weight
  // (one without the arg is taken as a head of its own).
  ValuePtr untie = state->find("untie_embeddings_and_output_weights");
  bool tiedHead = untie && untie->get<bool>() && !*untie->get<bool>();
  auto dims = dimsFromArgs(*state, firstFile, layout.tp, /*mixedLayers=*/true);
  if (!dims)
    return dims.takeError();
  layout.dims = *dims;
  layout.dims.groupedGemm = false; // as the experts' names below say
  for (auto [key, expected] : {std::pair{"tensor_model_parallel_size", layout.tp},
                               std::pair{"pipeline_model_parallel_size", layout.pp},
                               std::pair{"expert_model_parallel_size", layout.ep}})
    if (auto value = intArg(*state, key); value && *value != int64_t(expected))
      return fileError(firstFile, llvm::formatv("args.{0} is {1} but the folder has {2} shards",
                                                key, *value, expected));
  if (layout.ep > 1 && layout.dims.experts % layout.ep)
    return fileError(firstFile, llvm::formatv("args.num_experts is {0}, which {1} expert-parallel "
                                              "ranks cannot share evenly",
                                              layout.dims.experts, layout.ep));

  // Load every shard, each (stage, expert-parallel rank)'s primary folder (expert-TP
  // piece 0's) first: its optimizer tensors are recorded, the others' checked.
  std::vector<LoadedMegatron::Rank> order;
  for (unsigned p = 0; p < layout.pp; ++p)
    for (unsigned e = 0; e < layout.ep; ++e)
      order.push_back(loaded.expertRank(0, p, e));
  for (const auto &entry : shardDirs)
    if (!llvm::is_contained(order, entry.first))
      order.push_back(entry.first);
  for (const LoadedMegatron::Rank &rank : order) {
    const std::string &shardDir = shardDirs[rank];
    std::string file = shardDir + "/model_optim_rng.pt";
    bool first = rank == LoadedMegatron::Rank{0, 0, 0};
    auto root = first ? std::move(firstRoot) : readTorchZip(file, {verify, {}, /*releaseChecked=*/true});
    if (!root)
      return root.takeError();
    const DictValue *top = (*root)->get<DictValue>();
    if (!top || !top->find("model"))
      return fileError(
          file, "no 'model' entry (virtual pipeline stages model0, model1, ... are not supported)");
    ValuePtr optimizer = top->find("optimizer");
    if (first && optimizer) {
      layout.optimizer.emplace();
      layout.optimizer->chained = layout.dims.experts > 0;
    }
    if (bool(optimizer) != layout.optimizer.has_value())
      return fileError(file, llvm::Twine(optimizer ? "holds" : "lacks") +
                                 " optimizer state, which " +
                                 llvm::sys::path::filename(firstRank->second) +
                                 (optimizer ? " lacks" : " holds"));
    auto [tpRank, stage, epRank] = rank;
    FolderRole role{*megatronFolderWriter(tpRank, epRank, layout.tp, layout.ep, layout.etp),
                    rank == loaded.expertRank(0, stage, epRank), layout.tp,
                    layout.etp * layout.ep};
    if (optimizer)
      if (llvm::Error err = readOptimizer(*optimizer, file, role, stage * layout.ep + epRank,
                                          first, *layout.optimizer))
        return std::move(err);
    ShardTensors &tensors = shards[rank];
    for (NamedTensor &named : collectTensors(*top->find("model")))
      tensors[("model." + named.name)] = std::move(named.tensor);
  }
  bool legacy = llvm::any_of(shards.begin()->second, [](const auto &entry) {
    return llvm::StringRef(entry.first).starts_with("model.language_model.");
  });
  layout.naming = legacy ? MegatronNaming::Legacy : MegatronNaming::MCore;

  // Classify stage by stage; layers are numbered locally, so each stage starts where
  // the previous one ended. Expert-parallel rank e holds its experts under local
  // indices, and the rest as rank 0 does.
  int64_t layerOffset = 0, perRank = layout.dims.experts / layout.ep;
  for (unsigned stage = 0; stage < layout.pp; ++stage) {
    int64_t stageLayers = 0;
    std::map<int64_t, int64_t> expertParams; // layer -> its experts' weights
    std::map<int64_t, int64_t> expertBiases; // layer -> its experts' biases
    std::map<int64_t, std::string> moeNames; // layer -> a MoE-only parameter it holds
    std::set<int64_t> routed;                // layers with a router
    std::map<int64_t, int64_t> sharedExpertParams; // layer -> its shared experts' parameters
    size_t shared = 0;
    for (unsigned e = 0; e < layout.ep; ++e) {
      const LoadedMegatron::Rank primary = loaded.expertRank(0, stage, e);
      const ShardTensors &shard = shards[primary];
      std::string file = shardDirs[primary] + "/model_optim_rng.pt";
      size_t sharedHere = 0;
      for (const auto &[path, tensor] : shard) {
        std::string name = localName(path, layout.naming);
        auto param = classify(name, layout.naming, layout.dims.swiglu, layerOffset, e * perRank);
        if (!param)
          return fileError(file, "unrecognised Megatron parameter '" + name + "'");
        if (tiedHead && layout.pp > 1 && stage + 1 == layout.pp && name == "output_layer.weight")
          param = tiedCopyParam(layout.naming, stage);
        if (param->expert < 0 && e > 0) {
          if (!shards[{0, stage, 0}].count(path))
            return fileError(file, "'" + name +
                                       "' is not in expert-parallel rank 0's file; "
                                       "the ranks share every parameter but their experts");
          ++sharedHere;
          continue;
        }
        if (param->expert >= 0) {
          if (!layout.dims.experts)
            return fileError(file, "holds expert parameter '" + name +
                                       "' but args.num_experts is not set");
          if (param->expert >= (e + 1) * perRank)
            return fileError(file, llvm::formatv("'{0}' is local expert {1}, past the {2} "
                                                 "experts each expert-parallel rank holds "
                                                 "(args.num_experts {3}, ep {4})",
                                                 name, param->expert - e * perRank, perRank,
                                                 layout.dims.experts, layout.ep));
          param->epRank = e;
          bool bias = llvm::StringRef(param->fullNames[0]).ends_with(".bias");
          ++(bias ? expertBiases : expertParams)[param->layer];
          moeNames.emplace(param->layer, name);
          if (llvm::StringRef(name).contains(".mlp.experts.linear_fc"))
            layout.dims.groupedGemm = true;
        } else {
          ++shared;
        }
        if (llvm::StringRef(name).ends_with(".mlp.router.weight")) {
          routed.insert(param->layer);
          moeNames.emplace(param->layer, name);
        }
        if (llvm::StringRef(name).contains(".mlp.shared_experts.")) {
          moeNames.emplace(param->layer, name);
          ++sharedExpertParams[param->layer];
          int64_t rows = (layout.dims.swiglu ? 2 : 1) * layout.dims.sharedFfn;
          int64_t held = tensor.shape.empty() ? 0 : tensor.shape[0];
          if (layout.dims.sharedFfn && llvm::StringRef(name).ends_with("linear_fc1.weight") &&
              held * layout.tp != rows)
            return fileError(file, llvm::formatv("'{0}' has {1} rows on each of {2} TP ranks "
                                                 "where args.moe_shared_expert_intermediate_size "
                                                 "{3} gives {4} in all",
                                                 name, held, layout.tp, layout.dims.sharedFfn,
                                                 rows));
        }
        param->stage = stage;
        param->localShape = tensor.shape;
        param->dtype = tensor.dtype;
        if (param->layer >= 0)
          stageLayers = std::max(stageLayers, param->layer - layerOffset + 1);
        layout.params.push_back(std::move(*param));
      }
      if (e > 0 && sharedHere != shared)
        return fileError(file,
                         llvm::formatv("holds {0} parameters besides its experts where "
                                       "expert-parallel rank 0 holds {1}",
                                       sharedHere, shared));
    }
    const MegatronDims &d = layout.dims;
    for (auto [layer, count] : expertParams)
      if (count != 2 * d.experts)
        return fileError(dir,
                         llvm::formatv("layer {0} has {1} expert weights where "
                                       "args.num_experts {2} gives {3} (linear_fc1 and "
                                       "linear_fc2 of each)",
                                       layer, count, d.experts, 2 * d.experts));
    for (auto [layer, count] : expertBiases)
      if (count != 2 * d.experts)
        return fileError(dir, llvm::formatv("layer {0} has {1} expert biases where its {2} "
                                            "experts have {3} with --add-bias-linear "
                                            "(linear_fc1 and linear_fc2 of each) or none",
                                            layer, count, d.experts, 2 * d.experts));
    // The layers args.moe_layer_freq makes MoE layers hold a router and experts; the
    // others a dense MLP and nothing of a MoE layer. Every MoE layer has the shared
    // experts the args give: linear_fc1, linear_fc2 and, with a gate, gate_weight.
    int64_t sharedWanted = d.sharedFfn ? 2 + d.sharedGate : 0;
    for (int64_t layer = layerOffset; layer < layerOffset + stageLayers; ++layer) {
      if (!d.experts)
        break;
      bool moe = d.isMoELayer(layer);
      if (!moe && moeNames.count(layer))
        return fileError(loaded.shardFile(0, stage),
                         llvm::formatv("layer {0} holds '{1}' where args.moe_layer_freq makes "
                                       "it a dense layer (gpt_layer_specs.py, "
                                       "get_gpt_decoder_layer_specs)",
                                       layer, moeNames[layer]));
      if (moe && (!routed.count(layer) || !expertParams.count(layer)))
        return fileError(loaded.shardFile(0, stage),
                         llvm::formatv("layer {0} has no {1}, which a MoE layer holds, and "
                                       "args.moe_layer_freq makes it one",
                                       layer,
                                       routed.count(layer) ? "experts" : "mlp.router.weight"));
      if (moe && sharedExpertParams[layer] != sharedWanted)
        return fileError(loaded.shardFile(0, stage),
                         llvm::formatv("layer {0} has {1} shared-expert parameters "
                                       "(mlp.shared_experts) where args."
                                       "moe_shared_expert_intermediate_size {2} and "
                                       "moe_shared_expert_gate {3} give {4}",
                                       layer, sharedExpertParams[layer], layout.dims.sharedFfn,
                                       layout.dims.sharedGate, sharedWanted));
    }
    layout.layersPerStage.push_back(stageLayers);
    layerOffset += stageLayers;
  }
  if (layout.dims.numLayers && layerOffset != layout.dims.numLayers)
    return fileError(dir, llvm::formatv("stages hold {0} layers, args.num_layers is {1}",
                                        layerOffset, layout.dims.numLayers));
  findDivergentReplicas(loaded);
  return loaded;
}

std::string loom::ckpt::megatronRankDir(unsigned tpRank, unsigned stage, unsigned epRank,
                                        unsigned pp, unsigned ep) {
  std::string name = llvm::formatv("mp_rank_{0:d2}", tpRank).str();
  if (pp > 1)
    name += llvm::formatv("_{0:d3}", stage).str();
  if (ep > 1)
    name += llvm::formatv("_{0:d3}", epRank).str();
  return name;
}

std::optional<unsigned> loom::ckpt::megatronFolderWriter(unsigned tpRank, unsigned epRank,
                                                         unsigned tp, unsigned ep,
                                                         unsigned etp) {
  for (unsigned r = 0; r < std::max(tp, etp * ep); ++r)
    if (r % tp == tpRank && (r / etp) % ep == epRank)
      return r;
  return std::nullopt;
}

std::string loom::ckpt::megatronKey(MegatronNaming naming, const MegatronParam &param) {
  bool underLanguageModel = naming == MegatronNaming::Legacy && !param.tiedCopy;
  return (underLanguageModel ? "model.language_model." : "model.") + param.localName;
}

llvm::Expected<MegatronLayout> loom::ckpt::readMegatronLayout(const llvm::Twine &directory,
                                                              std::string *iterationDir) {
  auto loaded = loadMegatron(directory, /*verify=*/false);
  if (!loaded)
    return loaded.takeError();
  if (iterationDir)
    *iterationDir = loaded->dir;
  return std::move(loaded->layout);
}

llvm::Expected<MegatronCheckpoint> loom::ckpt::readMegatron(const llvm::Twine &directory) {
  auto loaded = loadMegatron(directory, /*verify=*/true);
  if (!loaded)
    return loaded.takeError();
  MegatronCheckpoint ckpt;
  ckpt.layout = std::move(loaded->layout);
  const MegatronLayout &layout = ckpt.layout;
  Unsharder unsharder(loaded->dir, layout);
  for (const MegatronParam &param : layout.params) {
    if (param.tiedCopy)
      continue; // the embedding's replica
    std::string path = megatronKey(layout.naming, param);
    llvm::SmallVector<const Tensor *, 8> parts;
    for (const LoadedMegatron::Rank &rank : loaded->piecesOf(param)) {
      const ShardTensors &shard = loaded->shards[rank];
      auto found = shard.find(path);
      if (found == shard.end())
        return fileError(loaded->shardDirs.at(rank) + "/model_optim_rng.pt",
                         "missing '" + param.localName + "' that TP rank 0 holds");
      parts.push_back(&found->second);
    }
    if (auto err = unsharder.run(param, parts, ckpt.tensors))
      return std::move(err);
  }
  llvm::sort(ckpt.tensors, [](const NamedTensor &a, const NamedTensor &b) { return a.name < b.name; });
  for (size_t i = 1; i < ckpt.tensors.size(); ++i)
    if (ckpt.tensors[i].name == ckpt.tensors[i - 1].name)
      return fileError(loaded->dir, "two parameters unshard to " + ckpt.tensors[i].name);
  return ckpt;
}

llvm::Expected<std::vector<MegatronParam>>
loom::ckpt::megatronParamsFor(llvm::ArrayRef<std::string> fullNames, const MegatronDims &dims,
                              MegatronNaming naming, llvm::ArrayRef<int64_t> layersPerStage,
                              unsigned ep) {
  std::set<std::string> remaining(fullNames.begin(), fullNames.end());
  std::vector<MegatronParam> params;
  auto pick = [&](const NameRule &rule) {
    return std::string(naming == MegatronNaming::Legacy ? rule.legacy : rule.mcore);
  };
  // Takes the parameter whose full tensors are `names` if all are present.
  auto take = [&](MegatronParam param, std::vector<std::string> names) {
    for (const std::string &n : names)
      if (!remaining.count(n))
        return;
    for (const std::string &n : names)
      remaining.erase(n);
    param.fullNames = std::move(names);
    params.push_back(std::move(param));
  };
  unsigned pp = layersPerStage.size();
  int64_t layer = 0;
  for (unsigned stage = 0; stage < pp; ++stage) {
    auto modelParam = [&](const NameRule &rule) {
      MegatronParam param;
      param.localName = pick(rule);
      param.stage = stage;
      param.split = rule.split;
      take(param, {rule.hf});
    };
    if (stage == 0)
      for (const NameRule &rule : llvm::ArrayRef(kModelRules).take_front(2))
        modelParam(rule);
    std::string layers = naming == MegatronNaming::Legacy ? "encoder.layers." : "decoder.layers.";
    for (int64_t local = 0; local < layersPerStage[stage]; ++local, ++layer) {
      std::string prefix = "model.layers." + std::to_string(layer) + ".";
      std::string localPrefix = layers + std::to_string(local) + ".";
      // A MoE layer registers attention as a dense one does, then its own norm, the
      // router, the experts (TransformerLayer, MoELayer, SequentialMLP or
      // TEGroupedMLP) and any shared experts; kMCoreOrder's first six rules are the
      // attention's.
      bool moe = naming == MegatronNaming::MCore &&
                 remaining.count(prefix + "block_sparse_moe.gate.weight");
      // Takes the layer parameter of `rule` if the tensors it unshards to are present.
      auto layerRule = [&](const NameRule &rule) {
        MegatronParam param;
        param.localName = localPrefix + pick(rule);
        param.stage = stage;
        param.layer = layer;
        layerParam(param, rule, prefix, dims.swiglu);
        std::vector<std::string> names = param.fullNames;
        take(std::move(param), std::move(names));
      };
      for (unsigned r : naming == MegatronNaming::Legacy ? llvm::ArrayRef(kLegacyOrder)
                        : moe                            ? llvm::ArrayRef(kMCoreOrder).take_front(6)
                                                         : llvm::ArrayRef(kMCoreOrder))
        layerRule(kLayerRules[r]);
      if (!moe)
        continue;
      for (const NameRule &rule : kMoERules)
        layerRule(rule);
      int64_t perRank = dims.experts / std::max(ep, 1u);
      if (!dims.experts || dims.experts % ep)
        return llvm::createStringError(
            llvm::formatv("layer {0} is a mixture-of-experts layer, and {1} experts do not "
                          "split evenly over ep={2}",
                          layer, dims.experts, ep)
                .str());
      // Takes expert e's weight and, when the tensors hold one, its bias.
      auto expert = [&](int64_t e, bool fc2) {
        for (bool bias : {false, true}) {
          MegatronParam param;
          param.stage = stage;
          param.layer = layer;
          param.epRank = unsigned(e / perRank);
          param.localName =
              localPrefix + expertSuffix({e % perRank, fc2, dims.groupedGemm, bias});
          expertParam(param, prefix, e, fc2, dims.swiglu, bias);
          std::vector<std::string> names = param.fullNames;
          take(std::move(param), std::move(names));
        }
      };
      // SequentialMLP registers each expert's fc1 and fc2 in turn (an MLP's weight,
      // then bias); TEGroupedMLP its fc1 (weight0, bias0, weight1, ...), then its fc2.
      for (bool fc2 : {false, true})
        for (int64_t e = 0; e < dims.experts; ++e)
          if (dims.groupedGemm)
            expert(e, fc2);
      if (!dims.groupedGemm)
        for (int64_t e = 0; e < dims.experts; ++e)
          for (bool fc2 : {false, true})
            expert(e, fc2);
      for (const NameRule &rule : kSharedExpertRules)
        layerRule(rule);
    }
    if (stage + 1 == pp)
      for (const NameRule &rule : llvm::ArrayRef(kModelRules).drop_front(2))
        modelParam(rule);
    // GPTModel registers the output layer (or legacy's copy) after the layers.
    if (stage > 0 && stage + 1 == pp && llvm::is_contained(fullNames, "model.embed_tokens.weight") &&
        !llvm::is_contained(fullNames, "lm_head.weight"))
      params.push_back(tiedCopyParam(naming, stage));
  }
  if (!remaining.empty())
    return llvm::createStringError(
        "tensor '" + *remaining.begin() + "' has no place in a Megatron checkpoint of " +
        std::to_string(layer) + " layers (" + std::to_string(remaining.size()) +
        " such tensors)");
  return params;
}
