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

#include <map>

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
  /// The dtype TensorProperties records, when it names one loom knows.
  std::optional<DType> dtype;
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

/// A DCP checkpoint opened for reading tensor by tensor: the metadata is parsed at
/// open, chunk files are mapped when first needed, and read() reassembles only the
/// tensor asked for (a tensor stored as one chunk is a view of the mapped file, not
/// a copy), so a converter need not hold the whole checkpoint.
class DcpReader {
public:
  static llvm::Expected<std::unique_ptr<DcpReader>> open(const llvm::Twine &directory);
  const DcpMetadata &metadata() const { return meta; }
  /// The full tensor `fqn`; an error for a bytes entry or an unknown name.
  llvm::Expected<Tensor> read(llvm::StringRef fqn);

private:
  DcpReader(std::string dir, DcpMetadata meta) : dir(std::move(dir)), meta(std::move(meta)) {}
  std::string dir;
  DcpMetadata meta;
  std::map<std::string, std::shared_ptr<const llvm::MemoryBuffer>> files;
};

/// One chunk of a tensor as a DCP writer stores it: the chunk's values (any view;
/// stored contiguous) at `offsets` inside a tensor of `fullShape`, written by `rank`.
struct DcpShard {
  std::string fqn;
  llvm::SmallVector<int64_t, 4> fullShape, offsets;
  Tensor chunk;
  unsigned rank = 0;
};

/// Splits each tensor into `ranks` row blocks (dimension 0, as even as possible; a
/// tensor of fewer rows than ranks, or a scalar, stays whole on rank 0, as torch
/// writes replicated tensors once). Chunks are views: nothing is copied.
std::vector<DcpShard> dcpRowShards(llvm::ArrayRef<NamedTensor> tensors, unsigned ranks);

/// Writes a DCP checkpoint torch's FileSystemReader loads: `__<rank>_0.distcp`
/// holding each of that rank's chunks as a torch.save archive (64-byte aligned),
/// then `.metadata` (TensorStorageMetadata with the chunk boxes, storage_data with
/// each chunk's file, offset and length). Every file goes through a temporary and
/// is renamed into place; `.metadata` is written last, so an interrupted write
/// leaves no loadable checkpoint. The chunks of each tensor must tile it exactly,
/// in one dtype.
llvm::Error writeDcp(const llvm::Twine &directory, llvm::ArrayRef<DcpShard> shards);

/// writeDcp chunk by chunk, for a converter that has one tensor at a time: append()
/// writes a chunk to its rank's file in a staging folder at once, finish() checks
/// the chunks tile every tensor, writes `.metadata` and renames the folder into
/// place. Dropped unfinished (or failing), it leaves nothing behind.
class DcpWriter {
public:
  static llvm::Expected<std::unique_ptr<DcpWriter>> create(const llvm::Twine &directory);
  ~DcpWriter();
  llvm::Error append(const DcpShard &shard);
  llvm::Error finish();

private:
  struct Impl;
  explicit DcpWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_DCP_H
