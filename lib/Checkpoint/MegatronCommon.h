//===- MegatronCommon.h - what Megatron's two readers share -----*- C++ -*-===//
//
// Megatron-LM's torch format (Megatron.cpp) and its torch_dist format
// (MegatronDist.cpp) name parameters, lay out iteration folders and pickle their args
// alike; these are the pieces both readers use. Internal to lib/Checkpoint.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_LIB_CHECKPOINT_MEGATRONCOMMON_H
#define LOOM_LIB_CHECKPOINT_MEGATRONCOMMON_H

#include "loom/Checkpoint/Megatron.h"
#include "loom/Checkpoint/Value.h"

namespace loom::ckpt::megatron {

/// The iteration folder `directory` designates (the root with
/// latest_checkpointed_iteration.txt, or iter_XXXXXXX / release itself) and its
/// iteration.
llvm::Expected<std::pair<std::string, int64_t>> iterationDir(const std::string &directory);

/// The parameter a stage-local name (`decoder.layers.3.mlp.linear_fc1.weight`, layers
/// numbered from 0 on the stage) is, with HF names and split; nullopt for a name
/// Megatron does not give. `layerOffset` is the stage's first global layer,
/// `expertOffset` the file's first global expert (its expert-parallel rank times the
/// experts per rank).
std::optional<MegatronParam> classify(llvm::StringRef name, MegatronNaming naming, bool swiglu,
                                      int64_t layerOffset, int64_t expertOffset = 0);

/// A dict's string-keyed plain entries as a JSON object, `skip` left out.
llvm::json::Object plainEntries(const DictValue &dict, llvm::StringRef skip = "");

/// The state of the argparse Namespace a checkpoint dict pickles under "args", or
/// null when `root` is no dict or holds none.
const DictValue *argsState(const Value &root);

/// The args Namespace's state as JSON: its plain fields.
std::string argsToJson(const DictValue &state);

/// The model shape the args Namespace's state describes, checked to be a model
/// Megatron can build with `tp` tensor-parallel ranks; `file` names the source.
/// `mixedLayers`: the caller reads dense layers between MoE layers (args.moe_layer_freq
/// other than 1, the torch format's reader); otherwise they are refused by name.
llvm::Expected<MegatronDims> dimsFromArgs(const DictValue &state, const std::string &file,
                                          unsigned tp, bool mixedLayers = false);

} // namespace loom::ckpt::megatron

#endif // LOOM_LIB_CHECKPOINT_MEGATRONCOMMON_H
