//===- Mpi.cpp - the MPI job a parallel reshard runs in --------------------===//
#include "loom/Checkpoint/Mpi.h"

#include <cstdlib>

#ifdef LOOM_HAVE_MPI
#include <mpi.h>
#endif

using namespace loom::ckpt;

namespace {
bool initialized = false;
} // namespace

#ifdef LOOM_HAVE_MPI

bool mpi::available() { return true; }

llvm::Error mpi::init(int *argc, char ***argv) {
  if (initialized)
    return llvm::Error::success();
  int already = 0;
  MPI_Initialized(&already);
  if (!already && MPI_Init(argc, argv) != MPI_SUCCESS)
    return llvm::createStringError("MPI_Init failed");
  initialized = true;
  return llvm::Error::success();
}

bool mpi::active() { return initialized; }

void mpi::finalize() {
  if (initialized)
    MPI_Finalize();
  initialized = false;
}

int mpi::rank() {
  int r = 0;
  if (initialized)
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int mpi::size() {
  int n = 1;
  if (initialized)
    MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

void mpi::abortAll(int code) {
  if (initialized)
    MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

uint64_t mpi::sum(uint64_t value) {
  uint64_t out = value;
  if (initialized)
    MPI_Allreduce(&value, &out, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  return out;
}

uint64_t mpi::max(uint64_t value) {
  uint64_t out = value;
  if (initialized)
    MPI_Allreduce(&value, &out, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  return out;
}

#else

bool mpi::available() { return false; }

llvm::Error mpi::init(int *, char ***) {
  return llvm::createStringError(
      "this loom was built without MPI: install libhdf5-openmpi-dev and libopenmpi-dev "
      "and rebuild (scripts/bootstrap does both)");
}

bool mpi::active() { return false; }
void mpi::finalize() {}
int mpi::rank() { return 0; }
int mpi::size() { return 1; }
void mpi::abortAll(int code) { std::_Exit(code); }
uint64_t mpi::sum(uint64_t value) { return value; }
uint64_t mpi::max(uint64_t value) { return value; }

#endif
