//===- TorchZip.h - torch.save's zip format --------------------*- C++ -*-===//
//
// torch.save (>= 1.6) writes `<root>/data.pkl` (the object tree, with storages as
// persistent ids), `<root>/data/<key>` (one record per storage), `<root>/version`
// and, since torch 2.1, `<root>/byteorder`. Reading runs data.pkl through loom's
// pickle VM with storages resolved to views of the mapped records, so tensors
// reference the file's bytes in place.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_TORCHZIP_H
#define LOOM_CHECKPOINT_TORCHZIP_H

#include "loom/Checkpoint/Pickle.h"
#include "loom/Checkpoint/Zip.h"

#include "llvm/ADT/DenseMap.h"

namespace loom::ckpt {

struct TorchReadOptions {
  /// CRC-check every storage record on open (a full pass over the data).
  bool verifyChecksums = true;
  PickleLimits limits;
  /// After checking a storage, give its mapped pages back (they are faulted in
  /// again when used): for readers that open many files before using their data,
  /// whose memory would otherwise hold all of them. A caller about to use what
  /// it reads keeps them, and so touches the bytes once from the file.
  bool releaseChecked = false;
};

/// The object torch.save stored in `path`.
llvm::Expected<ValuePtr> readTorchZip(const llvm::Twine &path,
                                      const TorchReadOptions &options = {});
/// Same over an archive already opened.
llvm::Expected<ValuePtr> readTorchZip(const ZipArchive &archive,
                                      const TorchReadOptions &options = {});

struct TorchWriteOptions {
  /// The archive's root directory; torch accepts any name.
  std::string rootName = "archive";
  bool forceZip64 = false;
  /// A file written whole (not appended to an OutputFile) is fsync'd and renamed
  /// there, while the caller goes on; null: before finishing.
  DeferredCommits *commits = nullptr;
};

/// Writes `root` so that torch.load reads it back (with weights_only=True when the
/// tree holds only tensors, containers, strings, ints and bools). Each distinct
/// Storage is written once, whole, so views keep sharing it.
llvm::Error writeTorchZip(const llvm::Twine &path, const Value &root,
                          const TorchWriteOptions &options = {});

/// Appends the archive torch.save(root) would write to `file` at its current
/// position (its zip offsets relative to there, as torch.load of a file slice wants).
llvm::Error appendTorchZip(OutputFile &file, const Value &root,
                           const TorchWriteOptions &options = {});

/// An OrderedDict name -> tensor, as Module.state_dict() returns.
ValuePtr makeStateDict(llvm::ArrayRef<NamedTensor> tensors);

/// A torch.save file written as its tensors become ready, so that a converter holds
/// one tensor at a time rather than a whole file. `root`'s tensors view placeholder
/// storages (any distinct Storage objects; their bytes are not read) whose sizes
/// `sizes` gives; the pickle goes out first, then each storage's record whenever
/// writeStorage() supplies its bytes, in any order (torch reads records by name).
/// finish() checks every storage was written and renames the file into place.
class TorchZipStream {
public:
  static llvm::Expected<std::unique_ptr<TorchZipStream>>
  create(const llvm::Twine &path, const Value &root,
         const llvm::DenseMap<const Storage *, uint64_t> &sizes,
         const TorchWriteOptions &options = {});
  llvm::Error writeStorage(const Storage *placeholder, llvm::ArrayRef<uint8_t> bytes);
  llvm::Error finish();

  /// How the archive is opened and how big each storage is: shared by the
  /// one-pass writers (sizes from the storages' own bytes) and the stream.
  using SizeOf = llvm::function_ref<std::optional<uint64_t>(const Storage *)>;
  using Opener = llvm::function_ref<llvm::Expected<std::unique_ptr<ZipWriter>>(ZipWriter::Options)>;
  static llvm::Expected<std::unique_ptr<TorchZipStream>>
  open(const llvm::Twine &path, const Value &root, SizeOf sizeOf,
       const TorchWriteOptions &options, Opener opener);
  /// The storages the pickle names, in key order.
  const std::vector<const Storage *> &storages() const { return order; }

private:
  struct Record {
    std::string key;
    DType dtype;
    uint64_t size = 0;
    bool written = false;
  };
  TorchZipStream(std::unique_ptr<ZipWriter> zip, std::string path, std::string root)
      : zip(std::move(zip)), path(std::move(path)), root(std::move(root)) {}
  std::unique_ptr<ZipWriter> zip;
  std::string path, root;
  llvm::DenseMap<const Storage *, Record> records;
  std::vector<const Storage *> order;
};

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_TORCHZIP_H
