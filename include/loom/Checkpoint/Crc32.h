//===- Crc32.h - the zip CRC-32 at memory speed -----------------*- C++ -*-===//
//
// Zip entries carry a CRC-32 (the reflected 0x04C11DB7 polynomial zlib uses) of
// their data; checking it is a full pass over every storage a torch file holds. A
// table-driven CRC runs at about 5 GiB/s here, a third of what a mapped read allows,
// so x86-64 CPUs with carry-less multiply fold 64 bytes a step instead.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_CRC32_H
#define LOOM_CHECKPOINT_CRC32_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"

#include <cstdint>

namespace loom::ckpt {

/// The CRC-32 of `data` continued from `crc` (0 to start), as zlib's crc32().
uint32_t zipCrc32(uint32_t crc, llvm::ArrayRef<uint8_t> data);

/// The CRC-32 of A followed by B from crc(A), crc(B) and B's length, by arithmetic
/// modulo the polynomial (multiplying crc(A) by x^(8 len(B))).
uint32_t zipCrc32Combine(uint32_t crcA, uint32_t crcB, uint64_t lengthB);

/// zipCrc32(0, data) over `threads` parts of the data at once, combined: for the
/// gigabyte storages of a checkpoint on a machine with cores to spare. `prepare`,
/// if given, is called on each part by the thread about to check it (e.g. to map
/// a file's pages in).
uint32_t zipCrc32Parallel(llvm::ArrayRef<uint8_t> data, unsigned threads,
                          llvm::function_ref<void(llvm::ArrayRef<uint8_t>)> prepare = nullptr);

/// Whether zipCrc32() folds with carry-less multiply on this CPU.
bool zipCrc32IsAccelerated();

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_CRC32_H
