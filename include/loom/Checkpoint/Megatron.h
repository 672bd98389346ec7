//===- Megatron.h - Megatron-LM checkpoint directories ----------*- C++ -*-===//
//
// Megatron-LM's torch-format checkpoints: `latest_checkpointed_iteration.txt` names an
// iteration, `iter_XXXXXXX/mp_rank_TT[_PPP][_EEE]/model_optim_rng.pt` holds the shard of
// TP rank TT, pipeline stage PPP (when pp > 1) and expert-parallel rank EEE (when
// ep > 1; megatron/training/checkpointing.py, get_checkpoint_name), with layers
// numbered from 0 within each stage. A two-part mp_rank_TT_XXX is a stage or an
// expert-parallel rank as the args' pipeline/expert_model_parallel_size say. With the
// experts on fewer tensor-parallel ranks than tp (expert_tensor_parallel_size) only the
// folders megatronFolderWriter names exist.
// Inside, parameters are named either the legacy way
// (`language_model.encoder.layers.N.self_attention.query_key_value.weight`) or the
// mcore way (`decoder.layers.N.self_attention.linear_qkv.weight`); both fuse Q, K and V
// per GQA group, SwiGLU's fc1 is [gate; up] per TP rank, and the vocabulary is padded
// to a multiple of 128·tp.
//
// The reader finds tp and pp from the folder names, loads every shard and unshards to
// full Hugging Face–style (Llama) tensors. How each full tensor was cut is returned as
// a MegatronLayout, the description the resharder (issue #9) cuts new shards from.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_MEGATRON_H
#define LOOM_CHECKPOINT_MEGATRON_H

#include "loom/Checkpoint/Tensor.h"
#include "loom/Checkpoint/Value.h"

#include "llvm/Support/JSON.h"

#include <map>
#include <optional>

namespace loom::ckpt {

enum class MegatronNaming { Legacy, MCore };

/// How one Megatron parameter is split over TP ranks.
enum class MegatronSplit {
  Replicated,  ///< every rank holds all of it (norms, row-parallel biases)
  Column,      ///< dimension 0 cut in tp equal parts
  Row,         ///< dimension 1 cut in tp equal parts
  Vocab,       ///< dimension 0 padded to paddedVocab rows, then cut like Column
  FusedQKV,    ///< per rank, for each of its queryGroups/tp groups: q rows of the
               ///< group's heads, then k, then v (headDim rows each per head)
  FusedGateUp, ///< per rank: its ffn/tp rows of gate, then its rows of up
};
llvm::StringRef megatronSplitName(MegatronSplit split);

/// The model shape the splits depend on, from the checkpoint's args.
struct MegatronDims {
  int64_t numLayers = 0, hidden = 0, heads = 0, queryGroups = 0, headDim = 0, ffn = 0;
  /// The tokenizer's vocabulary (args.vocab_size), or paddedVocab when unknown.
  int64_t vocab = 0, paddedVocab = 0;
  bool swiglu = false;
  /// Mixture of experts (mcore's MoELayer in every layer, Mixtral-like): args.num_experts
  /// routed experts (0: a dense model), each an MLP of moeFfn rows
  /// (args.moe_ffn_hidden_size, else ffn), topK of them per token (args.moe_router_topk).
  int64_t experts = 0, moeFfn = 0, topK = 0;
  /// args.moe_grouped_gemm: TEGroupedMLP's names (mlp.experts.linear_fc1.weight<i>)
  /// rather than SequentialMLP's (mlp.experts.local_experts.<i>.linear_fc1.weight).
  bool groupedGemm = false;
  /// Shared experts beside the routed ones (mlp.shared_experts, every token takes
  /// them): one MLP of sharedFfn rows (args.moe_shared_expert_intermediate_size, 0:
  /// none), scaled by a sigmoid gate when sharedGate (args.moe_shared_expert_gate).
  int64_t sharedFfn = 0;
  bool sharedGate = false;
  /// Which layers are MoE layers (args.moe_layer_freq, gpt_layer_specs.py's
  /// get_gpt_decoder_layer_specs: an int N makes global layer i one when i % N == 0, a
  /// list gives 1 or 0 per layer); the others hold a dense MLP of ffn rows. Empty when
  /// every layer is one (N = 1) or the model has no experts.
  std::vector<bool> moeLayers;
  bool isMoELayer(int64_t layer) const {
    return experts && (moeLayers.empty() || moeLayers[size_t(layer)]);
  }
};

struct MegatronParam {
  /// The name in the stage's file, layer index local to the stage.
  std::string localName;
  unsigned stage = 0;
  /// Global layer index, or -1 outside the transformer layers.
  int64_t layer = -1;
  MegatronSplit split = MegatronSplit::Replicated;
  /// Hugging Face names of the full tensors: q,k,v for FusedQKV, gate,up for
  /// FusedGateUp, one otherwise.
  std::vector<std::string> fullNames;
  /// A routed expert's parameter: its global expert index, -1 otherwise. Only the
  /// files of expert-parallel rank epRank hold it, under its local index (global
  /// minus epRank times experts per rank) in localName; every other parameter is in
  /// each expert-parallel rank's file alike.
  int64_t expert = -1;
  unsigned epRank = 0;
  /// The shard's shape and dtype (TP rank 0's, a routed expert's expert-TP piece 0's;
  /// every rank holds the same), when read from a file.
  llvm::SmallVector<int64_t, 4> localShape;
  DType dtype = DType::Float32;
  /// The last stage's copy of the word embeddings (fullNames: the embedding's), which
  /// a model with tied embeddings over pp > 1 stages keeps for its output layer and
  /// Megatron keeps equal to the first stage's: mcore's output_layer.weight
  /// (LanguageModule.setup_embeddings_and_output_layer), legacy's
  /// word_embeddings_for_head.weight beside language_model (GPTModel.
  /// state_dict_for_save_checkpoint). Its shards are replicas of the embedding's.
  bool tiedCopy = false;
};

/// One grad buffer of Megatron's distributed optimizer: DDP keeps one per (param
/// dtype, grad dtype) (group_params_for_buffers, megatron/core/distributed/
/// param_and_grad_buffer.py), and distrib_optim.pt keys its states so.
struct MegatronDistBuffer {
  DType paramDType = DType::BFloat16, gradDType = DType::Float32;
  /// "numel_unpadded": the buffer's elements without the buckets' end padding.
  int64_t numel = 0;
  /// torch_dist's dp_reshardable states keep each bucket apart: their numel_unpadded,
  /// which add up to numel. Empty for distrib_optim.pt, which keeps the buffer whole.
  std::vector<int64_t> bucketNumels;
};

/// Where buffer `index`'s entry sits in distrib_optim.pt: the collectTensors path
/// "0.(torch.bfloat16, torch.float32)".
std::string megatronDistBufferPath(unsigned index, DType paramDType, DType gradDType);

/// The DCP key prefix of bucket `bucket` of grad buffer `gbuf` of model-parallel rank
/// `group` in the dp_reshardable layout:
/// "optimizer.distributed.dp_group_idx_0.gbuf_idx_0.dtype_(torch.bfloat16,
/// torch.float32).bucket_idx_1" (a state's key appends ".param", ".exp_avg", ...).
std::string megatronDistBucketKey(unsigned group, unsigned gbuf, DType paramDType,
                                  DType gradDType, unsigned bucket);

/// The optimizer state Megatron's mixed-precision optimizer
/// (Float16OptimizerWithFloat16Params) saves in each shard under "optimizer":
/// {"optimizer": the torch Adam state_dict, "fp32_from_fp16_params": the fp32 master
/// of each parameter, group by group}. Megatron groups a stage's parameters as its
/// _get_param_groups does: those with weight decay first, then those without
/// (megatronNoWeightDecay), each group in the order of the stage's model state dict;
/// Adam's state indices count through the groups in that order.
///
/// With Megatron's distributed optimizer (--use-distributed-optimizer, torch format)
/// "optimizer" holds {"optimizer": {"param_groups": [settings with "step", without
/// "params"]}} (DistributedOptimizer.state_dict, megatron/core/optimizer/
/// distrib_optimizer.py) and the states move to distrib_optim.pt in the same folder
/// (checkpointing.py, get_distributed_optimizer_checkpoint_name), written by
/// save_parameter_state from get_parameter_state_dp_zero: {"buckets_coalesced": True,
/// gbuf index: {(param dtype, grad dtype): {"param": fp32 masters, "exp_avg",
/// "exp_avg_sq": 1-D over the whole grad buffer, "numel_unpadded": int}}}. Where each
/// parameter sits in a buffer is reshard::megatronShards' business.
///
/// A mixture of experts trains with a ChainedOptimizer (megatron/core/optimizer/
/// optimizer.py): get_megatron_optimizer (optimizer/__init__.py) gives the dense
/// parameters one optimizer and the routed experts (allreduce=False) another, reduced
/// over the expert-data-parallel group. "optimizer" is then the list of their two
/// state_dicts, dense first (ChainedOptimizer.state_dict), each as above over its own
/// parameters; every expert-parallel rank's file holds the dense one (the same on all)
/// and its own experts'. distrib_optim.pt is the list save_parameter_state writes:
/// each optimizer's dict where its data-parallel rank is 0, else None; the dense
/// optimizer's DP rank 0 sits at expert-parallel rank 0 (ranks are ordered tp, ep,
/// then the rest of dp), so the files of other expert-parallel ranks hold [None, the
/// experts' buffers] (with etp = tp; megatronFolderWriter gives the general rule).
struct MegatronOptimizer {
  std::optional<int64_t> step;
  /// The groups' settings (lr, betas, weight_decay, ...) without "params": a JSON
  /// array; a ChainedOptimizer's are the dense optimizer's, then the experts'
  /// (ChainedOptimizer.param_groups' order).
  std::string groupsJson;
  /// The optimizer tensors of each (stage, expert-parallel rank)'s first folder, the
  /// one holding expert-TP piece 0 (TP rank 0's when etp = tp), file by file
  /// (stage · ep + expert-parallel rank):
  /// collectTensors path under the file's root ("optimizer.optimizer.state.3.exp_avg",
  /// or with the distributed optimizer distrib_optim.pt's "0.(torch.bfloat16,
  /// torch.float32).param"; a ChainedOptimizer's put the optimizer's index in the list
  /// before them: "optimizer.1.optimizer.state.3.exp_avg", "1.0.(...).param") -> shape.
  std::vector<std::map<std::string, llvm::SmallVector<int64_t, 4>>> stageShapes;
  /// The states are the distributed optimizer's, in distrib_optim.pt.
  bool distributed = false;
  /// A mixture of experts' ChainedOptimizer: the dense optimizer's and the experts'.
  bool chained = false;
  /// distributed: the grad buffers' keys, in gbuf order (a ChainedOptimizer's: the
  /// dense optimizer's, then the experts'), file by file as stageShapes (from the same
  /// folders; every other folder's file is checked to have the same buffers and sizes
  /// where both hold states).
  std::vector<std::vector<MegatronDistBuffer>> stageBuffers;
};

/// How the parameter `name` is split over TP ranks, known from its name alone:
/// a legacy or mcore Megatron-LM name, or a Megatron-DeepSpeed one
/// ("language_model.encoder.layers.3.input_layernorm.weight"), after any wrapper
/// prefix ("module.", "model.", "language_model."). nullopt for a name Megatron does
/// not give. For checkpoints that keep tensor-parallel slices without saying how
/// they were cut (DeepSpeed's mp_rank_MM files).
std::optional<MegatronSplit> megatronSplitOfName(llvm::StringRef name);

/// The plain fields (numbers, strings, booleans and lists of them) of the
/// argparse Namespace that Megatron-LM and Megatron-DeepSpeed pickle under "args"
/// in `root`; nullopt when it has none.
std::optional<llvm::json::Object> megatronArgs(const Value &root);

/// Megatron exempts vectors and biases from weight decay (its default
/// no_weight_decay_cond: `len(param.shape) == 1 or name.endswith(".bias")`).
bool megatronNoWeightDecay(llvm::StringRef localName, size_t rank);

/// Copies of a tensor that Megatron keeps equal (the same initialisation, the same
/// gradients) and a checkpoint holds different: a damaged file or a run gone wrong.
struct DivergentReplica {
  /// One line naming the folder, the stage, the parameter, the ranks and the largest
  /// difference.
  std::string what;
  /// The copy the others are compared with, which a conversion keeps: "TP rank 0's
  /// copy", "stage 0's embedding".
  std::string kept;
};

/// `replicas` (at least one) as one line: the first, and how many more there are.
std::string summarizeDivergence(llvm::ArrayRef<DivergentReplica> replicas);
/// The copies a conversion of `replicas` keeps, each named once in order: "TP rank
/// 0's copy, stage 0's embedding".
std::string keptCopies(llvm::ArrayRef<DivergentReplica> replicas);

struct MegatronLayout {
  MegatronNaming naming = MegatronNaming::MCore;
  /// ep: expert-parallel ranks, each holding dims.experts / ep experts of every MoE
  /// layer (args.expert_model_parallel_size). etp: the routed experts' own
  /// tensor-parallel degree (args.expert_tensor_parallel_size, tp when unset or for a
  /// dense model), at most tp; which folders exist and which expert piece each holds
  /// then follow megatronFolderWriter.
  unsigned tp = 1, pp = 1, ep = 1, etp = 1;
  int64_t iteration = 0;
  MegatronDims dims;
  /// Stage-major, in file order.
  std::vector<MegatronParam> params;
  /// Layers held by each stage.
  std::vector<int64_t> layersPerStage;
  /// The args Namespace's scalar fields as a JSON object (empty when written fresh).
  std::string argsJson;
  /// Present when the shards hold optimizer state.
  std::optional<MegatronOptimizer> optimizer;
  /// The replicated parameters (norms, row-parallel biases, routers) whose copies
  /// differ between TP ranks (expert-TP ranks for a routed expert's), a last stage's
  /// copy of tied word embeddings that differs from the first stage's embedding, and
  /// each TP piece of a dense parameter whose copies differ between expert-parallel
  /// ranks. Readers unshard TP rank 0's, the first stage's and the first
  /// expert-parallel rank's copies and leave the verdict to the caller.
  std::vector<DivergentReplica> divergentReplicas;
};

/// The folder of TP rank `tpRank`, stage `stage` and expert-parallel rank `epRank` in
/// an iteration folder with `pp` stages and `ep` expert-parallel ranks:
/// mp_rank_TT, then _PPP when pp > 1, then _EEE when ep > 1 (get_checkpoint_name).
std::string megatronRankDir(unsigned tpRank, unsigned stage, unsigned epRank, unsigned pp,
                            unsigned ep);

/// The rank (within a pipeline stage, counted from 0) that writes shard folder
/// (`tpRank`, `epRank`) of the torch format, or nullopt when no rank writes one there;
/// `etp` (the experts' tensor-parallel degree) must be at most `tp`.
///
/// From Megatron-LM: parallel_state.py's RankGenerator numbers the dense ranks
/// tp-fastest, then data-parallel, and the expert ranks etp-fastest, then
/// expert-parallel, then expert-data-parallel (the default order tp-cp-ep-dp-pp, its
/// cp left out of the experts' and taken as 1 here). save_checkpoint
/// (training/checkpointing.py) lets a rank save when its data-parallel rank or its
/// expert-data-parallel rank is 0, into get_checkpoint_name's folder of its dense TP
/// rank and its expert-parallel rank. So rank r < max(tp, etp·ep) writes folder
/// (r % tp, (r / etp) % ep) holding dense TP shard r % tp and expert-TP piece r % etp
/// of that expert-parallel rank's experts, and no two ranks write one folder while
/// etp <= tp. A
/// ChainedOptimizer's distrib_optim.pt there holds the dense optimizer's states when
/// r < tp and the experts' when r < etp·ep, None otherwise (save_parameter_state saves
/// each optimizer's where its own data-parallel rank is 0). With etp = tp this is
/// every (t, e) folder, written by rank t + tp·e.
std::optional<unsigned> megatronFolderWriter(unsigned tpRank, unsigned epRank, unsigned tp,
                                             unsigned ep, unsigned etp);

/// Where `param` sits in its stage's file: the path collectTensors gives it under the
/// top-level dict ("model.decoder.layers.0.mlp.linear_fc2.weight").
std::string megatronKey(MegatronNaming naming, const MegatronParam &param);

struct MegatronCheckpoint {
  MegatronLayout layout;
  /// Full tensors with Hugging Face names, sorted by name.
  std::vector<NamedTensor> tensors;
};

/// True when `directory` looks like a Megatron checkpoint (tracker file or iter_*).
bool isMegatronCheckpoint(const llvm::Twine &directory);

/// Reads the checkpoint in `directory`: the root with the tracker file (its latest
/// iteration) or an `iter_XXXXXXX` / `release` directory itself.
llvm::Expected<MegatronCheckpoint> readMegatron(const llvm::Twine &directory);

/// The layout alone: every shard is opened and classified, no tensor is unsharded
/// and no record CRC-checked (the resharder checks each source as it opens it).
/// `iterationDir`, when given, receives the iteration folder the shards are in.
llvm::Expected<MegatronLayout> readMegatronLayout(const llvm::Twine &directory,
                                                  std::string *iterationDir = nullptr);

/// Megatron-core's `torch_dist` checkpoint (--ckpt-format torch_dist): the iteration
/// folder holds metadata.json ({"sharded_backend": "torch_dist"}, written by
/// dist_checkpointing.save, megatron/core/dist_checkpointing/core.py), common.pt
/// (torch.save of what is not sharded: args, iteration, the optimizer's groups;
/// strategies/common.py) and a DCP checkpoint of the sharded part, keyed by mcore's
/// sharded keys (strategies/torch.py, _replace_state_dict_keys_with_sharded_keys):
/// `embedding.word_embeddings.weight`, `output_layer.weight` (vocabulary rows padded),
/// `decoder.final_layernorm.weight`, and for the layers either
/// `decoder.layers.<suffix>` with every layer stacked on a leading axis
/// (TransformerBlock.sharded_state_dict, prepended offset (0, layer, num_layers)) or
/// `decoder.layers.<N>.<suffix>` without it when the layers differ
/// (non_homogeneous_layers: a moe_layer_freq other than 1, whose dense layers hold
/// mlp.linear_fc1/fc2 where the MoE layers hold a router and experts, or
/// --hetereogenous-dist-checkpoint). Each tensor is global: TP shards put back, so a
/// fused QKV is tp=1's [q; k; v] per query group and SwiGLU's fc1 is [all gates; all
/// ups] (apply_swiglu_sharded_factory, transformer/mlp.py).
/// A mixture of experts keys its routed experts `decoder.layers.mlp.experts.experts.
/// linear_fc{1,2}.weight` (and `.bias` with --add-bias-linear: fc1's [all gates; all
/// ups] like its weight, fc2's whole) with the global expert on an axis of its own
/// after the layer's ([layers, experts, rows, columns]; [experts, rows, columns] under
/// a layer's own key): SequentialMLP.sharded_state_dict maps the MoE layer's
/// `mlp.experts.local_experts.<i>.` to `mlp.experts.experts.` and prepends (axis,
/// global index, num_experts), and TEGroupedMLP's weight<i> and bias<i> are keyed the
/// same way (transformer/moe/experts.py;
/// TEGroupedLinear._sharded_state_dict_grouped, extensions/transformer_engine.py), so
/// neither the expert-parallel degree nor the expert module of the run shows in the
/// keys. Each expert-parallel rank saves its experts (replica_id over expert-data-
/// parallel ranks); the router (`mlp.router.weight`), `pre_mlp_layernorm` and shared
/// experts (`mlp.shared_experts.*`) are stacked per layer like a dense layer's.
/// Model-space optimizer states sit beside them as `optimizer.state.<state>.<key>`:
/// `fp32_param` (the mixed-precision optimizer, dist_checkpointing/optimizer.py) or
/// `param` (the distributed optimizer's fully_reshardable form,
/// distrib_optimizer.py), `exp_avg`, `exp_avg_sq`.
///
/// A mixture of experts' optimizer is a ChainedOptimizer (see MegatronOptimizer):
/// its sharded_state_dict (optimizer.py) is {0: the dense optimizer's, 1: the
/// experts'}, so common.pt's "optimizer" holds both parts' groups and steps under 0
/// and 1, and each part's states are keyed as a dense model's over its own
/// parameters (an expert's at the stacked [layers, experts, ...] shape of its key).
/// mcore since July 2025 keys them so for model-space states
/// (training/checkpointing.py sets chained_optim_avoid_prefix); before, every key of
/// optimizer i carried the prefix `chained_<i>.`
/// (`chained_1.optimizer.state.exp_avg.decoder.layers.mlp.experts.experts.linear_fc1.weight`).
///
/// The distributed optimizer's default layout there, `dp_reshardable`
/// (DistributedOptimizer.sharded_param_state_dp_reshardable), keeps its grad buffers
/// instead: common.pt's "optimizer" says only {"param_state_sharding_type":
/// "dp_reshardable"}; the optimizer's own state_dict ({"optimizer": {"param_groups"
/// with "step"}}, maybe "grad_scaler") and the buckets' sizes are ShardedObjects
/// `optimizer.distributed.dp_group_idx_<G>.{optimizer,per_bucket_numel,
/// per_bucket_numel_unpadded}` (bytes entries `<key>/shard_0_1` holding torch.save of
/// a one-element list, strategies/torch.py `_mcore_to_torch_sharded_object`), G being
/// the model-parallel rank pp_rank·tp + tp_rank (optimizer/__init__.py,
/// data_parallel_group_idx=model_parallel_rank); each bucket's fp32 masters and Adam
/// moments are 1-D tensors `optimizer.distributed.dp_group_idx_<G>.gbuf_idx_<i>.
/// dtype_(<param dtype>, <grad dtype>).bucket_idx_<b>.{param,exp_avg,exp_avg_sq}` of
/// the bucket's numel_unpadded elements: the bucket as distrib_optim.pt keeps it (see
/// MegatronOptimizer), each DP rank having saved its contiguous 1/dp of it.
struct MegatronDistSource {
  /// The DCP key holding the parameter.
  std::string key;
  /// Its indices on the key's stacked leading axes (the layer, then a routed expert's
  /// global index), outermost first; empty when the key is the parameter.
  llvm::SmallVector<int64_t, 2> rows;
};

struct MegatronDistCheckpoint {
  /// The model seen whole: tp = pp = ep = 1, every layer on stage 0, each parameter's
  /// localShape its global (unsharded, vocabulary-padded) shape, routed experts named
  /// as SequentialMLP's by their global index (dims.groupedGemm false; argsJson keeps
  /// the run's moe_grouped_gemm and expert_model_parallel_size). The optimizer, when
  /// present, has the step and group settings of common.pt.
  MegatronLayout layout;
  /// Where each of layout.params is, in the same order.
  std::vector<MegatronDistSource> sources;
  /// The iteration folder (the DCP directory).
  std::string iterationDir;
  /// The optimizer states present, each as (loom's suffix "#fp32" / "#exp_avg" /
  /// "#exp_avg_sq", the DCP key prefix "optimizer.state.fp32_param."): every
  /// parameter has each of them, at its parameter's shape.
  std::vector<std::pair<std::string, std::string>> states;
  /// The states' keys carry a ChainedOptimizer's `chained_<i>.` before the prefix:
  /// `chained_0.` for the dense parameters', `chained_1.` for the routed experts'
  /// (mcore before chained_optim_avoid_prefix).
  bool chainedPrefixes = false;
  /// dp_reshardable: per model-parallel rank G, its grad buffers in gbuf order, each
  /// with its buckets' sizes as the DCP tensors have them (checked against
  /// per_bucket_numel_unpadded when that entry is there). Where the parameters lie in
  /// them is reshard::describeCheckpoint's business. Empty otherwise.
  std::vector<std::vector<MegatronDistBuffer>> dpBuffers;
};

/// True when `directory` (a root with latest_checkpointed_iteration.txt or an
/// iteration folder) holds a torch_dist checkpoint: metadata.json naming it.
bool isMegatronDistCheckpoint(const llvm::Twine &directory);

/// Reads a torch_dist checkpoint's layout: args and optimizer settings from common.pt,
/// parameters and states from the DCP metadata (no tensor is read). Keys that are not
/// parameters loom knows, a stacked layer or expert axis other than args.num_layers or
/// args.num_experts, a mixture of experts' optimizer entry that is not the
/// ChainedOptimizer's two parts (at one step, neither dp_reshardable), states under
/// the other optimizer's chained_<i>. prefix, states of another shape
/// (the flattened fully_sharded_model_space form of mcore before 0.14), and
/// dp_reshardable buckets that are missing, of other sizes than
/// per_bucket_numel_unpadded says or not Adam's fp32 states are refused, each by name. dp_reshardable's step and groups come from
/// the optimizer object of dp_group_idx_0 (every group's must agree on the step).
llvm::Expected<MegatronDistCheckpoint> readMegatronDist(const llvm::Twine &directory);

/// The parameters Megatron keeps for the full (Hugging Face–named) tensors
/// `fullNames`, stage by stage in file order, with `layersPerStage[s]` layers on
/// stage s: the inverse of the reader's classification. A name with no Megatron
/// place is an error. Without lm_head.weight the output layer is tied to
/// model.embed_tokens.weight (Megatron's default; otherwise
/// --untie-embeddings-and-output-weights), and over pp > 1 stages the last one ends
/// with its copy (MegatronParam::tiedCopy). A layer with a Mixtral router
/// (model.layers.N.block_sparse_moe.gate.weight) is a MoE layer, its experts spread
/// over `ep` expert-parallel ranks; its shared experts, when present
/// (mlp.shared_expert.*, Qwen2-MoE's names), are in every expert-parallel rank's file.
/// A layer without a router is a dense layer (moe_layer_freq other than 1), and an
/// expert's biases (block_sparse_moe.experts.E.w1.bias, ...) follow its weights.
llvm::Expected<std::vector<MegatronParam>>
megatronParamsFor(llvm::ArrayRef<std::string> fullNames, const MegatronDims &dims,
                  MegatronNaming naming, llvm::ArrayRef<int64_t> layersPerStage, unsigned ep = 1);

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_MEGATRON_H
