//===- HFCheckpoint.h - Hugging Face checkpoint directories -----*- C++ -*-===//
//
// A Hugging Face model directory holds its weights as one file (model.safetensors,
// pytorch_model.bin) or as shards listed by an index (model.safetensors.index.json,
// pytorch_model.bin.index.json) whose "weight_map" names the shard of every tensor.
// The reader checks the index against the shards both ways, so a missing shard, a
// tensor in the wrong shard or a shard the index does not know is an error rather
// than a silently incomplete model. Shard names must be plain file names: an index
// cannot make loom open files outside the directory.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_HFCHECKPOINT_H
#define LOOM_CHECKPOINT_HFCHECKPOINT_H

#include "loom/Checkpoint/Tensor.h"

#include "llvm/Support/JSON.h"

namespace loom::ckpt {

enum class HFWeightFormat { Safetensors, TorchBin };

struct HFCheckpoint {
  HFWeightFormat format = HFWeightFormat::Safetensors;
  /// Sorted by name.
  std::vector<NamedTensor> tensors;
  /// The shard file of each tensor, parallel to `tensors`.
  std::vector<std::string> shardOf;
  /// The index's "metadata" object (total_size, ...); empty without an index.
  llvm::json::Object indexMetadata;
};

/// Reads the checkpoint in `directory`, sharded or not.
llvm::Expected<HFCheckpoint> readHFCheckpoint(const llvm::Twine &directory);

/// Writes `tensors` into `directory` as shards of at most `maxShardBytes` (a tensor
/// larger than that gets a shard of its own) named the way transformers names them
/// ("model-00001-of-00002.safetensors", "pytorch_model-00001-of-00002.bin"), with an
/// index when there is more than one shard.
llvm::Error writeHFCheckpoint(const llvm::Twine &directory, llvm::ArrayRef<NamedTensor> tensors,
                              HFWeightFormat format, uint64_t maxShardBytes);

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_HFCHECKPOINT_H
