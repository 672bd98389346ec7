//===- Dcp.h - PyTorch distributed checkpoints (DCP) ------------*- C++ -*-===//
//
// torch.distributed.checkpoint (torch 1.13: torch.distributed._shard.checkpoint)
// writes a directory: `.metadata`, a pickle of torch dataclasses saying which chunks
// (offsets, sizes) make up each tensor and where each chunk lives (file, byte offset,
// length), and `__<rank>_<n>.distcp` files holding each chunk as a torch.save blob.
// The metadata arrives through loom's safe pickle VM as opaque objects whose BUILD
// state is interpreted here; nothing torch defines is imported or run. Values that
// are not tensors (an optimizer's lr, betas, the fqns of its groups) are bytes
// entries, each a torch.save archive read by the same VM.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_DCP_H
#define LOOM_CHECKPOINT_DCP_H

#include "loom/Checkpoint/Tensor.h"
#include "loom/Checkpoint/Value.h"
#include "loom/Checkpoint/Zip.h"

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
  const std::string &directory() const { return dir; }
  /// The full tensor `fqn`, or row i of tensor `name` for `dcpRowKey(name, i)` (row j
  /// of that row for "name[i][j]", and so on; only the chunks holding that row are
  /// read); an error for a bytes entry or an unknown name.
  llvm::Expected<Tensor> read(llvm::StringRef fqn);
  /// The value of bytes entry `fqn`: its torch.save archive through the safe pickle
  /// VM (code it names stays an opaque object); an error for a tensor or an unknown
  /// name.
  llvm::Expected<ValuePtr> readBytes(llvm::StringRef fqn);

  /// The entry named `fqn`, or null.
  const DcpEntry *find(llvm::StringRef fqn) const;

private:
  /// The span of `chunk`, checked to lie in its mapped file, as the archive it holds.
  llvm::Expected<ZipArchive> archiveOf(const DcpChunk &chunk, const std::string &fqn);
  /// The tensor a chunk's archive holds, checked against its sizes (and `dtype`).
  llvm::Expected<Tensor> chunkTensor(const DcpEntry &entry, const DcpChunk &chunk,
                                     std::optional<DType> dtype);
  /// The sub-tensor at leading indices `rows` (its first rows.size() dimensions
  /// dropped).
  llvm::Expected<Tensor> readRow(const DcpEntry &entry, llvm::ArrayRef<int64_t> rows);

  DcpReader(std::string dir, DcpMetadata meta) : dir(std::move(dir)), meta(std::move(meta)) {}
  std::string dir;
  DcpMetadata meta;
  std::map<std::string, std::shared_ptr<const llvm::MemoryBuffer>> files;
};

/// The name DcpReader::read gives row `row` (along dimension 0, which it drops) of
/// tensor `fqn`: "fqn[row]". Megatron's torch_dist checkpoints stack a parameter of
/// every layer in one tensor, and a routed expert's of every layer and expert in one
/// tensor: a row key of a row key, "fqn[layer][expert]", names the expert's.
std::string dcpRowKey(llvm::StringRef fqn, int64_t row);
/// The tensor and the leading indices (outermost first) a dcpRowKey names, or nullopt
/// for another key.
std::optional<std::pair<llvm::StringRef, llvm::SmallVector<int64_t, 2>>>
parseDcpRowKey(llvm::StringRef key);

/// What a DCP checkpoint of a training run holds besides its model, found from the
/// key names torch gives it: `get_state_dict` (or FSDP.optim_state_dict) keys an
/// optimizer's state by parameter fqn, and DCP's flatten_state_dict joins the path
/// of every leaf with '.', so saving {"model": ..., "optim": ...} gives
/// `model.<fqn>`, `optim.state.<fqn>.{step,exp_avg,exp_avg_sq}` (tensors) and
/// `optim.param_groups.<i>.{lr,betas,...,params}` (bytes entries; `params` lists the
/// fqns). With flatten_optimizer_state_dict the groups are keyed by fqn instead
/// (`optim.param_groups.<fqn>.lr`). The roots ("model.", "optim.") are whatever the
/// keys say.
struct DcpOptimizer {
  /// Prefixes of the model's and the optimizer's keys ("model.", "optim.").
  std::string modelPrefix, optimizerPrefix;
  struct Param {
    std::string fqn; ///< the model key without modelPrefix
    std::string expAvg, expAvgSq; ///< DCP keys of its Adam moments
  };
  /// The parameters with states, sorted by fqn.
  std::vector<Param> params;
  /// Adam's step, the same for every parameter.
  std::optional<int64_t> step;
  /// The parameter groups: fqns, and each group's settings without "params" as a
  /// JSON array of objects (plainJson's spelling).
  std::vector<std::vector<std::string>> groups;
  std::string groupsJson;
};

/// The optimizer in `reader`'s checkpoint, nullopt when no key is an optimizer
/// state. Reads the step tensors and the group entries (through the safe VM: an
/// entry that is not a plain value, such as a pickled call, is an error); refuses
/// states other than Adam's (step, exp_avg, exp_avg_sq), moments whose shape is
/// not their parameter's and steps that differ.
llvm::Expected<std::optional<DcpOptimizer>> readDcpOptimizer(DcpReader &reader);

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
  /// A bytes entry: torch.save of `value` (plain values; no code) in rank 0's file,
  /// as torch's writer stores what is not a tensor.
  llvm::Error appendBytes(llvm::StringRef fqn, const Value &value);
  /// A file of the folder that DCP does not read (a model's config.json, which
  /// converters look for there): `name` is a plain file name other than .metadata
  /// and the .distcp files'. It is renamed into place with the folder.
  llvm::Error addFile(llvm::StringRef name, llvm::StringRef content);
  llvm::Error finish();

private:
  struct Impl;
  explicit DcpWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_DCP_H
