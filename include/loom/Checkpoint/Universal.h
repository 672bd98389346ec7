//===- Universal.h - loom's universal checkpoint format (HDF5) --*- C++ -*-===//
//
// The format every source layout (Megatron, DeepSpeed, DCP, HF) converts into and
// every target layout is resharded from: one HDF5 file holding each parameter once,
// unsharded, at full shape and in its original dtype, with its optimizer states beside
// it and the facts a resharder needs (source layout, iteration, tokens seen, name
// mapping) as attributes. docs/checkpoints.md ("Universal format") specifies it.
//
// Integrity is checked twice, for different reads: every chunk carries HDF5's
// Fletcher-32 filter (verified by HDF5 on any read, partial ones included), and every
// dataset carries the XXH3-64 of its whole row-major bytes (verified by full reads,
// independent of how HDF5 stored them).
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_UNIVERSAL_H
#define LOOM_CHECKPOINT_UNIVERSAL_H

#include "loom/Checkpoint/Tensor.h"

#include <optional>
#include <utility>

namespace loom::ckpt {

/// The states kept per parameter. Adam's moments and the fp32 master follow the
/// parameter's name; `step` is an attribute of the parameter's optimizer group.
enum class UniversalState { Param, Fp32, ExpAvg, ExpAvgSq };
llvm::StringRef universalStateName(UniversalState state);

struct UniversalParam {
  std::string name;
  Tensor param;
  std::optional<Tensor> fp32, expAvg, expAvgSq;
  std::optional<int64_t> step;
};

/// A dataset a parallel stream declares before any is written.
struct UniversalDataset {
  std::string name;
  UniversalState state = UniversalState::Param;
  DType dtype = DType::Float32;
  llvm::SmallVector<int64_t, 4> shape;
};

struct UniversalMetadata {
  /// JSON text (the model's config.json or loom's model spec); "{}" when unknown.
  std::string modelConfig = "{}";
  /// "megatron", "deepspeed", "dcp", "hf", ...
  std::string sourceFormat;
  /// JSON text describing the layout the checkpoint came from (tp, pp, dp, zero, ...).
  std::string sourceLayout = "{}";
  int64_t iteration = 0;
  int64_t tokensSeen = 0;
  /// Universal name -> name in the source checkpoint, sorted by universal name.
  std::vector<std::pair<std::string, std::string>> nameMapping;
};

struct UniversalCheckpoint {
  UniversalMetadata metadata;
  std::vector<UniversalParam> params;
};

/// Writes `checkpoint` to a temporary sibling of `path` and renames it into place.
llvm::Error writeUniversal(const llvm::Twine &path, const UniversalCheckpoint &checkpoint);

/// A universal checkpoint written dataset by dataset, in any order, so that a
/// converter holds one tensor at a time. Every optimizer state must have its
/// parameter, of the same shape, by finish(), which closes the file, syncs it and
/// renames it into place; until then (or if finish() fails, or the stream is
/// dropped) only a temporary sibling exists.
class UniversalStream {
public:
  static llvm::Expected<std::unique_ptr<UniversalStream>> create(const llvm::Twine &path,
                                                                 const UniversalMetadata &metadata);
  /// The stream of every rank of an MPI job (mpi::init done, see Mpi.h): one file,
  /// written with parallel HDF5. Every rank calls createParallel with the same
  /// `datasets` (created now, collectively, their chunks allocated), then write()s
  /// its own share of them, each dataset once in the whole job, on its own; setStep
  /// and finish() are again called by every rank alike. Rank 0 renames the file
  /// into place. An error leaves the job unable to go on: the caller aborts it.
  static llvm::Expected<std::unique_ptr<UniversalStream>>
  createParallel(const llvm::Twine &path, const UniversalMetadata &metadata,
                 llvm::ArrayRef<UniversalDataset> datasets);
  ~UniversalStream();
  llvm::Error write(llvm::StringRef name, UniversalState state, const Tensor &tensor);
  llvm::Error setStep(llvm::StringRef name, int64_t step);
  llvm::Error finish();

private:
  struct Impl;
  explicit UniversalStream(std::unique_ptr<Impl> impl);
  static llvm::Expected<std::unique_ptr<UniversalStream>>
  open(const llvm::Twine &path, const UniversalMetadata &metadata, bool parallel);
  std::unique_ptr<Impl> impl;
};

/// What the file declares about one parameter, without reading its data.
struct UniversalEntry {
  std::string name;
  DType dtype;
  llvm::SmallVector<int64_t, 4> shape;
  /// The optimizer states stored beside the parameter.
  llvm::SmallVector<UniversalState, 3> states;
  std::optional<int64_t> step;
};

/// An open universal checkpoint. Reads copy out of HDF5 into owned storages (HDF5's
/// chunked layout has no mappable bytes).
class UniversalReader {
public:
  static llvm::Expected<std::unique_ptr<UniversalReader>> open(const llvm::Twine &path);
  ~UniversalReader();
  UniversalReader(const UniversalReader &) = delete;
  UniversalReader &operator=(const UniversalReader &) = delete;

  const UniversalMetadata &metadata() const { return meta; }
  /// Sorted by name.
  llvm::ArrayRef<UniversalEntry> entries() const { return entryList; }
  const UniversalEntry *find(llvm::StringRef name) const;

  /// The whole dataset, checked against its XXH3-64.
  llvm::Expected<Tensor> read(llvm::StringRef name, UniversalState state = UniversalState::Param);
  /// Rows [begin, end) along dimension 0 (Fletcher-32 checks the chunks read).
  llvm::Expected<Tensor> readRows(llvm::StringRef name, UniversalState state, int64_t begin,
                                  int64_t end);
  /// Reads every dataset in full; the first checksum or read failure.
  llvm::Error verify();
  /// Every parameter with its states, verified.
  llvm::Expected<UniversalCheckpoint> readAll();

private:
  UniversalReader(std::string path, int64_t file) : path(std::move(path)), file(file) {}
  llvm::Error load();
  llvm::Expected<Tensor> readSlab(llvm::StringRef name, UniversalState state,
                                  std::optional<std::pair<int64_t, int64_t>> rows);

  std::string path;
  int64_t file; // hid_t, kept out of this header so users need no HDF5 include path
  UniversalMetadata meta;
  std::vector<UniversalEntry> entryList;
};

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_UNIVERSAL_H
