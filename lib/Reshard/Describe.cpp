//===- Describe.cpp - layouts of checkpoints on disk and of targets --------===//
#include "loom/Reshard/Layout.h"

#include "loom/Checkpoint/Dcp.h"
#include "loom/Checkpoint/HFCheckpoint.h"
#include "loom/Checkpoint/Safetensors.h"
#include "loom/Checkpoint/TorchZip.h"
#include "loom/Checkpoint/Universal.h"

#include "llvm/ADT/Sequence.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <map>
#include <numeric>

using namespace loom;
using namespace loom::reshard;
using namespace loom::ckpt;

static bool hasPrefix(const std::string &path, llvm::StringRef magic) {
  auto buffer = llvm::MemoryBuffer::getFileSlice(path, magic.size(), 0);
  return buffer && (*buffer)->getBuffer() == magic;
}

std::string reshard::detectFormat(const llvm::Twine &pathTwine) {
  std::string path = pathTwine.str();
  if (!llvm::sys::fs::exists(path))
    return "";
  if (llvm::sys::fs::is_directory(path)) {
    if (isMegatronDistCheckpoint(path))
      return "megatron-dist";
    if (isMegatronCheckpoint(path))
      return "megatron";
    if (llvm::sys::fs::exists(path + "/.metadata"))
      return "dcp";
    if (llvm::sys::fs::exists(path + "/latest_universal") ||
        (llvm::sys::fs::is_directory(path + "/zero") &&
         llvm::sys::fs::exists(path + "/mp_rank_00_model_states.pt")))
      return "deepspeed-universal";
    std::error_code ec;
    for (llvm::sys::fs::directory_iterator it(path, ec), end; it != end && !ec; it.increment(ec))
      if (llvm::StringRef(it->path()).ends_with("_model_states.pt"))
        return "deepspeed";
    if (llvm::sys::fs::exists(path + "/latest"))
      return "deepspeed";
    return "hf";
  }
  if (hasPrefix(path, "\x89HDF\r\n\x1a\n"))
    return "universal";
  if (hasPrefix(path, "PK\x03\x04"))
    return "torch";
  return "safetensors";
}

/// Model dimensions from a JSON object with Hugging Face config keys or Megatron
/// args keys; nullopt without the fields fused layouts need.
static std::optional<ModelDims> dimsFromJson(const llvm::json::Object &o, bool gateProj) {
  auto get = [&](std::initializer_list<const char *> keys) -> int64_t {
    for (const char *key : keys)
      if (auto v = o.getInteger(key))
        return *v;
    return 0;
  };
  ModelDims d;
  d.layers = get({"num_hidden_layers", "num_layers"});
  d.hidden = get({"hidden_size"});
  d.heads = get({"num_attention_heads"});
  d.kvHeads = get({"num_key_value_heads", "num_query_groups"});
  if (o.getBoolean("group_query_attention") == false || !d.kvHeads)
    d.kvHeads = d.heads;
  d.headDim = get({"head_dim", "kv_channels"});
  if (!d.headDim && d.heads)
    d.headDim = d.hidden / d.heads;
  d.ffn = get({"intermediate_size", "ffn_hidden_size"});
  d.vocab = get({"vocab_size", "padded_vocab_size"});
  d.swiglu = gateProj || o.getBoolean("swiglu").value_or(false);
  if (auto act = o.getString("hidden_act"))
    d.swiglu = d.swiglu || *act == "silu" || *act == "swish";
  // Mixtral's config or Megatron's MoE args; Mixtral's intermediate_size is an
  // expert's. Shared experts as Qwen2-MoE's config or Megatron's args size them.
  d.experts = get({"num_local_experts", "num_experts"});
  if (d.experts) {
    d.moeFfn = get({"moe_ffn_hidden_size", "intermediate_size", "ffn_hidden_size"});
    d.topK = get({"num_experts_per_tok", "moe_router_topk"});
    d.sharedFfn = get({"shared_expert_intermediate_size", "moe_shared_expert_intermediate_size"});
    // Dense layers between MoE layers, as Qwen2-MoE's config lists them (configJson):
    // intermediate_size is then theirs and moe_intermediate_size an expert's.
    if (const llvm::json::Array *dense = o.getArray("mlp_only_layers"))
      for (const llvm::json::Value &layer : *dense)
        if (auto index = layer.getAsInteger())
          d.denseLayers.push_back(*index);
    if (auto moeFfn = o.getInteger("moe_intermediate_size")) {
      d.moeFfn = *moeFfn;
      d.ffn = get({"intermediate_size", "ffn_hidden_size"});
    }
  }
  if (d.layers <= 0 || d.hidden <= 0 || d.heads <= 0 || d.headDim <= 0)
    return std::nullopt;
  return d;
}

std::string reshard::configJson(const ModelDims &d) {
  llvm::json::Object o{{"num_hidden_layers", d.layers},     {"hidden_size", d.hidden},
                       {"num_attention_heads", d.heads},    {"num_key_value_heads", d.kvHeads},
                       {"head_dim", d.headDim},             {"intermediate_size", d.ffn},
                       {"vocab_size", d.vocab},
                       {"hidden_act", d.swiglu ? "silu" : "gelu"}};
  if (d.experts) {
    // transformers' MixtralConfig: intermediate_size is each expert's.
    o["architectures"] = llvm::json::Array{"MixtralForCausalLM"};
    o["model_type"] = "mixtral";
    o["num_local_experts"] = d.experts;
    o["num_experts_per_tok"] = d.topK;
    o["intermediate_size"] = d.moeFfn;
    // Mixtral has no shared experts; their size goes under Qwen2-MoE's key, as their
    // tensors take its names.
    if (d.sharedFfn)
      o["shared_expert_intermediate_size"] = d.sharedFfn;
    // Mixtral routes in every layer. Dense layers between MoE layers go as Qwen2-MoE
    // lists them (mlp_only_layers, with decoder_sparse_step 1 so that its rule makes
    // every other layer sparse); their MLP's size is then intermediate_size and an
    // expert's moe_intermediate_size, as Qwen2-MoE and DeepSeek-V2/V3 name them.
    if (!d.denseLayers.empty()) {
      o["mlp_only_layers"] = llvm::json::Array(d.denseLayers);
      o["decoder_sparse_step"] = 1;
      o["intermediate_size"] = d.ffn;
      o["moe_intermediate_size"] = d.moeFfn;
    }
  }
  return llvm::formatv("{0:2}", llvm::json::Value(std::move(o))).str();
}

static bool hasGateProj(const Layout &layout) {
  return llvm::any_of(layout.fulls, [](const FullTensor &f) {
    return llvm::StringRef(f.name).contains("mlp.gate_proj.");
  });
}

/// A source's model config (a JSON object's text): kept whole, and read for the
/// dimensions.
static void takeConfig(Layout &layout, llvm::StringRef json) {
  auto parsed = llvm::json::parse(json);
  if (!parsed) {
    llvm::consumeError(parsed.takeError());
    return;
  }
  auto *o = parsed->getAsObject();
  if (!o || o->empty())
    return;
  layout.modelConfig = json.str();
  layout.dims = dimsFromJson(*o, hasGateProj(layout));
}

/// takeConfig of the file `configPath`; false when there is none.
static bool takeConfigFile(Layout &layout, const llvm::Twine &configPath) {
  auto config = llvm::MemoryBuffer::getFile(configPath);
  if (!config)
    return false;
  takeConfig(layout, (*config)->getBuffer());
  return true;
}

/// The folder holding `path` ("." for a bare name).
static std::string folderOf(llvm::StringRef path) {
  llvm::StringRef parent = llvm::sys::path::parent_path(path);
  return parent.empty() ? "." : parent.str();
}

static FullTensor fullOf(std::string name, const Tensor &t) {
  return {std::move(name), t.dtype, t.shape};
}

/// A one-file layout: every tensor is whole in file ".".
static void addWholeFile(Layout &layout, std::string format, std::vector<NamedTensor> tensors) {
  ShardFile file{".", std::move(format), {}, ""};
  llvm::sort(tensors, [](const NamedTensor &a, const NamedTensor &b) { return a.name < b.name; });
  for (NamedTensor &t : tensors) {
    layout.fulls.push_back(fullOf(t.name, t.tensor));
    file.tensors.push_back(wholeLocal(layout, layout.fulls.size() - 1));
  }
  layout.files.push_back(std::move(file));
}

/// How the first stage's buckets are cut, for messages.
static std::string bucketText(const MegatronDistOpt &distOpt) {
  if (distOpt.numBuckets)
    return llvm::formatv("{0} buckets on stage 0", distOpt.numBuckets);
  if (distOpt.bucketSize)
    return llvm::formatv("buckets of {0} elements on stage 0", distOpt.bucketSize);
  return "one bucket per stage";
}

/// Whether the routed experts of `ml` have biases (--add-bias-linear), which give a
/// ChainedOptimizer's experts' optimizer a second group.
static bool hasExpertBiases(const MegatronLayout &ml) {
  return llvm::any_of(ml.params, [](const MegatronParam &p) {
    return p.expert >= 0 && llvm::StringRef(p.fullNames[0]).ends_with(".bias");
  });
}

/// The same of full tensors with Mixtral's names (block_sparse_moe.experts.E.w2.bias).
static bool hasExpertBiases(llvm::ArrayRef<FullTensor> fulls) {
  return llvm::any_of(fulls, [](const FullTensor &f) {
    llvm::StringRef name = f.name;
    return name.contains(".block_sparse_moe.experts.") && name.ends_with(".bias");
  });
}

/// The full tensors of Megatron's model `ml` (HF names, shapes from the shards and
/// the splits), with each parameter's fp32 master and Adam moments when it has an
/// optimizer, and what the layout keeps of the source (args, step, groups).
static Layout megatronFulls(const MegatronLayout &ml) {
  const MegatronDims &d = ml.dims;
  Layout layout;
  layout.format = ml.naming == MegatronNaming::Legacy ? "megatron-legacy" : "megatron-mcore";
  layout.iteration = ml.iteration;
  layout.sourceArgs = ml.argsJson;
  layout.dims = ModelDims{d.numLayers, d.hidden,  d.heads,  d.queryGroups, d.headDim,
                          d.ffn,       d.vocab,   d.swiglu, d.experts,     d.moeFfn,
                          d.topK,      d.sharedFfn, {}};
  for (size_t layer = 0; layer < d.moeLayers.size(); ++layer)
    if (!d.moeLayers[layer])
      layout.dims->denseLayers.push_back(int64_t(layer));
  if (!layout.dims->layers)
    layout.dims->layers = std::accumulate(ml.layersPerStage.begin(), ml.layersPerStage.end(), 0);
  // The full shapes follow from TP rank 0's shards and the splits, a routed expert's
  // over the experts' own tensor-parallel degree.
  for (const MegatronParam &p : ml.params) {
    if (p.tiedCopy)
      continue; // the embedding again
    unsigned parts = p.expert >= 0 ? ml.etp : ml.tp;
    for (size_t i = 0; i < p.fullNames.size(); ++i) {
      llvm::SmallVector<int64_t, 4> shape = p.localShape;
      switch (p.split) {
      case MegatronSplit::Replicated:
        break;
      case MegatronSplit::Column:
        shape[0] *= parts;
        break;
      case MegatronSplit::Row:
        shape[1] *= parts;
        break;
      case MegatronSplit::Vocab:
        shape[0] = d.vocab;
        break;
      case MegatronSplit::FusedQKV:
        shape[0] = (i == 0 ? d.heads : d.queryGroups) * d.headDim;
        break;
      case MegatronSplit::FusedGateUp:
        shape[0] = shape[0] / 2 * parts;
        break;
      }
      layout.fulls.push_back({p.fullNames[i], p.dtype, shape});
    }
  }
  if (ml.optimizer) {
    // Each parameter's fp32 master and Adam moments, cut as the parameter is.
    size_t params = layout.fulls.size();
    for (size_t f = 0; f < params; ++f)
      for (const char *state : {"#fp32", "#exp_avg", "#exp_avg_sq"})
        layout.fulls.push_back(
            {layout.fulls[f].name + state, DType::Float32, layout.fulls[f].shape});
    layout.optimizerStep = ml.optimizer->step;
    // The groups DeepSpeed targets flatten: Megatron's, with full names; a
    // ChainedOptimizer's experts' optimizer's follow (its weights, then any biases).
    layout.paramGroups.resize(ml.optimizer->chained ? 2 + 1 + hasExpertBiases(ml) : 2);
    for (const MegatronParam &p : ml.params) {
      if (p.tiedCopy)
        continue;
      bool noDecay = megatronNoWeightDecay(p.localName, p.localShape.size());
      llvm::append_range(
          layout.paramGroups[(ml.optimizer->chained && p.expert >= 0 ? 2 : 0) + noDecay],
          p.fullNames);
    }
    layout.optimizerGroups = ml.optimizer->groupsJson;
  }
  return layout;
}

/// The file `name` of the folder whose tensors the reader recorded for `stage` and
/// expert-parallel rank `e` (the one expert-TP piece 0 of its experts is in, TP rank 0's
/// when etp = tp; see ckpt::megatronFolderWriter) in `layout`, whose paths start with
/// `prefix`.
static const ShardFile &megatronPrimaryFile(const MegatronLayout &ml, const Layout &layout,
                                            const std::string &prefix, unsigned stage, unsigned e,
                                            llvm::StringRef name) {
  std::string path = prefix + megatronRankDir(ml.etp * e % ml.tp, stage, e, ml.pp, ml.ep) + "/" +
                     name.str();
  auto found = llvm::find_if(layout.files, [&](const ShardFile &f) { return f.path == path; });
  assert(found != layout.files.end() && "megatronShards lays out every writer's folder");
  return *found;
}

/// Checks that the recorded optimizer tensors of `stage` and expert-parallel rank `e`
/// (read into ml.optimizer from its primary folder) are the ones Megatron's grouping,
/// or with `distOpt` the distributed optimizer's buffers, give: where `layout` (from
/// megatronShards) puts them, and no more.
static llvm::Error checkMegatronOptimizer(const MegatronLayout &ml, const Layout &layout,
                                          const std::string &prefix, unsigned stage, unsigned e,
                                          const std::string &path,
                                          const MegatronDistOpt *distOpt) {
  const MegatronOptimizer &optimizer = *ml.optimizer;
  const ShardFile &file = megatronPrimaryFile(
      ml, layout, prefix, stage, e, distOpt ? "distrib_optim.pt" : "model_optim_rng.pt");
  size_t slot = size_t(stage) * ml.ep + e;
  const auto &held = slot < optimizer.stageShapes.size()
                         ? optimizer.stageShapes[slot]
                         : decltype(optimizer.stageShapes)::value_type{};
  std::string where = path + "/" + file.path;
  size_t expected = 0;
  for (const LocalTensor &t : file.tensors) {
    if (!distOpt && !llvm::StringRef(t.key).starts_with("optimizer."))
      continue;
    ++expected;
    auto found = held.find(t.key);
    if (distOpt && (found == held.end() || found->second != t.shape))
      return fileError(
          where,
          (found == held.end()
               ? "has no grad buffer " + t.key + ", which its parameters' dtypes give"
               : llvm::formatv("{0} holds {1} elements where this stage's parameters take "
                               "{2} in Megatron's buffer layout",
                               t.key, found->second[0], t.shape[0])
                     .str()) +
              " (reverse registration order, starts aligned to 64 elements, " +
              bucketText(*distOpt) +
              " as args.overlap_grad_reduce, ddp_bucket_size and data_parallel_size say)");
    if (found == held.end() || found->second != t.shape)
      return fileError(where, t.key +
                                  (found == held.end() ? " is missing" : " has the wrong shape") +
                                  ": Megatron groups weight-decayed parameters first, then "
                                  "vectors and biases, each in state-dict order" +
                                  (optimizer.chained ? " (a ChainedOptimizer: the experts in "
                                                       "optimizer.1, the rest in optimizer.0)"
                                                     : ""));
  }
  size_t states = llvm::count_if(held, [](const auto &entry) {
    return !llvm::StringRef(entry.first).ends_with(".step");
  });
  if (distOpt && states != expected)
    return fileError(where, llvm::formatv("holds {0} grad buffers where its parameters' dtypes "
                                          "give {1}",
                                          states / 3, expected / 3));
  if (states != expected)
    return fileError(where, llvm::formatv("holds {0} optimizer tensors where its {1} parameters "
                                          "have {2}",
                                          states, expected / 3, expected));
  return llvm::Error::success();
}

static llvm::Expected<Layout> describeMegatron(const std::string &path) {
  std::string iterDir;
  auto read = readMegatronLayout(path, &iterDir);
  if (!read)
    return read.takeError();
  const MegatronLayout &ml = *read;
  const MegatronDims &d = ml.dims;
  Layout layout = megatronFulls(ml);
  std::string prefix;
  if (!llvm::sys::fs::equivalent(iterDir, path))
    prefix = llvm::sys::path::filename(iterDir).str() + "/";
  // The distributed optimizer's buffers: bucketed as the args say, keyed by the
  // gradient dtype the files give.
  bool distributed = ml.optimizer && ml.optimizer->distributed;
  std::optional<MegatronDistOpt> distOpt;
  if (distributed) {
    llvm::json::Object args;
    if (auto parsed = llvm::json::parse(ml.argsJson))
      if (auto *o = parsed->getAsObject())
        args = std::move(*o);
    distOpt = megatronDistOptFromArgs(args, ml.pp);
    const MegatronDistBuffer &first = ml.optimizer->stageBuffers.front().front();
    distOpt->gradReduceInFp32 = first.gradDType == DType::Float32;
  }
  auto files = megatronShards(layout.fulls, d, ml.naming, ml.tp, ml.pp, ml.layersPerStage, prefix,
                              distOpt ? &*distOpt : nullptr, nullptr, ml.ep, ml.etp);
  if (!files)
    return fileError(path, llvm::toString(files.takeError()));
  layout.files = std::move(*files);
  // The shapes the layout predicts must be the ones the reader recorded.
  for (const MegatronParam &p : ml.params) {
    const ShardFile &file =
        megatronPrimaryFile(ml, layout, prefix, p.stage, p.epRank, "model_optim_rng.pt");
    auto found = llvm::find_if(file.tensors, [&](const LocalTensor &t) {
      return t.key == megatronKey(ml.naming, p);
    });
    if (found == file.tensors.end() || found->shape != p.localShape)
      return fileError(path + "/" + file.path,
                       p.localName + ": the shard's shape does not match Megatron's layout for "
                       "the args' dimensions");
  }
  // So must the optimizer's: every state where Megatron's grouping (or the
  // distributed optimizer's buffer) puts it, and no more.
  if (ml.optimizer)
    for (unsigned stage = 0; stage < ml.pp; ++stage)
      for (unsigned e = 0; e < (ml.optimizer->chained ? ml.ep : 1); ++e)
        if (llvm::Error err = checkMegatronOptimizer(ml, layout, prefix, stage, e, path,
                                                     distOpt ? &*distOpt : nullptr))
          return std::move(err);
  for (ShardFile &file : layout.files)
    file.format = "torch";
  layout.divergentReplicas = ml.divergentReplicas;
  return layout;
}

/// A DCP folder: names, dtypes and shapes from the metadata alone (tensors are read
/// when the program runs; one whose metadata lacks a dtype is read to learn it). With
/// an optimizer's state (readDcpOptimizer) the model's tensors are named without the
/// model's prefix, each parameter's moments are "<name>#exp_avg" and "#exp_avg_sq",
/// and the prefixes and groups ride in sourceArgs (so DCP -> universal -> DCP keeps
/// the keys), the settings in optimizerGroups.
static llvm::Expected<Layout> describeDcp(const std::string &path) {
  auto dcp = DcpReader::open(path);
  if (!dcp)
    return dcp.takeError();
  auto optimizer = readDcpOptimizer(**dcp);
  if (!optimizer)
    return optimizer.takeError();
  Layout layout;
  layout.format = "dcp";
  // Full name -> DCP key, in name order.
  std::map<std::string, std::string> keys;
  const std::string *optimizerPrefix = *optimizer ? &(*optimizer)->optimizerPrefix : nullptr;
  for (const DcpEntry &e : (*dcp)->metadata().entries) {
    llvm::StringRef name = e.fqn;
    if (e.isBytes || e.chunks.empty() || (optimizerPrefix && name.starts_with(*optimizerPrefix)))
      continue;
    if (*optimizer)
      name.consume_front((*optimizer)->modelPrefix);
    keys[name.str()] = e.fqn;
  }
  if (*optimizer) {
    const DcpOptimizer &o = **optimizer;
    for (const DcpOptimizer::Param &p : o.params) {
      keys[p.fqn + "#exp_avg"] = p.expAvg;
      keys[p.fqn + "#exp_avg_sq"] = p.expAvgSq;
    }
    layout.optimizerStep = o.step;
    layout.iteration = o.step.value_or(0);
    layout.paramGroups = o.groups;
    layout.optimizerGroups = o.groupsJson;
    llvm::json::Array groups;
    for (const std::vector<std::string> &group : o.groups)
      groups.push_back(llvm::json::Array(group));
    layout.sourceArgs =
        llvm::formatv("{0}", llvm::json::Value(llvm::json::Object{
                                 {"model_prefix", o.modelPrefix},
                                 {"optimizer_prefix", o.optimizerPrefix},
                                 {"param_groups", std::move(groups)}}))
            .str();
  }
  ShardFile file{".", "dcp", {}, ""};
  for (const auto &[name, key] : keys) {
    const DcpEntry &e = *(*dcp)->find(key);
    std::optional<DType> dtype = e.dtype;
    if (!dtype) {
      auto tensor = (*dcp)->read(e.fqn);
      if (!tensor)
        return tensor.takeError();
      dtype = tensor->dtype;
    }
    layout.fulls.push_back({name, *dtype, e.size});
    file.tensors.push_back(wholeLocal(layout, layout.fulls.size() - 1, key));
  }
  layout.files.push_back(std::move(file));
  return layout;
}

/// The optimizer states torch_dist keeps beside each parameter, as (loom's suffix, the
/// DCP key prefix): the mixed-precision optimizer's (dist_checkpointing/optimizer.py,
/// make_sharded_optimizer_tensor with prefix optimizer.state.<state>); the distributed
/// optimizer's fully_reshardable form names the master optimizer.state.param.
static const std::pair<std::string, std::string> kDistStates[] = {
    {"#fp32", "optimizer.state.fp32_param."},
    {"#exp_avg", "optimizer.state.exp_avg."},
    {"#exp_avg_sq", "optimizer.state.exp_avg_sq."}};

/// Megatron at tp = pp = ep = 1 as torch_dist keys it (ckpt::MegatronDistCheckpoint),
/// for both directions: megatronShards cuts the one rank's file of `layout`'s
/// parameters (the fused QKV and SwiGLU pieces are the torch format's, routed experts
/// named as SequentialMLP's by their global index), `keyOf` renames each local tensor
/// from its torch-format key ("model.decoder.layers.3.mlp.linear_fc1.weight") to the
/// DCP key holding it (a stacked layer as a dcpRowKey, an expert as a row key of
/// that), and each optimizer state in `states` gets the same pieces under its own
/// prefix; with `chainedPrefixes` (a mixture of experts' ChainedOptimizer as mcore
/// keyed it before chained_optim_avoid_prefix) that prefix follows `chained_1.` for a
/// routed expert's state and `chained_0.` for the rest. `what` names the checkpoint in
/// errors of the cut.
static llvm::Expected<std::vector<LocalTensor>>
megatronDistTensors(llvm::StringRef what, const Layout &layout, MegatronDims dims,
                    int64_t layers,
                    llvm::ArrayRef<std::pair<std::string, std::string>> states,
                    llvm::function_ref<llvm::Expected<std::string>(const LocalTensor &)> keyOf,
                    bool chainedPrefixes = false) {
  std::vector<FullTensor> params;
  llvm::StringMap<unsigned> index;
  for (unsigned f = 0; f < layout.fulls.size(); ++f) {
    index[layout.fulls[f].name] = f;
    if (layout.fulls[f].name.find('#') == std::string::npos)
      params.push_back(layout.fulls[f]);
  }
  dims.groupedGemm = false;
  auto files = megatronShards(params, dims, MegatronNaming::MCore, 1, 1, {layers}, "");
  if (!files)
    return fileError(what, llvm::toString(files.takeError()));
  std::vector<LocalTensor> out;
  for (const LocalTensor &t : files->front().tensors) {
    auto key = keyOf(t);
    if (!key)
      return key.takeError();
    LocalTensor local = t;
    local.key = std::move(*key);
    // SequentialMLP's names at ep = 1: model.decoder.layers.<l>.mlp.experts.local_experts.*
    bool expert = llvm::StringRef(t.key).contains(".mlp.experts.");
    std::string chained = !chainedPrefixes ? "" : expert ? "chained_1." : "chained_0.";
    for (const auto &[suffix, prefix] : states) {
      LocalTensor state = local;
      state.key = chained + prefix + local.key;
      state.dtype = DType::Float32;
      for (Piece &piece : state.pieces)
        piece.full = index[layout.fulls[piece.full].name + suffix];
      out.push_back(std::move(state));
    }
    out.push_back(std::move(local));
  }
  return out;
}

/// The dp_reshardable buckets of a torch_dist checkpoint (see ckpt::MegatronDistSource)
/// as local tensors of `layout`: each is a bucket of the buffer distrib_optim.pt would
/// hold for the run's model-parallel rank (the same bytes: get_parameter_state_dp_zero
/// keeps the buckets back to back without their end padding), so the run is laid out
/// as Megatron at the args' tp and pp with the distributed optimizer (megatronShards),
/// each bucket the DCP holds must have the size that layout gives it (so that every
/// parameter is where the run put it), and each buffer's flat pieces are dealt to the
/// buckets.
static llvm::Expected<std::vector<LocalTensor>>
dpReshardableTensors(const std::string &path, const Layout &layout,
                     const MegatronDistCheckpoint &read) {
  const MegatronLayout &ml = read.layout;
  std::string commonPath = read.iterationDir + "/common.pt";
  std::string metadataPath = read.iterationDir + "/.metadata";
  llvm::json::Object args;
  if (auto parsed = llvm::json::parse(ml.argsJson))
    if (auto *o = parsed->getAsObject())
      args = std::move(*o);
  // The stages the run had: layers split evenly, no virtual stages (the buckets
  // follow each stage's parameters).
  auto uneven = [&](const llvm::Twine &what) {
    return fileError(commonPath, what + ": loom reads dp_reshardable buckets of pipelines "
                                        "whose stages hold equal runs of layers");
  };
  for (const char *key : {"num_layers_per_virtual_pipeline_stage",
                          "decoder_first_pipeline_num_layers", "decoder_last_pipeline_num_layers"})
    if (args.getInteger(key))
      return uneven(llvm::Twine("args.") + key + " is set");
  if (auto vpp = args.getInteger("virtual_pipeline_model_parallel_size"); vpp && *vpp > 1)
    return fileError(commonPath, "args.virtual_pipeline_model_parallel_size is " +
                                     llvm::Twine(*vpp) +
                                     ": dp_reshardable buckets of virtual pipeline stages are "
                                     "not read");
  for (const char *key : {"account_for_embedding_in_pipeline_split",
                          "account_for_loss_in_pipeline_split"})
    if (args.getBoolean(key).value_or(false))
      return uneven(llvm::Twine("args.") + key + " is set");
  if (args.getString("pipeline_model_parallel_layout"))
    return uneven("args.pipeline_model_parallel_layout is set");
  int64_t tp = args.getInteger("tensor_model_parallel_size").value_or(1);
  int64_t pp = args.getInteger("pipeline_model_parallel_size").value_or(1);
  int64_t layers = ml.dims.numLayers;
  if (tp < 1 || pp < 1 || tp > 4096 || pp > 4096 || layers % pp)
    return uneven(llvm::formatv("args.tensor_model_parallel_size = {0}, "
                                "pipeline_model_parallel_size = {1}, num_layers = {2}",
                                tp, pp, layers)
                      .str());
  size_t ranks = size_t(tp * pp);
  if (read.dpBuffers.size() != ranks)
    return fileError(metadataPath,
                     llvm::formatv("holds dp_reshardable buckets of {0} model-parallel ranks "
                                   "(dp_group_idx_*) where args.tensor_model_parallel_size x "
                                   "pipeline_model_parallel_size = {1}",
                                   read.dpBuffers.size(), ranks)
                         .str());
  MegatronDistOpt distOpt = megatronDistOptFromArgs(args, unsigned(pp));
  distOpt.gradReduceInFp32 = read.dpBuffers.front().front().gradDType == DType::Float32;
  std::vector<std::vector<std::vector<int64_t>>> layoutBuckets;
  auto files = megatronShards(layout.fulls, ml.dims, MegatronNaming::MCore, unsigned(tp),
                              unsigned(pp), std::vector<int64_t>(pp, layers / pp), "", &distOpt,
                              &layoutBuckets);
  if (!files)
    return fileError(path, llvm::toString(files.takeError()));
  std::vector<LocalTensor> out;
  // distrib_optim.pt files follow the model files, stage-major: model-parallel rank
  // G = stage·tp + tp rank, as data_parallel_group_idx counts them.
  for (size_t group = 0; group < ranks; ++group) {
    const ShardFile &distrib = (*files)[ranks + group];
    const std::vector<MegatronDistBuffer> &held = read.dpBuffers[group];
    auto rankText = [&] {
      return llvm::formatv("tp rank {0}, stage {1}", group % tp, group / tp).str();
    };
    if (held.size() * 3 != distrib.tensors.size())
      return fileError(metadataPath,
                       llvm::formatv("dp_group_idx_{0} ({1}) holds {2} grad buffers where its "
                                     "parameters' dtypes give {3}",
                                     group, rankText(), held.size(), distrib.tensors.size() / 3)
                           .str());
    for (const LocalTensor &flat : distrib.tensors) {
      // "0.(torch.bfloat16, torch.float32).param"
      auto [bufferPath, state] = llvm::StringRef(flat.key).rsplit('.');
      unsigned gbuf = 0;
      bufferPath.split('.').first.getAsInteger(10, gbuf);
      const MegatronDistBuffer &buffer = held[gbuf];
      std::string bufferKey = megatronDistBucketKey(group, gbuf, buffer.paramDType,
                                                    buffer.gradDType, 0);
      if (bufferPath != megatronDistBufferPath(gbuf, buffer.paramDType, buffer.gradDType))
        return fileError(metadataPath, "'" + bufferKey + "." + state +
                                           "': its parameters' dtypes give the grad buffer " +
                                           bufferPath.split('.').second + " in Megatron's layout");
      auto bucketKey = [&](size_t b) {
        return megatronDistBucketKey(group, gbuf, buffer.paramDType, buffer.gradDType, b) + "." +
               state.str();
      };
      // The buckets must be the layout's, one by one: equal totals alone could hide
      // parameters moved across a boundary.
      const std::vector<int64_t> &expected = layoutBuckets[group][gbuf];
      const std::vector<int64_t> &numels = buffer.bucketNumels;
      auto mismatch =
          std::mismatch(numels.begin(), numels.end(), expected.begin(), expected.end()).first;
      if (size_t b = mismatch - numels.begin(); b < numels.size() || b < expected.size()) {
        std::string why =
            b >= numels.size() ? llvm::formatv("'{0}' is missing: the parameters take {1} "
                                               "buckets",
                                               bucketKey(b), expected.size())
                                     .str()
            : b >= expected.size()
                ? llvm::formatv("'{0}' is one bucket more than the {1} the parameters take",
                                bucketKey(b), expected.size())
                      .str()
                : llvm::formatv("'{0}' holds {1} elements where the parameters take {2}",
                                bucketKey(b), numels[b], expected[b])
                      .str();
        return fileError(metadataPath,
                         why + " in Megatron's buffer layout of " + rankText() +
                             " (reverse registration order, starts aligned to 64 elements, " +
                             bucketText(distOpt) +
                             " as args.overlap_grad_reduce, ddp_bucket_size and "
                             "data_parallel_size say)");
      }
      std::vector<int64_t> starts{0};
      for (int64_t numel : numels)
        starts.push_back(starts.back() + numel);
      std::vector<LocalTensor> buckets;
      for (size_t b = 0; b < numels.size(); ++b)
        buckets.push_back({bucketKey(b), DType::Float32, {numels[b]}, {}});
      for (const Piece &piece : flat.pieces) {
        int64_t begin = piece.localOffsets[0];
        // distOptOffsets keeps every parameter inside its bucket.
        size_t b = std::upper_bound(starts.begin(), starts.end(), begin) - starts.begin() - 1;
        Piece moved = piece;
        moved.localOffsets = {begin - starts[b]};
        buckets[b].pieces.push_back(std::move(moved));
      }
      std::move(buckets.begin(), buckets.end(), std::back_inserter(out));
    }
  }
  return out;
}

/// A Megatron-core torch_dist checkpoint (ckpt::readMegatronDist): its DCP folder is
/// Megatron at tp = pp = 1 (megatronDistTensors), each local tensor under the key the
/// reader found for it; dp_reshardable buckets are laid out by dpReshardableTensors.
static llvm::Expected<Layout> describeMegatronDist(const std::string &path) {
  auto read = readMegatronDist(path);
  if (!read)
    return read.takeError();
  const MegatronLayout &ml = read->layout;
  Layout layout = megatronFulls(ml);
  layout.format = "megatron-dist";
  std::map<std::string, size_t> paramOf; // "model.<local name>" -> index into ml.params
  for (size_t i = 0; i < ml.params.size(); ++i)
    paramOf["model." + ml.params[i].localName] = i;
  ShardFile file{llvm::sys::fs::equivalent(read->iterationDir, path)
                     ? "."
                     : llvm::sys::path::filename(read->iterationDir).str(),
                 "dcp", {}, ""};
  auto keyOf = [&](const LocalTensor &t) -> llvm::Expected<std::string> {
    auto found = paramOf.find(t.key);
    if (found == paramOf.end())
      return fileError(path, "Megatron's layout has " + t.key + ", which the checkpoint lacks");
    const MegatronParam &p = ml.params[found->second];
    const MegatronDistSource &source = read->sources[found->second];
    std::string key = source.key;
    for (int64_t row : source.rows)
      key = dcpRowKey(key, row);
    if (t.shape != p.localShape)
      return fileError(path + "/" + file.path, "'" + key + "' is not shaped as Megatron's "
                                               "layout gives " + p.localName + " for the args' dimensions");
    return key;
  };
  auto tensors = megatronDistTensors(path, layout, ml.dims, ml.dims.numLayers, read->states,
                                     keyOf, read->chainedPrefixes);
  if (!tensors)
    return tensors.takeError();
  size_t placed = tensors->size() / (read->states.size() + 1);
  if (placed != ml.params.size())
    return fileError(path, llvm::formatv("holds {0} parameters where Megatron's layout has {1}",
                                         ml.params.size(), placed)
                               .str());
  file.tensors = std::move(*tensors);
  if (!read->dpBuffers.empty()) {
    auto buckets = dpReshardableTensors(path, layout, *read);
    if (!buckets)
      return buckets.takeError();
    std::move(buckets->begin(), buckets->end(), std::back_inserter(file.tensors));
  }
  layout.files = {std::move(file)};
  return layout;
}

llvm::Expected<Layout> reshard::describeCheckpoint(const llvm::Twine &pathTwine) {
  std::string path = pathTwine.str();
  std::string format = detectFormat(path);
  Layout layout;
  if (format.empty())
    return fileError(path, "no such file or directory");
  if (format == "megatron-dist") {
    auto described = describeMegatronDist(path);
    if (!described)
      return described.takeError();
    layout = std::move(*described);
  } else if (format == "megatron") {
    auto described = describeMegatron(path);
    if (!described)
      return described.takeError();
    layout = std::move(*described);
  } else if (format == "hf") {
    auto hf = readHFCheckpoint(path);
    if (!hf)
      return hf.takeError();
    bool st = hf->format == HFWeightFormat::Safetensors;
    layout.format = st ? "hf-safetensors" : "hf-bin";
    std::map<std::string, ShardFile> shards;
    for (size_t i = 0; i < hf->tensors.size(); ++i) {
      const NamedTensor &t = hf->tensors[i];
      ShardFile &file = shards[hf->shardOf[i]];
      file.path = hf->shardOf[i];
      file.format = st ? "safetensors" : "torch";
      layout.fulls.push_back(fullOf(t.name, t.tensor));
      file.tensors.push_back({t.name, t.tensor.dtype, t.tensor.shape,
                              {{unsigned(i), Box::whole(t.tensor.shape),
                                llvm::SmallVector<int64_t, 4>(t.tensor.shape.size(), 0)}}});
    }
    for (auto &[name, file] : shards)
      layout.files.push_back(std::move(file));
    takeConfigFile(layout, path + "/config.json");
  } else if (format == "torch") {
    auto root = readTorchZip(path, {/*verifyChecksums=*/false, {}});
    if (!root)
      return root.takeError();
    layout.format = "torch";
    addWholeFile(layout, "torch", collectTensors(**root));
    takeConfigFile(layout, folderOf(path) + "/config.json");
  } else if (format == "safetensors") {
    auto file = readSafetensors(path);
    if (!file)
      return file.takeError();
    layout.format = "safetensors";
    addWholeFile(layout, "safetensors", std::move(file->tensors));
    takeConfigFile(layout, folderOf(path) + "/config.json");
  } else if (format == "dcp") {
    auto described = describeDcp(path);
    if (!described)
      return described.takeError();
    layout = std::move(*described);
    // In the folder, or beside it: Hugging Face's Trainer saves an FSDP model's
    // sharded state as the DCP folder pytorch_model_fsdp_0/ beside config.json.
    if (!takeConfigFile(layout, path + "/config.json"))
      takeConfigFile(layout, folderOf(path) + "/config.json");
  } else if (format == "universal") {
    auto reader = UniversalReader::open(path);
    if (!reader)
      return reader.takeError();
    layout.format = "universal";
    layout.iteration = (*reader)->metadata().iteration;
    for (const UniversalEntry &e : (*reader)->entries())
      if (e.step)
        layout.optimizerStep = e.step;
    ShardFile file{".", "universal", {}, ""};
    for (const UniversalEntry &e : (*reader)->entries()) {
      auto add = [&](std::string name, DType dtype) {
        layout.fulls.push_back({name, dtype, e.shape});
        file.tensors.push_back({name, dtype, e.shape,
                                {{unsigned(layout.fulls.size() - 1), Box::whole(e.shape),
                                  llvm::SmallVector<int64_t, 4>(e.shape.size(), 0)}}});
      };
      add(e.name, e.dtype);
      for (UniversalState state : e.states)
        add(e.name + "#" + universalStateName(state).str(), DType::Float32);
    }
    layout.files.push_back(std::move(file));
    takeConfig(layout, (*reader)->metadata().modelConfig);
    layout.convertedFrom = (*reader)->metadata().sourceFormat;
    layout.sourceArgs = (*reader)->metadata().sourceLayout;
    // Optimizer groups a DeepSpeed source recorded, and a Megatron source's
    // group settings.
    if (auto parsed = llvm::json::parse((*reader)->metadata().sourceLayout)) {
      if (auto *o = parsed->getAsObject()) {
        if (auto *groups = o->getArray("param_groups"))
          for (const llvm::json::Value &group : *groups) {
            layout.paramGroups.emplace_back();
            if (auto *names = group.getAsArray())
              for (const llvm::json::Value &name : *names)
                if (auto text = name.getAsString())
                  layout.paramGroups.back().push_back(text->str());
          }
        if (const llvm::json::Value *settings = o->get("optimizer_groups"))
          layout.optimizerGroups = llvm::formatv("{0}", *settings).str();
      }
    } else {
      llvm::consumeError(parsed.takeError());
    }
  } else if (format == "deepspeed-universal") {
    auto described = describeDeepSpeedUniversal(path);
    if (!described)
      return described.takeError();
    layout = std::move(*described);
  } else {
    auto described = describeDeepSpeed(path);
    if (!described)
      return described.takeError();
    layout = std::move(*described);
  }
  if (llvm::Error err = checkLayout(layout, path))
    return std::move(err);
  return layout;
}

/// The settings of Megatron's optimizer groups, each a JSON object without "params":
/// the dense optimizer's two (weight-decayed, then not) and a ChainedOptimizer's
/// experts' optimizer's `expertGroups` (0: no experts; 1: its weights, all decayed; 2
/// with expert biases, which are not), in ChainedOptimizer.param_groups' order. The
/// source's when it is Megatron with as many groups; otherwise Megatron's defaults,
/// with lr, betas, eps and weight decay from the args when they are there (Megatron's
/// scheduler sets lr and weight decay again at every step).
static llvm::json::Array megatronGroupSettings(const Layout &source, const llvm::json::Object &args,
                                               int64_t step, size_t expertGroups = 0) {
  size_t groups = 2 + expertGroups;
  if (auto parsed = llvm::json::parse(source.optimizerGroups))
    if (auto *array = parsed->getAsArray(); array && array->size() == groups)
      return std::move(*array);
  llvm::json::Array settings;
  // Floats as {"$float": x}, so that whole ones stay floats in Python.
  auto number = [&](llvm::StringRef key, double fallback) -> llvm::json::Value {
    std::optional<double> found = args.getNumber(key);
    if (const llvm::json::Object *wrapped = args.getObject(key))
      found = wrapped->getNumber("$float");
    return llvm::json::Object{{"$float", found.value_or(fallback)}};
  };
  auto real = [](double x) -> llvm::json::Value { return llvm::json::Object{{"$float", x}}; };
  for (size_t g = 0; g < groups; ++g) {
    bool decayed = g % 2 == 0;
    settings.push_back(llvm::json::Object{
        {"lr", number("lr", 0.0)},
        {"betas", llvm::json::Object{{"$tuple", llvm::json::Array{number("adam_beta1", 0.9),
                                                                  number("adam_beta2", 0.999)}}}},
        {"eps", number("adam_eps", 1e-8)},
        {"weight_decay", decayed ? number("weight_decay", 0.01) : real(0.0)},
        {"amsgrad", false},
        {"maximize", false},
        {"foreach", nullptr},
        {"capturable", false},
        {"wd_mult", real(decayed ? 1.0 : 0.0)},
        {"lr_mult", real(1.0)},
        {"step", step}});
  }
  return settings;
}

/// A group's settings as a skeleton dict, keys sorted, with `params` last when given.
static llvm::json::Value groupSkeleton(const llvm::json::Value &settings,
                                       std::optional<llvm::json::Array> params) {
  llvm::json::Array entries;
  if (auto *o = settings.getAsObject()) {
    std::vector<std::string> keys;
    for (const auto &entry : *o)
      keys.push_back(entry.first.str());
    llvm::sort(keys);
    for (const std::string &key : keys)
      if (key != "params")
        entries.push_back(llvm::json::Array{key, *o->get(key)});
  }
  if (params)
    entries.push_back(llvm::json::Array{"params", std::move(*params)});
  return llvm::json::Object{{"$dict", std::move(entries)}};
}

/// What Megatron's Float16OptimizerWithFloat16Params.state_dict() gives for the
/// optimizer tensors of `file` under collectTensors path `prefix` (keys made by
/// megatronShards: "optimizer.", a ChainedOptimizer's "optimizer.<i>."), or nullopt
/// when the file has none: the torch Adam state_dict (state by index with the step,
/// the groups with `settings` and the indices they hold) and the fp32 masters group by
/// group.
static std::optional<llvm::json::Object> megatronOptimizerSkeleton(const ShardFile &file,
                                                                   llvm::StringRef prefix,
                                                                   llvm::ArrayRef<llvm::json::Value> settings,
                                                                   int64_t step) {
  std::vector<llvm::json::Array> masters(settings.size());
  std::vector<std::pair<std::string, std::string>> moments; // exp_avg, exp_avg_sq keys
  for (const LocalTensor &t : file.tensors) {
    llvm::StringRef key = t.key;
    if (!key.consume_front(prefix))
      continue;
    unsigned group = 0;
    if (key.consume_front("fp32_from_fp16_params.") && !key.consumeInteger(10, group) &&
        group < masters.size())
      masters[group].push_back(llvm::json::Object{{"$tensor", t.key}});
    else if (key.ends_with(".exp_avg"))
      moments.push_back({t.key, ""});
    else if (key.ends_with(".exp_avg_sq"))
      moments.back().second = t.key;
  }
  if (moments.empty())
    return std::nullopt;
  llvm::json::Array state;
  for (size_t i = 0; i < moments.size(); ++i)
    state.push_back(llvm::json::Array{
        int64_t(i), llvm::json::Object{{"$dict", llvm::json::Array{
                                           llvm::json::Array{"step", step},
                                           llvm::json::Array{"exp_avg", llvm::json::Object{{"$tensor", moments[i].first}}},
                                           llvm::json::Array{"exp_avg_sq", llvm::json::Object{{"$tensor", moments[i].second}}}}}}});
  llvm::json::Array groups;
  int64_t next = 0;
  for (size_t g = 0; g < settings.size(); ++g) {
    llvm::json::Array indices;
    for (size_t i = 0; i < masters[g].size(); ++i)
      indices.push_back(next++);
    groups.push_back(groupSkeleton(settings[g], std::move(indices)));
  }
  llvm::json::Array fp32;
  for (llvm::json::Array &group : masters)
    fp32.push_back(std::move(group));
  return llvm::json::Object{
      {"$dict",
       llvm::json::Array{
           llvm::json::Array{"optimizer",
                             llvm::json::Object{{"$dict", llvm::json::Array{
                                                    llvm::json::Array{"state", llvm::json::Object{{"$dict", std::move(state)}}},
                                                    llvm::json::Array{"param_groups", std::move(groups)}}}}},
           llvm::json::Array{"fp32_from_fp16_params", std::move(fp32)}}}};
}

/// What Megatron's DistributedOptimizer.state_dict() gives: the groups' `settings`
/// without "params", each with the step (its load_state_dict takes the step from
/// there), the states being in distrib_optim.pt. With `shardingType` (torch_dist),
/// what its sharded_state_dict leaves of itself in common.pt: that, and the
/// param_state_sharding_type its load_state_dict dispatches on (the states being in
/// the DCP part).
static llvm::json::Object megatronDistOptSkeleton(llvm::ArrayRef<llvm::json::Value> settings,
                                                  int64_t step, llvm::StringRef shardingType = "") {
  llvm::json::Array groups;
  for (llvm::json::Value group : settings) {
    if (auto *o = group.getAsObject(); o && !o->get("step"))
      (*o)["step"] = step;
    groups.push_back(groupSkeleton(group, std::nullopt));
  }
  llvm::json::Array entries{llvm::json::Array{
      "optimizer", llvm::json::Object{{"$dict", llvm::json::Array{llvm::json::Array{
                                                    "param_groups", std::move(groups)}}}}}};
  if (!shardingType.empty())
    entries.push_back(llvm::json::Array{"param_state_sharding_type", shardingType});
  return llvm::json::Object{{"$dict", std::move(entries)}};
}

/// The "optimizer" entry of Megatron's model file `file`, or nullopt when it holds no
/// optimizer state: one optimizer's state_dict(), or a mixture of experts'
/// ChainedOptimizer's list [the dense optimizer's, the experts'] (see
/// ckpt::MegatronOptimizer; `expertGroups` the experts' optimizer's groups, 0 for a
/// dense model), the mixed-precision optimizer's or, `distributed`, the distributed
/// optimizer's.
static std::optional<llvm::json::Value> megatronOptimizerEntry(const ShardFile &file,
                                                               const Layout &source,
                                                               const llvm::json::Object &args,
                                                               size_t expertGroups,
                                                               bool distributed) {
  bool experts = expertGroups > 0;
  int64_t step = source.optimizerStep.value_or(source.iteration);
  llvm::json::Array settings = megatronGroupSettings(source, args, step, expertGroups);
  llvm::ArrayRef<llvm::json::Value> all(settings.data(), settings.size());
  // The dense optimizer's two groups, then the experts' optimizer's.
  llvm::SmallVector<llvm::ArrayRef<llvm::json::Value>, 2> parts{all.take_front(2)};
  if (experts)
    parts.push_back(all.drop_front(2));
  llvm::json::Array entries;
  for (size_t o = 0; o < parts.size(); ++o) {
    if (distributed) {
      entries.push_back(megatronDistOptSkeleton(parts[o], step));
      continue;
    }
    auto skeleton = megatronOptimizerSkeleton(
        file, experts ? llvm::formatv("optimizer.{0}.", o).str() : "optimizer.", parts[o], step);
    if (!skeleton)
      return std::nullopt;
    entries.push_back(std::move(*skeleton));
  }
  if (!experts)
    return std::move(entries[0]);
  return llvm::json::Value(std::move(entries));
}

static size_t countStates(llvm::ArrayRef<FullTensor> fulls, std::string *first) {
  size_t n = 0;
  for (const FullTensor &f : fulls)
    if (f.name.find('#') != std::string::npos && n++ == 0 && first)
      *first = f.name;
  return n;
}

LocalTensor reshard::wholeLocal(const Layout &layout, unsigned f, std::string key) {
  const FullTensor &full = layout.fulls[f];
  return {key.empty() ? full.name : std::move(key), full.dtype, full.shape,
          {{f, Box::whole(full.shape), llvm::SmallVector<int64_t, 4>(full.shape.size(), 0)}}};
}

/// The config.json a target folder holds: the source's config as it was (the
/// conversion changes none of its fields), else one made from the dimensions; none
/// when the source states neither.
static std::optional<std::string> configFile(const Layout &source) {
  if (!source.modelConfig.empty())
    return source.modelConfig;
  if (source.dims)
    return configJson(*source.dims) + "\n";
  return std::nullopt;
}

/// A DCP folder as torch's get_state_dict and DCP's flatten_state_dict would key a
/// model and its Adam optimizer (see ckpt::DcpOptimizer): `<model prefix><name>`,
/// `<optimizer prefix>state.<name>.{exp_avg,exp_avg_sq,step}` and
/// `<optimizer prefix>param_groups.<i>.<setting>` (bytes entries, "params" listing the
/// names). The prefixes are a DCP source's, else "model." and "optim."; without
/// optimizer states the keys are the names, as before. A torch optimizer's parameter
/// is its own master, so a parameter with an fp32 master is written from it. The
/// step tensors and bytes entries travel in the output's meta.
static llvm::Expected<ShardFile> dcpTarget(const Layout &source, Layout &out, unsigned ranks) {
  ShardFile file{".", "dcp", {}, ""};
  llvm::json::Object meta{{"ranks", int64_t(ranks)}};
  // Inside the folder, where a conversion of it to Megatron finds the dimensions.
  if (std::optional<std::string> config = configFile(source))
    meta["config"] = std::move(*config);
  if (!countStates(out.fulls, nullptr)) {
    for (unsigned f = 0; f < out.fulls.size(); ++f)
      file.tensors.push_back(wholeLocal(out, f));
    file.meta = llvm::formatv("{0}", llvm::json::Value(std::move(meta))).str();
    return file;
  }
  std::string modelPrefix = "model.", optimizerPrefix = "optim.";
  if (source.format == "dcp" || source.convertedFrom == "dcp")
    if (auto parsed = llvm::json::parse(source.sourceArgs))
      if (auto *o = parsed->getAsObject()) {
        modelPrefix = o->getString("model_prefix").value_or(modelPrefix).str();
        optimizerPrefix = o->getString("optimizer_prefix").value_or(optimizerPrefix).str();
      }
  std::vector<FullTensor> fulls;
  std::vector<std::string> keys, withStates;
  for (const FullTensor &f : out.fulls) {
    auto [name, state] = llvm::StringRef(f.name).split('#');
    if (state == "fp32")
      continue;
    FullTensor t = f;
    if (state.empty()) {
      if (const FullTensor *master = out.findFull(f.name + "#fp32")) {
        t.dtype = DType::Float32;
        t.from = master->name;
      }
      keys.push_back(modelPrefix + f.name);
    } else if (state == "exp_avg" || state == "exp_avg_sq") {
      keys.push_back(optimizerPrefix + "state." + name.str() + "." + state.str());
      if (state == "exp_avg")
        withStates.push_back(name.str());
    } else {
      return llvm::createStringError("dcp keeps Adam's states (exp_avg, exp_avg_sq), not " +
                                     f.name);
    }
    fulls.push_back(std::move(t));
  }
  out.fulls = std::move(fulls);
  for (unsigned f = 0; f < out.fulls.size(); ++f)
    file.tensors.push_back(wholeLocal(out, f, keys[f]));

  // Adam's step as the 0-dim float32 tensor torch keeps per parameter.
  int64_t step = source.optimizerStep.value_or(source.iteration);
  llvm::json::Array scalars, bytes;
  for (const std::string &name : withStates)
    scalars.push_back(llvm::json::Array{optimizerPrefix + "state." + name + ".step", "float32", step});
  // The groups: the source's, else one of every parameter with states; each group's
  // settings the source's, else torch's Adam defaults.
  std::vector<std::vector<std::string>> groups = source.paramGroups;
  if (groups.empty())
    groups.push_back(withStates);
  llvm::json::Array settings;
  if (auto parsed = llvm::json::parse(source.optimizerGroups.empty() ? "[]" : source.optimizerGroups))
    if (auto *array = parsed->getAsArray())
      settings = std::move(*array);
  for (size_t g = 0; g < groups.size(); ++g) {
    std::string prefix = optimizerPrefix + "param_groups." + std::to_string(g) + ".";
    const llvm::json::Object *given = g < settings.size() ? settings[g].getAsObject() : nullptr;
    llvm::json::Object defaults{
        {"lr", 0.001},
        {"betas", llvm::json::Object{{"$tuple", llvm::json::Array{0.9, 0.999}}}},
        {"eps", 1e-8},
        {"weight_decay", 0},
        {"amsgrad", false},
        {"maximize", false},
        {"foreach", nullptr},
        {"capturable", false}};
    const llvm::json::Object &group = given ? *given : defaults;
    std::vector<std::string> names;
    for (const auto &entry : group)
      names.push_back(entry.first.str());
    llvm::sort(names);
    for (const std::string &name : names)
      if (name != "params")
        bytes.push_back(llvm::json::Array{prefix + name, *group.get(name)});
    bytes.push_back(llvm::json::Array{prefix + "params", llvm::json::Array(groups[g])});
  }
  meta["scalars"] = std::move(scalars);
  meta["bytes"] = std::move(bytes);
  file.meta = llvm::formatv("{0}", llvm::json::Value(std::move(meta))).str();
  return file;
}

/// What a Megatron target of either checkpoint format is cut from: the model's
/// dimensions with the vocabulary padded to a multiple of 128·tp, the layers of each
/// stage, the iteration folder, and the args Namespace (the source's when it is
/// Megatron, with the new degrees and shape).
struct MegatronTargetBase {
  MegatronDims dims;
  std::vector<int64_t> perStage;
  std::string dir;
  llvm::json::Object args;
  bool withStates = false;
};

static llvm::Expected<MegatronTargetBase>
megatronTargetBase(const Layout &source, const Layout &out, const TargetSpec &target) {
  if (!source.dims)
    return llvm::createStringError(
        source.modelConfig.empty()
            ? "megatron needs the model's dimensions (heads, query groups), and the source does "
              "not state them; put the model's Hugging Face config.json in the source folder "
              "(HF, DCP), beside a DCP folder or beside a torch or safetensors file"
            : "megatron needs the model's dimensions, and the source's config has no "
              "num_hidden_layers, hidden_size or num_attention_heads");
  const ModelDims &d = *source.dims;
  MegatronTargetBase base;
  // The stages: first= and last= take theirs, the others share the rest evenly, as
  // Megatron-LM splits the layers under --decoder-first/last-pipeline-num-layers.
  int64_t first = target.firstLayers, last = target.lastLayers;
  int64_t pp = target.pp, others = pp - (first > 0) - (last > 0);
  int64_t rest = d.layers - first - last;
  if ((first || last) && pp < 2)
    return llvm::createStringError("--to: first= and last= set the first and last pipeline "
                                   "stage's layers; give pp=2 or more");
  if (rest < 0 || (others == 0 ? rest != 0 : rest < others || rest % others != 0))
    return llvm::createStringError(
        first || last
            ? llvm::formatv("--to: first={0} last={1} leave {2} of the {3} layers for {4} "
                            "other stage(s), which must share them evenly, each at least one",
                            first, last, rest, d.layers, others)
                  .str()
            : llvm::formatv("{0} layers do not split evenly over pp={1}; give first=N and/or "
                            "last=N for the first and last stage's layers",
                            d.layers, target.pp)
                  .str());
  base.perStage.assign(size_t(pp), others > 0 ? rest / others : 0);
  if (first)
    base.perStage.front() = first;
  if (last)
    base.perStage.back() = last;
  MegatronDims &md = base.dims;
  md.numLayers = d.layers;
  md.hidden = d.hidden;
  md.heads = d.heads;
  md.queryGroups = d.kvHeads;
  md.headDim = d.headDim;
  md.ffn = d.ffn;
  md.vocab = d.vocab;
  md.swiglu = hasGateProj(out) || d.swiglu;
  md.experts = d.experts;
  md.moeFfn = d.moeFfn ? d.moeFfn : d.ffn;
  md.topK = d.topK;
  if (target.ep > 1 && !md.experts)
    return llvm::createStringError(
        llvm::formatv("--to: ep={0} asks for expert parallelism, and the model has no experts",
                      target.ep)
            .str());
  if (target.etp && !md.experts)
    return llvm::createStringError(
        llvm::formatv("--to: etp={0} sets the routed experts' tensor parallelism, and the "
                      "model has no experts",
                      target.etp)
            .str());
  if (md.experts % target.ep)
    return llvm::createStringError(
        llvm::formatv("--to: ep={0} does not divide the {1} experts of each MoE layer; pick "
                      "an ep that does",
                      target.ep, md.experts)
            .str());
  int64_t multiple = 128 * target.tp;
  md.paddedVocab = (d.vocab + multiple - 1) / multiple * multiple;
  base.dir = llvm::formatv("iter_{0:d7}", source.iteration).str();
  llvm::json::Object &args = base.args;
  if (llvm::StringRef(source.format).starts_with("megatron") ||
      llvm::StringRef(source.convertedFrom).starts_with("megatron")) {
    // A universal file's source_layout carries the optimizer groups beside the
    // args; they go to the optimizer entry, not into the Namespace. (Not erased
    // afterwards: json::Object::erase leaves a tombstone that copies of the object
    // revive in LLVM 19.)
    if (auto parsed = llvm::json::parse(source.sourceArgs))
      if (auto *o = parsed->getAsObject())
        for (auto &[key, value] : *o)
          if (key != "optimizer_groups")
            args[key] = std::move(value);
  }
  for (auto [key, value] : std::initializer_list<std::pair<const char *, int64_t>>{
           {"num_layers", md.numLayers},
           {"hidden_size", md.hidden},
           {"num_attention_heads", md.heads},
           {"num_query_groups", md.queryGroups},
           {"kv_channels", md.headDim},
           {"ffn_hidden_size", md.ffn},
           {"vocab_size", md.vocab},
           {"padded_vocab_size", md.paddedVocab},
           {"tensor_model_parallel_size", target.tp},
           {"pipeline_model_parallel_size", target.pp}})
    args[key] = value;
  for (auto [key, value] : {std::pair<const char *, int64_t>{"decoder_first_pipeline_num_layers",
                                                             first},
                            {"decoder_last_pipeline_num_layers", last}}) {
    if (value)
      args[key] = value;
    else if (args.get(key))
      args[key] = nullptr; // a Megatron source's own split does not apply here
  }
  if (target.torchDist || args.get("ckpt_format"))
    args["ckpt_format"] = target.torchDist ? "torch_dist" : "torch";
  args["group_query_attention"] = md.queryGroups != md.heads;
  args["swiglu"] = md.swiglu;
  // Without an lm_head the output layer is the word embeddings, as Megatron runs it
  // unless told --untie-embeddings-and-output-weights.
  args["untie_embeddings_and_output_weights"] = out.findFull("lm_head.weight") != nullptr;
  if (md.experts) {
    // Experts split over etp ranks (expert_tensor_parallel_size), tp unless given.
    md.groupedGemm = args.getBoolean("moe_grouped_gemm").value_or(false);
    for (auto [key, value] : std::initializer_list<std::pair<const char *, int64_t>>{
             {"num_experts", md.experts},
             {"moe_ffn_hidden_size", md.moeFfn},
             {"moe_router_topk", md.topK},
             {"expert_model_parallel_size", target.ep},
             {"expert_tensor_parallel_size", target.etp ? target.etp : target.tp}})
      args[key] = value;
    // Shared experts as their tensors say: fc2's columns, a gate or not.
    for (const FullTensor &f : out.fulls) {
      llvm::StringRef name = f.name;
      if (name.ends_with(".mlp.shared_expert.down_proj.weight") && f.shape.size() == 2)
        md.sharedFfn = f.shape[1];
      md.sharedGate = md.sharedGate || name.ends_with(".mlp.shared_expert_gate.weight");
    }
    if (md.sharedFfn) {
      args["moe_shared_expert_intermediate_size"] = md.sharedFfn;
      args["moe_shared_expert_gate"] = md.sharedGate;
    }
    // Dense layers between MoE layers as the tensors say (a layer without a router),
    // in moe_layer_freq as Megatron reads it: the int N when every Nth layer routes
    // from layer 0, else the list of 1 (MoE) or 0 per layer.
    std::vector<bool> pattern;
    for (int64_t layer = 0; layer < md.numLayers; ++layer)
      pattern.push_back(out.findFull(llvm::formatv("model.layers.{0}.block_sparse_moe.gate.weight",
                                                   layer)
                                         .str()) != nullptr);
    std::optional<int64_t> every;
    for (int64_t n = 1; n <= std::max<int64_t>(md.numLayers, 1) && !every; ++n)
      if (llvm::all_of(llvm::seq<int64_t>(0, md.numLayers),
                       [&](int64_t i) { return pattern[i] == (i % n == 0); }))
        every = n;
    if (every) {
      args["moe_layer_freq"] = *every;
    } else {
      llvm::json::Array list;
      for (bool moe : pattern)
        list.push_back(int64_t(moe));
      args["moe_layer_freq"] = std::move(list);
    }
    if (every != 1)
      md.moeLayers = std::move(pattern);
  }
  // With optimizer states, the optimizer that keeps them.
  base.withStates = countStates(out.fulls, nullptr) > 0;
  if (base.withStates)
    args["use_distributed_optimizer"] = target.distributedOptimizer;
  return base;
}

/// Megatron's torch format: mp_rank_TT[_PPP]/model_optim_rng.pt per rank, with the
/// optimizer's states in the mixed-precision layout or the distributed optimizer's
/// distrib_optim.pt, whose buffers are laid out by the args' bucketing.
static llvm::Expected<std::vector<ShardFile>>
megatronTorchTarget(const Layout &source, const Layout &out, const TargetSpec &target,
                    const MegatronTargetBase &base) {
  const llvm::json::Object &args = base.args;
  std::optional<MegatronDistOpt> distOpt;
  if (base.withStates && target.distributedOptimizer)
    distOpt = megatronDistOptFromArgs(args, target.pp);
  auto files = megatronShards(out.fulls, base.dims, MegatronNaming::MCore, target.tp, target.pp,
                              base.perStage, base.dir + "/", distOpt ? &*distOpt : nullptr, nullptr,
                              target.ep, target.etp);
  if (!files)
    return files.takeError();
  // Each model file: what Megatron's save_checkpoint pickles, the model's tensors in
  // file order under "model" (keys without the "model." the layout prefixes). The
  // distrib_optim.pt files come with their skeletons.
  for (ShardFile &file : *files) {
    if (!llvm::StringRef(file.path).ends_with("/model_optim_rng.pt"))
      continue;
    llvm::json::Array model;
    for (const LocalTensor &t : file.tensors)
      if (llvm::StringRef key = t.key; key.consume_front("model."))
        model.push_back(llvm::json::Array{key, llvm::json::Object{{"$tensor", t.key}}});
    llvm::json::Array root{
        llvm::json::Array{"args", llvm::json::Object{{"$object", "argparse.Namespace"},
                                                     {"state", llvm::json::Object(args)}}},
        llvm::json::Array{"checkpoint_version", llvm::json::Object{{"$float", 3.0}}},
        llvm::json::Array{"iteration", source.iteration},
        llvm::json::Array{"model", llvm::json::Object{{"$odict", std::move(model)}}}};
    if (base.withStates)
      if (auto optimizer = megatronOptimizerEntry(
              file, source, args, base.dims.experts ? 1 + hasExpertBiases(out.fulls) : 0,
              distOpt.has_value()))
        root.push_back(llvm::json::Array{"optimizer", std::move(*optimizer)});
    file.format = "torch-tree";
    file.meta =
        llvm::formatv("{0}", llvm::json::Value(llvm::json::Object{{"$dict", std::move(root)}}));
  }
  return std::move(*files);
}

/// Megatron-core's torch_dist format (see ckpt::MegatronDistCheckpoint for the
/// Megatron-LM sources): the iteration folder as a DCP checkpoint of the global tensors
/// under mcore's sharded keys, layers stacked as TransformerBlock.sharded_state_dict
/// stacks homogeneous layers (each layer a chunk at its row of `decoder.layers.<suffix>`,
/// as each layer's ShardedTensor with its prepended axis is saved) or, with dense layers
/// between MoE layers, keyed one by one (`decoder.layers.<N>.<suffix>`), a routed expert
/// at its expert's row of `decoder.layers[.<N>].mlp.experts.experts.<suffix>` (its
/// biases too), vocabulary rows padded, the optimizer's fp32 masters and Adam moments
/// beside them in model space: the mixed-precision optimizer's or, with
/// `target.distributedOptimizer`, the distributed optimizer's fully_reshardable form
/// (distrib_optimizer.py, sharded_param_state_fully_reshardable: the same keys with
/// the master named `param`), which Megatron loads at any tp, pp and dp because the
/// checkpoint's content_metadata, not the loading run's flags, names the form;
/// then common.pt (what dist_checkpointing.save keeps out of the shards: args,
/// checkpoint_version, iteration, the optimizer's groups and step, content_metadata)
/// and metadata.json last, as dist_checkpointing/serialization.py save() writes it last.
static llvm::Expected<std::vector<ShardFile>>
megatronDistTarget(const Layout &source, const Layout &out, const TargetSpec &target,
                   MegatronTargetBase &base) {
  llvm::json::Object &args = base.args;
  bool distOpt = base.withStates && target.distributedOptimizer;
  std::vector<std::pair<std::string, std::string>> states;
  if (base.withStates) {
    states.assign(std::begin(kDistStates), std::end(kDistStates));
    // sharded_param_state_fully_reshardable keys the master as
    // get_parameter_state_dp_zero names it.
    if (distOpt)
      states.front().second = "optimizer.state.param.";
    for (const FullTensor &f : out.fulls) {
      auto [name, state] = llvm::StringRef(f.name).split('#');
      if (!state.empty() && !llvm::is_contained({"fp32", "exp_avg", "exp_avg_sq"}, state))
        return llvm::createStringError("megatron format=torch_dist keeps Adam's states (fp32 "
                                       "master, exp_avg, exp_avg_sq), not " + f.name);
      if (state.empty() && !out.findFull(f.name + "#fp32"))
        return llvm::createStringError(
            "megatron format=torch_dist keeps each parameter's fp32 master (" +
            states.front().second + "<key>) and the source has none for " + f.name +
            "; add --weights-only to leave the optimizer out");
    }
  }
  // No RNG states are written; an optimizer-less checkpoint says so too, so that
  // Megatron's load_checkpoint does not ask for them.
  args["no_save_rng"] = true;
  args["no_save_optim"] = !base.withStates;
  // The flags a run saving the distributed optimizer's fully_reshardable form has
  // (training/checkpointing.py, _build_sharded_state_dict_metadata).
  if (distOpt) {
    args["dist_ckpt_optim_fully_reshardable"] = true;
    args["distrib_optim_fully_reshardable_mem_efficient"] = false;
  }
  // Layers differ when some are dense and some MoE layers (moe_layer_freq other than
  // 1), and TransformerBlock.sharded_state_dict (transformer_block.py) then keys each
  // layer's tensors decoder.layers.<global layer>.<suffix> without a stacked axis, as
  // it does for a run with --hetereogenous-dist-checkpoint (so spelled in mcore).
  bool perLayer = !base.dims.moeLayers.empty() ||
                  args.getBoolean("hetereogenous_dist_checkpoint").value_or(false);
  // A layer's parameter at its row of the stacked key (or under its own key); a routed
  // expert's (mlp.experts.local_experts.<e>.<rest> at ep = 1) at its row of that,
  // under mlp.experts.experts.<rest>: SequentialMLP.sharded_state_dict
  // (transformer/moe/experts.py) maps the MoE layer's mlp.experts.local_experts.<e>.
  // to mlp.experts.experts. and prepends the global expert's axis.
  auto keyOf = [&](const LocalTensor &t) -> llvm::Expected<std::string> {
    llvm::StringRef key = t.key;
    key.consume_front("model.");
    llvm::StringRef rest = key;
    int64_t layer = 0, expert = 0;
    if (!rest.consume_front("decoder.layers.") || rest.consumeInteger(10, layer) ||
        !rest.consume_front("."))
      return key.str();
    auto layerKey = [&](const llvm::Twine &suffix) {
      return perLayer ? llvm::formatv("decoder.layers.{0}.{1}", layer, suffix).str()
                      : dcpRowKey(("decoder.layers." + suffix).str(), layer);
    };
    if (!rest.consume_front("mlp.experts.local_experts."))
      return layerKey(rest);
    if (rest.consumeInteger(10, expert) || !rest.consume_front("."))
      return llvm::createStringError("target megatron: " + key + " is no expert's parameter");
    return dcpRowKey(layerKey("mlp.experts.experts." + rest), expert);
  };
  auto tensors =
      megatronDistTensors("target megatron", out, base.dims, base.dims.numLayers, states, keyOf);
  if (!tensors)
    return tensors.takeError();
  // The stacked keys (parameters' and states') and their stacked axes' sizes (layers
  // unless keyed one by one, and experts), for the DCP output.
  llvm::json::Object stacked;
  for (const LocalTensor &t : *tensors)
    if (auto rowKey = parseDcpRowKey(t.key)) {
      llvm::json::Array axes;
      if (!perLayer)
        axes.push_back(base.dims.numLayers);
      if (llvm::StringRef(rowKey->first).contains(".mlp.experts.experts."))
        axes.push_back(base.dims.experts);
      stacked[rowKey->first] = std::move(axes);
    }
  std::vector<ShardFile> files;
  int64_t ranks = int64_t(target.tp) * target.pp;
  files.push_back({base.dir, "dcp", std::move(*tensors),
                   llvm::formatv("{0}", llvm::json::Value(llvm::json::Object{
                                            {"ranks", ranks}, {"stacked", std::move(stacked)}}))
                       .str()});

  // common.pt. The optimizer entry is what Float16OptimizerWithFloat16Params.
  // sharded_state_dict leaves there: the groups without their params (a
  // LocalNonpersistentObject) and the step all states share as "common_step"
  // (optimizer.py, _extract_common_per_param_step); or DistributedOptimizer.
  // sharded_state_dict's: its state_dict() (the groups with the step) and the
  // sharding type, its model-space states being all sharded. A mixture of experts'
  // ChainedOptimizer.sharded_state_dict is {0: the dense optimizer's, 1: the
  // experts'}, each such a dict over its own groups; with chained_optim_avoid_prefix
  // (set in content_metadata below; for the distributed optimizer only with a
  // model-space sharding type) its states' keys are a dense model's.
  using Entry = llvm::json::Array;
  auto dict = [](llvm::json::Array entries) {
    return llvm::json::Object{{"$dict", std::move(entries)}};
  };
  // training/checkpointing.py, _build_sharded_state_dict_metadata; load_checkpoint
  // reads the distributed optimizer's sharding type from here.
  llvm::json::Array metadata;
  if (distOpt) {
    metadata.push_back(Entry{"distrib_optim_sharding_type", "fully_reshardable"});
    metadata.push_back(Entry{"distrib_optim_fully_reshardable_mem_efficient", false});
  }
  metadata.push_back(Entry{"singleton_local_shards", false});
  metadata.push_back(Entry{"chained_optim_avoid_prefix", true});
  llvm::json::Array root{
      Entry{"args", llvm::json::Object{{"$object", "argparse.Namespace"},
                                       {"state", llvm::json::Object(args)}}},
      Entry{"checkpoint_version", llvm::json::Object{{"$float", 3.0}}},
      Entry{"iteration", source.iteration},
      Entry{"content_metadata", dict(std::move(metadata))}};
  if (base.withStates) {
    int64_t step = source.optimizerStep.value_or(source.iteration);
    bool experts = base.dims.experts > 0;
    // The experts' optimizer: its weights' group, then its biases' (not decayed).
    llvm::json::Array settings =
        megatronGroupSettings(source, args, step, experts ? 1 + hasExpertBiases(out.fulls) : 0);
    // One optimizer's part over settings [begin, end).
    auto part = [&](size_t begin, size_t end) {
      if (distOpt)
        return megatronDistOptSkeleton(
            llvm::ArrayRef<llvm::json::Value>(settings.data() + begin, end - begin), step,
            "fully_reshardable");
      llvm::json::Array groups;
      for (size_t g = begin; g < end; ++g)
        groups.push_back(groupSkeleton(settings[g], std::nullopt));
      llvm::json::Array inner{
          Entry{"state", dict(llvm::json::Array{Entry{"common_step", step}})},
          Entry{"param_groups", std::move(groups)}};
      return dict(llvm::json::Array{Entry{"optimizer", dict(std::move(inner))}});
    };
    llvm::json::Object optimizer =
        experts ? dict(llvm::json::Array{Entry{int64_t(0), part(0, 2)},
                                         Entry{int64_t(1), part(2, settings.size())}})
                : part(0, settings.size());
    root.push_back(Entry{"optimizer", std::move(optimizer)});
  }
  files.push_back({base.dir + "/common.pt", "torch-tree", {},
                   llvm::formatv("{0}", llvm::json::Value(dict(std::move(root)))).str()});
  // core.py, CheckpointingConfig as save_config dumps it; the common_backend fields
  // are the ones mcore wrote while common.pt held the common state, and today's
  // maybe_load_config ignores fields it does not know.
  files.push_back({base.dir + "/metadata.json", "text", {},
                   "{\"sharded_backend\": \"torch_dist\", \"sharded_backend_version\": 1, "
                   "\"common_backend\": \"torch\", \"common_backend_version\": 1}"});
  return files;
}

llvm::Expected<Layout> reshard::targetLayout(const Layout &source, const TargetSpec &target) {
  Layout out;
  out.format = target.format;
  out.iteration = source.iteration;
  out.dims = source.dims;
  for (const FullTensor &f : source.fulls)
    if (!target.weightsOnly || f.name.find('#') == std::string::npos)
      out.fulls.push_back(f);
  std::string firstState;
  if (size_t states = countStates(out.fulls, &firstState);
      states && target.format != "universal" && target.format != "deepspeed" &&
      target.format != "deepspeed-universal" && target.format != "megatron" &&
      target.format != "dcp")
    return llvm::createStringError(
        llvm::formatv("the source holds {0} optimizer-state tensors (such as {1}) that {2} "
                      "cannot hold yet; add --weights-only to leave them out, or convert to "
                      "universal",
                      states, firstState, target.format)
            .str());

  if (target.format == "dcp") {
    auto file = dcpTarget(source, out, target.ranks);
    if (!file)
      return file.takeError();
    out.files.push_back(std::move(*file));
  } else if (target.format == "universal" || target.format == "torch") {
    ShardFile file{".", target.format, {}, ""};
    for (unsigned f = 0; f < out.fulls.size(); ++f)
      file.tensors.push_back(wholeLocal(out, f));
    if (target.format == "universal") {
      llvm::json::Object meta{{"source_format", source.format}, {"iteration", source.iteration}};
      meta["model_config"] = configFile(source).value_or("{}");
      if (!source.sourceArgs.empty())
        meta["source_layout"] = source.sourceArgs;
      // A Megatron source's optimizer group settings ride in source_layout.
      if (!source.optimizerGroups.empty()) {
        llvm::json::Object layoutJson;
        if (auto parsed = llvm::json::parse(source.sourceArgs.empty() ? "{}" : source.sourceArgs))
          if (auto *o = parsed->getAsObject())
            layoutJson = std::move(*o);
        if (auto groups = llvm::json::parse(source.optimizerGroups))
          layoutJson["optimizer_groups"] = std::move(*groups);
        meta["source_layout"] = llvm::formatv("{0}", llvm::json::Value(std::move(layoutJson))).str();
      }
      if (source.optimizerStep)
        meta["step"] = *source.optimizerStep;
      file.meta = llvm::formatv("{0}", llvm::json::Value(std::move(meta))).str();
    }
    out.files.push_back(std::move(file));
  } else if (target.format == "hf-safetensors") {
    std::vector<std::vector<unsigned>> shards(1);
    uint64_t inShard = 0, total = 0;
    for (unsigned f = 0; f < out.fulls.size(); ++f) {
      uint64_t bytes = *checkedNumel(out.fulls[f].shape) * dtypeSize(out.fulls[f].dtype);
      if (inShard && inShard + bytes > target.shardBytes) {
        shards.emplace_back();
        inShard = 0;
      }
      shards.back().push_back(f);
      inShard += bytes;
      total += bytes;
    }
    llvm::json::Object weightMap;
    for (size_t s = 0; s < shards.size(); ++s) {
      ShardFile file;
      file.format = "safetensors";
      file.path = shards.size() == 1 ? "model.safetensors"
                                     : llvm::formatv("model-{0:d5}-of-{1:d5}.safetensors", s + 1,
                                                     shards.size())
                                           .str();
      for (unsigned f : shards[s]) {
        file.tensors.push_back(wholeLocal(out, f));
        weightMap[out.fulls[f].name] = file.path;
      }
      out.files.push_back(std::move(file));
    }
    if (shards.size() > 1) {
      llvm::json::Object index{{"metadata", llvm::json::Object{{"total_size", int64_t(total)}}},
                               {"weight_map", std::move(weightMap)}};
      out.files.push_back({"model.safetensors.index.json", "text", {},
                           llvm::formatv("{0:2}\n", llvm::json::Value(std::move(index))).str()});
    }
    if (std::optional<std::string> config = configFile(source))
      out.files.push_back({"config.json", "text", {}, std::move(*config)});
  } else if (target.format == "deepspeed-universal") {
    auto files = deepspeedUniversalTarget(source, out);
    if (!files)
      return files.takeError();
    out.files = std::move(*files);
  } else if (target.format == "deepspeed") {
    DeepSpeedConfig config;
    config.stage = target.zero;
    config.dp = target.dp;
    config.tp = target.tp;
    config.pipeline = target.pipeline;
    config.pp = target.pp;
    config.ep = target.ep;
    config.bf16Optimizer = config.bf16Names = target.bf16Optimizer;
    auto files = deepspeedTarget(source, out, config);
    if (!files)
      return files.takeError();
    out.files = std::move(*files);
  } else if (target.format == "megatron") {
    auto base = megatronTargetBase(source, out, target);
    if (!base)
      return base.takeError();
    auto files = target.torchDist ? megatronDistTarget(source, out, target, *base)
                                  : megatronTorchTarget(source, out, target, *base);
    if (!files)
      return files.takeError();
    out.files = std::move(*files);
    out.files.push_back({"latest_checkpointed_iteration.txt", "text", {},
                         std::to_string(source.iteration)});
  }
  if (llvm::Error err = checkLayout(out, "target " + target.format, /*source=*/false))
    return std::move(err);
  return out;
}
