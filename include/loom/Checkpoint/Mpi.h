//===- Mpi.h - the MPI job a parallel reshard runs in -----------*- C++ -*-===//
//
// `loom reshard --mpi` runs one process per MPI rank (mpirun -n N loom reshard
// --mpi ...): each reads and assembles its share of the output's tensors and all
// of them write one universal file with parallel HDF5 (UniversalStream::
// createParallel). This header keeps MPI's own headers out of the callers; every
// function works on MPI_COMM_WORLD. Without parallel HDF5 at configure time
// (LOOM_HAVE_MPI unset) available() is false and init() says so.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_MPI_H
#define LOOM_CHECKPOINT_MPI_H

#include "llvm/Support/Error.h"

#include <cstdint>

namespace loom::ckpt::mpi {

/// Whether this build has MPI and parallel HDF5.
bool available();
/// Initializes MPI once (later calls do nothing); an error without MPI.
llvm::Error init(int *argc, char ***argv);
/// Whether init() succeeded and finalize() has not run.
bool active();
void finalize();
int rank();
int size();
/// Ends every rank of the job with `code` (MPI_Abort): what a rank does when it
/// fails while the others may be waiting in a collective call.
[[noreturn]] void abortAll(int code);
/// The sum over ranks, on every rank.
uint64_t sum(uint64_t value);
/// The maximum over ranks, on every rank.
uint64_t max(uint64_t value);

} // namespace loom::ckpt::mpi

#endif // LOOM_CHECKPOINT_MPI_H
