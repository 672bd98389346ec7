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

namespace loom::ckpt {

struct TorchReadOptions {
  /// CRC-check every storage record on open (a full pass over the data).
  bool verifyChecksums = true;
  PickleLimits limits;
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

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_TORCHZIP_H
