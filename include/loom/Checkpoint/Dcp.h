//===- Dcp.h - PyTorch distributed checkpoints (DCP) ------------*- C++ -*-===//
//
// torch.distributed.checkpoint (torch 1.13: torch.distributed._shard.checkpoint)
// writes a directory: `.metadata`, a pickle of torch dataclasses saying which chunks
// (offsets, sizes) make up each tensor and where each chunk lives (file, byte offset,
// length), and `__<rank>_<n>.distcp` files holding each chunk as a torch.save blob.
// The metadata arrives through loom's safe pickle VM as opaque objects whose BUILD
// state is interpreted here; nothing torch defines is imported or run.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_DCP_H
#define LOOM_CHECKPOINT_DCP_H

#include "loom/Checkpoint/Tensor.h"

namespace loom::ckpt {

struct DcpChunk {
  llvm::SmallVector<int64_t, 4> offsets, sizes;
  /// Where the chunk's torch.save blob lives.
  std::string file;
  uint64_t offset = 0, length = 0;
};

struct DcpEntry {
  std::string fqn;
  /// A BytesStorageMetadata entry (a pickled object, not a tensor): one chunk, no shape.
  bool isBytes = false;
  llvm::SmallVector<int64_t, 4> size;
  std::vector<DcpChunk> chunks;
};

/// Sorted by fqn.
struct DcpMetadata {
  std::vector<DcpEntry> entries;
};

/// Interprets a `.metadata` pickle; `name` is used in messages. Checks that every
/// chunk lies inside its tensor, that chunks add up to the tensor, and that every
/// chunk has a storage location with a plain file name.
llvm::Expected<DcpMetadata> parseDcpMetadata(llvm::ArrayRef<uint8_t> bytes, llvm::StringRef name);

struct DcpCheckpoint {
  DcpMetadata metadata;
  /// Full tensors, reassembled from their chunks, sorted by name.
  std::vector<NamedTensor> tensors;
};

llvm::Expected<DcpCheckpoint> readDcp(const llvm::Twine &directory);

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_DCP_H
