//===- MegatronDist.cpp - Megatron-core torch_dist checkpoints -------------===//
//
// A torch_dist checkpoint is a DCP folder whose tensors are already global, so the
// model is read as Megatron at tp = pp = 1: each key is classified by the names the
// torch-format reader knows (megatron::classify), a stacked key once per layer.
// See Megatron.h, MegatronDistCheckpoint, for the Megatron-LM sources of the layout.
//
//===----------------------------------------------------------------------===//
#include "loom/Checkpoint/Megatron.h"

#include "BoundedJson.h"
#include "MegatronCommon.h"
#include "loom/Checkpoint/Dcp.h"
#include "loom/Checkpoint/TorchZip.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"

#include <map>
#include <set>

using namespace loom::ckpt;
using namespace loom::ckpt::megatron;

namespace {
/// metadata.json's sharded_backend, or an error naming the file.
llvm::Expected<std::string> shardedBackend(const std::string &dir) {
  std::string path = dir + "/metadata.json";
  auto text = llvm::MemoryBuffer::getFile(path);
  if (!text)
    return fileError(path, text.getError().message());
  auto config = detail::parseBoundedJson((*text)->getBuffer(), 8, path);
  if (!config)
    return config.takeError();
  const llvm::json::Object *object = config->getAsObject();
  std::optional<llvm::StringRef> backend = object ? object->getString("sharded_backend") : std::nullopt;
  if (!backend)
    return fileError(path, "has no sharded_backend (Megatron's dist_checkpointing writes "
                           "{\"sharded_backend\": \"torch_dist\", ...})");
  return backend->str();
}

/// The groups' settings (without "params") and the step of a torch optimizer's
/// state_dict as Megatron saves it: the step in each group (the distributed
/// optimizer's), in every state (older mcore) or as the "common_step" they share
/// (optimizer.py, _extract_common_per_param_step). `what` names the dict in errors.
llvm::Error readGroups(const DictValue &torchState, const std::string &file, llvm::StringRef what,
                       MegatronOptimizer &out) {
  ValuePtr groups = torchState.find("param_groups");
  if (!groups || !groups->sequence())
    return fileError(file, what + ".param_groups is missing");
  llvm::json::Array settings;
  for (const ValuePtr &group : *groups->sequence()) {
    const DictValue *g = group->get<DictValue>();
    if (!g)
      return fileError(file, what + ".param_groups holds a " + describe(*group) + ", not a dict");
    settings.push_back(plainEntries(*g, "params"));
    if (!out.step)
      out.step = stepNumber(g->find("step"));
  }
  if (ValuePtr states = torchState.find("state"); states && states->get<DictValue>()) {
    const DictValue &byParam = *states->get<DictValue>();
    if (ValuePtr common = byParam.find("common_step"))
      out.step = stepNumber(common);
    for (const auto &entry : byParam.entries)
      if (const DictValue *state = entry.second->get<DictValue>(); state && !out.step)
        out.step = stepNumber(state->find("step"));
  }
  out.groupsJson = llvm::formatv("{0}", llvm::json::Value(std::move(settings))).str();
  return llvm::Error::success();
}

/// One optimizer's groups and step from its part of common.pt's "optimizer" entry
/// (`o`, called `what` in errors): the mixed-precision optimizer's {"optimizer":
/// {"param_groups", "state": {i: {"step"}} or {"common_step": step}}} or the
/// distributed optimizer's {"optimizer": {"param_groups" (with "step")},
/// "param_state_sharding_type"} (the tensors being in the DCP part). dp_reshardable
/// keeps only the sharding type there (the groups are a ShardedObject of the DCP
/// part): `dpReshardable` is set and the groups are left to the caller.
llvm::Expected<MegatronOptimizer> optimizerPart(const DictValue &o, const std::string &file,
                                                const std::string &what, bool &dpReshardable) {
  MegatronOptimizer out;
  if (ValuePtr type = o.find("param_state_sharding_type")) {
    const std::string *name = type->get<std::string>();
    dpReshardable = name && *name == "dp_reshardable";
    if (!name || (*name != "fully_reshardable" && *name != "fully_sharded_model_space" &&
                  !dpReshardable))
      return fileError(file, "the distributed optimizer saved its states in the '" +
                                 (name ? *name : describe(*type)) +
                                 "' layout; loom reads the model-space ones "
                                 "(fully_reshardable, fully_sharded_model_space) and "
                                 "dp_reshardable's buckets");
    out.distributed = true;
    if (dpReshardable)
      return out;
  }
  ValuePtr inner = o.find("optimizer");
  const DictValue *torchState = inner ? inner->get<DictValue>() : nullptr;
  if (!torchState)
    return fileError(file, what + ".optimizer.param_groups is missing");
  if (llvm::Error err = readGroups(*torchState, file, what + ".optimizer", out))
    return std::move(err);
  return out;
}

/// The optimizer entry of common.pt, or nullopt when it has none. A dense model's is
/// one optimizer's part (optimizerPart). A mixture of experts trains with a
/// ChainedOptimizer (get_megatron_optimizer, optimizer/__init__.py: the dense
/// parameters' optimizer, then the experts'), whose sharded_state_dict
/// (optimizer.py) is the dict {0: the dense optimizer's, 1: the experts'}, each part
/// as a dense model's; `save` keeps what is not sharded of both in common.pt. Their
/// groups are kept in ChainedOptimizer.param_groups' order and their steps must be
/// one (_synchronize_steps). The experts' dp_reshardable buckets are keyed by the
/// expert-model-parallel rank (expt_tp_pp group), which loom does not lay out: refused.
llvm::Expected<std::optional<MegatronOptimizer>>
commonOptimizer(const DictValue &top, const std::string &file, bool experts,
                bool &dpReshardable) {
  ValuePtr optimizer = top.find("optimizer");
  const DictValue *o = optimizer ? optimizer->get<DictValue>() : nullptr;
  if (!o)
    return std::nullopt;
  if (!experts)
    return optimizerPart(*o, file, "optimizer", dpReshardable);
  const DictValue *parts[2] = {nullptr, nullptr};
  bool other = false;
  for (const auto &[key, value] : o->entries) {
    std::optional<int64_t> index = integerOf(key);
    if (index && (*index == 0 || *index == 1) && value->get<DictValue>())
      parts[*index] = value->get<DictValue>();
    else
      other = true;
  }
  if (other || !parts[0] || !parts[1]) {
    std::string held = !parts[0] && !parts[1] ? "one optimizer's state"
                       : !parts[1]            ? "the dense parameters' optimizer (0) alone"
                       : !parts[0]            ? "the experts' optimizer (1) alone"
                                              : "entries besides 0 and 1";
    return fileError(file, "the 'optimizer' entry holds " + held +
                               " where a mixture of experts' ChainedOptimizer keeps {0: the "
                               "dense parameters' optimizer's, 1: the experts'} "
                               "(megatron/core/optimizer/optimizer.py, "
                               "ChainedOptimizer.sharded_state_dict)");
  }
  MegatronOptimizer out;
  out.chained = true;
  llvm::json::Array groups;
  for (int i = 0; i < 2; ++i) {
    bool bucketed = false;
    auto part = optimizerPart(*parts[i], file, "optimizer." + std::to_string(i), bucketed);
    if (!part)
      return part.takeError();
    if (bucketed)
      return fileError(file, llvm::formatv("optimizer.{0} is the distributed optimizer's "
                                           "dp_reshardable buckets, which loom does not read "
                                           "for a mixture of experts (the experts' are keyed "
                                           "by expert-model-parallel rank)",
                                           i)
                                 .str());
    if (i == 0) {
      out.step = part->step;
      out.distributed = part->distributed;
    } else if (part->step != out.step) {
      auto text = [](std::optional<int64_t> step) {
        return step ? std::to_string(*step) : std::string("none");
      };
      return fileError(file, "optimizer.1 (the experts' optimizer) is at step " +
                                 text(part->step) + " where optimizer.0 (the dense "
                                 "parameters') is at step " + text(out.step) +
                                 "; a ChainedOptimizer steps both together");
    } else if (part->distributed != out.distributed) {
      return fileError(file, "optimizer.0 and optimizer.1 are not the same kind of optimizer "
                             "(one distributed, one mixed-precision)");
    }
    auto parsed = llvm::json::parse(part->groupsJson);
    if (parsed && parsed->getAsArray())
      for (llvm::json::Value &g : *parsed->getAsArray())
        groups.push_back(std::move(g));
  }
  out.groupsJson = llvm::formatv("{0}", llvm::json::Value(std::move(groups))).str();
  return out;
}

/// A ShardedObject's value: its bytes entry holds torch.save([data])
/// (strategies/torch.py, _mcore_to_torch_sharded_object).
llvm::Expected<ValuePtr> shardedObject(DcpReader &reader, const std::string &key) {
  auto value = reader.readBytes(key);
  if (!value)
    return value.takeError();
  const std::vector<ValuePtr> *items = (*value)->sequence();
  if (!items || items->size() != 1)
    return fileError(reader.directory() + "/.metadata",
                     "bytes entry '" + key + "' holds a " + describe(**value) +
                         ", not the one-element list mcore saves a ShardedObject as");
  return items->front();
}

/// A dp_reshardable state key, parsed.
struct BucketKey {
  unsigned group = 0, gbuf = 0, bucket = 0;
  DType paramDType = DType::BFloat16, gradDType = DType::Float32;
  std::string state;
};

std::optional<BucketKey> parseBucketKey(llvm::StringRef key) {
  BucketKey k;
  auto number = [&](llvm::StringRef prefix, unsigned &n) {
    return key.consume_front(prefix) && !key.consumeInteger(10, n);
  };
  if (!number("optimizer.distributed.dp_group_idx_", k.group) || !number(".gbuf_idx_", k.gbuf) ||
      !key.consume_front(".dtype_("))
    return std::nullopt;
  auto [dtypes, rest] = key.split(')');
  auto [param, grad] = dtypes.split(", ");
  std::optional<DType> paramDType, gradDType;
  if (param.consume_front("torch.") && grad.consume_front("torch.")) {
    paramDType = dtypeFromTorchName(param);
    gradDType = dtypeFromTorchName(grad);
  }
  key = rest;
  if (!paramDType || !gradDType || !number(".bucket_idx_", k.bucket) || !key.consume_front("."))
    return std::nullopt;
  k.paramDType = *paramDType;
  k.gradDType = *gradDType;
  k.state = key.str();
  return k;
}

constexpr const char *kBucketStates[] = {"param", "exp_avg", "exp_avg_sq"};

/// dp_reshardable's buffers from its bucket tensors (`entries`, keyed by name), each
/// group's, buffer's and bucket's indices counting from 0 without gaps, every bucket
/// with Adam's three fp32 states of one size, and per_bucket_numel_unpadded (when
/// present) saying the same sizes.
llvm::Expected<std::vector<std::vector<MegatronDistBuffer>>>
readDpBuckets(DcpReader &reader, const std::map<std::string, const DcpEntry *> &entries) {
  std::string where = reader.directory() + "/.metadata";
  // group -> gbuf -> (buffer, bucket -> (state -> numel)).
  struct Buffer {
    DType paramDType, gradDType;
    std::map<unsigned, std::map<std::string, int64_t>> buckets;
  };
  std::map<unsigned, std::map<unsigned, Buffer>> groups;
  for (const auto &[name, entry] : entries) {
    std::optional<BucketKey> k = parseBucketKey(name);
    if (!k || !llvm::is_contained(kBucketStates, llvm::StringRef(k->state)))
      return fileError(where, "'" + name + "' is not a dp_reshardable bucket state "
                              "(optimizer.distributed.dp_group_idx_G.gbuf_idx_I.dtype_(P, "
                              "G).bucket_idx_B.{param,exp_avg,exp_avg_sq})");
    if (entry->size.size() != 1 || entry->dtype != DType::Float32)
      return fileError(where, "'" + name + "' is not a 1-D float32 tensor (loom reads Adam's "
                              "fp32 states; a precision-aware optimizer's are not read)");
    auto [slot, fresh] =
        groups[k->group].try_emplace(k->gbuf, Buffer{k->paramDType, k->gradDType, {}});
    if (slot->second.paramDType != k->paramDType || slot->second.gradDType != k->gradDType)
      return fileError(where, "'" + name + "' names other dtypes than the rest of its grad "
                              "buffer's buckets");
    slot->second.buckets[k->bucket][k->state] = entry->size[0];
  }
  std::vector<std::vector<MegatronDistBuffer>> out;
  for (const auto &[group, buffers] : groups) {
    if (group != out.size())
      return fileError(where, llvm::formatv("holds buckets of dp_group_idx_{0} but none of "
                                            "dp_group_idx_{1}",
                                            group, out.size())
                                  .str());
    out.emplace_back();
    for (const auto &[gbuf, buffer] : buffers) {
      if (gbuf != out.back().size())
        return fileError(where, llvm::formatv("holds buckets of dp_group_idx_{0}.gbuf_idx_{1} "
                                              "but none of gbuf_idx_{2}",
                                              group, gbuf, out.back().size())
                                    .str());
      MegatronDistBuffer result{buffer.paramDType, buffer.gradDType, 0, {}};
      for (const auto &[bucket, states] : buffer.buckets) {
        std::string key =
            megatronDistBucketKey(group, gbuf, buffer.paramDType, buffer.gradDType,
                                  result.bucketNumels.size());
        if (bucket != result.bucketNumels.size())
          return fileError(where, "'" + key + ".param' is missing (bucket_idx_" +
                                      llvm::Twine(bucket) + " is there)");
        for (const char *state : kBucketStates) {
          auto found = states.find(state);
          if (found == states.end())
            return fileError(where, "'" + key + "." + state + "' is missing (loom reads "
                                    "Adam's param, exp_avg and exp_avg_sq)");
          if (found->second != states.begin()->second)
            return fileError(where, llvm::formatv("'{0}.{1}' holds {2} elements, '{0}.{3}' "
                                                  "{4}",
                                                  key, state, found->second,
                                                  states.begin()->first, states.begin()->second)
                                        .str());
        }
        result.bucketNumels.push_back(states.begin()->second);
        result.numel += states.begin()->second;
      }
      out.back().push_back(std::move(result));
    }
    // What the optimizer recorded of its buckets (a list per gbuf of {(param dtype,
    // grad dtype): [numel_unpadded per bucket]}): the tensors must be those sizes.
    std::string recordKey = llvm::formatv("optimizer.distributed.dp_group_idx_{0}."
                                          "per_bucket_numel_unpadded/shard_0_1",
                                          group)
                                .str();
    if (!reader.find(recordKey))
      continue;
    auto record = shardedObject(reader, recordKey);
    if (!record)
      return record.takeError();
    const std::vector<ValuePtr> *perBuffer = (*record)->sequence();
    if (!perBuffer || perBuffer->size() != out.back().size())
      return fileError(where, llvm::formatv("'{0}' lists {1} grad buffers where the tensors "
                                            "have {2}",
                                            recordKey, perBuffer ? perBuffer->size() : 0,
                                            out.back().size())
                                  .str());
    for (size_t gbuf = 0; gbuf < perBuffer->size(); ++gbuf) {
      const DictValue *byDType = (*perBuffer)[gbuf]->get<DictValue>();
      const std::vector<ValuePtr> *numels =
          byDType && byDType->entries.size() == 1 ? byDType->entries[0].second->sequence()
                                                  : nullptr;
      if (!numels)
        return fileError(where, "'" + recordKey + "' is not a list of {(param dtype, grad "
                                "dtype): [numel per bucket]}");
      const std::vector<int64_t> &held = out.back()[gbuf].bucketNumels;
      for (size_t b = 0; b < std::max(numels->size(), held.size()); ++b) {
        std::optional<int64_t> recorded =
            b < numels->size() ? integerOf((*numels)[b]) : std::nullopt;
        if (b < held.size() && recorded == held[b])
          continue;
        const MegatronDistBuffer &buffer = out.back()[gbuf];
        std::string key = megatronDistBucketKey(group, gbuf, buffer.paramDType, buffer.gradDType,
                                                b) +
                          ".param";
        if (b >= held.size())
          return fileError(where, llvm::formatv("'{0}' is missing ('{1}' lists {2} buckets)",
                                                key, recordKey, numels->size())
                                      .str());
        return fileError(where,
                         llvm::formatv("'{0}' holds {1} elements where '{2}' records {3}", key,
                                       held[b], recordKey,
                                       recorded ? std::to_string(*recorded) : "none")
                             .str());
      }
    }
  }
  if (out.empty())
    return fileError(where, "common.pt says dp_reshardable, but no "
                            "optimizer.distributed.dp_group_idx_0.* bucket tensor is there");
  return out;
}

/// dp_reshardable's groups and step: the optimizer object of dp_group_idx_0 (each
/// group's holds the same settings for its parameters), every group's step checked
/// to be the same.
llvm::Error readDpOptimizer(DcpReader &reader, size_t groups, MegatronOptimizer &out) {
  for (size_t g = 0; g < groups; ++g) {
    std::string key =
        llvm::formatv("optimizer.distributed.dp_group_idx_{0}.optimizer/shard_0_1", g).str();
    if (!reader.find(key))
      return fileError(reader.directory() + "/.metadata",
                       "no bytes entry '" + key + "' (DistributedOptimizer.state_dict's "
                       "groups and step, a ShardedObject of every model-parallel rank)");
    auto value = shardedObject(reader, key);
    if (!value)
      return value.takeError();
    const DictValue *state = (*value)->get<DictValue>();
    ValuePtr inner = state ? state->find("optimizer") : nullptr;
    if (!inner || !inner->get<DictValue>())
      return fileError(reader.directory() + "/.metadata",
                       "bytes entry '" + key + "' holds a " + describe(**value) +
                           ", not DistributedOptimizer.state_dict's {\"optimizer\": {...}}");
    MegatronOptimizer groupOptimizer;
    if (llvm::Error err = readGroups(*inner->get<DictValue>(), reader.directory() + "/.metadata",
                                     "'" + key + "' optimizer", groupOptimizer))
      return err;
    if (g == 0) {
      out.step = groupOptimizer.step;
      out.groupsJson = groupOptimizer.groupsJson;
    } else if (groupOptimizer.step != out.step) {
      auto text = [](std::optional<int64_t> step) {
        return step ? std::to_string(*step) : std::string("none");
      };
      return fileError(reader.directory() + "/.metadata",
                       llvm::formatv("'{0}' is at step {1}, dp_group_idx_0's at step {2}", key,
                                     text(groupOptimizer.step), text(out.step))
                           .str());
    }
  }
  return llvm::Error::success();
}

/// A model-space optimizer state's name in the DCP keys and loom's suffix for it.
struct StateName {
  const char *dcp, *suffix;
};
constexpr StateName kStates[] = {{"fp32_param", "#fp32"},
                                 {"param", "#fp32"},
                                 {"exp_avg", "#exp_avg"},
                                 {"exp_avg_sq", "#exp_avg_sq"}};

/// The parameters DCP entry `e` holds, appended to `out` with where each is: every
/// combination of its stacked axes' indices (the layer on a `decoder.layers.<suffix>`
/// key, none on a non-homogeneous layer's `decoder.layers.<N>.<suffix>`, then a routed
/// expert's global index on a `mlp.experts.experts.*` key) is one, named as the torch
/// format's reader names it at tp = pp = ep = 1 (SequentialMLP's `local_experts.<i>`
/// for an expert) and classified so. `where` names the metadata.
llvm::Error addParams(const DcpEntry &e, const std::string &where, MegatronDistCheckpoint &out) {
  const MegatronDims &dims = out.layout.dims;
  llvm::StringRef rest = e.fqn;
  std::string layerPrefix; // "decoder.layers.<N>." of a key that names its layer
  llvm::SmallVector<int64_t, 2> axes; // the sizes of the stacked axes
  if (rest.consume_front("decoder.layers.")) {
    auto [index, after] = rest.split('.');
    unsigned layer = 0;
    if (!index.getAsInteger(10, layer)) {
      layerPrefix = ("decoder.layers." + index + ".").str();
      rest = after;
    } else {
      // Stacked layers (TransformerBlock.sharded_state_dict, homogeneous layers).
      if (e.size.empty() || e.size[0] != dims.numLayers)
        return fileError(where, llvm::formatv("'{0}' stacks {1} layers, args.num_layers is {2}",
                                              e.fqn, e.size.empty() ? 0 : e.size[0],
                                              dims.numLayers)
                                    .str());
      axes.push_back(dims.numLayers);
    }
  }
  // Routed experts: the global expert on the next axis (SequentialMLP and
  // TEGroupedMLP.sharded_state_dict, transformer/moe/experts.py). Both put their own
  // "experts." after the MoE layer's "mlp.experts." prefix: SequentialMLP maps
  // <prefix>local_experts.<i>. to <prefix>experts., TEGroupedMLP its linear_fc<n>. to
  // <prefix>experts.linear_fc<n>.
  bool inLayer = !axes.empty() || !layerPrefix.empty();
  bool expert = inLayer && rest.consume_front("mlp.experts.");
  if (expert && !rest.consume_front("experts."))
    return fileError(where, "'" + e.fqn + "' is no key mcore gives a routed expert: "
                            "SequentialMLP and TEGroupedMLP (transformer/moe/experts.py) key "
                            "them <layer>.mlp.experts.experts.<suffix>");
  if (expert) {
    size_t axis = axes.size();
    int64_t held = e.size.size() > axis ? e.size[axis] : 0;
    if (held != dims.experts)
      return fileError(where, llvm::formatv("'{0}' holds {1} experts on its expert axis "
                                            "(dimension {2}), args.num_experts is {3}",
                                            e.fqn, held, axis, dims.experts)
                                  .str());
    axes.push_back(dims.experts);
  }
  llvm::ArrayRef<int64_t> shape = llvm::ArrayRef<int64_t>(e.size).drop_front(axes.size());
  int64_t count = 1;
  for (int64_t n : axes)
    count *= n;
  for (int64_t i = 0; i < count; ++i) {
    llvm::SmallVector<int64_t, 2> rows(axes.size());
    int64_t left = i;
    for (size_t a = axes.size(); a-- > 0; left /= axes[a])
      rows[a] = left % axes[a];
    std::string name = layerPrefix;
    if (!axes.empty() && layerPrefix.empty())
      name = "decoder.layers." + std::to_string(rows[0]) + ".";
    name += expert ? ("mlp.experts.local_experts." + llvm::Twine(rows.back()) + "." + rest).str()
                   : rest.str();
    auto param = classify(name, MegatronNaming::MCore, dims.swiglu, 0);
    if (!param)
      return fileError(where, "'" + e.fqn + "' is not a Megatron parameter loom knows");
    param->localShape.assign(shape.begin(), shape.end());
    param->dtype = *e.dtype;
    out.layout.params.push_back(std::move(*param));
    out.sources.push_back({e.fqn, std::move(rows)});
  }
  return llvm::Error::success();
}

/// The layers args.moe_layer_freq makes MoE layers (gpt_layer_specs.py,
/// get_gpt_decoder_layer_specs) hold a router and every routed expert's fc1 and fc2
/// (with biases for all or none), the others a dense MLP and nothing of a MoE layer;
/// a stacked key gives every layer its parameter, so a MoE layer's stacked where the
/// args make some layers dense is an error here too (mcore keys such layers one by
/// one). `where` names the metadata.
llvm::Error checkMoELayers(const MegatronDistCheckpoint &read, const std::string &where) {
  const MegatronLayout &layout = read.layout;
  const MegatronDims &d = layout.dims;
  std::map<int64_t, std::string> moeKey, denseKey; // layer -> a key it holds of either
  std::map<int64_t, int64_t> weights, biases;      // layer -> its experts' parameters
  std::set<int64_t> routed;
  for (size_t i = 0; i < layout.params.size(); ++i) {
    const MegatronParam &p = layout.params[i];
    llvm::StringRef name = p.localName;
    const std::string &key = read.sources[i].key;
    if (p.expert >= 0) {
      ++(name.ends_with(".bias") ? biases : weights)[p.layer];
      moeKey.emplace(p.layer, key);
    } else if (name.ends_with(".mlp.router.weight")) {
      routed.insert(p.layer);
      moeKey.emplace(p.layer, key);
    } else if (name.contains(".mlp.shared_experts.")) {
      moeKey.emplace(p.layer, key);
    } else if (name.contains(".mlp.linear_fc")) {
      denseKey.emplace(p.layer, key);
    }
  }
  for (int64_t layer = 0; layer < d.numLayers; ++layer) {
    bool moe = d.isMoELayer(layer);
    if (!moe && moeKey.count(layer))
      return fileError(where, llvm::formatv("'{0}' gives layer {1} a MoE layer's parameter "
                                            "where args.moe_layer_freq makes it a dense layer "
                                            "(gpt_layer_specs.py, get_gpt_decoder_layer_specs)",
                                            moeKey[layer], layer)
                                  .str());
    if (moe && denseKey.count(layer))
      return fileError(where, llvm::formatv("'{0}' gives layer {1} a dense MLP where "
                                            "args.moe_layer_freq makes it a MoE layer",
                                            denseKey[layer], layer)
                                  .str());
    if (moe && (!routed.count(layer) || !weights.count(layer)))
      return fileError(where, llvm::formatv("layer {0} has no {1}, which a MoE layer holds, "
                                            "and args.moe_layer_freq makes it one",
                                            layer, routed.count(layer) ? "routed experts"
                                                                       : "mlp.router.weight")
                                  .str());
    if (!moe && !denseKey.count(layer))
      return fileError(where, llvm::formatv("layer {0} has no MLP: args.moe_layer_freq makes "
                                            "it a dense layer and it holds no mlp.linear_fc1",
                                            layer)
                                  .str());
    if (moe && weights[layer] != 2 * d.experts)
      return fileError(where, llvm::formatv("layer {0} has {1} expert weights where "
                                            "args.num_experts {2} gives {3} (linear_fc1 and "
                                            "linear_fc2 of each)",
                                            layer, weights[layer], d.experts, 2 * d.experts)
                                  .str());
    if (moe && biases.count(layer) && biases[layer] != 2 * d.experts)
      return fileError(where, llvm::formatv("layer {0} has {1} expert biases where its {2} "
                                            "experts have {3} with --add-bias-linear "
                                            "(linear_fc1 and linear_fc2 of each) or none",
                                            layer, biases[layer], d.experts, 2 * d.experts)
                                  .str());
  }
  return llvm::Error::success();
}
} // namespace

std::string loom::ckpt::megatronDistBucketKey(unsigned group, unsigned gbuf, DType paramDType,
                                              DType gradDType, unsigned bucket) {
  return llvm::formatv("optimizer.distributed.dp_group_idx_{0}.gbuf_idx_{1}.dtype_(torch.{2}, "
                       "torch.{3}).bucket_idx_{4}",
                       group, gbuf, torchDTypeName(paramDType), torchDTypeName(gradDType), bucket)
      .str();
}

bool loom::ckpt::isMegatronDistCheckpoint(const llvm::Twine &directory) {
  auto located = iterationDir(directory.str());
  if (!located) {
    llvm::consumeError(located.takeError());
    return false;
  }
  auto backend = shardedBackend(located->first);
  if (!backend) {
    llvm::consumeError(backend.takeError());
    return false;
  }
  return *backend == "torch_dist";
}

llvm::Expected<MegatronDistCheckpoint> loom::ckpt::readMegatronDist(const llvm::Twine &directory) {
  auto located = iterationDir(directory.str());
  if (!located)
    return located.takeError();
  MegatronDistCheckpoint out;
  MegatronLayout &layout = out.layout;
  std::tie(out.iterationDir, layout.iteration) = *located;
  const std::string &dir = out.iterationDir;
  auto backend = shardedBackend(dir);
  if (!backend)
    return backend.takeError();
  if (*backend != "torch_dist")
    return fileError(dir + "/metadata.json", "sharded_backend is '" + *backend +
                                                 "'; loom reads torch_dist checkpoints");

  // common.pt: args (the model's shape), iteration, optimizer settings.
  std::string commonPath = dir + "/common.pt";
  auto common = readTorchZip(commonPath);
  if (!common)
    return common.takeError();
  const DictValue *top = (*common)->get<DictValue>();
  const DictValue *state = argsState(**common);
  if (!state)
    return fileError(commonPath, "no argparse 'args' entry to read the model shape from");
  if (top->find("model0"))
    return fileError(commonPath, "holds model0, model1, ...: virtual pipeline stages are not read");
  layout.argsJson = argsToJson(*state);
  // The tensors are global, so the model is checked as tp = 1 would hold it: the
  // experts whole too, whatever args.expert_tensor_parallel_size split them over.
  DictValue globalArgs;
  llvm::copy_if(state->entries, std::back_inserter(globalArgs.entries), [](const auto &entry) {
    const std::string *key = entry.first->template get<std::string>();
    return !key || *key != "expert_tensor_parallel_size";
  });
  auto dims = dimsFromArgs(globalArgs, commonPath, 1, /*mixedLayers=*/true);
  if (!dims)
    return dims.takeError();
  layout.dims = *dims;
  // The experts are named as SequentialMLP's below, whichever module the run had.
  layout.dims.groupedGemm = false;
  if (std::optional<int64_t> iteration = integerOf(top->find("iteration")))
    layout.iteration = *iteration;
  bool dpReshardable = false;
  auto optimizer = commonOptimizer(*top, commonPath, layout.dims.experts > 0, dpReshardable);
  if (!optimizer)
    return optimizer.takeError();

  // The DCP part: parameters (a stacked key once per layer, and per expert) and
  // optimizer states, keyed here without the chained_<i>. prefix a mixture of experts'
  // ChainedOptimizer put before its optimizers' keys until mcore's
  // chained_optim_avoid_prefix (optimizer.py, ChainedOptimizer.sharded_state_dict;
  // training/checkpointing.py sets it since July 2025 for model-space states).
  auto reader = DcpReader::open(dir);
  if (!reader)
    return reader.takeError();
  std::string metadataPath = dir + "/.metadata";
  std::map<std::string, const DcpEntry *> stateEntries;
  std::map<std::string, unsigned> chainedOf; // a prefixed state -> its optimizer
  for (const DcpEntry &e : (*reader)->metadata().entries) {
    // Bytes entries are ShardedObjects: TransformerEngine's _extra_state, RNG states.
    if (e.isBytes)
      continue;
    llvm::StringRef fqn = e.fqn;
    std::optional<unsigned> chained;
    if (layout.dims.experts && fqn.consume_front("chained_")) {
      unsigned index = 0;
      if (fqn.consumeInteger(10, index) || index > 1 || !fqn.consume_front(".") ||
          !fqn.starts_with("optimizer."))
        return fileError(metadataPath, "'" + e.fqn + "' is not a state of the ChainedOptimizer's "
                                       "two optimizers (chained_0.optimizer.*, "
                                       "chained_1.optimizer.*)");
      chained = index;
    }
    if (fqn.starts_with("optimizer.")) {
      if (!stateEntries.emplace(fqn.str(), &e).second)
        return fileError(metadataPath, "'" + e.fqn + "' and '" + stateEntries[fqn.str()]->fqn +
                                           "' hold the same state");
      if (chained)
        chainedOf[fqn.str()] = *chained;
      continue;
    }
    if (!e.dtype)
      return fileError(metadataPath, "'" + e.fqn + "' records no dtype");
    if (llvm::Error err = addParams(e, metadataPath, out))
      return std::move(err);
  }
  if (!chainedOf.empty() && chainedOf.size() != stateEntries.size())
    return fileError(metadataPath, "mixes optimizer states keyed with a ChainedOptimizer's "
                                   "chained_<i>. prefix and states keyed without one");
  out.chainedPrefixes = !chainedOf.empty();
  const int64_t layers = layout.dims.numLayers;
  // decoder.layers.<N>.<suffix> keys name their layer; none beyond num_layers.
  for (const MegatronParam &p : layout.params)
    if (p.layer >= layers)
      return fileError(metadataPath, llvm::formatv("'{0}' is past args.num_layers = {1}",
                                                   p.localName, layers)
                                         .str());
  layout.layersPerStage = {layers};
  if (layout.dims.experts)
    if (llvm::Error err = checkMoELayers(out, metadataPath))
      return std::move(err);

  // dp_reshardable: every optimizer.* tensor is a bucket state.
  if (dpReshardable) {
    auto dpBuffers = readDpBuckets(**reader, stateEntries);
    if (!dpBuffers)
      return dpBuffers.takeError();
    out.dpBuffers = std::move(*dpBuffers);
    MegatronOptimizer distributed = **optimizer;
    if (llvm::Error err = readDpOptimizer(**reader, out.dpBuffers.size(), distributed))
      return std::move(err);
    layout.optimizer = std::move(distributed);
    return out;
  }

  // Model-space states: each one every parameter's key has, at its shape.
  std::map<std::string, bool> paramKeys; // key -> a routed expert's
  for (size_t i = 0; i < out.sources.size(); ++i)
    paramKeys[out.sources[i].key] = layout.params[i].expert >= 0;
  size_t matched = 0;
  for (const StateName &name : kStates) {
    std::string prefix = "optimizer.state." + std::string(name.dcp) + ".";
    size_t held = 0;
    for (const auto &[key, expert] : paramKeys) {
      auto found = stateEntries.find(prefix + key);
      if (found == stateEntries.end())
        continue;
      const DcpEntry &param = *(*reader)->find(key);
      if (found->second->size != param.size || found->second->dtype != DType::Float32)
        return fileError(metadataPath,
                         "'" + found->second->fqn +
                             "' is not a float32 tensor of its parameter's shape (mcore before "
                             "0.14 saved fully_sharded_model_space states flattened; loom reads "
                             "them at the parameter's shape)");
      // The dense parameters' states in the first optimizer's keys, the experts' in
      // the second's.
      if (auto chained = chainedOf.find(found->first);
          chained != chainedOf.end() && chained->second != unsigned(expert))
        return fileError(metadataPath,
                         "'" + found->second->fqn + "' holds a " +
                             (expert ? "routed expert's" : "dense parameter's") +
                             " state under chained_" + llvm::Twine(chained->second) +
                             ".; a mixture of experts' ChainedOptimizer keys the dense "
                             "parameters' optimizer chained_0. and the experts' chained_1.");
      ++held;
    }
    if (!held)
      continue;
    if (held != paramKeys.size())
      return fileError(metadataPath, llvm::formatv("{0} of {1} parameters have an "
                                                   "optimizer.state.{2} entry; Megatron saves "
                                                   "it for all or none",
                                                   held, paramKeys.size(), name.dcp)
                                         .str());
    if (llvm::any_of(out.states, [&](const auto &s) { return s.first == name.suffix; }))
      return fileError(metadataPath, "holds both optimizer.state.fp32_param and "
                                     "optimizer.state.param");
    out.states.push_back({name.suffix, prefix});
    matched += held;
  }
  if (matched != stateEntries.size())
    for (const auto &[key, entry] : stateEntries) {
      bool known = llvm::any_of(out.states, [&, &key = key](const auto &s) {
        return llvm::StringRef(key).starts_with(s.second) &&
               paramKeys.count(key.substr(s.second.size()));
      });
      if (!known)
        return fileError(metadataPath, "'" + entry->fqn +
                                           "' is not a model-space optimizer state of a "
                                           "parameter (fp32_param, param, exp_avg or exp_avg_sq)");
    }
  if (!out.states.empty() && out.states.size() != 3)
    return fileError(metadataPath, "holds some of a parameter's optimizer states but not all of "
                                   "fp32_param (or param), exp_avg and exp_avg_sq");
  if (!out.states.empty()) {
    layout.optimizer = optimizer->value_or(MegatronOptimizer());
    // A mixture of experts' states are a ChainedOptimizer's, whatever common.pt says.
    layout.optimizer->chained = layout.dims.experts > 0;
  }
  return out;
}
