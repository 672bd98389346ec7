//===- DeepSpeed.cpp - DeepSpeed ZeRO checkpoint layouts -------------------===//
//
// The rules DeepSpeed's own consolidation (zero_to_fp32.py) reads back:
//
//  ZeRO-1/2  each optimizer group's fp32 masters are flattened in order, padded to a
//            multiple of 2·dp, cut in dp equal partitions. Rank r's optimizer file
//            holds its partition without the padding (single_partition_of_fp32_groups)
//            and Adam's moments over the whole partition (base_optimizer_state).
//            mp_rank_00_model_states.pt holds the whole 16-bit parameters.
//  ZeRO-3    every parameter is cut on its own in dp parts of ceil(numel/dp), the last
//            one padded; rank r concatenates its parts over all parameters in order
//            (fp32_flat_groups, split between groups where each group ends) with
//            Adam's moments alongside (optimizer_state_dict). No whole 16-bit copy.
//
//===----------------------------------------------------------------------===//
#include "loom/Reshard/Layout.h"

#include "loom/Checkpoint/TorchZip.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <cstring>
#include <map>

using namespace loom;
using namespace loom::reshard;
using namespace loom::ckpt;

namespace {
std::string optimFile(unsigned rank) {
  return llvm::formatv("zero_pp_rank_{0}_mp_rank_00_optim_states.pt", rank).str();
}
std::string modelFile(unsigned stage, unsigned rank) {
  return stage <= 2 ? std::string("mp_rank_00_model_states.pt")
                    : llvm::formatv("zero_pp_rank_{0}_mp_rank_00_model_states.pt", rank).str();
}
/// Keys of the flat tensors in a rank's optimizer file.
std::string fp32Key(unsigned stage, size_t group) {
  return llvm::formatv(stage <= 2 ? "optimizer_state_dict.single_partition_of_fp32_groups.{0}"
                                  : "optimizer_state_dict.fp32_flat_groups.{0}",
                       group);
}
std::string momentKey(unsigned stage, size_t group, llvm::StringRef which) {
  return llvm::formatv(stage <= 2 ? "optimizer_state_dict.base_optimizer_state.state.{0}.{1}"
                                  : "optimizer_state_dict.optimizer_state_dict.state.{0}.{1}",
                       group, which);
}

/// Flat pieces of full tensor `full` (shape `shape`) elements [begin, end) placed from
/// `at` in `local`.
void addRuns(LocalTensor &local, unsigned full, llvm::ArrayRef<int64_t> shape, int64_t begin,
             int64_t end, int64_t at) {
  for (Box &run : flatRuns(shape, begin, end)) {
    Piece piece;
    piece.full = full;
    piece.flat = true;
    piece.localOffsets = {at + linearIndex(shape, run.offsets) - begin};
    piece.fullBox = std::move(run);
    local.pieces.push_back(std::move(piece));
  }
}
} // namespace

llvm::Expected<std::vector<ShardFile>>
reshard::deepspeedShards(llvm::ArrayRef<FullTensor> fulls,
                         llvm::ArrayRef<std::vector<std::string>> groups, unsigned stage,
                         unsigned dp, llvm::StringRef dirPrefix) {
  llvm::StringMap<unsigned> index;
  for (unsigned i = 0; i < fulls.size(); ++i)
    index[fulls[i].name] = i;
  auto find = [&](const std::string &name) -> llvm::Expected<unsigned> {
    auto found = index.find(name);
    if (found == index.end())
      return llvm::createStringError("DeepSpeed keeps " + name +
                                     ", which the checkpoint does not hold (optimizer states "
                                     "are needed: convert from a checkpoint that has them)");
    return found->second;
  };
  const char *states[] = {"fp32", "exp_avg", "exp_avg_sq"};
  std::vector<ShardFile> files;
  // Model states: the whole 16-bit parameters (ZeRO-1/2).
  ShardFile model{(dirPrefix + modelFile(stage, 0)).str(), "torch-tree", {}, ""};
  if (stage <= 2)
    for (const auto &group : groups)
      for (const std::string &name : group) {
        auto f = find(name);
        if (!f)
          return f.takeError();
        const FullTensor &full = fulls[*f];
        model.tensors.push_back({"module." + name, full.dtype, full.shape,
                                 {{*f, Box::whole(full.shape),
                                   llvm::SmallVector<int64_t, 4>(full.shape.size(), 0)}}});
      }
  files.push_back(std::move(model));
  if (stage == 3)
    for (unsigned r = 1; r < dp; ++r)
      files.push_back({(dirPrefix + modelFile(stage, r)).str(), "torch-tree", {}, ""});

  std::vector<ShardFile> optim(dp);
  for (unsigned r = 0; r < dp; ++r)
    optim[r] = {(dirPrefix + optimFile(r)).str(), "torch-tree", {}, ""};
  if (stage <= 2) {
    for (size_t g = 0; g < groups.size(); ++g) {
      int64_t total = 0;
      for (const std::string &name : groups[g]) {
        auto f = find(name + "#fp32");
        if (!f)
          return f.takeError();
        total += *checkedNumel(fulls[*f].shape);
      }
      int64_t align = 2 * dp, padded = (total + align - 1) / align * align, size = padded / dp;
      for (unsigned r = 0; r < dp; ++r) {
        int64_t lo = r * size, hi = lo + size;
        for (const char *state : states) {
          LocalTensor local;
          local.dtype = DType::Float32;
          local.key = llvm::StringRef(state) == "fp32" ? fp32Key(stage, g) : momentKey(stage, g, state);
          // The fp32 partition is saved without its padding.
          local.shape = {llvm::StringRef(state) == "fp32" ? std::max<int64_t>(0, std::min(hi, total) - lo)
                                                          : size};
          int64_t a = 0;
          for (const std::string &name : groups[g]) {
            auto f = find(name + "#" + state);
            if (!f)
              return f.takeError();
            int64_t n = *checkedNumel(fulls[*f].shape);
            int64_t b = std::max(a, lo), e = std::min(a + n, hi);
            if (b < e)
              addRuns(local, *f, fulls[*f].shape, b - a, e - a, b - lo);
            a += n;
          }
          optim[r].tensors.push_back(std::move(local));
        }
      }
    }
  } else {
    // Each parameter in dp parts; rank r's parts back to back over all groups, the
    // group tensors cut where each group's parameters end.
    for (unsigned r = 0; r < dp; ++r)
      for (size_t g = 0; g < groups.size(); ++g)
        for (const char *state : states) {
          LocalTensor local;
          local.dtype = DType::Float32;
          local.key = llvm::StringRef(state) == "fp32" ? fp32Key(stage, g) : momentKey(stage, g, state);
          int64_t at = 0;
          for (const std::string &name : groups[g]) {
            auto f = find(llvm::StringRef(state) == "fp32" ? name : name + "#" + state);
            if (!f)
              return f.takeError();
            int64_t n = *checkedNumel(fulls[*f].shape), part = (n + dp - 1) / dp;
            int64_t b = std::min<int64_t>(r * part, n), e = std::min<int64_t>(b + part, n);
            if (b < e)
              addRuns(local, *f, fulls[*f].shape, b, e, at);
            at += part;
          }
          local.shape = {at};
          optim[r].tensors.push_back(std::move(local));
        }
  }
  for (ShardFile &f : optim)
    files.push_back(std::move(f));
  return files;
}

/// An int, or an IntEnum DeepSpeed pickled (an object built from its value).

/// The ZeRO stage: an int, or DeepSpeed's ZeroStageEnum, which Python 3.11 pickles by
/// member name (getattr(ZeroStageEnum, 'weights')) and older Pythons by value.
static std::optional<int64_t> zeroStageOf(const ValuePtr &value) {
  if (auto n = integerOf(value))
    return n;
  const ObjectValue *object = value ? value->get<ObjectValue>() : nullptr;
  const std::vector<ValuePtr> *args = object && object->args ? object->args->sequence() : nullptr;
  if (!args || args->size() != 2 || object->type.qualified() != "builtins.getattr" &&
                                        object->type.qualified() != "__builtin__.getattr")
    return std::nullopt;
  const std::string *member = (*args)[1]->get<std::string>();
  if (!member)
    return std::nullopt;
  for (auto [name, stage] : {std::pair{"optimizer_states", 1}, std::pair{"gradients", 2},
                             std::pair{"weights", 3}})
    if (*member == name)
      return stage;
  return std::nullopt;
}

/// The tag folder a `latest` file names: one plain path component.
static llvm::Expected<std::string> tagFolder(const std::string &file) {
  auto text = llvm::MemoryBuffer::getFile(file);
  if (!text)
    return fileError(file, "cannot read: " + text.getError().message());
  std::string tag = (*text)->getBuffer().trim().str();
  if (tag.empty() || tag.find('/') != std::string::npos || tag == "..")
    return fileError(file, "does not name a tag folder");
  return tag;
}

/// A DeepSpeed model-states file: the param_shapes groups, the module's tensors by
/// name, and the iteration.
struct ModelStates {
  ValuePtr root;
  const std::vector<ValuePtr> *groups = nullptr; ///< param_shapes, one dict a group
  llvm::StringMap<Tensor> module;
  int64_t iteration = 0; ///< global_steps
};

static llvm::Expected<ModelStates> loadModelStates(const std::string &path) {
  auto root = readTorchZip(path);
  if (!root)
    return root.takeError();
  ModelStates states;
  states.root = *root;
  const DictValue *dict = states.root->get<DictValue>();
  ValuePtr shapes = dict ? dict->find("param_shapes") : nullptr;
  states.groups = shapes ? shapes->sequence() : nullptr;
  if (!states.groups)
    return fileError(path, "no param_shapes list");
  states.iteration = integerOf(dict->find("global_steps")).value_or(0);
  if (ValuePtr m = dict->find("module"))
    for (NamedTensor &t : collectTensors(*m))
      states.module[t.name] = std::move(t.tensor);
  return states;
}

llvm::Expected<Layout> reshard::describeDeepSpeed(const std::string &path) {
  auto hasOptim = [](const std::string &dir) {
    return llvm::sys::fs::exists(dir + "/" + optimFile(0));
  };
  std::string dir = path, prefix;
  if (!hasOptim(path)) {
    if (!llvm::sys::fs::exists(path + "/latest"))
      return fileError(path, "no 'latest' file naming the tag folder, and no " + optimFile(0));
    auto tag = tagFolder(path + "/latest");
    if (!tag)
      return tag.takeError();
    prefix = *tag;
    dir = path + "/" + prefix;
    prefix += "/";
    if (!hasOptim(dir))
      return fileError(dir, "no " + optimFile(0) + " (ZeRO optimizer states)");
  }
  unsigned dp = 0;
  while (llvm::sys::fs::exists(dir + "/" + optimFile(dp)))
    ++dp;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec)) {
    llvm::StringRef name = llvm::sys::path::filename(it->path());
    if (name.ends_with("_optim_states.pt") && !name.contains("mp_rank_00"))
      return fileError(it->path(), "tensor-parallel DeepSpeed checkpoints (mp_rank_01, ...) "
                                   "are not read yet");
    if (name.ends_with("_optim_states.pt") && name.starts_with("bf16_"))
      return fileError(it->path(), "DeepSpeed's BF16_Optimizer layout is not read yet");
  }

  auto optim0 = readTorchZip(dir + "/" + optimFile(0));
  if (!optim0)
    return optim0.takeError();
  const DictValue *top = (*optim0)->get<DictValue>();
  ValuePtr osd = top ? top->find("optimizer_state_dict") : nullptr;
  const DictValue *osdDict = osd ? osd->get<DictValue>() : nullptr;
  auto stage = osdDict ? zeroStageOf(osdDict->find("zero_stage")) : std::nullopt;
  if (!stage || *stage < 1 || *stage > 3)
    return fileError(dir + "/" + optimFile(0), "no ZeRO stage 1, 2 or 3 in optimizer_state_dict");

  std::string modelPath = dir + "/" + modelFile(*stage, 0);
  auto states = loadModelStates(modelPath);
  if (!states)
    return states.takeError();
  llvm::StringMap<Tensor> &module = states->module;

  Layout layout;
  layout.format = llvm::formatv("deepspeed-zero{0}", *stage);
  layout.iteration = states->iteration;
  for (const ValuePtr &group : *states->groups) {
    const DictValue *g = group->get<DictValue>();
    if (!g)
      return fileError(modelPath, "param_shapes holds a " + describe(*group) + ", not a dict");
    layout.paramGroups.emplace_back();
    for (const auto &[key, value] : g->entries) {
      const std::string *name = key->get<std::string>();
      const std::vector<ValuePtr> *dims = value->sequence();
      if (!name || !dims)
        return fileError(modelPath, "a param_shapes entry is not name -> torch.Size");
      llvm::SmallVector<int64_t, 4> shape;
      for (const ValuePtr &d : *dims) {
        auto n = integerOf(d);
        if (!n || *n < 0)
          return fileError(modelPath, *name + ": a dimension is not a size");
        shape.push_back(*n);
      }
      if (!checkedNumel(shape))
        return fileError(modelPath, *name + ": too many elements");
      layout.paramGroups.back().push_back(*name);
      DType paramType = DType::Float32;
      if (*stage <= 2) {
        auto found = module.find(*name);
        if (found == module.end() || found->second.shape != shape)
          return fileError(modelPath, "module has no " + *name + " of the shape param_shapes gives");
        paramType = found->second.dtype;
      }
      layout.fulls.push_back({*name, paramType, shape});
      for (const char *state : {"fp32", "exp_avg", "exp_avg_sq"})
        if (*stage <= 2 || llvm::StringRef(state) != "fp32")
          layout.fulls.push_back({*name + "#" + state, DType::Float32, shape});
    }
  }
  if (ValuePtr state = osdDict->find(*stage <= 2 ? "base_optimizer_state" : "optimizer_state_dict"))
    if (auto *sd = state->get<DictValue>())
      if (ValuePtr perGroup = sd->find("state"))
        if (auto *pg = perGroup->get<DictValue>(); pg && !pg->entries.empty())
          if (auto *first = pg->entries.front().second->get<DictValue>())
            layout.optimizerStep = integerOf(first->find("step"));

  auto files = deepspeedShards(layout.fulls, layout.paramGroups, *stage, dp, prefix);
  if (!files)
    return fileError(path, llvm::toString(files.takeError()));
  // Kept by a universal file, so that a round trip through it regroups the same way.
  llvm::json::Array groupsJson;
  for (const auto &group : layout.paramGroups)
    groupsJson.push_back(llvm::json::Array(group));
  layout.sourceArgs = llvm::formatv("{0}", llvm::json::Value(llvm::json::Object{
                                               {"zero_stage", *stage},
                                               {"dp", dp},
                                               {"param_groups", std::move(groupsJson)}}));
  // What the rules predict must be what every rank's file holds.
  for (ShardFile &file : *files) {
    file.format = "torch";
    if (file.tensors.empty())
      continue;
    auto root = readTorchZip(path + "/" + file.path, {/*verifyChecksums=*/false, {}});
    if (!root)
      return root.takeError();
    llvm::StringMap<Tensor> held;
    for (NamedTensor &t : collectTensors(**root))
      held[t.name] = std::move(t.tensor);
    for (const LocalTensor &local : file.tensors) {
      auto found = held.find(local.key);
      if (found == held.end() || found->second.shape != local.shape ||
          found->second.dtype != local.dtype)
        return fileError(path + "/" + file.path,
                         local.key + ": missing, or not the shape ZeRO-" + std::to_string(*stage) +
                             " with dp=" + std::to_string(dp) + " gives for param_shapes");
    }
  }
  layout.files = std::move(*files);
  return layout;
}

/// What DeepSpeed's engine pickles in mp_rank_00_model_states.pt: the module's
/// tensors (keys "module.<name>" in `file`), the parameter shapes per optimizer group,
/// and the engine's counters.
static llvm::json::Array modelStatesSkeleton(const ShardFile &file,
                                             llvm::ArrayRef<std::vector<std::string>> groups,
                                             const Layout &target, int64_t iteration, unsigned dp) {
  auto tensorRef = [](const std::string &key) { return llvm::json::Object{{"$tensor", key}}; };
  llvm::json::Array module, shapes;
  for (const LocalTensor &t : file.tensors)
    module.push_back(llvm::json::Array{llvm::StringRef(t.key).drop_front(7), tensorRef(t.key)});
  for (const auto &group : groups) {
    llvm::json::Array entries;
    for (const std::string &name : group) {
      const FullTensor *f = target.findFull(name);
      llvm::json::Array dims;
      for (int64_t d : f->shape)
        dims.push_back(d);
      entries.push_back(llvm::json::Array{name, llvm::json::Object{{"$size", std::move(dims)}}});
    }
    shapes.push_back(llvm::json::Object{{"$odict", std::move(entries)}});
  }
  return llvm::json::Array{
      llvm::json::Array{"module", llvm::json::Object{{"$odict", std::move(module)}}},
      llvm::json::Array{"buffer_names", llvm::json::Array{}},
      llvm::json::Array{"optimizer", nullptr},
      llvm::json::Array{"param_shapes", std::move(shapes)},
      llvm::json::Array{"frozen_param_shapes", nullptr},
      llvm::json::Array{"shared_params", llvm::json::Object{}},
      llvm::json::Array{"frozen_param_fragments", nullptr},
      llvm::json::Array{"lr_scheduler", nullptr},
      llvm::json::Array{"skipped_steps", 0},
      llvm::json::Array{"global_steps", iteration},
      llvm::json::Array{"dp_world_size", dp},
      llvm::json::Array{"mp_world_size", 1},
      llvm::json::Array{"ds_config", llvm::json::Object{}},
      llvm::json::Array{"ds_version", "0.14.0"}};
}

llvm::Expected<std::vector<ShardFile>> reshard::deepspeedTarget(const Layout &source,
                                                                Layout &target, unsigned stage,
                                                                unsigned dp) {
  std::vector<std::vector<std::string>> groups = source.paramGroups;
  if (groups.empty()) {
    groups.emplace_back();
    for (const FullTensor &f : target.fulls)
      if (f.name.find('#') == std::string::npos)
        groups.back().push_back(f.name);
  }
  // The parameter and its fp32 master: one tensor under ZeRO-3, two under ZeRO-1/2,
  // whatever the source kept.
  std::vector<FullTensor> fulls;
  for (const FullTensor &f : target.fulls) {
    llvm::StringRef name(f.name);
    bool isParam = !name.contains('#');
    if (stage == 3 && name.ends_with("#fp32"))
      continue;
    FullTensor t = f;
    if (stage == 3 && isParam && f.dtype != DType::Float32) {
      const FullTensor *master = source.findFull(f.name + "#fp32");
      if (!master)
        return llvm::createStringError("ZeRO-3 keeps the fp32 master as the parameter, and the "
                                       "source has no fp32 master of " + f.name);
      t.dtype = DType::Float32;
      t.from = master->name;
    }
    fulls.push_back(t);
    if (stage <= 2 && isParam && !target.findFull(f.name + "#fp32")) {
      if (f.dtype != DType::Float32)
        return llvm::createStringError("DeepSpeed keeps an fp32 master of " + f.name +
                                       ", which the source does not hold");
      fulls.push_back({f.name + "#fp32", DType::Float32, f.shape, f.name});
    }
  }
  target.fulls = std::move(fulls);
  std::string tag = llvm::formatv("global_step{0}", source.iteration);
  auto files = deepspeedShards(target.fulls, groups, stage, dp, tag + "/");
  if (!files)
    return files.takeError();
  int64_t step = source.optimizerStep.value_or(source.iteration);
  // Skeletons: what DeepSpeed's engine pickles, with the tensors at their places.
  auto tensorRef = [](const std::string &key) { return llvm::json::Object{{"$tensor", key}}; };
  for (ShardFile &file : *files) {
    llvm::json::Array root;
    if (llvm::StringRef(file.path).ends_with("_model_states.pt")) {
      root = modelStatesSkeleton(file, groups, target, source.iteration, dp);
    } else {
      llvm::json::Array fp32, state, paramGroups;
      for (size_t g = 0; g < groups.size(); ++g) {
        fp32.push_back(tensorRef(fp32Key(stage, g)));
        state.push_back(llvm::json::Array{
            int64_t(g), llvm::json::Object{{"$dict", llvm::json::Array{
                            llvm::json::Array{"step", step},
                            llvm::json::Array{"exp_avg", tensorRef(momentKey(stage, g, "exp_avg"))},
                            llvm::json::Array{"exp_avg_sq",
                                              tensorRef(momentKey(stage, g, "exp_avg_sq"))}}}}});
        paramGroups.push_back(llvm::json::Object{{"params", llvm::json::Array{int64_t(g)}}});
      }
      llvm::json::Object base{{"$dict", llvm::json::Array{
                                  llvm::json::Array{"state", llvm::json::Object{{"$dict", std::move(state)}}},
                                  llvm::json::Array{"param_groups", std::move(paramGroups)}}}};
      llvm::json::Array osd{llvm::json::Array{"zero_stage", stage},
                            llvm::json::Array{"partition_count", dp},
                            llvm::json::Array{"dynamic_loss_scale", false},
                            llvm::json::Array{"overflow", false}};
      if (stage <= 2) {
        osd.push_back(llvm::json::Array{"base_optimizer_state", std::move(base)});
        osd.push_back(llvm::json::Array{"single_partition_of_fp32_groups", std::move(fp32)});
      } else {
        osd.push_back(llvm::json::Array{"optimizer_state_dict", std::move(base)});
        osd.push_back(llvm::json::Array{"fp32_flat_groups", std::move(fp32)});
      }
      root = llvm::json::Array{llvm::json::Array{"optimizer_state_dict", llvm::json::Object{{"$dict", std::move(osd)}}},
              llvm::json::Array{"ds_config", llvm::json::Object{}},
              llvm::json::Array{"ds_version", "0.14.0"}};
    }
    file.meta = llvm::formatv("{0}", llvm::json::Value(llvm::json::Object{{"$dict", std::move(root)}}));
  }
  files->push_back({"latest", "text", {}, tag});
  return files;
}

llvm::Expected<std::vector<ShardFile>>
reshard::deepspeedUniversalTarget(const Layout &source, Layout &target) {
  std::vector<std::vector<std::string>> groups = source.paramGroups;
  if (groups.empty()) {
    groups.emplace_back();
    for (const FullTensor &f : target.fulls)
      if (f.name.find('#') == std::string::npos)
        groups.back().push_back(f.name);
  }
  std::string tag = llvm::formatv("global_step{0}_universal", source.iteration);
  int64_t step = source.optimizerStep.value_or(source.iteration);
  auto index = [&](const std::string &name) -> std::optional<unsigned> {
    for (unsigned i = 0; i < target.fulls.size(); ++i)
      if (target.fulls[i].name == name)
        return i;
    return std::nullopt;
  };
  auto tensorRef = [](const std::string &key) { return llvm::json::Object{{"$tensor", key}}; };
  std::vector<ShardFile> files;
  ShardFile model{tag + "/mp_rank_00_model_states.pt", "torch-tree", {}, ""};
  for (const auto &group : groups)
    for (const std::string &name : group) {
      // A folder per parameter: the name must be one plain path component.
      if (name.empty() || name == "." || name == ".." ||
          name.find_first_of("/\\") != std::string::npos)
        return llvm::createStringError("parameter '" + name +
                                       "' cannot name a folder of DeepSpeed's universal layout");
      auto param = index(name);
      if (!param)
        return llvm::createStringError("no parameter " + name + " in the source");
      model.tensors.push_back(wholeLocal(target, *param, "module." + name));
      // fp32 is the master, or the parameter itself when it is fp32 (ZeRO-3 keeps no
      // other); Adam's moments are required, as DeepSpeed's loader reads them.
      std::optional<unsigned> fp32 = index(name + "#fp32");
      if (!fp32 && target.fulls[*param].dtype == DType::Float32)
        fp32 = param;
      for (auto [state, full] : {std::pair{"fp32", fp32},
                                 std::pair{"exp_avg", index(name + "#exp_avg")},
                                 std::pair{"exp_avg_sq", index(name + "#exp_avg_sq")}}) {
        if (!full)
          return llvm::createStringError(
              std::string("DeepSpeed's universal layout holds the ") + state + " state of " +
              name + ", which the source does not (convert from DeepSpeed or universal)");
        std::string key = name + "#" + state;
        ShardFile file{tag + "/zero/" + name + "/" + state + ".pt", "torch-tree", {}, ""};
        file.tensors.push_back(wholeLocal(target, *full, key));
        file.meta = llvm::formatv("{0}", llvm::json::Value(llvm::json::Object{
                                             {"$dict", llvm::json::Array{llvm::json::Array{
                                                           "param", tensorRef(key)}}}}));
        files.push_back(std::move(file));
      }
      files.push_back({tag + "/zero/" + name + "/step.pt", "torch-tree", {},
                       llvm::formatv("{0}", step).str()});
    }
  model.meta = llvm::formatv(
      "{0}", llvm::json::Value(llvm::json::Object{
                 {"$dict", modelStatesSkeleton(model, groups, target, source.iteration, 1)}}));
  files.insert(files.begin(), std::move(model));
  llvm::json::Array paramGroups;
  for (size_t g = 0; g < groups.size(); ++g)
    paramGroups.push_back(llvm::json::Object{{"params", llvm::json::Array{int64_t(g)}}});
  files.push_back({tag + "/zero/optimizer_state.pt", "torch-tree", {},
                   llvm::formatv("{0}", llvm::json::Value(llvm::json::Object{
                                            {"$dict", llvm::json::Array{
                                                          llvm::json::Array{"zero_stage", 1},
                                                          llvm::json::Array{"partition_count", 1},
                                                          llvm::json::Array{"param_groups",
                                                                            std::move(paramGroups)}}}}))
                       .str()});
  files.push_back({"latest_universal", "text", {}, tag});
  return files;
}

/// A step as an optimizer keeps it: an int, or a one-element tensor (torch's Adam).

llvm::Expected<Layout> reshard::describeDeepSpeedUniversal(const std::string &path) {
  std::string dir = path, prefix;
  if (llvm::sys::fs::exists(path + "/latest_universal")) {
    auto tag = tagFolder(path + "/latest_universal");
    if (!tag)
      return tag.takeError();
    prefix = *tag;
    dir = path + "/" + prefix;
    prefix += "/";
  }
  std::string modelPath = dir + "/mp_rank_00_model_states.pt";
  auto states = loadModelStates(modelPath);
  if (!states)
    return states.takeError();
  llvm::StringMap<Tensor> &module = states->module;

  Layout layout;
  layout.format = "deepspeed-universal";
  layout.iteration = states->iteration;
  ShardFile modelFile{prefix + "mp_rank_00_model_states.pt", "torch", {}, ""};
  for (const ValuePtr &group : *states->groups) {
    const DictValue *g = group->get<DictValue>();
    if (!g)
      return fileError(modelPath, "param_shapes holds a " + describe(*group) + ", not a dict");
    layout.paramGroups.emplace_back();
    for (const auto &[key, value] : g->entries) {
      const std::string *name = key->get<std::string>();
      if (!name || name->empty() || *name == "." || *name == ".." ||
          name->find_first_of("/\\") != std::string::npos)
        return fileError(modelPath, "a param_shapes entry does not name a parameter folder");
      auto found = module.find(*name);
      if (found == module.end())
        return fileError(modelPath, "module has no " + *name + " (param_shapes lists it)");
      layout.paramGroups.back().push_back(*name);
      layout.fulls.push_back({*name, found->second.dtype, found->second.shape});
      modelFile.tensors.push_back(wholeLocal(layout, layout.fulls.size() - 1, "module." + *name));
      std::string zero = dir + "/zero/" + *name;
      for (const char *state : {"fp32", "exp_avg", "exp_avg_sq"}) {
        std::string file = zero + "/" + state + ".pt";
        auto root = readTorchZip(file);
        if (!root)
          return root.takeError();
        const DictValue *d = (*root)->get<DictValue>();
        ValuePtr param = d ? d->find("param") : nullptr;
        const TensorValue *t = param ? param->get<TensorValue>() : nullptr;
        if (!t || t->tensor.shape != found->second.shape)
          return fileError(file, "no 'param' tensor of " + *name + "'s shape");
        layout.fulls.push_back({*name + "#" + state, t->tensor.dtype, t->tensor.shape});
        layout.files.push_back({prefix + "zero/" + *name + "/" + state + ".pt", "torch",
                                {wholeLocal(layout, layout.fulls.size() - 1, "param")}, ""});
      }
      if (!layout.optimizerStep) {
        auto step = readTorchZip(zero + "/step.pt");
        if (!step)
          return step.takeError();
        layout.optimizerStep = stepNumber(*step);
        if (!layout.optimizerStep)
          return fileError(zero + "/step.pt", "holds no step number");
      }
    }
  }
  layout.files.insert(layout.files.begin(), std::move(modelFile));
  llvm::json::Array groupsJson;
  for (const auto &group : layout.paramGroups)
    groupsJson.push_back(llvm::json::Array(group));
  layout.sourceArgs = llvm::formatv("{0}", llvm::json::Value(llvm::json::Object{
                                               {"param_groups", std::move(groupsJson)}}));
  return layout;
}
