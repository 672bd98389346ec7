//===- Reshard.h - build and run resharding programs ------------*- C++ -*-===//
//
// `loom reshard` in library form: a program of the ckpt dialect is built from the
// layout a checkpoint has and the layout wanted (buildProgram), verified by the
// dialect, and run (runProgram). The program is the universal-checkpoint resharding
// script users can save, read, check and run later.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_RESHARD_RESHARD_H
#define LOOM_RESHARD_RESHARD_H

#include "loom/Reshard/Layout.h"
#include "ckpt/Ckpt.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <functional>

namespace loom::reshard {

/// A module holding one ckpt.program that rewrites `source`, found at `sourceRoot`,
/// as `target` at `outputRoot`. Every target piece is filled from the source pieces
/// of the same full tensor that overlap it (one copy of replicated tensors);
/// regions no piece covers are written with zeros.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
buildProgram(mlir::MLIRContext &context, const Layout &source, const Layout &target,
             llvm::StringRef sourceRoot, llvm::StringRef outputRoot);

/// Merges writes of neighbouring slices of one value into one write (see
/// Coalesce.cpp); returns how many writes went away. The `ckpt-coalesce` pass.
unsigned coalesceCopies(ckptir::ProgramOp program);

/// Whether the program writes one file at its output path (one output, path "."),
/// rather than a folder of them.
bool writesOneFile(ckptir::ProgramOp program);

/// Shares the program's work over `ranks` MPI ranks and records the split in it
/// (see Partition.cpp): each output file, or each tensor of a single universal
/// file, gets the rank that writes it. The `ckpt-partition` pass. An error for a
/// program writing one file of another format.
llvm::Error partitionProgram(ckptir::ProgramOp program, int ranks);
/// The ranks a partitioned program was shared over, if it was.
std::optional<int> partitionRanks(ckptir::ProgramOp program);
/// The rank partitionProgram gave an output or tensor declaration, if any.
std::optional<int> partitionRankOf(mlir::Operation *op);

void registerPartitionPass();
void registerReshardPasses();

struct RunOptions {
  /// Override the program's roots when not empty.
  std::string sourceRoot, outputRoot;
  /// Continue a run that was interrupted: files already complete in the partial
  /// output are kept and not written again.
  bool resume = false;
  /// Called after each output file with bytes done and bytes in all.
  std::function<void(uint64_t done, uint64_t total)> progress;
  /// Run as one rank of an MPI job (mpi::init done; see loom/Checkpoint/Mpi.h): the
  /// output must be one universal file; this rank reads and assembles its share of
  /// the tensors and every rank writes the file together with parallel HDF5.
  /// RunStats then count this rank's tensors and bytes.
  bool mpi = false;
  /// Bytes of mapped source tensors the run keeps resident (`--max-memory`):
  /// past it, the least recently used give their pages back to the page cache
  /// (a later touch reads them from there). The tensor in use is always kept.
  uint64_t maxResidentSourceBytes = uint64_t(256) << 20;
};

struct RunStats {
  /// Files written and kept from an earlier run, as they are on disk: a DCP output
  /// counts its .metadata and each .distcp file.
  uint64_t files = 0, skippedFiles = 0, tensors = 0, bytesWritten = 0, bytesRead = 0;
  /// The most mapped source bytes resident at once, and how many source
  /// tensors gave their pages back early to stay under the limit.
  uint64_t peakResidentSourceBytes = 0, sourceEvictions = 0;
  double seconds = 0;
};

/// A run refused or failed, with a hint for the user's next step: what the run
/// left under the output path, and how to go on from there.
class RunError : public llvm::ErrorInfo<RunError> {
public:
  static char ID;
  RunError(const llvm::Twine &message, const llvm::Twine &hint)
      : message(message.str()), hint(hint.str()) {}
  void log(llvm::raw_ostream &os) const override { os << message; }
  std::error_code convertToErrorCode() const override { return llvm::inconvertibleErrorCode(); }
  std::string message, hint;
};

/// Runs a verified program. A directory output is written into "<output>.loom-partial"
/// and renamed into place when complete; a single-file output is written to a
/// temporary sibling and renamed. Either way the output path holds a whole
/// checkpoint or nothing. With `resume`, a partial folder is continued only if an
/// earlier run of the same program from the same source files left it (a RunError
/// otherwise), and only the files that run recorded as finished, unchanged since,
/// are kept. A failed run removes the partial folder it made if it finished no file
/// in it. Its errors are RunErrors.
llvm::Expected<RunStats> runProgram(ckptir::ProgramOp program, const RunOptions &options);

} // namespace loom::reshard

#endif // LOOM_RESHARD_RESHARD_H
