//===- OutputFile.h - write a checkpoint file all or nothing ----*- C++ -*-===//
//
// Checkpoint writers stream gigabytes; a crash or error half-way must not leave a
// truncated file under the final name that a later run would take for a checkpoint.
// OutputFile writes to a temporary sibling and renames it into place on commit().
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_OUTPUTFILE_H
#define LOOM_CHECKPOINT_OUTPUTFILE_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace loom::ckpt {

class DeferredCommits;

/// pwrite until all `size` bytes are at `offset` of `fd`, retrying short writes and
/// EINTR; false with errno set on failure.
bool pwriteAll(int fd, const uint8_t *data, uint64_t size, uint64_t offset);

/// Positioned writes into a file that is being written, large spans around the
/// page cache. Spans of kDirectMin bytes and more go to the disk directly
/// (O_DIRECT, through an aligned bounce buffer) where the file system allows it:
/// the page cache's dirty-page throttling then does not pace the writer below the
/// disk's own bandwidth, and the written bytes do not crowd the cache. Not in
/// memory file systems (tmpfs), nor with LOOM_DIRECT_IO=0 in the environment.
/// The direct writes run on a helper thread, one bounce buffer reaching the disk
/// while the next is filled (one thread and two buffers serve every file of the
/// process); they may still be running when writeAt returns (the bytes are copied
/// by then), and a failure among them is reported by the next writeAt or finish.
/// Used by OutputFile, and by writers whose file another library lays out (the
/// universal format's chunks, at the offsets HDF5 allocates).
class PositionedWriter {
public:
  /// Writes into the file at `path` through `cachedFd` (a descriptor of it open
  /// for writing, owned by the caller) and a second, O_DIRECT descriptor opened
  /// when a span first needs it. Errors name `displayName`.
  PositionedWriter(std::string path, int cachedFd, std::string displayName);
  /// Drops the direct writes still queued (the file is being abandoned: call
  /// finish() first to keep them) and waits for the one under way.
  ~PositionedWriter();
  PositionedWriter(const PositionedWriter &) = delete;
  PositionedWriter &operator=(const PositionedWriter &) = delete;

  /// Writes `bytes` at `offset` of the file. `what` names the bytes in errors.
  llvm::Error writeAt(uint64_t offset, llvm::ArrayRef<uint8_t> bytes, const llvm::Twine &what);
  /// Starts the disk writing bytes [offset, offset + length) of the file, which
  /// are complete, without waiting (Linux's sync_file_range; elsewhere nothing):
  /// the writeback of a long file then overlaps the work that produces the rest,
  /// and the final fsync finds little left.
  void startWriteback(uint64_t offset, uint64_t length);
  /// Waits for the direct writes under way; the first failure among them.
  llvm::Error drain();
  /// drain(), after which the direct descriptor is closed and later writes go
  /// through the page cache.
  llvm::Error finish();
  /// The name errors give the file.
  const std::string &displayName() const { return name; }
  /// Bytes written around the page cache so far (0 where they all went through it),
  /// once the direct writes under way have finished.
  uint64_t directBytes();
  static constexpr uint64_t kDirectMin = 8u << 20;

private:
  std::string path, name;
  int cachedFd;
  /// The O_DIRECT descriptor (-1: not yet tried; -2: refused or finished), and
  /// this file's share of the process's direct writer.
  int directFd = -1;
  class DirectPipe;
  std::unique_ptr<DirectPipe> pipe;
  uint64_t directWritten = 0; ///< the pipe's count, kept when finish() ends it
  bool openDirect();
};

class OutputFile {
public:
  /// With `commits`, commit() only finishes writing and hands the file to that
  /// queue, which makes it durable and renames it while the caller goes on.
  static llvm::Expected<std::unique_ptr<OutputFile>> create(const llvm::Twine &path,
                                                            DeferredCommits *commits = nullptr);
  /// Discards the temporary unless commit() succeeded.
  ~OutputFile();

  llvm::raw_fd_ostream &os() { return *stream; }
  const std::string &path() const { return finalPath; }
  /// The temporary's descriptor, for positioned writes (flush os() first).
  int fd() const { return temp->FD; }
  /// A one-line error if the stream has failed so far ("<path>: <what>: <reason>").
  llvm::Error check(const llvm::Twine &what);
  /// PositionedWriter's startWriteback, after flushing os().
  void startWriteback(uint64_t offset, uint64_t length);
  /// Writes `bytes` at `offset` of the file as PositionedWriter does (os()'s
  /// position is unchanged; flush os() first if it holds bytes before `offset`).
  /// A failure of an earlier span's direct write is reported here or by commit().
  llvm::Error writeAt(uint64_t offset, llvm::ArrayRef<uint8_t> bytes, const llvm::Twine &what) {
    return positioned->writeAt(offset, bytes, what);
  }
  /// Appends `bytes` after what os() has written, as writeAt does.
  llvm::Error append(llvm::ArrayRef<uint8_t> bytes, const llvm::Twine &what);
  /// PositionedWriter's directBytes.
  uint64_t directBytes() { return positioned->directBytes(); }
  static constexpr uint64_t kDirectMin = PositionedWriter::kDirectMin;
  /// Flushes, fsyncs and renames the temporary over the final path (or, given
  /// DeferredCommits at create(), flushes and queues the rest there).
  llvm::Error commit();

private:
  OutputFile(std::string path, llvm::sys::fs::TempFile temp);
  DeferredCommits *deferTo = nullptr;

  std::string finalPath;
  std::optional<llvm::sys::fs::TempFile> temp;
  std::unique_ptr<llvm::raw_fd_ostream> stream;
  std::unique_ptr<PositionedWriter> positioned;
};

/// Files whose bytes are all written, made durable (fsync) and renamed into place
/// by one worker thread in the order given, so that a converter producing many
/// files overlaps each one's fsync with the writing of the next. A failure is
/// reported by the next add() or drain(); files still queued when the object is
/// destroyed (the run failed) are discarded, never renamed.
class DeferredCommits {
public:
  /// Called on the worker thread with each file's final path once it is in place
  /// (a resumable run records it); its error fails the queue as a rename's would.
  using Committed = std::function<llvm::Error(const std::string &finalPath)>;
  explicit DeferredCommits(Committed committed = nullptr);
  ~DeferredCommits();
  DeferredCommits(const DeferredCommits &) = delete;
  DeferredCommits &operator=(const DeferredCommits &) = delete;

  /// Queues `temp` (closed for writing by its owner) to become `finalPath`; the
  /// first failure of an earlier file, if any.
  llvm::Error add(std::string finalPath, llvm::sys::fs::TempFile temp);
  /// Waits until every queued file is in place; the first failure, if any.
  llvm::Error drain();

private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_OUTPUTFILE_H
