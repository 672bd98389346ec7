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
//            With SwiGLU (args.swiglu) a slice of dense_h_to_4h is [gate; up] of the
//            rank's rows, the full tensor all gates, then all ups
//            (parameter_with_2_sub_params_cat_dim_0).
//  PP        a PipelineModule (Megatron-DeepSpeed's GPTModelPipe, DeepSpeedPipe.cpp)
//            saves each layer's weights per tp rank in layer_XX-model_YY-model_states.pt
//            (module.py, save_state_dict) and no module in mp_rank_MM_model_states.pt;
//            MM is stage·tp + tp rank (PipelineParallelGrid.get_model_parallel_rank,
//            the rank among those of one data-parallel rank over the axes pipe, data,
//            model), and each stage's optimizer groups hold its own parameters in
//            named_parameters() order: the tied modules first. The stage of the tied
//            head keeps its own copy of the embedding's parameters, whose word
//            embeddings stay equal to the first stage's (their gradients are
//            all-reduced) while the rest drift; ds_to_universal.py reads the first
//            stage's, and so does loom. ZeRO-2/3 are refused by DeepSpeed's
//            PipelineEngine.
//  MoE       DeepSpeed's MoE layers (microsoft/DeepSpeed 38327e07: engine.py
//            _save_moe_checkpoint, _get_expert_ckpt_name, _get_optimizer_ckpt_name;
//            moe/layer.py, moe/experts.py, moe/utils.py; utils/groups.py
//            _get_expert_parallel_ranks) as Megatron-DeepSpeed builds them
//            (f4157bea: megatron/model/transformer.py, megatron/optimizer/__init__.py).
//            MoE layer L (its index among the model's MoE modules) keeps expert E's
//            weights in layer_L_expert_E_mp_rank_00_model_states.pt under the global
//            name (...deepspeed_experts.E...); mp_rank_00_model_states.pt keeps the
//            rest of the module, num_experts and no param_shapes. The experts ride in
//            groups of their own (split_params_into_different_moe_groups_for_optimizer
//            appends one per dense group), which ZeRO partitions over the expert-data-
//            parallel group: dp rank r keeps expert-parallel rank r % ep's experts and is
//            rank r / ep of dp / ep there (partition_count), and its param_slice_mappings
//            name them by their local index. expp_rank_R_mp_rank_00_optim_states.pt, one
//            per expert-parallel rank, holds {'optimizer': None} under ZeRO and bf16.
//            DeepSpeed refuses ZeRO-3 with MoE; loom reads and writes MoE without tensor
//            or pipeline parallelism.
//
//===----------------------------------------------------------------------===//
#include "loom/Reshard/Layout.h"

#include "loom/Checkpoint/TorchZip.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"
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
/// PipelineModule.ckpt_layer_path with a model axis (get_rank_repr gives "model_YY").
std::string layerFile(int64_t layer, unsigned tpRank) {
  return llvm::formatv("layer_{0:d2}-model_{1:d2}-model_states.pt", layer, tpRank);
}
/// engine.py, _get_expert_ckpt_name with a layer id (newer checkpoints).
std::string expertFile(size_t layer, int64_t expert) {
  return llvm::formatv("layer_{0}_expert_{1}_mp_rank_00_model_states.pt", layer, expert);
}
std::string exppFile(unsigned rank) {
  return llvm::formatv("expp_rank_{0}_mp_rank_00_optim_states.pt", rank);
}
constexpr llvm::StringLiteral kExperts = ".deepspeed_moe.experts.deepspeed_experts.";

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

bool isSwigluFc1(llvm::StringRef name) {
  return name.ends_with("mlp.dense_h_to_4h.weight") || name.ends_with("mlp.dense_h_to_4h.bias");
}

/// An mp rank's slice of a parameter (or of one of its states): the slice's shape and
/// the boxes of the full tensor it holds, stacked on dimension 0 in this order
/// (SwiGLU's gate rows, then its up rows), else one box.
struct TpSlice {
  llvm::SmallVector<int64_t, 4> shape;
  std::vector<Box> boxes;
};

/// The slice of `full` (parameter `param` or one of its states) mp rank `mp` holds.
llvm::Expected<TpSlice> tpSlice(const FullTensor &full, llvm::StringRef param,
                                const DeepSpeedConfig &config, unsigned mp) {
  const unsigned tp = config.tp;
  TpSlice slice{full.shape, {Box::whole(full.shape)}};
  auto dim = tpDim(param, tp);
  if (!dim)
    return dim.takeError();
  if (!*dim)
    return slice;
  unsigned d = **dim;
  bool swiglu = d == 0 && isSwigluFc1(param);
  if (swiglu && !config.swiglu)
    return llvm::createStringError(
        param + ": whether its tp slices hold SwiGLU's [gate; up] is not recorded (the source "
                "has no Megatron-DeepSpeed args.swiglu), so it cannot be cut over tp=" +
        llvm::Twine(tp) + "; convert from the Megatron-DeepSpeed checkpoint itself");
  int64_t parts = swiglu && *config.swiglu ? 2 * tp : tp;
  if (full.shape.size() <= d || full.shape[d] % parts)
    return llvm::createStringError(
        llvm::formatv("{0}: {1} over tp={2}, but its shape [{3}] has no dimension {4} "
                      "that divides by {5}",
                      param,
                      parts > tp ? "SwiGLU's [gate; up] column-parallel"
                      : d        ? "row-parallel"
                                 : "column-parallel",
                      tp, shapeText(full.shape), d, parts)
            .str());
  slice.shape[d] = full.shape[d] / tp;
  slice.boxes.clear();
  int64_t rows = full.shape[d] / parts;
  for (int64_t half = 0; half < parts / tp; ++half) {
    Box box = Box::whole(full.shape);
    box.sizes[d] = rows;
    box.offsets[d] = half * (full.shape[d] / 2) + mp * rows;
    slice.boxes.push_back(std::move(box));
  }
  return slice;
}

/// Pieces placing `slice` of full tensor `full` whole in a local tensor of its shape.
std::vector<Piece> slicePieces(unsigned full, const TpSlice &slice) {
  std::vector<Piece> pieces;
  int64_t row = 0;
  for (const Box &box : slice.boxes) {
    llvm::SmallVector<int64_t, 4> at(box.sizes.size(), 0);
    if (!at.empty())
      at[0] = row;
    pieces.push_back({full, box, std::move(at)});
    row += box.sizes.empty() ? 0 : box.sizes[0];
  }
  return pieces;
}

/// Elements [begin, end) of `box` of full tensor `full` (shape `shape`), counted in
/// the box's row-major order, placed from `at` in the flat `local`. A run is cut
/// where it stops being contiguous in the full tensor: a row-parallel slice is
/// contiguous there one row at a time.
void addRuns(LocalTensor &local, unsigned full, llvm::ArrayRef<int64_t> shape, const Box &box,
             int64_t begin, int64_t end, int64_t at) {
  // Elements that share their indices before the last cut dimension are contiguous.
  size_t cut = 0;
  for (size_t d = 0; d < shape.size(); ++d)
    if (box.sizes[d] != shape[d])
      cut = d;
  int64_t chunk = 1;
  for (size_t d = cut; d < shape.size(); ++d)
    chunk *= box.sizes[d];
  for (int64_t lo = begin; lo < end;) {
    int64_t hi = std::min(end, (lo / chunk + 1) * chunk);
    for (Box &run : flatRuns(box.sizes, lo, hi)) {
      Piece piece;
      piece.full = full;
      piece.flat = true;
      piece.localOffsets = {at + linearIndex(box.sizes, run.offsets) - begin};
      for (size_t d = 0; d < run.offsets.size(); ++d)
        run.offsets[d] += box.offsets[d];
      piece.fullBox = std::move(run);
      local.pieces.push_back(std::move(piece));
    }
    lo = hi;
  }
}

/// Elements [begin, end) of `slice`, in the slice's row-major order, placed from `at`
/// in the flat `local`: its boxes follow one another there.
void addSliceRuns(LocalTensor &local, unsigned full, llvm::ArrayRef<int64_t> shape,
                  const TpSlice &slice, int64_t begin, int64_t end, int64_t at) {
  int64_t first = 0;
  for (const Box &box : slice.boxes) {
    int64_t n = box.volume();
    int64_t b = std::max(begin, first), e = std::min(end, first + n);
    if (b < e)
      addRuns(local, full, shape, box, b - first, e - first, at + (b - begin));
    first += n;
  }
}

/// A parameter as one stage's files know it.
struct StageParam {
  /// As DeepSpeed names it: the full tensor's name, or GPTModelPipe's.
  std::string name;
  /// The full tensor's name.
  std::string full;
  /// Pipeline: the index of its layer (its layer_XX file), -1 for a copy of the tied
  /// embedding on a later stage, which has none.
  int64_t layer = -1;
  /// Pipeline: its key in the layer file.
  std::string key;
};
/// Each stage's optimizer groups.
using StageGroups = std::vector<std::vector<StageParam>>;

/// A layer's parameters in its state_dict's order (ParallelTransformerLayer's modules
/// in registration order, EmbeddingPipe's word embeddings before the positions).
unsigned layerKeyRank(llvm::StringRef key) {
  static const char *const order[] = {
      "word_embeddings.weight", "position_embeddings.weight", "input_layernorm.weight",
      "input_layernorm.bias", "self_attention.query_key_value.weight",
      "self_attention.query_key_value.bias", "self_attention.dense.weight",
      "self_attention.dense.bias", "post_attention_layernorm.weight",
      "post_attention_layernorm.bias", "mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias",
      "mlp.dense_4h_to_h.weight", "mlp.dense_4h_to_h.bias", "weight", "bias"};
  for (unsigned i = 0; i < std::size(order); ++i)
    if (key == order[i])
      return i;
  return std::size(order);
}

/// The parameters of each stage, group by group: outside a pipeline one stage of
/// `groups`; in GPTModelPipe each parameter on the stage of its layer, and the stage
/// of a tied head with copies of the embedding's first.
llvm::Expected<std::vector<StageGroups>>
placeParams(llvm::ArrayRef<FullTensor> fulls, llvm::ArrayRef<std::vector<std::string>> groups,
            const DeepSpeedConfig &config) {
  if (!config.pipeline) {
    StageGroups stage;
    for (const auto &group : groups) {
      stage.emplace_back();
      for (const std::string &name : group)
        stage.back().push_back({name, name, -1, ""});
    }
    return std::vector<StageGroups>{std::move(stage)};
  }
  const unsigned pp = config.pp;
  int64_t layers = 0;
  bool tied = true, half = false;
  for (const FullTensor &f : fulls)
    half |= !llvm::StringRef(f.name).contains('#') &&
            (f.dtype == DType::BFloat16 || f.dtype == DType::Float16);
  for (const auto &group : groups)
    for (llvm::StringRef name : group) {
      tied &= name != "language_model.output_layer.weight";
      if (llvm::StringRef rest = name; rest.consume_front("language_model.encoder.layers.")) {
        int64_t n = 0;
        if (!rest.split('.').first.getAsInteger(10, n))
          layers = std::max(layers, n + 1);
      }
    }
  std::vector<int64_t> parts =
      config.pipeParts.empty() ? gptPipeParts(layers, pp, half) : config.pipeParts;
  if (parts.size() != pp + 1)
    return llvm::createStringError(
        llvm::formatv("{0} pipeline bounds for pp={1}", parts.size(), pp).str());
  // The first and last stages are open-ended: a split read from a checkpoint bounds
  // the layers with weights only (the tied head has none).
  auto stageOf = [&](int64_t layer) {
    unsigned s = 0;
    while (s + 1 < pp && parts[s + 1] <= layer)
      ++s;
    return s;
  };
  std::vector<StageGroups> stages(pp, StageGroups(groups.size()));
  for (size_t g = 0; g < groups.size(); ++g)
    for (const std::string &name : groups[g]) {
      auto pipe = gptPipeName(name, layers, tied);
      if (!pipe)
        return llvm::createStringError(
            name + ": not a parameter of Megatron-DeepSpeed's GPTModel, which DeepSpeed's "
                   "pipeline layout is written for (GPTModelPipe names its layers)");
      stages[stageOf(pipe->layer)][g].push_back({pipe->name, name, pipe->layer, pipe->key});
    }
  // The tied head's stage builds the embedding module too; tied_modules is registered
  // before the layers, so its parameters lead that stage's groups.
  unsigned embedStage = stageOf(1), headStage = stageOf(layers + 3);
  if (tied && embedStage != headStage)
    for (size_t g = 0; g < groups.size(); ++g) {
      std::vector<StageParam> copies;
      for (const StageParam &p : stages[embedStage][g])
        if (llvm::StringRef(p.name).starts_with("tied_modules."))
          copies.push_back({p.name, p.full, -1, p.key});
      stages[headStage][g].insert(stages[headStage][g].begin(), copies.begin(), copies.end());
    }
  for (unsigned s = 0; s < pp; ++s)
    for (size_t g = 0; g < groups.size(); ++g)
      if (stages[s][g].empty())
        return llvm::createStringError(
            llvm::formatv("pipeline stage {0} of {1} (layers [{2}, {3}) of GPTModelPipe's list) "
                          "holds no parameter of optimizer group {4}; Megatron-DeepSpeed then "
                          "leaves the group out, which loom does not lay out",
                          s, pp, parts[s], parts[s + 1], g)
                .str());
  return stages;
}
} // namespace

std::string DeepSpeedExpert::name() const {
  return (module + kExperts + llvm::Twine(expert) + "." + rest).str();
}

std::optional<DeepSpeedExpert> reshard::deepspeedExpertOf(llvm::StringRef name) {
  auto [module, tail] = name.split(kExperts);
  if (tail.empty() || module.empty())
    return std::nullopt;
  auto [index, rest] = tail.split('.');
  DeepSpeedExpert expert{module.str(), 0, rest.str()};
  if (index.getAsInteger(10, expert.expert) || rest.empty())
    return std::nullopt;
  return expert;
}

llvm::Expected<DeepSpeedShards>
reshard::deepspeedShards(llvm::ArrayRef<FullTensor> fulls,
                         llvm::ArrayRef<std::vector<std::string>> groups,
                         const DeepSpeedConfig &config, llvm::StringRef dirPrefix,
                         bool tiedCopies) {
  const unsigned stage = config.stage, dp = config.dp, tp = config.tp;
  if (config.pipeline && stage > 1)
    return llvm::createStringError(
        llvm::formatv("ZeRO-{0} with pipeline parallelism: DeepSpeed's PipelineEngine refuses "
                      "ZeRO-2 and ZeRO-3",
                      stage)
            .str());
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
  auto placed = placeParams(fulls, groups, config);
  if (!placed)
    return placed.takeError();
  const std::vector<StageGroups> &stages = *placed;
  const unsigned pp = stages.size(), mpRanks = pp * tp;
  DeepSpeedShards out;
  // MoE: the layers of experts, in the order their parameters first come (the
  // engine numbers its MoE modules in named_modules() order), and the groups of
  // experts.
  std::vector<std::string> moeModules;
  std::vector<bool> expertGroup;
  for (const auto &group : groups) {
    bool experts = false, dense = false;
    for (const std::string &name : group) {
      auto expert = deepspeedExpertOf(name);
      (expert ? experts : dense) = true;
      if (!expert)
        continue;
      size_t l = llvm::find(moeModules, expert->module) - moeModules.begin();
      if (l == moeModules.size()) {
        moeModules.push_back(expert->module);
        out.numExperts.push_back(0);
      }
      out.numExperts[l] = std::max(out.numExperts[l], expert->expert + 1);
    }
    if (experts && dense)
      return llvm::createStringError(
          "an optimizer group holds both experts' and other parameters; DeepSpeed's MoE keeps "
          "the experts in groups of their own (split_params_into_different_moe_groups_for_"
          "optimizer)");
    expertGroup.push_back(experts);
  }
  const unsigned ep = config.ep;
  if (moeModules.empty() && ep > 1)
    return llvm::createStringError(llvm::formatv("ep={0}, but the model has no DeepSpeed MoE "
                                                 "experts (parameters named <layer>{1}E.*)",
                                                 ep, kExperts)
                                       .str());
  if (!moeModules.empty()) {
    if (stage == 3)
      return llvm::createStringError("ZeRO-3 with MoE experts, which DeepSpeed refuses (\"MoE "
                                     "not supported with Stage 3\")");
    if (tp > 1 || config.pipeline)
      return llvm::createStringError(
          "MoE experts with tensor or pipeline parallelism: loom lays out DeepSpeed MoE "
          "checkpoints without either");
    if (dp % ep)
      return llvm::createStringError(
          llvm::formatv("dp={0} does not split into expert-parallel groups of ep={1}", dp, ep)
              .str());
    for (size_t l = 0; l < moeModules.size(); ++l)
      if (out.numExperts[l] % ep)
        return llvm::createStringError(llvm::formatv("{0}: {1} experts do not divide over ep={2} "
                                                     "(DeepSpeed's MoE needs num_experts % "
                                                     "ep_size == 0)",
                                                     moeModules[l], out.numExperts[l], ep)
                                           .str());
  }
  // The parameters of a group of experts that expert-parallel rank `rank` holds, under
  // their local names.
  auto localExperts = [&](const std::vector<StageParam> &group, unsigned rank) {
    std::vector<StageParam> local;
    for (const StageParam &p : group) {
      DeepSpeedExpert expert = *deepspeedExpertOf(p.full);
      int64_t perRank =
          out.numExperts[llvm::find(moeModules, expert.module) - moeModules.begin()] / ep;
      if (expert.expert / perRank != rank)
        continue;
      expert.expert -= rank * perRank;
      local.push_back({expert.name(), p.full, p.layer, p.key});
    }
    return local;
  };
  for (size_t g = 0; g < groups.size(); ++g)
    out.partitionCounts.push_back(expertGroup[g] && stage <= 2 ? dp / ep : dp);
  // Each parameter's slice on each tp rank; its states are cut alike.
  llvm::StringMap<std::vector<TpSlice>> slices;
  for (const auto &group : groups)
    for (const std::string &name : group) {
      auto f = find(name);
      if (!f)
        return f.takeError();
      for (unsigned t = 0; t < tp; ++t) {
        auto slice = tpSlice(fulls[*f], name, config, t);
        if (!slice)
          return slice.takeError();
        slices[name].push_back(std::move(*slice));
      }
    }
  const char *states[] = {"fp32", "exp_avg", "exp_avg_sq"};
  for (unsigned mp = 0; mp < mpRanks; ++mp) {
    const StageGroups &params = stages[mp / tp];
    unsigned t = mp % tp;
    out.paramShapes.emplace_back();
    for (const auto &group : params) {
      out.paramShapes.back().emplace_back();
      for (const StageParam &p : group)
        out.paramShapes.back().back().emplace_back(p.name, slices[p.full][t].shape);
    }
    // Model states: the 16-bit parameters' slices (ZeRO-1/2 outside a pipeline).
    ShardFile model{(dirPrefix + modelFile(config, mp, 0)).str(), "torch-tree", {}, ""};
    if (stage <= 2 && !config.pipeline)
      for (size_t g = 0; g < params.size(); ++g)
        for (const StageParam &p : expertGroup[g] ? std::vector<StageParam>{} : params[g]) {
          unsigned f = index[p.full];
          const TpSlice &slice = slices[p.full][t];
          model.tensors.push_back(
              {"module." + p.name, fulls[f].dtype, slice.shape, slicePieces(f, slice)});
        }
    out.modelFiles.push_back(out.files.size());
    out.files.push_back(std::move(model));
    if (stage == 3)
      for (unsigned r = 1; r < dp; ++r) {
        out.modelFiles.push_back(out.files.size());
        out.files.push_back({(dirPrefix + modelFile(config, mp, r)).str(), "torch-tree", {}, ""});
      }
  }
  // MoE: each expert's weights in a file of its own, under their global names.
  for (size_t l = 0; l < moeModules.size(); ++l)
    for (int64_t e = 0; e < out.numExperts[l]; ++e) {
      ShardFile file{(dirPrefix + expertFile(l, e)).str(), "torch-tree", {}, ""};
      for (size_t g = 0; g < groups.size(); ++g)
        for (const StageParam &p : expertGroup[g] ? stages[0][g] : std::vector<StageParam>{}) {
          DeepSpeedExpert expert = *deepspeedExpertOf(p.full);
          if (expert.module != moeModules[l] || expert.expert != e)
            continue;
          unsigned f = index[p.full];
          file.tensors.push_back(
              {p.full, fulls[f].dtype, fulls[f].shape, slicePieces(f, slices[p.full][0])});
        }
      out.expertFiles.push_back(out.files.size());
      out.files.push_back(std::move(file));
    }
  // A pipeline's layer files: each built layer's weights, per tp rank.
  if (config.pipeline)
    for (unsigned s = 0; s < pp; ++s) {
      std::map<int64_t, std::vector<const StageParam *>> byLayer;
      for (const auto &group : stages[s])
        for (const StageParam &p : group)
          if (p.layer >= 0)
            byLayer[p.layer].push_back(&p);
      for (unsigned t = 0; t < tp; ++t)
        for (auto &[layer, params] : byLayer) {
          llvm::stable_sort(params, [](const StageParam *a, const StageParam *b) {
            return layerKeyRank(a->key) < layerKeyRank(b->key);
          });
          ShardFile file{(dirPrefix + layerFile(layer, t)).str(), "torch-tree", {}, ""};
          for (const StageParam *p : params) {
            unsigned f = index[p->full];
            const TpSlice &slice = slices[p->full][t];
            file.tensors.push_back({p->key, fulls[f].dtype, slice.shape, slicePieces(f, slice)});
          }
          out.layerFiles.push_back(out.files.size());
          out.files.push_back(std::move(file));
        }
    }

  for (unsigned mp = 0; mp < mpRanks; ++mp) {
    const StageGroups &params = stages[mp / tp];
    unsigned t = mp % tp;
    // A later stage's copy of a tied parameter: its place is kept, its pieces only when
    // written.
    auto skipped = [&](const StageParam &p) {
      return p.layer < 0 && config.pipeline && !tiedCopies;
    };
    std::vector<ShardFile> optim(dp);
    for (unsigned r = 0; r < dp; ++r)
      optim[r] = {(dirPrefix + optimFile(config, mp, r)).str(), "torch-tree", {}, ""};
    std::vector<std::vector<std::vector<DeepSpeedShards::Fragment>>> mappings(
        dp, std::vector<std::vector<DeepSpeedShards::Fragment>>(params.size()));
    std::vector<std::vector<int64_t>> paddings(dp, std::vector<int64_t>(params.size(), 0));
    if (stage <= 2) {
      for (size_t g = 0; g < params.size(); ++g)
        for (unsigned r = 0; r < dp; ++r) {
          // A group of experts: rank r's local experts, cut over its expert-data-parallel
          // group, where it is rank r / ep.
          const std::vector<StageParam> members =
              expertGroup[g] ? localExperts(params[g], r % ep) : params[g];
          const int64_t ranks = out.partitionCounts[g], part = expertGroup[g] ? r / ep : r;
          int64_t total = 0;
          for (const StageParam &p : members)
            total += *checkedNumel(slices[p.full][t].shape);
          int64_t align = 2 * ranks, padded = (total + align - 1) / align * align;
          int64_t size = padded / ranks, lo = part * size, hi = lo + size;
          // Where each parameter's part lies (param_slice_mappings), and the padding the
          // partition ends with (group_paddings: on the last rank only).
          int64_t a = 0;
          for (const StageParam &p : members) {
            int64_t n = *checkedNumel(slices[p.full][t].shape);
            int64_t b = std::max(a, lo), e = std::min(a + n, hi);
            if (b < e)
              mappings[r][g].push_back({p.name, b - lo, e - b});
            a += n;
          }
          paddings[r][g] = part + 1 == ranks ? hi - std::max(lo, std::min(hi, total)) : 0;
          for (const char *state : states) {
            bool fp32 = llvm::StringRef(state) == "fp32";
            LocalTensor local;
            local.dtype = DType::Float32;
            local.key = fp32 ? fp32Key(stage, g) : momentKey(stage, g, state);
            // ZeRO saves the fp32 partition without its padding, BF16_Optimizer with.
            local.shape = {fp32 && !config.bf16Optimizer
                               ? std::max<int64_t>(0, std::min(hi, total) - lo)
                               : size};
            a = 0;
            for (const StageParam &p : members) {
              auto f = find(p.full + "#" + state);
              if (!f)
                return f.takeError();
              const TpSlice &slice = slices[p.full][t];
              int64_t n = *checkedNumel(slice.shape);
              int64_t b = std::max(a, lo), e = std::min(a + n, hi);
              if (b < e && !skipped(p))
                addSliceRuns(local, *f, fulls[*f].shape, slice, b - a, e - a, b - lo);
              a += n;
            }
            optim[r].tensors.push_back(std::move(local));
          }
        }
    } else {
      // Each parameter in dp parts; rank r's parts back to back over all groups, the
      // group tensors cut where each group's parameters end.
      for (unsigned r = 0; r < dp; ++r)
        for (size_t g = 0; g < params.size(); ++g)
          for (const char *state : states) {
            bool fp32 = llvm::StringRef(state) == "fp32";
            LocalTensor local;
            local.dtype = DType::Float32;
            local.key = fp32 ? fp32Key(stage, g) : momentKey(stage, g, state);
            int64_t at = 0;
            for (const StageParam &p : params[g]) {
              auto f = find(fp32 ? p.full : p.full + "#" + state);
              if (!f)
                return f.takeError();
              const TpSlice &slice = slices[p.full][t];
              int64_t n = *checkedNumel(slice.shape), part = (n + dp - 1) / dp;
              int64_t b = std::min<int64_t>(r * part, n), e = std::min<int64_t>(b + part, n);
              if (b < e)
                addSliceRuns(local, *f, fulls[*f].shape, slice, b, e, at);
              at += part;
            }
            local.shape = {at};
            optim[r].tensors.push_back(std::move(local));
          }
    }
    for (unsigned r = 0; r < dp; ++r) {
      out.optimFiles.push_back(out.files.size());
      out.files.push_back(std::move(optim[r]));
      out.sliceMappings.push_back(std::move(mappings[r]));
      out.groupPaddings.push_back(std::move(paddings[r]));
    }
  }
  // MoE: what the engine saves per expert-parallel rank beside ZeRO's files.
  for (unsigned r = 0; r < ep && !moeModules.empty(); ++r) {
    out.exppFiles.push_back(out.files.size());
    out.files.push_back({(dirPrefix + exppFile(r)).str(), "torch-tree", {}, ""});
  }
  return out;
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
  /// MoE (_save_moe_checkpoint): each MoE layer's experts, in place of param_shapes.
  std::vector<int64_t> numExperts;
};

static llvm::Expected<ModelStates> loadModelStates(const std::string &path) {
  auto root = readTorchZip(path, {/*verifyChecksums=*/true, {}, /*releaseChecked=*/true});
  if (!root)
    return root.takeError();
  ModelStates states;
  states.root = *root;
  const DictValue *dict = states.root->get<DictValue>();
  ValuePtr shapes = dict ? dict->find("param_shapes") : nullptr;
  states.groups = shapes ? shapes->sequence() : nullptr;
  ValuePtr experts = dict ? dict->find("num_experts") : nullptr;
  if (const std::vector<ValuePtr> *counts = experts ? experts->sequence() : nullptr)
    for (const ValuePtr &count : *counts) {
      auto n = integerOf(count);
      if (!n || *n < 1)
        return fileError(path, "num_experts holds a count that is not positive");
      states.numExperts.push_back(*n);
    }
  if (!states.groups && states.numExperts.empty())
    return fileError(path, "no param_shapes list (nor DeepSpeed MoE's num_experts)");
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

/// What a tag folder's file names say: the optimizer files' tp and dp
/// ([bf16_]zero_pp_rank_R_mp_rank_MM_optim_states.pt, every one present) and a
/// pipeline's layer files (layer_XX-model_YY-model_states.pt), whose tp ranks make tp
/// and whose mp ranks make pp = mp ranks / tp. Layouts loom does not read are
/// refused by their files.
struct ScannedFolder {
  DeepSpeedConfig config;
  unsigned mpRanks = 1;
  std::set<std::pair<int64_t, unsigned>> layers; ///< (layer index, tp rank)
  /// MoE: (MoE layer, expert) of each layer_L_expert_E_mp_rank_00 file, and the ranks of
  /// the expp_rank_R_mp_rank_00 files.
  std::set<std::pair<int64_t, int64_t>> experts;
  std::set<unsigned> expp;
};

static llvm::Expected<ScannedFolder> scanTagFolder(const std::string &dir) {
  ScannedFolder scan;
  DeepSpeedConfig &config = scan.config;
  std::set<std::pair<unsigned, unsigned>> present;
  bool plain = false, bf16 = false;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec)) {
    llvm::StringRef name = llvm::sys::path::filename(it->path());
    if (name.starts_with("expert_"))
      return fileError(it->path(), "an expert file without its MoE layer's id, which DeepSpeed "
                                   "wrote before layer_L_expert_E_mp_rank_MM files; load and "
                                   "save it with a newer DeepSpeed first");
    if (llvm::StringRef rest = name; rest.consume_front("expp_rank_")) {
      unsigned rank = 0;
      auto [rankText, tail] = rest.split("_mp_rank_");
      if (rankText.getAsInteger(10, rank) || rank > 65535 ||
          tail != "00_optim_states.pt")
        return fileError(it->path(), "not a DeepSpeed MoE optimizer file of mp rank 0 "
                                     "(expp_rank_R_mp_rank_00_optim_states.pt); MoE "
                                     "checkpoints are read without tensor parallelism");
      scan.expp.insert(rank);
      continue;
    }
    if (llvm::StringRef rest = name; rest.consume_front("layer_") && rest.contains("_expert_")) {
      auto [layerText, tail] = rest.split("_expert_");
      auto [expertText, mpText] = tail.split("_mp_rank_");
      int64_t layer = 0, expert = 0;
      if (layerText.getAsInteger(10, layer) || expertText.getAsInteger(10, expert) ||
          layer > 99999 || expert > 99999 || mpText != "00_model_states.pt")
        return fileError(it->path(), "not a DeepSpeed expert file of mp rank 0 "
                                     "(layer_L_expert_E_mp_rank_00_model_states.pt); MoE "
                                     "checkpoints are read without tensor parallelism");
      scan.experts.insert({layer, expert});
      continue;
    }
    if (llvm::StringRef rest = name; rest.consume_front("layer_")) {
      auto [index, tail] = rest.split('-');
      int64_t layer = 0;
      unsigned rank = 0;
      if (!tail.consume_front("model_") || !tail.consume_back("-model_states.pt") ||
          index.getAsInteger(10, layer) || tail.getAsInteger(10, rank) || layer > 99999 ||
          rank > 65535)
        return fileError(it->path(),
                         "not a layer file of Megatron-DeepSpeed's pipeline "
                         "(layer_XX-model_YY-model_states.pt, YY the tensor-parallel rank); "
                         "pipelines without a model axis are read for no model");
      scan.layers.insert({layer, rank});
      config.pipeline = true;
      config.tp = std::max(config.tp, rank + 1);
      continue;
    }
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
    scan.mpRanks = std::max(scan.mpRanks, mp + 1);
  }
  if (ec)
    return fileError(dir, ec.message());
  if (plain && bf16)
    return fileError(dir, "holds both zero_pp_rank_* and bf16_zero_pp_rank_* optimizer files; "
                          "keep one run's files in a tag folder");
  config.bf16Names = bf16;
  if (!config.pipeline)
    config.tp = scan.mpRanks;
  else if (scan.mpRanks % config.tp)
    return fileError(dir, llvm::formatv("holds the optimizer files of {0} mp ranks, but its "
                                        "layer files are cut for tp={1}, which does not divide "
                                        "them into pipeline stages",
                                        scan.mpRanks, config.tp)
                              .str());
  config.pp = scan.mpRanks / config.tp;
  for (unsigned mp = 0; mp < scan.mpRanks; ++mp)
    for (unsigned r = 0; r < config.dp; ++r)
      if (!present.count({mp, r}))
        return fileError(dir + "/" + optimFile(config, mp, r),
                         llvm::formatv("missing: the folder's optimizer files go up to mp rank "
                                       "{0} and dp rank {1}, so all {2} x dp={3} are needed",
                                       scan.mpRanks - 1, config.dp - 1,
                                       config.pipeline
                                           ? llvm::formatv("tp={0} x pp={1}", config.tp, config.pp)
                                                 .str()
                                           : llvm::formatv("tp={0}", config.tp).str(),
                                       config.dp)
                             .str());
  return scan;
}

/// A DeepSpeed MoE checkpoint's parameters and groups (the full tensors with their
/// optimizer states), and its ep. _save_moe_checkpoint records no param_shapes: the
/// groups are read off the dp ranks' param_slice_mappings (a group's parameters follow
/// one another over the ranks it is cut for), the experts' names made global again,
/// and the shapes off the module and the experts' files. The rest is checked against
/// deepspeedShards, as for every DeepSpeed checkpoint.
static llvm::Error moeParams(const std::string &dir, const ScannedFolder &scan,
                             const ModelStates &model0, DeepSpeedConfig &config, Layout &layout) {
  const std::vector<int64_t> &numExperts = model0.numExperts;
  const std::string model0Path = dir + "/" + modelFile(config, 0, 0);
  if (scan.config.pipeline || scan.mpRanks > 1)
    return fileError(dir, "DeepSpeed MoE files beside tensor- or pipeline-parallel ones; MoE "
                          "checkpoints are read without tensor or pipeline parallelism");
  if (numExperts.empty() || scan.experts.empty())
    return fileError(dir, "holds DeepSpeed MoE files, but " +
                              llvm::Twine(numExperts.empty() ? "mp_rank_00_model_states.pt has "
                                                               "no num_experts list"
                                                             : "no expert file"));
  const unsigned ep = scan.expp.empty() ? 1 : *scan.expp.rbegin() + 1, dp = config.dp;
  for (unsigned r = 0; r < ep; ++r)
    if (!scan.expp.count(r))
      return fileError(dir + "/" + exppFile(r),
                       llvm::formatv("missing: the expert-parallel ranks' files go up to {0}",
                                     ep - 1)
                           .str());
  if (dp % ep)
    return fileError(dir, llvm::formatv("holds the optimizer files of dp={0}, which do not split "
                                        "into expert-parallel groups of the ep={1} expp_rank_* "
                                        "files",
                                        dp, ep)
                              .str());
  // The experts' files: exactly num_experts of each MoE layer, each holding its expert.
  llvm::StringMap<Tensor> expertTensors;
  std::vector<std::string> modules(numExperts.size());
  for (size_t l = 0; l < numExperts.size(); ++l)
    if (numExperts[l] % ep)
      return fileError(model0Path,
                       llvm::formatv("num_experts gives MoE layer {0} {1} experts, which do not "
                                     "divide over the ep={2} expert-parallel ranks of the "
                                     "expp_rank_* files",
                                     l, numExperts[l], ep)
                           .str());
  for (auto [layer, expert] : scan.experts)
    if (size_t(layer) >= numExperts.size() || expert >= numExperts[layer])
      return fileError(dir + "/" + expertFile(layer, expert),
                       "an expert file that num_experts (" + model0Path + ") does not count");
  for (size_t l = 0; l < numExperts.size(); ++l) {
    for (int64_t e = 0; e < numExperts[l]; ++e) {
      std::string file = dir + "/" + expertFile(l, e);
      if (!scan.experts.count({int64_t(l), e}))
        return fileError(file, llvm::formatv("missing: num_experts gives MoE layer {0} {1} "
                                             "experts",
                                             l, numExperts[l])
                                   .str());
      auto root = readTorchZip(file, {/*verifyChecksums=*/false, {}});
      if (!root)
        return root.takeError();
      for (NamedTensor &t : collectTensors(**root)) {
        auto expert = deepspeedExpertOf(t.name);
        if (!expert || expert->expert != e || (!modules[l].empty() && expert->module != modules[l]))
          return fileError(file, t.name + ": not a parameter of expert " + llvm::Twine(e) +
                                     (modules[l].empty() ? "" : " of " + modules[l]));
        modules[l] = expert->module;
        expertTensors[t.name] = std::move(t.tensor);
      }
    }
  }
  // Each group's parameters, in order, from the fragments of the ranks it is cut for.
  std::vector<std::vector<std::string>> groups;
  for (unsigned r = 0; r < dp; ++r) {
    std::string file = dir + "/" + optimFile(config, 0, r);
    auto root = readTorchZip(file, {/*verifyChecksums=*/false, {}});
    if (!root)
      return root.takeError();
    const DictValue *top = (*root)->get<DictValue>();
    ValuePtr osd = top ? top->find("optimizer_state_dict") : nullptr;
    const DictValue *state = osd ? osd->get<DictValue>() : nullptr;
    ValuePtr mappings = state ? state->find("param_slice_mappings") : nullptr;
    const std::vector<ValuePtr> *perGroup = mappings ? mappings->sequence() : nullptr;
    if (!perGroup || perGroup->empty())
      return fileError(file, "no param_slice_mappings, which loom reads a MoE checkpoint's "
                             "optimizer groups from (DeepSpeed saves no param_shapes with MoE)");
    if (r == 0)
      groups.resize(perGroup->size());
    if (perGroup->size() != groups.size())
      return fileError(file, llvm::formatv("param_slice_mappings has {0} groups, dp rank 0's {1}",
                                           perGroup->size(), groups.size())
                                 .str());
    for (size_t g = 0; g < groups.size(); ++g) {
      const DictValue *fragments = (*perGroup)[g]->get<DictValue>();
      if (!fragments)
        return fileError(file, llvm::formatv("param_slice_mappings[{0}] is not a dict", g).str());
      for (const auto &[key, value] : fragments->entries) {
        const std::string *name = key->get<std::string>();
        if (!name)
          return fileError(file, "a param_slice_mappings key is not a parameter name");
        std::string global = *name;
        if (auto expert = deepspeedExpertOf(*name)) {
          // Local expert ids count from the rank's first: ep rank r % ep holds
          // num_experts / ep of each layer's.
          size_t l = llvm::find(modules, expert->module) - modules.begin();
          if (l == modules.size() || expert->expert >= numExperts[l] / ep)
            return fileError(file, *name + ": not a local expert of the MoE layers' files "
                                           "over ep=" + llvm::Twine(ep));
          expert->expert += r % ep * (numExperts[l] / ep);
          global = expert->name();
        }
        if (!llvm::is_contained(groups[g], global))
          groups[g].push_back(std::move(global));
      }
    }
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    // Experts in the engine's order: layer by layer, expert by expert (rank by rank).
    std::vector<std::tuple<size_t, int64_t, size_t, std::string>> order;
    for (size_t i = 0; i < groups[g].size(); ++i)
      if (auto expert = deepspeedExpertOf(groups[g][i]))
        order.emplace_back(llvm::find(modules, expert->module) - modules.begin(), expert->expert,
                           i, groups[g][i]);
    if (order.empty())
      continue;
    llvm::sort(order);
    for (size_t i = 0; i < order.size() && i < groups[g].size(); ++i)
      groups[g][i] = std::get<3>(order[i]);
  }
  for (const auto &group : groups) {
    layout.paramGroups.emplace_back();
    for (const std::string &name : group) {
      const llvm::StringMap<Tensor> &from =
          deepspeedExpertOf(name) ? expertTensors : model0.module;
      auto found = from.find(name);
      if (found == from.end())
        return fileError(deepspeedExpertOf(name) ? dir : model0Path,
                         name + ": param_slice_mappings lists it, but " +
                             (deepspeedExpertOf(name) ? "no expert file" : "the module") +
                             " holds no such parameter");
      layout.paramGroups.back().push_back(name);
      layout.fulls.push_back({name, found->second.dtype, found->second.shape});
      for (const char *state : {"fp32", "exp_avg", "exp_avg_sq"})
        layout.fulls.push_back({name + "#" + state, DType::Float32, found->second.shape});
    }
  }
  config.ep = ep;
  return llvm::Error::success();
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
  DeepSpeedConfig config = scanned->config;
  const unsigned tp = config.tp, dp = config.dp, pp = config.pp, mpRanks = scanned->mpRanks;

  // ZeRO's state names its stage; the BF16_Optimizer's has none (bf16_optimizer.py,
  // state_dict()).
  std::string optim0Path = dir + "/" + optimFile(config, 0, 0);
  auto optim0 = readTorchZip(optim0Path, {/*verifyChecksums=*/true, {}, /*releaseChecked=*/true});
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
  if (config.pipeline && config.stage > 1)
    return fileError(optim0Path, llvm::formatv("ZeRO-{0} beside pipeline layer files, which "
                                               "DeepSpeed's PipelineEngine refuses to write",
                                               config.stage)
                                     .str());

  // Every mp rank's model states: param_shapes, each of its parameters' slices.
  std::vector<ModelStates> models;
  auto modelPath = [&](unsigned mp) { return dir + "/" + modelFile(config, mp, 0); };
  for (unsigned mp = 0; mp < mpRanks; ++mp) {
    if (!llvm::sys::fs::exists(modelPath(mp)))
      return fileError(modelPath(mp),
                       llvm::formatv("missing: the optimizer files are for {0}, and mp rank {1} "
                                     "has no model states",
                                     config.pipeline
                                         ? llvm::formatv("tp={0} x pp={1} mp ranks", tp, pp).str()
                                         : llvm::formatv("tp={0}", tp).str(),
                                     mp)
                           .str());
    auto states = loadModelStates(modelPath(mp));
    if (!states)
      return states.takeError();
    models.push_back(std::move(*states));
  }
  std::string model0Path = modelPath(0);
  const ModelStates &model0 = models.front();
  if (model0.mpWorldSize && *model0.mpWorldSize != mpRanks)
    return fileError(model0Path, llvm::formatv("mp_world_size is {0}, but the folder holds the "
                                               "optimizer files of {1} (mp_rank_MM files "
                                               "missing or left over?)",
                                               *model0.mpWorldSize,
                                               config.pipeline
                                                   ? llvm::formatv("tp={0} x pp={1}", tp, pp).str()
                                                   : llvm::formatv("tp={0}", tp).str())
                                     .str());
  if (model0.dpWorldSize && *model0.dpWorldSize != dp)
    return fileError(model0Path, llvm::formatv("dp_world_size is {0}, but the folder holds the "
                                               "optimizer files of dp={1}",
                                               *model0.dpWorldSize, dp)
                                     .str());
  std::optional<llvm::json::Object> args = megatronArgs(*model0.root);
  if (args)
    config.swiglu = args->getBoolean("swiglu").value_or(false);

  std::vector<std::vector<std::vector<std::pair<std::string, llvm::SmallVector<int64_t, 4>>>>>
      shapes(mpRanks);
  const bool moe = !scanned->experts.empty() || !scanned->expp.empty();
  for (unsigned mp = 0; mp < mpRanks && !moe; ++mp)
    for (const ValuePtr &group : *models[mp].groups) {
      auto listed = shapesOf(group, modelPath(mp));
      if (!listed)
        return listed.takeError();
      shapes[mp].push_back(std::move(*listed));
    }

  Layout layout;
  layout.format = config.bf16Optimizer ? "deepspeed-bf16"
                                       : llvm::formatv("deepspeed-zero{0}", config.stage).str();
  layout.iteration = model0.iteration;
  // The parameters: tp rank 0's param_shapes of each stage, groups joined across the
  // stages, each under its full tensor's name (GPTModel's, in a pipeline, where the
  // later stages' copies of the tied embedding are left to the check below). Full
  // shapes put the slices side by side on the dimension they are cut on.
  const size_t groups = shapes[0].size();
  layout.paramGroups.resize(groups);
  std::vector<std::pair<int64_t, int64_t>> stageLayers(pp, {INT64_MAX, -1});
  std::map<int64_t, llvm::StringMap<Tensor>> layerTensors; // tp rank 0's layer files
  llvm::StringSet<> seen;
  for (unsigned s = 0; s < pp; ++s) {
    unsigned mp = s * tp;
    if (shapes[mp].size() != groups)
      return fileError(modelPath(mp), llvm::formatv("param_shapes has {0} groups, mp rank 0's {1}",
                                                    shapes[mp].size(), groups)
                                          .str());
    for (size_t g = 0; g < groups; ++g)
      for (const auto &[listed, sliceShape] : shapes[mp][g]) {
        std::string name = listed;
        DType paramType = DType::Float32;
        int64_t layer = 1; // a pipeline's: the parameter's layer
        if (config.pipeline) {
          auto gpt = gptNameOfPipe(listed);
          if (!gpt)
            return fileError(modelPath(mp),
                             listed + ": not a parameter name of Megatron-DeepSpeed's "
                                      "GPTModelPipe (tied_modules.embed.*, or a layer's index "
                                      "and its parameter); DeepSpeed pipelines are read for "
                                      "Megatron-DeepSpeed GPT models");
          if (s > 0 && llvm::StringRef(listed).starts_with("tied_modules."))
            continue;
          name = *gpt;
          if (!llvm::StringRef(listed).starts_with("tied_modules."))
            llvm::StringRef(listed).split('.').first.getAsInteger(10, layer);
          stageLayers[s] = {std::min(stageLayers[s].first, layer),
                            std::max(stageLayers[s].second, layer)};
        }
        // The full shape: the slices side by side on the dimension they are cut on.
        llvm::SmallVector<int64_t, 4> shape = sliceShape;
        auto dim = tpDim(name, tp);
        if (!dim)
          return fileError(modelPath(mp), llvm::toString(dim.takeError()));
        if (*dim && **dim < shape.size())
          shape[**dim] *= tp;
        if (!checkedNumel(shape))
          return fileError(modelPath(mp), name + ": too many elements");
        if (config.pipeline) {
          // The 16-bit weight's dtype, from its layer file.
          if (!layerTensors.count(layer)) {
            std::string file = dir + "/" + layerFile(layer, 0);
            if (!llvm::sys::fs::exists(file))
              return fileError(file, llvm::formatv("missing: mp rank {0}'s param_shapes list {1}, "
                                                   "whose layer file this is",
                                                   mp, listed)
                                         .str());
            auto root = readTorchZip(file, {/*verifyChecksums=*/false, {}});
            if (!root)
              return root.takeError();
            for (NamedTensor &t : collectTensors(**root))
              layerTensors[layer][t.name] = std::move(t.tensor);
          }
          auto [layerIndex, key] = llvm::StringRef(listed).split('.');
          if (layerIndex == "tied_modules")
            key = key.split('.').second;
          auto found = layerTensors[layer].find(key);
          if (found == layerTensors[layer].end())
            return fileError(dir + "/" + layerFile(layer, 0),
                             key + ": missing (mp rank " + llvm::Twine(mp) +
                                 "'s param_shapes list " + listed + ")");
          paramType = found->second.dtype;
        } else if (config.stage <= 2) {
          auto found = model0.module.find(name);
          if (found == model0.module.end() || found->second.shape != sliceShape)
            return fileError(model0Path,
                             "module has no " + name + " of the shape param_shapes gives");
          paramType = found->second.dtype;
        }
        if (!seen.insert(name).second)
          return fileError(modelPath(mp), name + ": listed twice in param_shapes");
        layout.paramGroups[g].push_back(name);
        layout.fulls.push_back({name, paramType, shape});
        for (const char *state : {"fp32", "exp_avg", "exp_avg_sq"})
          if (config.stage <= 2 || llvm::StringRef(state) != "fp32")
            layout.fulls.push_back({name + "#" + state, DType::Float32, shape});
      }
  }
  if (moe)
    if (llvm::Error err = moeParams(dir, *scanned, model0, config, layout))
      return std::move(err);
  // The stages' layers, as bounds over GPTModelPipe's list: contiguous, in order.
  if (config.pipeline) {
    config.pipeParts.push_back(0);
    for (unsigned s = 0; s < pp; ++s) {
      auto [first, last] = stageLayers[s];
      if (last < 0)
        return fileError(modelPath(s * tp), llvm::formatv("pipeline stage {0} holds no layer of "
                                                          "its own",
                                                          s)
                                                .str());
      if (first < config.pipeParts.back())
        return fileError(modelPath(s * tp),
                         llvm::formatv("pipeline stage {0} holds layer {1}, before the layers "
                                       "of stage {2}",
                                       s, first, s - 1)
                             .str());
      if (s > 0)
        config.pipeParts.push_back(first);
      if (s + 1 == pp)
        config.pipeParts.push_back(last + 1);
    }
  }
  if (ValuePtr state =
          osdDict->find(config.stage <= 2 ? "base_optimizer_state" : "optimizer_state_dict"))
    if (auto *sd = state->get<DictValue>())
      if (ValuePtr perGroup = sd->find("state"))
        if (auto *pg = perGroup->get<DictValue>(); pg && !pg->entries.empty())
          if (auto *first = pg->entries.front().second->get<DictValue>())
            layout.optimizerStep = stepNumber(first->find("step"));

  auto shards = deepspeedShards(layout.fulls, layout.paramGroups, config, prefix,
                                /*tiedCopies=*/false);
  if (!shards)
    return fileError(path, llvm::toString(shards.takeError()));
  std::string what =
      config.pipeline
          ? llvm::formatv("{0} with tp={1}, pp={2}, dp={3}", layout.format, tp, pp, dp).str()
      : moe ? llvm::formatv("{0} with dp={1}, ep={2}", layout.format, dp, config.ep).str()
            : llvm::formatv("{0} with tp={1}, dp={2}", layout.format, tp, dp).str();
  // Every mp rank's param_shapes: the parameters (names, order and slices' shapes) the
  // rules give it (MoE's model states have none).
  for (unsigned mp = 0; mp < mpRanks && !moe; ++mp) {
    const auto &expected = shards->paramShapes[mp];
    if (shapes[mp].size() != expected.size())
      return fileError(modelPath(mp), llvm::formatv("param_shapes has {0} groups, mp rank 0's {1}",
                                                    shapes[mp].size(), expected.size())
                                          .str());
    for (size_t g = 0; g < expected.size(); ++g) {
      if (shapes[mp][g].size() != expected[g].size())
        return fileError(modelPath(mp), llvm::formatv("param_shapes group {0} lists {1} "
                                                      "parameters where {2} places {3}",
                                                      g, shapes[mp][g].size(), what,
                                                      expected[g].size())
                                            .str());
      for (size_t i = 0; i < expected[g].size(); ++i) {
        const auto &[name, sliceShape] = shapes[mp][g][i];
        if (name != expected[g][i].first)
          return fileError(modelPath(mp), llvm::formatv("param_shapes group {0} lists {1} where "
                                                        "{2} puts {3}",
                                                        g, name, what, expected[g][i].first)
                                              .str());
        if (sliceShape != expected[g][i].second) {
          const FullTensor *full =
              layout.findFull(config.pipeline ? gptNameOfPipe(name).value_or(name) : name);
          return fileError(modelPath(mp), llvm::formatv("{0}: param_shapes gives [{1}], but mp "
                                                        "rank {2}'s slice of the full [{3}] is "
                                                        "[{4}]",
                                                        name, shapeText(sliceShape), mp,
                                                        shapeText(full->shape),
                                                        shapeText(expected[g][i].second))
                                              .str());
        }
      }
    }
  }
  // A pipeline's layer files: exactly those of the stages' layers.
  std::set<std::string> layerPaths;
  for (size_t i : shards->layerFiles)
    layerPaths.insert(llvm::sys::path::filename(shards->files[i].path).str());
  for (auto [layer, rank] : scanned->layers)
    if (!layerPaths.count(layerFile(layer, rank)))
      return fileError(dir + "/" + layerFile(layer, rank),
                       "a layer file of no parameter param_shapes lists (" + what + ")");

  // Kept by a universal file, so that a round trip through it regroups the same way.
  llvm::json::Array groupsJson;
  for (const auto &group : layout.paramGroups)
    groupsJson.push_back(llvm::json::Array(group));
  llvm::json::Object sourceArgs{{"zero_stage", config.stage},
                                {"dp", dp},
                                {"tp", tp},
                                {"optimizer", config.bf16Optimizer ? "bf16" : "zero"},
                                {"param_groups", std::move(groupsJson)}};
  if (config.pipeline) {
    sourceArgs["pp"] = pp;
    sourceArgs["pipeline_parts"] = llvm::json::Array(config.pipeParts);
  }
  if (moe)
    sourceArgs["ep"] = config.ep;
  if (args)
    sourceArgs["args"] = std::move(*args);
  layout.sourceArgs = llvm::formatv("{0}", llvm::json::Value(std::move(sourceArgs)));
  // What the rules predict must be what every rank's file holds.
  for (size_t i = 0; i < shards->files.size(); ++i) {
    ShardFile &file = shards->files[i];
    file.format = "torch";
    if (file.tensors.empty())
      continue;
    std::string filePath = path + "/" + file.path;
    if (!llvm::sys::fs::exists(filePath))
      return fileError(filePath, "missing (" + what + " puts " + file.tensors.front().key +
                                     " there)");
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
    auto optimIndex = llvm::find(shards->optimFiles, i) - shards->optimFiles.begin();
    if (size_t(optimIndex) == shards->optimFiles.size())
      continue;
    const DictValue *rankTop = (*root)->get<DictValue>();
    ValuePtr rankOsd = rankTop ? rankTop->find("optimizer_state_dict") : nullptr;
    const DictValue *rankState = rankOsd ? rankOsd->get<DictValue>() : nullptr;
    if (!rankState)
      return fileError(filePath, "no optimizer_state_dict");
    // partition_count: dp, or one count per group (dp / ep for a group of experts).
    if (ValuePtr counts = rankState->find("partition_count")) {
      std::vector<ValuePtr> one{counts};
      const std::vector<ValuePtr> &listed = counts->sequence() ? *counts->sequence() : one;
      for (size_t g = 0; g < listed.size(); ++g) {
        int64_t want = shards->partitionCounts[std::min(g, shards->partitionCounts.size() - 1)];
        if (integerOf(listed[g]) != std::optional<int64_t>(want))
          return fileError(filePath, llvm::formatv("partition_count says {0} ranks, but the "
                                                   "folder holds the files of {1}",
                                                   integerOf(listed[g]).value_or(-1),
                                                   want == dp ? llvm::formatv("dp={0}", dp).str()
                                                              : llvm::formatv("dp={0} over ep={1} "
                                                                              "for group {2}",
                                                                              dp, config.ep, g)
                                                                    .str())
                                         .str());
      }
    }
    // param_slice_mappings (ZeRO-1/2 and BF16_Optimizer, may be empty): each
    // parameter's place in the fp32 partition, as the rules put it.
    ValuePtr mappings = rankState->find("param_slice_mappings");
    const std::vector<ValuePtr> *perGroup = mappings ? mappings->sequence() : nullptr;
    if (config.stage > 2 || !perGroup || perGroup->empty())
      continue;
    const auto &expected = shards->sliceMappings[optimIndex];
    if (perGroup->size() != expected.size())
      return fileError(filePath, llvm::formatv("param_slice_mappings has {0} groups, "
                                               "param_shapes {1}",
                                               perGroup->size(), expected.size())
                                     .str());
    for (size_t g = 0; g < perGroup->size(); ++g) {
      const DictValue *recorded = (*perGroup)[g]->get<DictValue>();
      if (!recorded || recorded->entries.size() != expected[g].size())
        return fileError(filePath, llvm::formatv("param_slice_mappings[{0}] does not list the "
                                                 "{1} parameters the rules place in this "
                                                 "partition",
                                                 g, expected[g].size())
                                       .str());
      for (const DeepSpeedShards::Fragment &fragment : expected[g]) {
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
  layout.files = std::move(shards->files);
  return layout;
}

/// One mp rank's param_shapes, one list per group of (name, shape).
using ParamShapes = std::vector<std::vector<std::pair<std::string, llvm::SmallVector<int64_t, 4>>>>;

/// What DeepSpeed's engine pickles in an mp rank's model states (engine.py,
/// _save_checkpoint): the module's tensors (keys "module.<name>" in `file`; none for a
/// pipeline, whose module is None), the parameters' (slices') shapes per optimizer
/// group, the engine's counters, and Megatron-DeepSpeed's client state when `args`
/// is given (checkpointing.py, save_checkpoint: args, checkpoint_version, iteration).
/// With `numExperts` (MoE), what _save_moe_checkpoint saves instead: no param_shapes,
/// each MoE layer's experts as num_experts.
static llvm::json::Array modelStatesSkeleton(const ShardFile &file, const ParamShapes &shapes,
                                             int64_t iteration, const DeepSpeedConfig &config,
                                             const llvm::json::Object *args,
                                             llvm::ArrayRef<int64_t> numExperts = {}) {
  auto tensorRef = [](const std::string &key) { return llvm::json::Object{{"$tensor", key}}; };
  llvm::json::Array module, groups;
  for (const LocalTensor &t : file.tensors)
    module.push_back(llvm::json::Array{llvm::StringRef(t.key).drop_front(7), tensorRef(t.key)});
  for (const auto &group : shapes) {
    llvm::json::Array entries;
    for (const auto &[name, shape] : group)
      entries.push_back(
          llvm::json::Array{name, llvm::json::Object{{"$size", llvm::json::Array(shape)}}});
    groups.push_back(llvm::json::Object{{"$odict", std::move(entries)}});
  }
  llvm::json::Value moduleValue = nullptr;
  if (!config.pipeline)
    moduleValue = llvm::json::Object{{"$odict", std::move(module)}};
  llvm::json::Array root;
  auto add = [&](llvm::StringRef key, llvm::json::Value value) {
    root.push_back(llvm::json::Array{key, std::move(value)});
  };
  const bool moe = !numExperts.empty();
  add("module", std::move(moduleValue));
  if (!moe) {
    add("buffer_names", llvm::json::Array{});
    add("optimizer", nullptr);
    add("param_shapes", std::move(groups));
    add("frozen_param_shapes", nullptr);
    add("shared_params", llvm::json::Object{});
    add("frozen_param_fragments", nullptr);
  }
  add("lr_scheduler", nullptr);
  if (moe) {
    add("data_sampler", nullptr);
    add("random_ltd", nullptr);
  }
  add("skipped_steps", 0);
  add("global_steps", iteration);
  add("dp_world_size", config.dp);
  add("mp_world_size", config.tp * config.pp);
  if (moe) {
    add("num_experts", llvm::json::Array(numExperts));
  } else {
    add("ds_config", llvm::json::Object{});
    add("ds_version", "0.14.0");
  }
  if (args) {
    root.push_back(llvm::json::Array{
        "args", llvm::json::Object{{"$object", "argparse.Namespace"},
                                   {"state", llvm::json::Object(*args)}}});
    root.push_back(llvm::json::Array{"checkpoint_version", llvm::json::Object{{"$float", 3.0}}});
    root.push_back(llvm::json::Array{"iteration", iteration});
  }
  return root;
}

/// What PipelineModule.save_state_dict saves for a layer: its state_dict, an
/// OrderedDict of the weights; what _save_moe_checkpoint saves for an expert: a plain
/// dict of them.
static llvm::json::Value stateDictSkeleton(const ShardFile &file, bool ordered) {
  llvm::json::Array entries;
  for (const LocalTensor &t : file.tensors)
    entries.push_back(llvm::json::Array{t.key, llvm::json::Object{{"$tensor", t.key}}});
  return llvm::json::Object{{ordered ? "$odict" : "$dict", std::move(entries)}};
}

/// What DeepSpeed's engine pickles in dp rank `rank`'s optimizer file
/// (_save_zero_checkpoint): the optimizer's state_dict() — stage_1_and_2.py's,
/// stage3.py's or bf16_optimizer.py's — with the flat tensors of groups partitioned
/// over `partitionCounts` ranks each.
static llvm::json::Array
optimStatesSkeleton(llvm::ArrayRef<int64_t> partitionCounts,
                    llvm::ArrayRef<std::vector<DeepSpeedShards::Fragment>> mappings,
                    llvm::ArrayRef<int64_t> paddings, const DeepSpeedConfig &config, int64_t step) {
  auto tensorRef = [](const std::string &key) { return llvm::json::Object{{"$tensor", key}}; };
  unsigned stage = config.stage;
  llvm::json::Array fp32, state, paramGroups, paddingsJson, counts, mappingsJson;
  for (size_t g = 0; g < partitionCounts.size(); ++g) {
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
    counts.push_back(partitionCounts[g]);
    if (stage == 3)
      continue;
    paddingsJson.push_back(paddings[g]);
    llvm::json::Array entries;
    for (const DeepSpeedShards::Fragment &f : mappings[g])
      entries.push_back(llvm::json::Array{
          f.param, llvm::json::Object{
                       {"$object", "deepspeed.utils.tensor_fragment.fragment_address"},
                       {"state", llvm::json::Object{{"numel", f.numel}, {"start", f.start}}}}});
    mappingsJson.push_back(llvm::json::Object{{"$odict", std::move(entries)}});
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
    osd.push_back(llvm::json::Array{"group_paddings", std::move(paddingsJson)});
    osd.push_back(llvm::json::Array{"partition_count", std::move(counts)});
    osd.push_back(llvm::json::Array{"ds_version", "0.14.0"});
    osd.push_back(llvm::json::Array{"param_slice_mappings", std::move(mappingsJson)});
  }
  return llvm::json::Array{
      llvm::json::Array{"optimizer_state_dict", llvm::json::Object{{"$dict", std::move(osd)}}},
      llvm::json::Array{"ds_config", llvm::json::Object{}},
      llvm::json::Array{"ds_version", "0.14.0"}};
}

static std::string skeletonText(llvm::json::Array root) {
  return llvm::formatv("{0}", llvm::json::Value(llvm::json::Object{{"$dict", std::move(root)}}));
}

llvm::Expected<std::vector<ShardFile>>
reshard::deepspeedTarget(const Layout &source, Layout &target, DeepSpeedConfig config) {
  unsigned stage = config.stage;
  std::vector<std::vector<std::string>> groups = source.paramGroups;
  if (groups.empty()) {
    groups.emplace_back();
    for (const FullTensor &f : target.fulls)
      if (f.name.find('#') == std::string::npos)
        groups.back().push_back(f.name);
  }
  // MoE: each group's experts in a group of their own, after all the others
  // (split_params_into_different_moe_groups_for_optimizer); a DeepSpeed source's
  // groups stay as they are.
  std::vector<std::vector<std::string>> expertGroups;
  for (std::vector<std::string> &group : groups) {
    std::vector<std::string> experts;
    llvm::erase_if(group, [&](const std::string &name) {
      if (!deepspeedExpertOf(name))
        return false;
      experts.push_back(name);
      return true;
    });
    if (!experts.empty())
      expertGroups.push_back(std::move(experts));
  }
  llvm::erase_if(groups, [](const std::vector<std::string> &group) { return group.empty(); });
  llvm::append_range(groups, expertGroups);
  // What a DeepSpeed source (or a universal file made from one) says of the model:
  // Megatron-DeepSpeed's args, whose swiglu says how dense_h_to_4h is cut, and the
  // stages its pipeline had, kept when the layers and stages are the same.
  std::optional<llvm::json::Object> args;
  if (auto parsed = llvm::json::parse(source.sourceArgs.empty() ? "{}" : source.sourceArgs)) {
    if (auto *o = parsed->getAsObject()) {
      if (auto *a = o->getObject("args"))
        args = *a;
      if (auto *parts = o->getArray("pipeline_parts");
          parts && config.pipeline && parts->size() == config.pp + 1 &&
          o->getInteger("pp") == int64_t(config.pp))
        for (const llvm::json::Value &bound : *parts)
          config.pipeParts.push_back(bound.getAsInteger().value_or(-1));
    }
  } else {
    llvm::consumeError(parsed.takeError());
  }
  if (args) {
    config.swiglu = args->getBoolean("swiglu").value_or(false);
    (*args)["tensor_model_parallel_size"] = config.tp;
    (*args)["pipeline_model_parallel_size"] = config.pipeline ? config.pp : 1;
    (*args)["no_pipeline_parallel"] = !config.pipeline;
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
  auto shards = deepspeedShards(target.fulls, groups, config, tag + "/");
  if (!shards)
    return shards.takeError();
  int64_t step = source.optimizerStep.value_or(source.iteration);
  if (args && !shards->numExperts.empty())
    (*args)["moe_expert_parallel_size"] = config.ep;
  // Skeletons: what DeepSpeed's engine pickles, with the tensors at their places.
  for (size_t i = 0; i < shards->modelFiles.size(); ++i) {
    ShardFile &file = shards->files[shards->modelFiles[i]];
    unsigned mp = i / (stage == 3 ? config.dp : 1);
    file.meta = skeletonText(modelStatesSkeleton(file, shards->paramShapes[mp], source.iteration,
                                                 config, args ? &*args : nullptr,
                                                 shards->numExperts));
  }
  for (size_t i : shards->layerFiles)
    shards->files[i].meta = llvm::formatv("{0}", stateDictSkeleton(shards->files[i], true));
  for (size_t i : shards->expertFiles)
    shards->files[i].meta = llvm::formatv("{0}", stateDictSkeleton(shards->files[i], false));
  // Under ZeRO and bf16 the engine leaves the optimizer out of the expp files.
  for (size_t i : shards->exppFiles)
    shards->files[i].meta =
        skeletonText(llvm::json::Array{llvm::json::Array{"optimizer", nullptr}});
  for (size_t i = 0; i < shards->optimFiles.size(); ++i)
    shards->files[shards->optimFiles[i]].meta =
        skeletonText(optimStatesSkeleton(shards->partitionCounts, shards->sliceMappings[i],
                                         shards->groupPaddings[i], config, step));
  shards->files.push_back({"latest", "text", {}, tag});
  return std::move(shards->files);
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
  ParamShapes shapes;
  for (const auto &group : groups) {
    shapes.emplace_back();
    for (const std::string &name : group)
      shapes.back().emplace_back(name, target.findFull(name)->shape);
  }
  model.meta = skeletonText(
      modelStatesSkeleton(model, shapes, source.iteration, DeepSpeedConfig{}, nullptr));
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
        auto root = readTorchZip(file, {/*verifyChecksums=*/true, {}, /*releaseChecked=*/true});
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
