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

/// The optimizer's groups and step from common.pt's "optimizer" entry: the
/// mixed-precision optimizer's {"optimizer": {"param_groups", "state": {i: {"step"}} or
/// {"common_step": step}}} or the distributed optimizer's {"optimizer": {"param_groups"
/// (with "step")}, "param_state_sharding_type"} (the tensors being in the DCP part).
llvm::Expected<std::optional<MegatronOptimizer>> commonOptimizer(const DictValue &top,
                                                                 const std::string &file) {
  ValuePtr optimizer = top.find("optimizer");
  const DictValue *o = optimizer ? optimizer->get<DictValue>() : nullptr;
  if (!o)
    return std::nullopt;
  MegatronOptimizer out;
  if (ValuePtr type = o->find("param_state_sharding_type")) {
    const std::string *name = type->get<std::string>();
    if (!name || (*name != "fully_reshardable" && *name != "fully_sharded_model_space"))
      return fileError(file, "the distributed optimizer saved its states in the '" +
                                 (name ? *name : describe(*type)) +
                                 "' layout (DistributedOptimizer's buffers per DP rank); loom "
                                 "reads the model-space one, which Megatron writes with "
                                 "--dist-ckpt-optim-fully-reshardable");
    out.distributed = true;
  }
  ValuePtr inner = o->find("optimizer");
  const DictValue *torchState = inner ? inner->get<DictValue>() : nullptr;
  ValuePtr groups = torchState ? torchState->find("param_groups") : nullptr;
  if (!groups || !groups->sequence())
    return fileError(file, "optimizer.optimizer.param_groups is missing");
  llvm::json::Array settings;
  for (const ValuePtr &group : *groups->sequence()) {
    const DictValue *g = group->get<DictValue>();
    if (!g)
      return fileError(file, "optimizer.optimizer.param_groups holds a " + describe(*group) +
                                 ", not a dict");
    settings.push_back(plainEntries(*g, "params"));
    if (!out.step)
      out.step = stepNumber(g->find("step"));
  }
  // The step: every state's (older mcore), or the one they share as "common_step"
  // (optimizer.py, _extract_common_per_param_step).
  if (ValuePtr states = torchState->find("state"); states && states->get<DictValue>()) {
    const DictValue &byParam = *states->get<DictValue>();
    if (ValuePtr common = byParam.find("common_step"))
      out.step = stepNumber(common);
    for (const auto &entry : byParam.entries)
      if (const DictValue *state = entry.second->get<DictValue>(); state && !out.step)
        out.step = stepNumber(state->find("step"));
  }
  out.groupsJson = llvm::formatv("{0}", llvm::json::Value(std::move(settings))).str();
  return out;
}

/// A model-space optimizer state's name in the DCP keys and loom's suffix for it.
struct StateName {
  const char *dcp, *suffix;
};
constexpr StateName kStates[] = {{"fp32_param", "#fp32"},
                                 {"param", "#fp32"},
                                 {"exp_avg", "#exp_avg"},
                                 {"exp_avg_sq", "#exp_avg_sq"}};
} // namespace

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
  ValuePtr args = top ? top->find("args") : nullptr;
  const ObjectValue *object = args ? args->get<ObjectValue>() : nullptr;
  const DictValue *state = object && object->state ? object->state->get<DictValue>() : nullptr;
  if (!state)
    return fileError(commonPath, "no argparse 'args' entry to read the model shape from");
  if (top->find("model0"))
    return fileError(commonPath, "holds model0, model1, ...: virtual pipeline stages are not read");
  layout.argsJson = argsToJson(*state);
  auto dims = dimsFromArgs(*state, commonPath, 1);
  if (!dims)
    return dims.takeError();
  layout.dims = *dims;
  if (std::optional<int64_t> iteration = integerOf(top->find("iteration")))
    layout.iteration = *iteration;
  auto optimizer = commonOptimizer(*top, commonPath);
  if (!optimizer)
    return optimizer.takeError();

  // The DCP part: parameters (a stacked key once per layer) and optimizer states.
  auto reader = DcpReader::open(dir);
  if (!reader)
    return reader.takeError();
  std::string metadataPath = dir + "/.metadata";
  const int64_t layers = layout.dims.numLayers;
  std::map<std::string, const DcpEntry *> stateEntries;
  for (const DcpEntry &e : (*reader)->metadata().entries) {
    // Bytes entries are ShardedObjects: TransformerEngine's _extra_state, RNG states.
    if (e.isBytes)
      continue;
    llvm::StringRef key = e.fqn;
    if (key.starts_with("optimizer.")) {
      stateEntries[e.fqn] = &e;
      continue;
    }
    if (!e.dtype)
      return fileError(metadataPath, "'" + e.fqn + "' records no dtype");
    auto add = [&](const std::string &localName, llvm::ArrayRef<int64_t> shape,
                   int64_t row) -> llvm::Error {
      auto param = classify(localName, MegatronNaming::MCore, layout.dims.swiglu, 0);
      if (!param)
        return fileError(metadataPath, "'" + e.fqn + "' is not a Megatron parameter loom knows");
      param->localShape.assign(shape.begin(), shape.end());
      param->dtype = *e.dtype;
      layout.params.push_back(std::move(*param));
      out.sources.push_back({e.fqn, row});
      return llvm::Error::success();
    };
    llvm::StringRef rest = key;
    unsigned layer = 0;
    if (!rest.consume_front("decoder.layers.") || !rest.split('.').first.getAsInteger(10, layer)) {
      if (llvm::Error err = add(e.fqn, e.size, -1))
        return std::move(err);
      continue;
    }
    // Stacked layers (TransformerBlock.sharded_state_dict, homogeneous layers): the
    // leading axis is the global layer.
    if (e.size.empty() || e.size[0] != layers)
      return fileError(metadataPath,
                       llvm::formatv("'{0}' stacks {1} layers, args.num_layers is {2}", e.fqn,
                                     e.size.empty() ? 0 : e.size[0], layers)
                           .str());
    for (int64_t l = 0; l < layers; ++l)
      if (llvm::Error err = add(("decoder.layers." + llvm::Twine(l) + "." + rest).str(),
                                llvm::ArrayRef<int64_t>(e.size).drop_front(), l))
        return std::move(err);
  }
  // decoder.layers.<N>.<suffix> keys name their layer; none beyond num_layers.
  for (const MegatronParam &p : layout.params)
    if (p.layer >= layers)
      return fileError(metadataPath, llvm::formatv("'{0}' is past args.num_layers = {1}",
                                                   p.localName, layers)
                                         .str());
  layout.layersPerStage = {layers};

  // Model-space states: each one every parameter's key has, at its shape.
  std::set<std::string> paramKeys;
  for (const MegatronDistSource &s : out.sources)
    paramKeys.insert(s.key);
  size_t matched = 0;
  for (const StateName &name : kStates) {
    std::string prefix = "optimizer.state." + std::string(name.dcp) + ".";
    size_t held = 0;
    for (const std::string &key : paramKeys) {
      auto found = stateEntries.find(prefix + key);
      if (found == stateEntries.end())
        continue;
      const DcpEntry &param = *(*reader)->find(key);
      if (found->second->size != param.size || found->second->dtype != DType::Float32)
        return fileError(metadataPath,
                         "'" + found->first + "' is not a float32 tensor of its parameter's "
                         "shape (mcore before 0.14 saved fully_sharded_model_space states "
                         "flattened; loom reads them at the parameter's shape)");
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
        return fileError(metadataPath, "'" + key + "' is not a model-space optimizer state of "
                                       "a parameter (fp32_param, param, exp_avg or exp_avg_sq)");
    }
  if (!out.states.empty() && out.states.size() != 3)
    return fileError(metadataPath, "holds some of a parameter's optimizer states but not all of "
                                   "fp32_param (or param), exp_avg and exp_avg_sq");
  if (!out.states.empty())
    layout.optimizer = optimizer->value_or(MegatronOptimizer());
  return out;
}
