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
};

struct Layout {
  /// "megatron-mcore", "hf-safetensors", "universal", ...
  std::string format;
  std::vector<FullTensor> fulls;
  std::vector<ShardFile> files;
  /// What the source says of the model (Megatron args, HF config.json, the
  /// universal file's model config), for targets that need the dimensions.
  std::optional<ModelDims> dims;
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

  const FullTensor *findFull(llvm::StringRef name) const;
};

/// Checks that pieces lie inside their full and local tensors, that the pieces of a
/// local tensor do not overlap, and that every full tensor is covered. Used on
/// layouts built from files and on the targets built here; `what` names the layout.
llvm::Error checkLayout(const Layout &layout, llvm::StringRef what);

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
  bool bf16Optimizer = false; ///< deepspeed: optimizer=bf16
  uint64_t shardBytes = 5ull << 30; ///< hf-safetensors
  unsigned ranks = 1; ///< dcp: each tensor's rows split over this many ranks' files
  /// Leave optimizer states out (formats that cannot hold them refuse them otherwise).
  bool weightsOnly = false;
  /// megatron: optimizer=distributed, the distributed optimizer's distrib_optim.pt.
  bool distributedOptimizer = false;
  /// The options the text gave ("tp", "dp", ...), so a plan's degrees can fill the rest.
  std::vector<std::string> given;
};
/// "2GiB", "500MiB", "64KiB" or a byte count; nothing if it is none of those.
std::optional<uint64_t> parseByteSize(llvm::StringRef text);
/// Parses "megatron:tp=4,pp=2[,optimizer=distributed]", "deepspeed:zero=1,dp=2,tp=2,optimizer=bf16",
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

/// Megatron's shards of `fulls` for the given degrees, file by file, stage-major
/// (`dirPrefix` + mp_rank_TT[_PPP]/model_optim_rng.pt): one function serves both
/// directions, so a layout read and a layout written cannot disagree. With `distOpt`
/// the optimizer states go to a distrib_optim.pt beside each model_optim_rng.pt
/// instead (those files follow all model files, in the same order), each buffer's
/// "param", "exp_avg" and "exp_avg_sq" tiled by flat pieces, and the file's meta is
/// its torch-tree skeleton.
llvm::Expected<std::vector<ShardFile>>
megatronShards(llvm::ArrayRef<FullTensor> fulls, const ckpt::MegatronDims &dims,
               ckpt::MegatronNaming naming, unsigned tp, unsigned pp,
               llvm::ArrayRef<int64_t> layersPerStage, llvm::StringRef dirPrefix,
               const MegatronDistOpt *distOpt = nullptr);

/// What DeepSpeed's file names and partitions depend on.
struct DeepSpeedConfig {
  unsigned stage = 1; ///< ZeRO stage: 1, 2 or 3
  unsigned dp = 1;
  /// Tensor-parallel degree (Megatron-DeepSpeed): the files of mp rank MM hold slice
  /// MM of every parameter, cut where the parameter's Megatron name says
  /// (ckpt::megatronSplitOfName), and ZeRO partitions those slices over dp.
  unsigned tp = 1;
  /// DeepSpeed's BF16_Optimizer rather than ZeRO's (bf16 without ZeRO, or ZeRO-1 with
  /// fp32 gradient accumulation): partitioned as ZeRO-1, but each rank saves its
  /// fp32 partition with the padding, and the files are named bf16_zero_pp_rank_*.
  bool bf16Optimizer = false;
  /// Optimizer files named bf16_zero_pp_rank_*: DeepSpeed's engine names them so
  /// whenever bf16 is on, under ZeRO too (engine.py, _get_zero_ckpt_name).
  bool bf16Names = false;
};

/// DeepSpeed's files for parameters `params` (names of full tensors, each with
/// "#fp32", "#exp_avg" and "#exp_avg_sq" beside it in `fulls`) in optimizer groups
/// `groups`, laid out as `config` says, under `dirPrefix`: ZeRO-1/2 and the
/// BF16_Optimizer flatten each group (of one mp rank's slices), pad it to a multiple
/// of 2·dp and cut it in dp partitions; ZeRO-3 cuts each parameter in dp parts of
/// ceil(numel/dp). ZeRO-1/2 keep the 16-bit parameters (slices) whole in
/// mp_rank_MM_model_states.pt; ZeRO-3 keeps none, so its parameter *is* the fp32
/// master there, and its model-state files are returned without tensors. As with
/// Megatron, one function describes what is read and what is written.
llvm::Expected<std::vector<ShardFile>>
deepspeedShards(llvm::ArrayRef<FullTensor> fulls, llvm::ArrayRef<std::vector<std::string>> groups,
                const DeepSpeedConfig &config, llvm::StringRef dirPrefix);

/// Describes a DeepSpeed ZeRO or BF16_Optimizer checkpoint, tensor-parallel or not:
/// the folder with `latest` or the tag folder. Its sourceArgs record the
/// DeepSpeedConfig (zero_stage, dp, tp, optimizer) and the parameter groups.
llvm::Expected<Layout> describeDeepSpeed(const std::string &path);

/// DeepSpeed's universal folder (see deepspeedUniversalTarget) as a layout of full
/// tensors: the module's parameters and each one's fp32, exp_avg and exp_avg_sq.
llvm::Expected<Layout> describeDeepSpeedUniversal(const std::string &path);

/// The files of a DeepSpeed target, with the skeletons of their object trees.
llvm::Expected<std::vector<ShardFile>> deepspeedTarget(const Layout &source, Layout &target,
                                                       const DeepSpeedConfig &config);

/// DeepSpeed's universal checkpoint folder, as its ds_to_universal.py lays it out and
/// its engine loads with load_universal: `latest_universal` naming
/// `global_stepN_universal/`, which holds mp_rank_00_model_states.pt (the module) and
/// zero/<param>/{fp32,exp_avg,exp_avg_sq}.pt ({"param": full tensor}) and step.pt,
/// plus zero/optimizer_state.pt with the parameter groups.
llvm::Expected<std::vector<ShardFile>> deepspeedUniversalTarget(const Layout &source,
                                                                Layout &target);

} // namespace loom::reshard

#endif // LOOM_RESHARD_LAYOUT_H
