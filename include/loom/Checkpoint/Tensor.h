//===- Tensor.h - tensors over mapped or owned bytes ------------*- C++ -*-===//
//
// The data model every checkpoint format reads into and writes from. A Tensor is a
// view (dtype, shape, strides, offset) over a Storage; a Storage is a span of bytes
// that either points into a memory-mapped file or owns a buffer. Readers never copy
// tensor bytes: large checkpoints must later stream at disk speed, so a tensor read
// from a file holds the mapping alive and points into it.
//
// Torch storages can be shared by several views (q/k/v slices of one fused weight,
// a transposed view), which is why shape, strides and offset are explicit rather than
// implied by the bytes.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_TENSOR_H
#define LOOM_CHECKPOINT_TENSOR_H

#include "loom/Checkpoint/DType.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace loom::ckpt {

/// "<file>: <message>" as one line; every checkpoint error is made with this so that
/// the user always learns which file (and, inside the message, which entry/offset).
llvm::Error fileError(const llvm::Twine &file, const llvm::Twine &message);

/// Maps `path` read-only (small files may be read instead; the buffer hides which).
llvm::Expected<std::shared_ptr<const llvm::MemoryBuffer>> mapFile(const llvm::Twine &path);

/// Drops the resident pages (whole pages inside `bytes`) of a read-only file
/// mapping from this process's memory; they come back from the page cache on the
/// next touch. Only for mapped files: on other memory it would lose the contents.
void dropMappedPages(llvm::ArrayRef<uint8_t> bytes);
/// Maps every page of `bytes`, part of a file mapping, into this process in one
/// call (Linux 5.14's MADV_POPULATE_READ; elsewhere nothing): much cheaper than a
/// fault per few pages when a full pass over them follows.
void populateMappedPages(llvm::ArrayRef<uint8_t> bytes);

/// Bytes of one storage. Either borrowed from a region `owner` keeps alive (a mapped
/// file) or owned.
class Storage {
public:
  Storage(llvm::ArrayRef<uint8_t> bytes, std::shared_ptr<const void> owner)
      : owner(std::move(owner)), view(bytes) {}
  explicit Storage(std::vector<uint8_t> bytes)
      : owned(std::move(bytes)), view(owned) {}
  /// An owned buffer of `size` bytes left uninitialised, for readers that fill all of
  /// it at once. Large buffers are mapped with their pages populated up front: on a
  /// virtual machine a page fault per 4 KiB costs about 3 s per GiB, which would
  /// dominate any read (a zeroed vector pays it too, and zeroes for nothing).
  static std::shared_ptr<Storage> uninitialized(size_t size);
  /// A writable storage over `bytes`, which `owner` keeps alive (a BufferPool's
  /// buffer, handed back when the last view of it goes).
  static std::shared_ptr<Storage> writableView(llvm::MutableArrayRef<uint8_t> bytes,
                                               std::shared_ptr<const void> owner);
  /// Where an uninitialized() or writableView() storage is filled.
  uint8_t *mutableData() const { return writable; }
  /// A view of a file mapped read-only (`owner` keeps the mapping): its pages can be
  /// dropped from this process's memory at any time and come back from the page
  /// cache on the next touch. `recordCrc`: the CRC-32 the file records for exactly
  /// `bytes` (a torch zip record read whole), when it has one.
  static std::shared_ptr<Storage> fileView(llvm::ArrayRef<uint8_t> bytes,
                                           std::shared_ptr<const void> owner, bool mapped,
                                           std::optional<uint32_t> recordCrc = std::nullopt);
  /// Drops the resident pages of a file view (whole pages inside it) so that a
  /// converter streaming through files larger than memory holds only what it is
  /// working on; does nothing to other storages. Contents are unchanged.
  void dropResidentPages() const;
  /// A view of a mapped file (fileView with `mapped`): dropResidentPages works.
  bool isFileMapped() const { return fileMapped; }
  Storage(const Storage &) = delete;
  Storage &operator=(const Storage &) = delete;

  llvm::ArrayRef<uint8_t> bytes() const { return view; }
  /// The CRC-32 its file records for these bytes (see fileView), checked against
  /// them only if the reader verified the record: copies saved in two files can be
  /// told equal without reading them.
  std::optional<uint32_t> recordCrc() const { return crc; }

private:
  std::shared_ptr<const void> owner;
  std::vector<uint8_t> owned;
  uint8_t *writable = nullptr;
  bool fileMapped = false;
  std::optional<uint32_t> crc;
  llvm::ArrayRef<uint8_t> view;
};

struct Tensor {
  DType dtype = DType::Float32;
  llvm::SmallVector<int64_t, 4> shape;
  /// In elements, as torch counts them.
  llvm::SmallVector<int64_t, 4> strides;
  /// In elements from the start of the storage.
  int64_t offset = 0;
  std::shared_ptr<const Storage> storage;

  /// A row-major tensor covering `storage` from byte 0.
  static Tensor contiguous(DType dtype, llvm::ArrayRef<int64_t> shape,
                           std::shared_ptr<const Storage> storage);

  uint64_t numel() const;
  uint64_t nbytes() const { return numel() * dtypeSize(dtype); }
  bool isContiguous() const;

  /// Checks sizes and strides are non-negative, agree in rank, and that every
  /// element lies inside the storage. Returns a reason without the file name
  /// (the caller knows the file and tensor).
  std::optional<std::string> checkView() const;

  /// A contiguous view of all of its storage from its start: the storage is the
  /// tensor's bytes, and can be written or kept as they are.
  bool isWholeStorage() const {
    return isContiguous() && offset == 0 && storage && storage->bytes().size() == nbytes();
  }

  /// The bytes of a contiguous tensor, as a view into its storage.
  llvm::ArrayRef<uint8_t> contiguousBytes() const;

  /// Calls `sink` with the tensor's bytes in row-major order: one call for a
  /// contiguous tensor, bounded chunks gathered through a small buffer otherwise.
  /// Requires checkView() to have passed.
  llvm::Error forEachChunk(llvm::function_ref<llvm::Error(llvm::ArrayRef<uint8_t>)> sink) const;

  /// Row-major copy of the bytes (tests and small tensors; writers stream instead).
  std::vector<uint8_t> toBytes() const;
};

/// Row-major strides for `shape`.
llvm::SmallVector<int64_t, 4> contiguousStrides(llvm::ArrayRef<int64_t> shape);

/// Product of `shape`, or nullopt when a dimension is negative or the product
/// overflows 63 bits.
std::optional<uint64_t> checkedNumel(llvm::ArrayRef<int64_t> shape);

/// The largest |a - b| over the elements of two floating-point tensors of one dtype
/// and shape (NaN when an element is NaN on either side); nullopt for other tensors.
/// Both must have passed checkView(). For small tensors: it copies both.
std::optional<double> maxAbsDifference(const Tensor &a, const Tensor &b);

struct NamedTensor {
  std::string name;
  Tensor tensor;
};

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_TENSOR_H
