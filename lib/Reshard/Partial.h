//===- Partial.h - the folder a directory output is assembled in -*- C++ -*-===//
//
// A directory output is written into OUT.loom-partial and renamed into place when
// complete; --resume continues an interrupted run there. Only files an earlier run
// of the same conversion finished may be kept, so the folder holds a run record
// (the run's fingerprint) and, per rank, a journal of the files finished, each
// with its size and modification time when it was renamed into place. Both go
// before the folder is renamed, so the output holds only the checkpoint.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_LIB_RESHARD_PARTIAL_H
#define LOOM_LIB_RESHARD_PARTIAL_H

#include "ckpt/Ckpt.h"

#include "llvm/Support/Error.h"

#include <map>
#include <mutex>
#include <string>

namespace loom::reshard {

/// A hash of the printed program (it names the source, the target layout and
/// every tensor) and of each source file's path, size and modification time
/// (folders walked) of `sourcePaths`, the sources it reads.
std::string runFingerprint(ckptir::ProgramOp program, llvm::ArrayRef<std::string> sourcePaths);

/// Makes the partial folder `path` ready for a run with `fingerprint` (rank 0 of an
/// MPI job alone): with `resume` and a folder there, checks the run record an
/// earlier run left (a RunError naming the folder when it is missing or differs);
/// otherwise creates the folder and writes the record (temporary, fsync, rename).
/// Whether the folder holds nothing of an earlier run (made now, or found empty).
llvm::Expected<bool> preparePartial(const std::string &path, llvm::StringRef fingerprint,
                                    bool resume);

/// Removes the run record and every rank's journal from the partial folder `path`.
llvm::Error sealPartial(const std::string &path);

/// A failed run's hint: what is left in the partial folder `path` ("" for a single
/// file), nothing or the files its journals list, and how to go on from there.
std::string leftBehind(const std::string &path);

/// The journals of a partial folder: what every rank has finished, read when the
/// run starts, and this rank's own, appended to as its files are finished.
class Journal {
public:
  /// The journals of the partial folder `partial` as they stand; `rank`'s
  /// receives this run's records.
  Journal(std::string partial, int rank);

  /// Whether the output file or folder at `relative` (to the partial folder) is as
  /// a journal recorded it: every file under it listed with its size and
  /// modification time, and no other.
  bool kept(llvm::StringRef relative) const;
  /// Records the output at `path` (a file or folder in the partial folder), now in
  /// place, as finished. Called from the thread that renames it: thread-safe.
  llvm::Error finished(const std::string &path);
  /// How many outputs this process has recorded.
  size_t finishedHere();

private:
  std::string partial, own;
  /// Relative path -> every (size, modification time) recorded for it.
  std::map<std::string, std::vector<std::pair<uint64_t, int64_t>>> recorded;
  std::mutex mutex;
  size_t finishedCount = 0;
};

} // namespace loom::reshard

#endif // LOOM_LIB_RESHARD_PARTIAL_H
