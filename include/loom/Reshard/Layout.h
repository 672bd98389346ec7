//===- Layout.h - where every byte of a checkpoint's tensors lives -*- C++ -*-===//
//
// A resharding program is derived from two layouts of the same *full* tensors: the
// layout a checkpoint was written in and the one wanted. A layout lists files; each
// file holds *local* tensors (a Megatron rank's fused QKV, a safetensors shard's
// weight, a universal dataset); each local tensor is tiled by *pieces*, each piece a
// box of one full tensor placed at a box of the local tensor of the same sizes.
// Regions of a local tensor no piece covers are padding (Megatron's vocabulary rows
// past the tokenizer's) and are zero in a written file.
//
// Full tensors are named the Hugging Face (Llama) way, the names every reader in
// lib/Checkpoint unshards to, with the optimizer state as a suffix: a parameter's
// Adam moments are "<name>#exp_avg", "<name>#exp_avg_sq", its fp32 master
// "<name>#fp32".
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_RESHARD_LAYOUT_H
#define LOOM_RESHARD_LAYOUT_H

#include "loom/Checkpoint/Megatron.h"
#include "loom/Checkpoint/Tensor.h"

#include "llvm/Support/JSON.h"

#include <optional>
#include <string>
#include <vector>

namespace loom::reshard {

struct Box {
  llvm::SmallVector<int64_t, 4> offsets, sizes;
  uint64_t volume() const;
  /// The common part of two boxes of equal rank, or nullopt when it is empty.
  std::optional<Box> intersect(const Box &other) const;
  /// This box without `other`: at most 2·rank boxes, appended to `out`.
  void subtract(const Box &other, std::vector<Box> &out) const;
  static Box whole(llvm::ArrayRef<int64_t> shape);
};

struct FullTensor {
  std::string name;
  ckpt::DType dtype = ckpt::DType::Float32;
  llvm::SmallVector<int64_t, 4> shape;
  /// In a target layout: the source's full tensor this one is made from, when the
  /// names differ (ZeRO-3 keeps the fp32 master "<name>#fp32" as "<name>").
  std::string from;
};

struct Piece {
  /// Index into Layout::fulls.
  unsigned full = 0;
  Box fullBox;
  /// Where fullBox lands in the local tensor: same sizes, offsets in local coordinates.
  /// For a flat piece, one offset: where the box starts in the 1-D local tensor.
  llvm::SmallVector<int64_t, 4> localOffsets;
  /// The local tensor is a flat buffer (a ZeRO partition, a Megatron grad buffer)
  /// holding the box's elements in the box's own row-major order from
  /// localOffsets[0]. ZeRO's boxes are contiguous in the full tensor (flatRuns cuts
  /// any element range into such boxes); a Megatron row-parallel slice is one box
  /// whose rows are apart in the full tensor.
  bool flat = false;
};

/// The boxes of a tensor of `shape` whose row-major elements are [begin, end), each
/// contiguous, in order: at most 2·rank - 1 of them.
std::vector<Box> flatRuns(llvm::ArrayRef<int64_t> shape, int64_t begin, int64_t end);

/// Row-major position of `offsets` in a tensor of `shape`.
int64_t linearIndex(llvm::ArrayRef<int64_t> shape, llvm::ArrayRef<int64_t> offsets);

struct LocalTensor {
  /// How the file's format addresses the tensor (a state-dict path, a dataset name).
  std::string key;
  ckpt::DType dtype = ckpt::DType::Float32;
  llvm::SmallVector<int64_t, 4> shape;
  std::vector<Piece> pieces;
};

/// Full tensor `f` of `layout`, whole, as the local tensor `key` (the full tensor's
/// name when empty).
struct Layout;
LocalTensor wholeLocal(const Layout &layout, unsigned f, std::string key = "");

struct ShardFile {
  /// Relative to the checkpoint's root; "." when the checkpoint is this one file.
  std::string path;
  /// "torch", "megatron", "safetensors", "universal", "dcp" (a DCP directory read as
  /// a whole) or "text" (no tensors: `text` is the content).
  std::string format;
  std::vector<LocalTensor> tensors;
  /// Format-specific facts the writer needs (Megatron's args and iteration, a
  /// universal file's metadata) as JSON text, or the content of a text file.
  std::string meta;
};

/// The model shape that fused layouts (Megatron) depend on.
struct ModelDims {
  int64_t layers = 0, hidden = 0, heads = 0, kvHeads = 0, headDim = 0, ffn = 0, vocab = 0;
  bool swiglu = false;
  /// A Mixtral-like mixture of experts: routed experts per layer (0: dense), each an
  /// MLP of moeFfn rows, topK per token, and shared experts of sharedFfn rows in all
  /// (0: none).
  int64_t experts = 0, moeFfn = 0, topK = 0, sharedFfn = 0;
  /// The layers of a mixture of experts that hold a dense MLP of ffn rows instead
  /// (Megatron's moe_layer_freq, Qwen2-MoE's mlp_only_layers); empty: every layer
  /// routes.
  std::vector<int64_t> denseLayers;
};

struct Layout {
  /// "megatron-mcore", "hf-safetensors", "universal", ...
  std::string format;
  std::vector<FullTensor> fulls;
  std::vector<ShardFile> files;
  /// What the source says of the model (Megatron args, HF config.json, the
  /// universal file's model config), for targets that need the dimensions.
  std::optional<ModelDims> dims;
  /// The source's own model config, as its text (an HF folder's config.json, a
  /// universal file's model_config): targets that hold a config carry it whole,
  /// rope_theta, rms_norm_eps, architectures and all. Empty when there is none.
  std::string modelConfig;
  /// JSON of the source's settings that a target of the same family keeps (Megatron args).
  std::string sourceArgs;
  /// A universal file's source_format: the format it was converted from, whose
  /// settings (sourceArgs, optimizerGroups) it carries.
  std::string convertedFrom;
  int64_t iteration = 0;
  /// Adam's step count, when the source keeps optimizer states.
  std::optional<int64_t> optimizerStep;
  /// The optimizer's parameter groups (DeepSpeed flattens each on its own); empty
  /// when the source does not say.
  std::vector<std::vector<std::string>> paramGroups;
  /// The groups' optimizer settings (lr, betas, ...) as a JSON array, when the source
  /// keeps them (Megatron).
  std::string optimizerGroups;
  /// A source's replicated tensors whose copies differ (Megatron's TP replicas, tied
  /// embeddings and dense copies across expert-parallel ranks,
  /// ckpt::MegatronLayout::divergentReplicas). A program reads the first copy of a
  /// replicated tensor; `loom reshard` refuses such a source unless told to take it.
  std::vector<ckpt::DivergentReplica> divergentReplicas;

  const FullTensor *findFull(llvm::StringRef name) const;
};

/// Checks that pieces lie inside their full and local tensors, that the pieces of a
/// local tensor do not overlap, and that every full tensor is covered. Used on
/// layouts built from files and on the targets built here; `what` names the layout.
/// A `source` layout's pieces of one full tensor are disjoint or the same box
/// (replicas, read once); a target's may overlap however they are cut (a pipeline's
/// copies of a tied embedding sit in other partitions than the first stage's).
llvm::Error checkLayout(const Layout &layout, llvm::StringRef what, bool source = true);

/// "megatron", "megatron-dist" (torch_dist), "hf", "dcp", "deepspeed", "deepspeed-universal",
/// "universal", "torch", "safetensors", or ""
/// when nothing is at `path`. Looks at names and magic bytes only.
std::string detectFormat(const llvm::Twine &path);

/// The dimensions as a Hugging Face–style config.json object.
std::string configJson(const ModelDims &dims);

/// Describes the checkpoint at `path` (any format lib/Checkpoint reads) without
/// reading tensor data: a Megatron folder, an HF folder, a torch file, a safetensors
/// file, a DCP folder or a universal file.
llvm::Expected<Layout> describeCheckpoint(const llvm::Twine &path);

/// What `--to` asks for: a format and its parallel degrees.
struct TargetSpec {
  std::string format; ///< megatron, deepspeed, hf-safetensors, torch, dcp, universal
  unsigned tp = 1, pp = 1;
  unsigned zero = 1, dp = 1; ///< deepspeed (tp too, for Megatron-DeepSpeed's slices)
  unsigned ep = 1;           ///< megatron, deepspeed: expert-parallel size of a MoE model's experts
  /// megatron: the routed experts' tensor-parallel size (expert_tensor_parallel_size),
  /// 0 for tp.
  unsigned etp = 0;
  bool pipeline = false; ///< deepspeed: pp given, DeepSpeed's PipelineModule layout
  bool bf16Optimizer = false; ///< deepspeed: optimizer=bf16
  uint64_t shardBytes = 5ull << 30; ///< hf-safetensors
  unsigned ranks = 1; ///< dcp: each tensor's rows split over this many ranks' files
  /// Leave optimizer states out (formats that cannot hold them refuse them otherwise).
  bool weightsOnly = false;
  /// megatron: optimizer=distributed, the distributed optimizer's distrib_optim.pt.
  bool distributedOptimizer = false;
  /// megatron: format=torch_dist, Megatron-core's distributed checkpoint (a DCP folder
  /// of global tensors, common.pt, metadata.json) rather than the torch format.
  bool torchDist = false;
  /// megatron: the transformer layers of the first and of the last pipeline stage
  /// (first=N, last=N: Megatron-LM's --decoder-first/last-pipeline-num-layers), the
  /// other stages sharing the rest evenly; 0: that stage takes an even share too.
  unsigned firstLayers = 0, lastLayers = 0;
  /// The options the text gave ("tp", "dp", ...), so a plan's degrees can fill the rest.
  std::vector<std::string> given;
};
/// "2GiB", "500MiB", "64KiB" or a byte count; nothing if it is none of those.
std::optional<uint64_t> parseByteSize(llvm::StringRef text);
/// Parses "megatron:tp=4,pp=2[,ep=2][,etp=1][,first=N][,last=N][,optimizer=distributed]
/// [,format=torch_dist]",
/// "deepspeed:zero=1,dp=2,tp=2[,pp=2][,ep=2],optimizer=bf16",
/// "hf-safetensors:shard=2GiB", "dcp:ranks=4", "universal", "torch".
llvm::Expected<TargetSpec> parseTargetSpec(llvm::StringRef text);

/// The layout the target format gives the full tensors of `source`.
llvm::Expected<Layout> targetLayout(const Layout &source, const TargetSpec &target);

/// What the places of parameters in Megatron's distributed-optimizer buffers
/// (distrib_optim.pt) depend on besides their shapes: DDP's bucketing and the
/// buffers' gradient dtype, settings of the run that the args record.
struct MegatronDistOpt {
  /// Elements per bucket on the first pipeline stage (training.py,
  /// resolve_ddp_bucket_size: --ddp-bucket-size, else max(4e7, 1e6·dp·cp), with
  /// --overlap-grad-reduce only); 0 for one bucket per buffer. Later stages always
  /// keep one.
  int64_t bucketSize = 0;
  /// --ddp-num-buckets: the first stage's bucket size is its parameter count over this.
  int64_t numBuckets = 0;
  /// Gradients reduced in fp32 (--accumulate-allreduce-grads-in-fp32, which bf16
  /// turns on): a buffer's key is (param dtype, float32), else (param dtype, param
  /// dtype). Unset: on for bf16 parameters, off otherwise, as Megatron's defaults.
  std::optional<bool> gradReduceInFp32;
  /// Tied word embedding and output layer over pp > 1 stages: each takes a bucket of
  /// its own (shared_embedding, language_module.py).
  bool sharedEmbedding = false;
};

/// The MegatronDistOpt a Megatron args object (MegatronLayout::argsJson's keys)
/// describes for `pp` stages.
MegatronDistOpt megatronDistOptFromArgs(const llvm::json::Object &args, unsigned pp);

/// Megatron's shards of `fulls` for the given degrees, file by file, stage-major, then
/// TP rank, then expert-parallel rank (`dirPrefix` +
/// mp_rank_TT[_PPP][_EEE]/model_optim_rng.pt, ckpt::megatronRankDir): one function serves both
/// directions, so a layout read and a layout written cannot disagree. With `distOpt`
/// the optimizer states go to a distrib_optim.pt beside each model_optim_rng.pt
/// instead (those files follow all model files, in the same order), each buffer's
/// "param", "exp_avg" and "exp_avg_sq" tiled by flat pieces, and the file's meta is
/// its torch-tree skeleton. `bucketNumels`, when given, receives per distrib_optim.pt
/// (in file order) and grad buffer each bucket's numel_unpadded: where the buffer
/// tensors are cut into the buckets a torch_dist dp_reshardable checkpoint keeps.
/// A mixture of experts' states are a ChainedOptimizer's (ckpt::MegatronOptimizer):
/// model_optim_rng.pt keys them under "optimizer.0." (the dense parameters, the same
/// in every expert-parallel rank's file) and "optimizer.1." (the rank's experts),
/// distrib_optim.pt under "0." and "1." (the dense buffers in expert-parallel rank 0's
/// file only), and `bucketNumels` lists the dense buffers' buckets, then the experts'.
/// `etp` (0: tp) cuts the routed experts over expert_tensor_parallel_size ranks instead:
/// only the folders some rank writes are laid out, each with its writer's expert piece
/// and a distrib_optim.pt with None for the optimizer it is not data-parallel rank 0 of
/// (ckpt::megatronFolderWriter); etp > tp is refused.
llvm::Expected<std::vector<ShardFile>> megatronShards(
    llvm::ArrayRef<FullTensor> fulls, const ckpt::MegatronDims &dims, ckpt::MegatronNaming naming,
    unsigned tp, unsigned pp, llvm::ArrayRef<int64_t> layersPerStage, llvm::StringRef dirPrefix,
    const MegatronDistOpt *distOpt = nullptr,
    std::vector<std::vector<std::vector<int64_t>>> *bucketNumels = nullptr, unsigned ep = 1,
    unsigned etp = 0);

/// What DeepSpeed's file names and partitions depend on.
struct DeepSpeedConfig {
  unsigned stage = 1; ///< ZeRO stage: 1, 2 or 3
  unsigned dp = 1;
  /// Tensor-parallel degree (Megatron-DeepSpeed): the files of mp rank MM hold slice
  /// MM of every parameter, cut where the parameter's Megatron name says
  /// (ckpt::megatronSplitOfName), and ZeRO partitions those slices over dp.
  unsigned tp = 1;
  /// DeepSpeed's PipelineModule layout, as Megatron-DeepSpeed's GPTModelPipe saves
  /// it: the weights in one layer_XX-model_YY-model_states.pt per layer and tp rank,
  /// parameters named by their layer's index (gptPipeName), and the files of stage s
  /// and tp rank t under mp rank s·tp + t. ZeRO-1 or the BF16_Optimizer only.
  bool pipeline = false;
  unsigned pp = 1;
  /// pipeline: stage s holds the layers with index in [pipeParts[s], pipeParts[s+1]);
  /// empty for the split GPTModelPipe makes (gptPipeParts).
  std::vector<int64_t> pipeParts;
  /// Megatron-DeepSpeed's args.swiglu: each tp slice of dense_h_to_4h holds [gate; up]
  /// of its rows, and the full tensor is all gates, then all ups (as
  /// ds_to_universal.py joins it). Unset when the source does not say, which cutting
  /// dense_h_to_4h over tp > 1 refuses.
  std::optional<bool> swiglu;
  /// DeepSpeed's BF16_Optimizer rather than ZeRO's (bf16 without ZeRO, or ZeRO-1 with
  /// fp32 gradient accumulation): partitioned as ZeRO-1, but each rank saves its
  /// fp32 partition with the padding, and the files are named bf16_zero_pp_rank_*.
  bool bf16Optimizer = false;
  /// Optimizer files named bf16_zero_pp_rank_*: DeepSpeed's engine names them so
  /// whenever bf16 is on, under ZeRO too (engine.py, _get_zero_ckpt_name).
  bool bf16Names = false;
  /// DeepSpeed MoE (parameters named as deepspeedExpertOf parses): each MoE layer's
  /// experts are split over `ep` ranks of a data-parallel group. dp rank r holds the
  /// experts of expert-parallel rank r % ep, and the optimizer groups of experts are
  /// partitioned over its expert-data-parallel group, the dp / ep ranks with its
  /// r % ep, where it is rank r / ep (deepspeed/utils/groups.py).
  unsigned ep = 1;
};

/// A DeepSpeed MoE expert's parameter, "<module>.deepspeed_moe.experts.deepspeed_experts.
/// <expert>.<rest>" (deepspeed/moe/layer.py, experts.py); `module` is the MoE layer's
/// path ("language_model.encoder.layers.1.mlp" in Megatron-DeepSpeed).
struct DeepSpeedExpert {
  std::string module;
  int64_t expert = 0;
  std::string rest;
  std::string name() const;
};
std::optional<DeepSpeedExpert> deepspeedExpertOf(llvm::StringRef name);

/// What DeepSpeed records of the parameters beside their tensors, which reading
/// checks and writing pickles.
struct DeepSpeedShards {
  /// Each mp rank's model states (under ZeRO-3 one per dp rank, mp-major), then a
  /// pipeline's layer files, then each mp rank's dp optimizer files.
  std::vector<ShardFile> files;
  /// Per mp rank: param_shapes, one list per optimizer group of (the parameter as
  /// DeepSpeed names it, the shape of the rank's slice).
  std::vector<std::vector<std::vector<std::pair<std::string, llvm::SmallVector<int64_t, 4>>>>>
      paramShapes;
  /// A parameter's part of a flat fp32 partition (tensor_fragment.py,
  /// fragment_address).
  struct Fragment {
    std::string param;
    int64_t start = 0, numel = 0;
    bool operator==(const Fragment &o) const {
      return param == o.param && start == o.start && numel == o.numel;
    }
  };
  /// Per optimizer file (mp rank·dp + dp rank) and group, under ZeRO-1/2 and the
  /// BF16_Optimizer: param_slice_mappings, and the padding at the partition's end.
  std::vector<std::vector<std::vector<Fragment>>> sliceMappings;
  std::vector<std::vector<int64_t>> groupPaddings;
  /// Per optimizer group: the ranks its partitions are cut for (dp, or dp / ep for a
  /// group of experts).
  std::vector<int64_t> partitionCounts;
  /// MoE: each MoE layer's number of experts, in the order of the layers' ids.
  std::vector<int64_t> numExperts;
  /// Indices into files: mp rank m's model states (ZeRO-3: m·dp + r), the layer
  /// files, mp rank m's optimizer files (m·dp + r); with MoE, the experts' files
  /// (layer_L_expert_E_mp_rank_00_model_states.pt, layer-major) and the ep
  /// expp_rank_R_mp_rank_00_optim_states.pt, which hold no tensors under ZeRO.
  std::vector<size_t> modelFiles, layerFiles, optimFiles, expertFiles, exppFiles;
};

/// DeepSpeed's files for parameters `groups` (names of full tensors, each with
/// "#fp32", "#exp_avg" and "#exp_avg_sq" beside it in `fulls`), laid out as `config`
/// says, under `dirPrefix`: ZeRO-1/2 and the BF16_Optimizer flatten each group (of
/// one mp rank's slices), pad it to a multiple of 2·dp and cut it in dp partitions;
/// ZeRO-3 cuts each parameter in dp parts of ceil(numel/dp). ZeRO-1/2 keep the 16-bit
/// parameters (slices) whole in mp_rank_MM_model_states.pt, a pipeline in its layer
/// files; ZeRO-3 keeps none, so its parameter *is* the fp32 master there, and its
/// model-state files are returned without tensors. As with Megatron, one function
/// describes what is read and what is written; a pipeline stage's copies of the tied
/// embedding get pieces only with `tiedCopies` (written from the full tensors; a
/// reader takes the first stage's, as ds_to_universal.py does). With experts (MoE),
/// each group holds experts only or none; the model states hold the rest, each
/// expert's weights its own file, and rank r's groups of experts its local experts'
/// parameters under their local names (DeepSpeedConfig::ep).
llvm::Expected<DeepSpeedShards> deepspeedShards(llvm::ArrayRef<FullTensor> fulls,
                                                llvm::ArrayRef<std::vector<std::string>> groups,
                                                const DeepSpeedConfig &config,
                                                llvm::StringRef dirPrefix, bool tiedCopies = true);

/// Where Megatron-DeepSpeed's GPTModelPipe (megatron/model/gpt_model.py) keeps a
/// parameter of GPTModel: its name there ("tied_modules.embed.word_embeddings.weight",
/// "3.self_attention.dense.weight"), the index of its layer in the pipeline's layer
/// list (1 the embedding, 2 + n transformer layer n, layers + 2 the final norm,
/// layers + 3 the untied head) and its key in that layer's state_dict.
struct GptPipeName {
  std::string name;
  int64_t layer = 0;
  std::string key;
};
std::optional<GptPipeName> gptPipeName(llvm::StringRef gptName, int64_t layers, bool tiedHead);
/// The inverse: GPTModel's name of GPTModelPipe's parameter `pipeName`.
std::optional<std::string> gptNameOfPipe(llvm::StringRef pipeName);

/// DeepSpeed's partition_balanced (deepspeed/runtime/utils.py): boundaries cutting
/// `weights` in `parts` contiguous runs whose sums differ least, ties to the latest cut.
std::vector<int64_t> deepspeedPartitionBalanced(llvm::ArrayRef<int64_t> weights, unsigned parts);

/// GPTModelPipe's stage boundaries over its layer list (_to_float16, the embedding,
/// `layers` transformer layers, the final norm, the head, and float16_to_fp32 when
/// the weights are 16-bit): partition_method 'type:transformer'.
std::vector<int64_t> gptPipeParts(int64_t layers, unsigned pp, bool halfPrecision);

/// Describes a DeepSpeed ZeRO or BF16_Optimizer checkpoint, tensor- or
/// pipeline-parallel or not: the folder with `latest` or the tag folder. Full tensors
/// are named as the parameters are outside a pipeline (GPTModel's names for
/// GPTModelPipe's). Its sourceArgs record the DeepSpeedConfig (zero_stage, dp, tp,
/// pp and pipeline_parts, optimizer), the parameter groups and Megatron-DeepSpeed's
/// args.
llvm::Expected<Layout> describeDeepSpeed(const std::string &path);

/// DeepSpeed's universal folder (see deepspeedUniversalTarget) as a layout of full
/// tensors: the module's parameters and each one's fp32, exp_avg and exp_avg_sq.
llvm::Expected<Layout> describeDeepSpeedUniversal(const std::string &path);

/// The files of a DeepSpeed target, with the skeletons of their object trees.
/// Megatron-DeepSpeed's args and pipeline split come from the source when it has them.
llvm::Expected<std::vector<ShardFile>> deepspeedTarget(const Layout &source, Layout &target,
                                                       DeepSpeedConfig config);

/// DeepSpeed's universal checkpoint folder, as its ds_to_universal.py lays it out and
/// its engine loads with load_universal: `latest_universal` naming
/// `global_stepN_universal/`, which holds mp_rank_00_model_states.pt (the module) and
/// zero/<param>/{fp32,exp_avg,exp_avg_sq}.pt ({"param": full tensor}) and step.pt,
/// plus zero/optimizer_state.pt with the parameter groups.
llvm::Expected<std::vector<ShardFile>> deepspeedUniversalTarget(const Layout &source,
                                                                Layout &target);

} // namespace loom::reshard

#endif // LOOM_RESHARD_LAYOUT_H
