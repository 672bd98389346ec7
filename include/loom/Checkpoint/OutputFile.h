//===- OutputFile.h - write a checkpoint file all or nothing ----*- C++ -*-===//
//
// Checkpoint writers stream gigabytes; a crash or error half-way must not leave a
// truncated file under the final name that a later run would take for a checkpoint.
// OutputFile writes to a temporary sibling and renames it into place on commit().
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_OUTPUTFILE_H
#define LOOM_CHECKPOINT_OUTPUTFILE_H

#include "llvm/Support/Error.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <memory>
#include <optional>
#include <string>

namespace loom::ckpt {

class OutputFile {
public:
  static llvm::Expected<std::unique_ptr<OutputFile>> create(const llvm::Twine &path);
  /// Discards the temporary unless commit() succeeded.
  ~OutputFile();

  llvm::raw_fd_ostream &os() { return *stream; }
  const std::string &path() const { return finalPath; }
  /// The temporary's descriptor, for positioned writes (flush os() first).
  int fd() const { return temp->FD; }
  /// A one-line error if the stream has failed so far ("<path>: <what>: <reason>").
  llvm::Error check(const llvm::Twine &what);
  /// Starts the disk writing bytes [offset, offset + length) of the file, which
  /// are complete, without waiting (Linux's sync_file_range; elsewhere nothing):
  /// the writeback of a long file then overlaps the work that produces the rest,
  /// and commit()'s fsync finds little left. Flushes os() first.
  void startWriteback(uint64_t offset, uint64_t length);
  /// Flushes and renames the temporary over the final path.
  llvm::Error commit();

private:
  OutputFile(std::string path, llvm::sys::fs::TempFile temp);

  std::string finalPath;
  std::optional<llvm::sys::fs::TempFile> temp;
  std::unique_ptr<llvm::raw_fd_ostream> stream;
};

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_OUTPUTFILE_H
