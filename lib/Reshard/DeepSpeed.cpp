//===- DeepSpeed.cpp - DeepSpeed ZeRO checkpoint layouts -------------------===//
//
// The rules DeepSpeed's own consolidation (zero_to_fp32.py, ds_to_universal.py)
// reads back:
//
//  ZeRO-1/2  each optimizer group's fp32 masters are flattened in order, padded to a
//            multiple of 2·dp, cut in dp equal partitions. Rank r's optimizer file
//            holds its partition without the padding (single_partition_of_fp32_groups)
//            and Adam's moments over the whole partition (base_optimizer_state).
//            mp_rank_00_model_states.pt holds the whole 16-bit parameters.
//  BF16      DeepSpeed's BF16_Optimizer (bf16_optimizer.py, state_dict()) cuts the same
//            partitions, but saves the fp32 one with its padding (group_paddings
//            says how much, on the last rank) and records no zero_stage; its files
//            are bf16_zero_pp_rank_R_mp_rank_MM_optim_states.pt.
//  ZeRO-3    every parameter is cut on its own in dp parts of ceil(numel/dp), the last
//            one padded; rank r concatenates its parts over all parameters in order
//            (fp32_flat_groups, split between groups where each group ends) with
//            Adam's moments alongside (optimizer_state_dict). No whole 16-bit copy.
//  TP        with Megatron-DeepSpeed's tensor parallelism, mp rank MM's files
//            (mp_rank_MM_model_states.pt, ..._mp_rank_MM_optim_states.pt) hold its
//            slice of every parameter, param_shapes lists the slices' shapes, and
//            ZeRO partitions each mp rank's slices as above. DeepSpeed does not record
//            the cut; ds_to_universal.py takes it from Megatron-DeepSpeed's
//            universal_checkpoint_info patterns, loom from the same names
//            (ckpt::megatronSplitOfName): column-parallel and vocabulary parameters
//            on dimension 0, row-parallel weights on dimension 1, the rest whole.
//
//===----------------------------------------------------------------------===//
#include "loom/Reshard/Layout.h"

#include "loom/Checkpoint/TorchZip.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <cstring>
#include <map>
#include <set>

using namespace loom;
using namespace loom::reshard;
using namespace loom::ckpt;

namespace {
std::string optimFile(const DeepSpeedConfig &config, unsigned mp, unsigned rank) {
  return llvm::formatv("{0}zero_pp_rank_{1}_mp_rank_{2:d2}_optim_states.pt",
                       config.bf16Names ? "bf16_" : "", rank, mp);
}
std::string modelFile(const DeepSpeedConfig &config, unsigned mp, unsigned rank) {
  return config.stage <= 2
             ? llvm::formatv("mp_rank_{0:d2}_model_states.pt", mp).str()
             : llvm::formatv("zero_pp_rank_{0}_mp_rank_{1:d2}_model_states.pt", rank, mp).str();
}
/// Keys of the flat tensors in a rank's optimizer file (the BF16_Optimizer's are
/// ZeRO-1/2's).
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

/// "8, 16": a shape for messages.
std::string shapeText(llvm::ArrayRef<int64_t> shape) {
  return llvm::join(llvm::map_range(shape, [](int64_t n) { return std::to_string(n); }), ", ");
}

/// The dimension mp ranks cut parameter `param` on, nullopt when each holds it whole.
llvm::Expected<std::optional<unsigned>> tpDim(llvm::StringRef param, unsigned tp) {
  if (tp == 1)
    return std::nullopt;
  auto split = megatronSplitOfName(param);
  if (!split)
    return llvm::createStringError(
        param +
        ": not a Megatron-DeepSpeed parameter name, so the dimension its tp=" + llvm::Twine(tp) +
        " slices are cut on is unknown (tensor-parallel DeepSpeed "
        "checkpoints are read for Megatron-DeepSpeed GPT models)");
  if (*split == MegatronSplit::Replicated)
    return std::nullopt;
  return *split == MegatronSplit::Row ? 1u : 0u;
}

/// The box of `full` (parameter `param` or one of its states) mp rank `mp` holds.
llvm::Expected<Box> tpSlice(const FullTensor &full, llvm::StringRef param, unsigned tp,
                            unsigned mp) {
  Box box = Box::whole(full.shape);
  auto dim = tpDim(param, tp);
  if (!dim)
    return dim.takeError();
  if (!*dim)
    return box;
  unsigned d = **dim;
  if (full.shape.size() <= d || full.shape[d] % tp)
    return llvm::createStringError(
        llvm::formatv("{0}: {1}-parallel over tp={2}, but its shape [{3}] has no dimension {4} "
                      "that divides by {2}",
                      param, d ? "row" : "column", tp, shapeText(full.shape), d)
            .str());
  box.sizes[d] = full.shape[d] / tp;
  box.offsets[d] = mp * box.sizes[d];
  return box;
}

/// Elements [begin, end) of `slice`, a box of full tensor `full` (shape `shape`),
/// counted in the slice's row-major order, placed from `at` in the flat `local`. A
/// run is cut where it stops being contiguous in the full tensor: a row-parallel
/// slice is contiguous there one row at a time.
void addRuns(LocalTensor &local, unsigned full, llvm::ArrayRef<int64_t> shape, const Box &slice,
             int64_t begin, int64_t end, int64_t at) {
  // Elements that share their indices before the last cut dimension are contiguous.
  size_t cut = 0;
  for (size_t d = 0; d < shape.size(); ++d)
    if (slice.sizes[d] != shape[d])
      cut = d;
  int64_t chunk = 1;
  for (size_t d = cut; d < shape.size(); ++d)
    chunk *= slice.sizes[d];
  for (int64_t lo = begin; lo < end;) {
    int64_t hi = std::min(end, (lo / chunk + 1) * chunk);
    for (Box &run : flatRuns(slice.sizes, lo, hi)) {
      Piece piece;
      piece.full = full;
      piece.flat = true;
      piece.localOffsets = {at + linearIndex(slice.sizes, run.offsets) - begin};
      for (size_t d = 0; d < run.offsets.size(); ++d)
        run.offsets[d] += slice.offsets[d];
      piece.fullBox = std::move(run);
      local.pieces.push_back(std::move(piece));
    }
    lo = hi;
  }
}

/// Where each parameter's part lies in a flat fp32 partition, as DeepSpeed's
/// param_slice_mappings records it (tensor_fragment.py, fragment_address): the
/// parameter's name (its full tensor's without "#fp32"), start and numel, in
/// partition order, read off the partition's pieces.
struct Fragment {
  std::string param;
  int64_t start = 0, numel = 0;
};
std::vector<Fragment> fragmentsOf(const LocalTensor &partition, llvm::ArrayRef<FullTensor> fulls) {
  std::vector<Fragment> out;
  for (const Piece &piece : partition.pieces) {
    llvm::StringRef name = fulls[piece.full].name;
    name.consume_back("#fp32");
    if (!out.empty() && out.back().param == name)
      out.back().numel += piece.fullBox.volume();
    else
      out.push_back({name.str(), piece.localOffsets[0], int64_t(piece.fullBox.volume())});
  }
  return out;
}
} // namespace

llvm::Expected<std::vector<ShardFile>>
reshard::deepspeedShards(llvm::ArrayRef<FullTensor> fulls,
                         llvm::ArrayRef<std::vector<std::string>> groups,
                         const DeepSpeedConfig &config, llvm::StringRef dirPrefix) {
  const unsigned stage = config.stage, dp = config.dp, tp = config.tp;
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
  // Each parameter's slice on each mp rank; its states are cut alike.
  llvm::StringMap<std::vector<Box>> slices;
  for (const auto &group : groups)
    for (const std::string &name : group) {
      auto f = find(name);
      if (!f)
        return f.takeError();
      for (unsigned mp = 0; mp < tp; ++mp) {
        auto slice = tpSlice(fulls[*f], name, tp, mp);
        if (!slice)
          return slice.takeError();
        slices[name].push_back(std::move(*slice));
      }
    }
  const char *states[] = {"fp32", "exp_avg", "exp_avg_sq"};
  std::vector<ShardFile> files;
  // Model states: the 16-bit parameters' slices (ZeRO-1/2).
  for (unsigned mp = 0; mp < tp; ++mp) {
    ShardFile model{(dirPrefix + modelFile(config, mp, 0)).str(), "torch-tree", {}, ""};
    if (stage <= 2)
      for (const auto &group : groups)
        for (const std::string &name : group) {
          unsigned f = index[name];
          const Box &slice = slices[name][mp];
          model.tensors.push_back(
              {"module." + name,
               fulls[f].dtype,
               slice.sizes,
               {{f, slice, llvm::SmallVector<int64_t, 4>(slice.sizes.size(), 0)}}});
        }
    files.push_back(std::move(model));
    if (stage == 3)
      for (unsigned r = 1; r < dp; ++r)
        files.push_back({(dirPrefix + modelFile(config, mp, r)).str(), "torch-tree", {}, ""});
  }

  for (unsigned mp = 0; mp < tp; ++mp) {
    std::vector<ShardFile> optim(dp);
    for (unsigned r = 0; r < dp; ++r)
      optim[r] = {(dirPrefix + optimFile(config, mp, r)).str(), "torch-tree", {}, ""};
    if (stage <= 2) {
      for (size_t g = 0; g < groups.size(); ++g) {
        int64_t total = 0;
        for (const std::string &name : groups[g])
          total += slices[name][mp].volume();
        int64_t align = 2 * dp, padded = (total + align - 1) / align * align, size = padded / dp;
        for (unsigned r = 0; r < dp; ++r) {
          int64_t lo = r * size, hi = lo + size;
          for (const char *state : states) {
            bool fp32 = llvm::StringRef(state) == "fp32";
            LocalTensor local;
            local.dtype = DType::Float32;
            local.key = fp32 ? fp32Key(stage, g) : momentKey(stage, g, state);
            // ZeRO saves the fp32 partition without its padding, BF16_Optimizer with.
            local.shape = {fp32 && !config.bf16Optimizer
                               ? std::max<int64_t>(0, std::min(hi, total) - lo)
                               : size};
            int64_t a = 0;
            for (const std::string &name : groups[g]) {
              auto f = find(name + "#" + state);
              if (!f)
                return f.takeError();
              const Box &slice = slices[name][mp];
              int64_t n = slice.volume();
              int64_t b = std::max(a, lo), e = std::min(a + n, hi);
              if (b < e)
                addRuns(local, *f, fulls[*f].shape, slice, b - a, e - a, b - lo);
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
            bool fp32 = llvm::StringRef(state) == "fp32";
            LocalTensor local;
            local.dtype = DType::Float32;
            local.key = fp32 ? fp32Key(stage, g) : momentKey(stage, g, state);
            int64_t at = 0;
            for (const std::string &name : groups[g]) {
              auto f = find(fp32 ? name : name + "#" + state);
              if (!f)
                return f.takeError();
              const Box &slice = slices[name][mp];
              int64_t n = slice.volume(), part = (n + dp - 1) / dp;
              int64_t b = std::min<int64_t>(r * part, n), e = std::min<int64_t>(b + part, n);
              if (b < e)
                addRuns(local, *f, fulls[*f].shape, slice, b, e, at);
              at += part;
            }
            local.shape = {at};
            optim[r].tensors.push_back(std::move(local));
          }
    }
    for (ShardFile &f : optim)
      files.push_back(std::move(f));
  }
  return files;
}

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

/// A fragment_address as DeepSpeed pickles it: a dataclass (state {numel, start}) or,
/// in older releases, a namedtuple (args (numel, start)).
static std::optional<std::pair<int64_t, int64_t>> fragmentAddress(const ValuePtr &value) {
  const ObjectValue *object = value ? value->get<ObjectValue>() : nullptr;
  if (!object || object->type.name != "fragment_address")
    return std::nullopt;
  if (const DictValue *state = object->state ? object->state->get<DictValue>() : nullptr) {
    auto numel = integerOf(state->find("numel")), start = integerOf(state->find("start"));
    if (numel && start)
      return std::pair{*start, *numel};
  }
  const std::vector<ValuePtr> *args = object->args ? object->args->sequence() : nullptr;
  if (args && args->size() == 2) {
    auto numel = integerOf((*args)[0]), start = integerOf((*args)[1]);
    if (numel && start)
      return std::pair{*start, *numel};
  }
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
/// name, the iteration and the world sizes the engine recorded.
struct ModelStates {
  ValuePtr root;
  const std::vector<ValuePtr> *groups = nullptr; ///< param_shapes, one dict a group
  llvm::StringMap<Tensor> module;
  int64_t iteration = 0; ///< global_steps
  std::optional<int64_t> dpWorldSize, mpWorldSize;
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
  states.dpWorldSize = integerOf(dict->find("dp_world_size"));
  states.mpWorldSize = integerOf(dict->find("mp_world_size"));
  if (ValuePtr m = dict->find("module"))
    for (NamedTensor &t : collectTensors(*m))
      states.module[t.name] = std::move(t.tensor);
  return states;
}

/// One param_shapes group: names and shapes, in order.
static llvm::Expected<std::vector<std::pair<std::string, llvm::SmallVector<int64_t, 4>>>>
shapesOf(const ValuePtr &group, const std::string &path) {
  const DictValue *g = group->get<DictValue>();
  if (!g)
    return fileError(path, "param_shapes holds a " + describe(*group) + ", not a dict");
  std::vector<std::pair<std::string, llvm::SmallVector<int64_t, 4>>> out;
  for (const auto &[key, value] : g->entries) {
    const std::string *name = key->get<std::string>();
    const std::vector<ValuePtr> *dims = value->sequence();
    if (!name || !dims)
      return fileError(path, "a param_shapes entry is not name -> torch.Size");
    llvm::SmallVector<int64_t, 4> shape;
    for (const ValuePtr &d : *dims) {
      auto n = integerOf(d);
      if (!n || *n < 0)
        return fileError(path, *name + ": a dimension is not a size");
      shape.push_back(*n);
    }
    if (!checkedNumel(shape))
      return fileError(path, *name + ": too many elements");
    out.emplace_back(*name, std::move(shape));
  }
  return out;
}

/// The optimizer files of a tag folder: tp and dp from their names
/// ([bf16_]zero_pp_rank_R_mp_rank_MM_optim_states.pt), every one present. Layouts
/// loom does not read are refused by their files.
static llvm::Expected<DeepSpeedConfig> scanTagFolder(const std::string &dir) {
  DeepSpeedConfig config;
  std::set<std::pair<unsigned, unsigned>> present;
  bool plain = false, bf16 = false;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec)) {
    llvm::StringRef name = llvm::sys::path::filename(it->path());
    if (name.starts_with("layer_") && name.ends_with("model_states.pt"))
      return fileError(it->path(), "pipeline-parallel DeepSpeed checkpoints (layer_*-model_* "
                                   "files) are not read yet");
    if (name.starts_with("expp_rank_"))
      return fileError(it->path(), "DeepSpeed's MoE expert optimizer files are not read yet");
    llvm::StringRef rest = name;
    if (!rest.consume_back("_optim_states.pt"))
      continue;
    bool isBf16 = rest.consume_front("bf16_");
    auto [rankText, mpText] = rest.split("_mp_rank_");
    unsigned rank = 0, mp = 0;
    if (!rankText.consume_front("zero_pp_rank_") || rankText.getAsInteger(10, rank) ||
        mpText.getAsInteger(10, mp) || rank > 65535 || mp > 65535)
      return fileError(it->path(), "not a DeepSpeed optimizer file name "
                                   "([bf16_]zero_pp_rank_R_mp_rank_MM_optim_states.pt)");
    present.insert({mp, rank});
    (isBf16 ? bf16 : plain) = true;
    config.dp = std::max(config.dp, rank + 1);
    config.tp = std::max(config.tp, mp + 1);
  }
  if (ec)
    return fileError(dir, ec.message());
  if (plain && bf16)
    return fileError(dir, "holds both zero_pp_rank_* and bf16_zero_pp_rank_* optimizer files; "
                          "keep one run's files in a tag folder");
  config.bf16Names = bf16;
  for (unsigned mp = 0; mp < config.tp; ++mp)
    for (unsigned r = 0; r < config.dp; ++r)
      if (!present.count({mp, r}))
        return fileError(dir + "/" + optimFile(config, mp, r),
                         llvm::formatv("missing: the folder's optimizer files go up to mp rank "
                                       "{0} and dp rank {1}, so all tp={2} x dp={3} are needed",
                                       config.tp - 1, config.dp - 1, config.tp, config.dp)
                             .str());
  return config;
}

llvm::Expected<Layout> reshard::describeDeepSpeed(const std::string &path) {
  auto hasOptim = [](const std::string &dir) {
    for (const char *prefix : {"", "bf16_"})
      if (llvm::sys::fs::exists(dir + "/" + prefix + "zero_pp_rank_0_mp_rank_00_optim_states.pt"))
        return true;
    return false;
  };
  const char *firstOptim = "zero_pp_rank_0_mp_rank_00_optim_states.pt";
  std::string dir = path, prefix;
  if (!hasOptim(path)) {
    if (!llvm::sys::fs::exists(path + "/latest"))
      return fileError(path,
                       std::string("no 'latest' file naming the tag folder, and no ") + firstOptim);
    auto tag = tagFolder(path + "/latest");
    if (!tag)
      return tag.takeError();
    prefix = *tag;
    dir = path + "/" + prefix;
    prefix += "/";
    if (!hasOptim(dir))
      return fileError(dir, std::string("no ") + firstOptim + " (ZeRO optimizer states)");
  }
  auto scanned = scanTagFolder(dir);
  if (!scanned)
    return scanned.takeError();
  DeepSpeedConfig config = *scanned;
  unsigned tp = config.tp, dp = config.dp;

  // ZeRO's state names its stage; the BF16_Optimizer's has none (bf16_optimizer.py,
  // state_dict()).
  std::string optim0Path = dir + "/" + optimFile(config, 0, 0);
  auto optim0 = readTorchZip(optim0Path);
  if (!optim0)
    return optim0.takeError();
  const DictValue *top = (*optim0)->get<DictValue>();
  ValuePtr osd = top ? top->find("optimizer_state_dict") : nullptr;
  const DictValue *osdDict = osd ? osd->get<DictValue>() : nullptr;
  auto stage = osdDict ? zeroStageOf(osdDict->find("zero_stage")) : std::nullopt;
  config.bf16Optimizer = osdDict && !osdDict->find("zero_stage") &&
                         osdDict->find("single_partition_of_fp32_groups") &&
                         osdDict->find("base_optimizer_state");
  if (config.bf16Optimizer)
    stage = 1;
  if (!stage || *stage < 1 || *stage > 3)
    return fileError(optim0Path, "optimizer_state_dict names no ZeRO stage 1, 2 or 3 and is "
                                 "not BF16_Optimizer's (single_partition_of_fp32_groups and "
                                 "base_optimizer_state)");
  config.stage = *stage;

  // Every mp rank's model states list the same parameters, each its slice's shape.
  std::vector<ModelStates> models;
  for (unsigned mp = 0; mp < tp; ++mp) {
    std::string modelPath = dir + "/" + modelFile(config, mp, 0);
    if (!llvm::sys::fs::exists(modelPath))
      return fileError(modelPath, llvm::formatv("missing: the optimizer files are for tp={0}, "
                                                "and mp rank {1} has no model states",
                                                tp, mp)
                                      .str());
    auto states = loadModelStates(modelPath);
    if (!states)
      return states.takeError();
    models.push_back(std::move(*states));
  }
  std::string model0Path = dir + "/" + modelFile(config, 0, 0);
  const ModelStates &model0 = models.front();
  if (model0.mpWorldSize && *model0.mpWorldSize != tp)
    return fileError(model0Path, llvm::formatv("mp_world_size is {0}, but the folder holds the "
                                               "optimizer files of tp={1} (mp_rank_MM files "
                                               "missing or left over?)",
                                               *model0.mpWorldSize, tp)
                                     .str());
  if (model0.dpWorldSize && *model0.dpWorldSize != dp)
    return fileError(model0Path, llvm::formatv("dp_world_size is {0}, but the folder holds the "
                                               "optimizer files of dp={1}",
                                               *model0.dpWorldSize, dp)
                                     .str());
  if (tp > 1)
    if (ValuePtr args = model0.root->get<DictValue>()->find("args"))
      if (const ObjectValue *object = args->get<ObjectValue>())
        if (const DictValue *fields = object->state ? object->state->get<DictValue>() : nullptr)
          if (ValuePtr swiglu = fields->find("swiglu");
              swiglu && swiglu->get<bool>() && *swiglu->get<bool>())
            return fileError(model0Path, "args.swiglu: each tp slice of a SwiGLU dense_h_to_4h "
                                         "holds [gate; up], which loom does not rejoin yet; "
                                         "save the checkpoint with tp=1");

  Layout layout;
  layout.format = config.bf16Optimizer ? "deepspeed-bf16"
                                       : llvm::formatv("deepspeed-zero{0}", config.stage).str();
  layout.iteration = model0.iteration;
  std::vector<std::vector<std::vector<std::pair<std::string, llvm::SmallVector<int64_t, 4>>>>>
      shapes(tp);
  for (unsigned mp = 0; mp < tp; ++mp) {
    for (const ValuePtr &group : *models[mp].groups) {
      auto listed = shapesOf(group, dir + "/" + modelFile(config, mp, 0));
      if (!listed)
        return listed.takeError();
      shapes[mp].push_back(std::move(*listed));
    }
  }
  for (size_t g = 0; g < shapes[0].size(); ++g) {
    layout.paramGroups.emplace_back();
    for (const auto &[name, sliceShape] : shapes[0][g]) {
      layout.paramGroups.back().push_back(name);
      // The full shape: the slices side by side on the dimension they are cut on.
      llvm::SmallVector<int64_t, 4> shape = sliceShape;
      auto dim = tpDim(name, tp);
      if (!dim)
        return fileError(model0Path, llvm::toString(dim.takeError()));
      if (*dim && **dim < shape.size())
        shape[**dim] *= tp;
      if (!checkedNumel(shape))
        return fileError(model0Path, name + ": too many elements");
      DType paramType = DType::Float32;
      if (config.stage <= 2) {
        auto found = model0.module.find(name);
        if (found == model0.module.end() || found->second.shape != sliceShape)
          return fileError(model0Path,
                           "module has no " + name + " of the shape param_shapes gives");
        paramType = found->second.dtype;
      }
      layout.fulls.push_back({name, paramType, shape});
      for (const char *state : {"fp32", "exp_avg", "exp_avg_sq"})
        if (config.stage <= 2 || llvm::StringRef(state) != "fp32")
          layout.fulls.push_back({name + "#" + state, DType::Float32, shape});
    }
  }
  // The other mp ranks: the same groups of the same parameters, each the slice the
  // cut gives.
  for (unsigned mp = 1; mp < tp; ++mp) {
    std::string modelPath = dir + "/" + modelFile(config, mp, 0);
    if (shapes[mp].size() != shapes[0].size())
      return fileError(modelPath, llvm::formatv("param_shapes has {0} groups, mp rank 0's {1}",
                                                shapes[mp].size(), shapes[0].size())
                                      .str());
    for (size_t g = 0; g < shapes[0].size(); ++g) {
      if (shapes[mp][g].size() != shapes[0][g].size())
        return fileError(modelPath, llvm::formatv("param_shapes group {0} lists {1} parameters, "
                                                  "mp rank 0's {2}",
                                                  g, shapes[mp][g].size(), shapes[0][g].size())
                                        .str());
      for (size_t i = 0; i < shapes[0][g].size(); ++i) {
        const auto &[name, sliceShape] = shapes[mp][g][i];
        const FullTensor *full = layout.findFull(shapes[0][g][i].first);
        auto slice = tpSlice(*full, full->name, tp, mp);
        if (!slice)
          return fileError(modelPath, llvm::toString(slice.takeError()));
        if (name != full->name)
          return fileError(modelPath, llvm::formatv("param_shapes group {0} lists {1} where mp "
                                                    "rank 0's lists {2}",
                                                    g, name, full->name)
                                          .str());
        if (sliceShape != slice->sizes)
          return fileError(modelPath, llvm::formatv("{0}: param_shapes gives [{1}], but mp rank "
                                                    "{2}'s slice of the full [{3}] is [{4}]",
                                                    name, shapeText(sliceShape), mp,
                                                    shapeText(full->shape), shapeText(slice->sizes))
                                          .str());
      }
    }
  }
  if (ValuePtr state =
          osdDict->find(config.stage <= 2 ? "base_optimizer_state" : "optimizer_state_dict"))
    if (auto *sd = state->get<DictValue>())
      if (ValuePtr perGroup = sd->find("state"))
        if (auto *pg = perGroup->get<DictValue>(); pg && !pg->entries.empty())
          if (auto *first = pg->entries.front().second->get<DictValue>())
            layout.optimizerStep = stepNumber(first->find("step"));

  auto files = deepspeedShards(layout.fulls, layout.paramGroups, config, prefix);
  if (!files)
    return fileError(path, llvm::toString(files.takeError()));
  // Kept by a universal file, so that a round trip through it regroups the same way.
  llvm::json::Array groupsJson;
  for (const auto &group : layout.paramGroups)
    groupsJson.push_back(llvm::json::Array(group));
  layout.sourceArgs = llvm::formatv(
      "{0}",
      llvm::json::Value(llvm::json::Object{{"zero_stage", config.stage},
                                           {"dp", dp},
                                           {"tp", tp},
                                           {"optimizer", config.bf16Optimizer ? "bf16" : "zero"},
                                           {"param_groups", std::move(groupsJson)}}));
  // What the rules predict must be what every rank's file holds.
  std::string what = llvm::formatv("{0} with tp={1}, dp={2}", layout.format, tp, dp);
  for (ShardFile &file : *files) {
    file.format = "torch";
    if (file.tensors.empty())
      continue;
    std::string filePath = path + "/" + file.path;
    auto root = readTorchZip(filePath, {/*verifyChecksums=*/false, {}});
    if (!root)
      return root.takeError();
    llvm::StringMap<Tensor> held;
    for (NamedTensor &t : collectTensors(**root))
      held[t.name] = std::move(t.tensor);
    for (const LocalTensor &local : file.tensors) {
      auto found = held.find(local.key);
      if (found == held.end())
        return fileError(filePath, local.key + ": missing (" + what + " puts a tensor there)");
      if (found->second.shape != local.shape || found->second.dtype != local.dtype)
        return fileError(filePath,
                         llvm::formatv("{0}: holds {1} [{2}], but {3} gives {4} [{5}] "
                                       "for param_shapes",
                                       local.key, torchDTypeName(found->second.dtype),
                                       shapeText(found->second.shape), what,
                                       torchDTypeName(local.dtype), shapeText(local.shape))
                             .str());
    }
    if (!llvm::StringRef(file.path).ends_with("_optim_states.pt"))
      continue;
    const DictValue *rankTop = (*root)->get<DictValue>();
    ValuePtr rankOsd = rankTop ? rankTop->find("optimizer_state_dict") : nullptr;
    const DictValue *rankState = rankOsd ? rankOsd->get<DictValue>() : nullptr;
    if (!rankState)
      return fileError(filePath, "no optimizer_state_dict");
    // partition_count: dp, or one dp per group.
    if (ValuePtr counts = rankState->find("partition_count")) {
      std::vector<ValuePtr> one{counts};
      for (const ValuePtr &count : counts->sequence() ? *counts->sequence() : one)
        if (integerOf(count) != std::optional<int64_t>(dp))
          return fileError(filePath, llvm::formatv("partition_count says {0} ranks, but the "
                                                   "folder holds the files of dp={1}",
                                                   integerOf(count).value_or(-1), dp)
                                         .str());
    }
    // param_slice_mappings (ZeRO-1/2 and BF16_Optimizer, may be empty): each
    // parameter's place in the fp32 partition, as the rules put it.
    ValuePtr mappings = rankState->find("param_slice_mappings");
    const std::vector<ValuePtr> *perGroup = mappings ? mappings->sequence() : nullptr;
    if (config.stage > 2 || !perGroup || perGroup->empty())
      continue;
    if (perGroup->size() != layout.paramGroups.size())
      return fileError(filePath, llvm::formatv("param_slice_mappings has {0} groups, "
                                               "param_shapes {1}",
                                               perGroup->size(), layout.paramGroups.size())
                                     .str());
    for (size_t g = 0; g < perGroup->size(); ++g) {
      const DictValue *recorded = (*perGroup)[g]->get<DictValue>();
      auto partition = llvm::find_if(
          file.tensors, [&](const LocalTensor &t) { return t.key == fp32Key(config.stage, g); });
      std::vector<Fragment> expected = fragmentsOf(*partition, layout.fulls);
      if (!recorded || recorded->entries.size() != expected.size())
        return fileError(filePath, llvm::formatv("param_slice_mappings[{0}] does not list the "
                                                 "{1} parameters the rules place in this "
                                                 "partition",
                                                 g, expected.size())
                                       .str());
      for (const Fragment &fragment : expected) {
        auto address = fragmentAddress(recorded->find(fragment.param));
        if (!address || address->first != fragment.start || address->second != fragment.numel)
          return fileError(filePath,
                           llvm::formatv("param_slice_mappings[{0}]: {1} is not at start {2}, "
                                         "numel {3}, where param_shapes and dp={4} put it",
                                         g, fragment.param, fragment.start, fragment.numel, dp)
                               .str());
      }
    }
  }
  layout.files = std::move(*files);
  return layout;
}

/// What DeepSpeed's engine pickles in mp rank `mp`'s model states (engine.py,
/// _save_checkpoint): the module's tensors (keys "module.<name>" in `file`), the
/// parameters' (slices') shapes per optimizer group, and the engine's counters.
static llvm::Expected<llvm::json::Array>
modelStatesSkeleton(const ShardFile &file, llvm::ArrayRef<std::vector<std::string>> groups,
                    const Layout &target, int64_t iteration, const DeepSpeedConfig &config,
                    unsigned mp) {
  auto tensorRef = [](const std::string &key) { return llvm::json::Object{{"$tensor", key}}; };
  llvm::json::Array module, shapes;
  for (const LocalTensor &t : file.tensors)
    module.push_back(llvm::json::Array{llvm::StringRef(t.key).drop_front(7), tensorRef(t.key)});
  for (const auto &group : groups) {
    llvm::json::Array entries;
    for (const std::string &name : group) {
      auto slice = tpSlice(*target.findFull(name), name, config.tp, mp);
      if (!slice)
        return slice.takeError();
      llvm::json::Array dims;
      for (int64_t d : slice->sizes)
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
      llvm::json::Array{"dp_world_size", config.dp},
      llvm::json::Array{"mp_world_size", config.tp},
      llvm::json::Array{"ds_config", llvm::json::Object{}},
      llvm::json::Array{"ds_version", "0.14.0"}};
}

/// What DeepSpeed's engine pickles in dp rank `rank`'s optimizer file
/// (_save_zero_checkpoint): the optimizer's state_dict() — stage_1_and_2.py's,
/// stage3.py's or bf16_optimizer.py's — with the flat tensors of `file`.
static llvm::json::Array optimStatesSkeleton(const ShardFile &file, size_t groups,
                                             llvm::ArrayRef<FullTensor> fulls,
                                             const DeepSpeedConfig &config, unsigned rank,
                                             int64_t step) {
  auto tensorRef = [](const std::string &key) { return llvm::json::Object{{"$tensor", key}}; };
  unsigned stage = config.stage;
  llvm::json::Array fp32, state, paramGroups, paddings, counts, mappings;
  for (size_t g = 0; g < groups; ++g) {
    fp32.push_back(tensorRef(fp32Key(stage, g)));
    state.push_back(llvm::json::Array{
        int64_t(g),
        llvm::json::Object{
            {"$dict",
             llvm::json::Array{
                 llvm::json::Array{"step", step},
                 llvm::json::Array{"exp_avg", tensorRef(momentKey(stage, g, "exp_avg"))},
                 llvm::json::Array{"exp_avg_sq", tensorRef(momentKey(stage, g, "exp_avg_sq"))}}}}});
    paramGroups.push_back(llvm::json::Object{{"params", llvm::json::Array{int64_t(g)}}});
    counts.push_back(config.dp);
    if (stage == 3)
      continue;
    // The padding sits at the end of the last rank's partition (group_paddings).
    auto local = [&](const std::string &key) {
      return llvm::find_if(file.tensors, [&](const LocalTensor &t) { return t.key == key; });
    };
    auto moment = local(momentKey(stage, g, "exp_avg"));
    int64_t covered = 0;
    for (const Piece &piece : moment->pieces)
      covered += piece.fullBox.volume();
    paddings.push_back(rank + 1 == config.dp ? moment->shape[0] - covered : 0);
    llvm::json::Array entries;
    for (const Fragment &f : fragmentsOf(*local(fp32Key(stage, g)), fulls))
      entries.push_back(llvm::json::Array{
          f.param, llvm::json::Object{
                       {"$object", "deepspeed.utils.tensor_fragment.fragment_address"},
                       {"state", llvm::json::Object{{"numel", f.numel}, {"start", f.start}}}}});
    mappings.push_back(llvm::json::Object{{"$odict", std::move(entries)}});
  }
  llvm::json::Object base{
      {"$dict", llvm::json::Array{
                    llvm::json::Array{"state", llvm::json::Object{{"$dict", std::move(state)}}},
                    llvm::json::Array{"param_groups", std::move(paramGroups)}}}};
  llvm::json::Array osd;
  if (stage == 3) {
    osd = llvm::json::Array{llvm::json::Array{"zero_stage", stage},
                            llvm::json::Array{"partition_count", config.dp},
                            llvm::json::Array{"dynamic_loss_scale", false},
                            llvm::json::Array{"overflow", false},
                            llvm::json::Array{"optimizer_state_dict", std::move(base)},
                            llvm::json::Array{"fp32_flat_groups", std::move(fp32)}};
  } else {
    if (!config.bf16Optimizer) {
      osd.push_back(llvm::json::Array{"dynamic_loss_scale", false});
      osd.push_back(llvm::json::Array{"overflow", false});
    }
    osd.push_back(llvm::json::Array{"clip_grad", llvm::json::Object{{"$float", 0.0}}});
    osd.push_back(llvm::json::Array{"base_optimizer_state", std::move(base)});
    osd.push_back(llvm::json::Array{"single_partition_of_fp32_groups", std::move(fp32)});
    if (!config.bf16Optimizer)
      osd.push_back(llvm::json::Array{"zero_stage", stage});
    osd.push_back(llvm::json::Array{"group_paddings", std::move(paddings)});
    osd.push_back(llvm::json::Array{"partition_count", std::move(counts)});
    osd.push_back(llvm::json::Array{"ds_version", "0.14.0"});
    osd.push_back(llvm::json::Array{"param_slice_mappings", std::move(mappings)});
  }
  return llvm::json::Array{
      llvm::json::Array{"optimizer_state_dict", llvm::json::Object{{"$dict", std::move(osd)}}},
      llvm::json::Array{"ds_config", llvm::json::Object{}},
      llvm::json::Array{"ds_version", "0.14.0"}};
}

llvm::Expected<std::vector<ShardFile>>
reshard::deepspeedTarget(const Layout &source, Layout &target, const DeepSpeedConfig &config) {
  unsigned stage = config.stage;
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
  auto files = deepspeedShards(target.fulls, groups, config, tag + "/");
  if (!files)
    return files.takeError();
  int64_t step = source.optimizerStep.value_or(source.iteration);
  // Skeletons: what DeepSpeed's engine pickles, with the tensors at their places.
  // deepspeedShards gives each mp rank's model states, then each mp rank's dp
  // optimizer files.
  unsigned modelFiles = 0, optimFiles = 0;
  for (ShardFile &file : *files) {
    llvm::json::Array root;
    if (llvm::StringRef(file.path).ends_with("_model_states.pt")) {
      unsigned mp = modelFiles++ / (stage == 3 ? config.dp : 1);
      auto skeleton = modelStatesSkeleton(file, groups, target, source.iteration, config, mp);
      if (!skeleton)
        return skeleton.takeError();
      root = std::move(*skeleton);
    } else {
      root = optimStatesSkeleton(file, groups.size(), target.fulls, config,
                                 optimFiles++ % config.dp, step);
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
  auto skeleton =
      modelStatesSkeleton(model, groups, target, source.iteration, DeepSpeedConfig{}, 0);
  if (!skeleton)
    return skeleton.takeError();
  model.meta =
      llvm::formatv("{0}", llvm::json::Value(llvm::json::Object{{"$dict", std::move(*skeleton)}}));
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
