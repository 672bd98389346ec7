//===- Safetensors.h - the safetensors format -------------------*- C++ -*-===//
//
// An 8-byte little-endian header length, a JSON header mapping tensor names to
// {dtype, shape, data_offsets} (plus an optional "__metadata__" of strings), then
// the data. The reader enforces the format's rules before handing out a tensor:
// known dtypes, shape x dtype size equal to the byte span, offsets inside the data,
// and spans that tile the data exactly (no overlaps, no holes: the format forbids
// both so a file cannot be two things at once).
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_SAFETENSORS_H
#define LOOM_CHECKPOINT_SAFETENSORS_H

#include "loom/Checkpoint/OutputFile.h"
#include "loom/Checkpoint/Tensor.h"

#include "llvm/ADT/StringMap.h"

#include <utility>

namespace loom::ckpt {

/// The reference implementation's limit; a larger header is refused unread.
constexpr uint64_t kMaxSafetensorsHeader = 100 << 20;

struct SafetensorsFile {
  /// In data-offset order.
  std::vector<NamedTensor> tensors;
  /// "__metadata__", sorted by key.
  std::vector<std::pair<std::string, std::string>> metadata;
};

llvm::Expected<SafetensorsFile> readSafetensors(const llvm::Twine &path);
/// Same over bytes already in memory; `name` is used in messages.
llvm::Expected<SafetensorsFile> parseSafetensors(std::shared_ptr<const llvm::MemoryBuffer> buffer,
                                                 llvm::StringRef name);

/// Writes `tensors` in the given order (non-contiguous views are gathered on the way)
/// with `metadata` as "__metadata__".
llvm::Error writeSafetensors(const llvm::Twine &path, llvm::ArrayRef<NamedTensor> tensors,
                             llvm::ArrayRef<std::pair<std::string, std::string>> metadata = {});

/// A safetensors file written as its tensors become ready: the header (from the
/// declared tensors' names, dtypes and shapes, in order; their bytes are not read)
/// goes out first, and each tensor's bytes land at its offset whenever they are
/// given, in any order. finish() checks every tensor was written and renames the
/// file into place.
class SafetensorsStream {
public:
  static llvm::Expected<std::unique_ptr<SafetensorsStream>>
  create(const llvm::Twine &path, llvm::ArrayRef<NamedTensor> declared,
         DeferredCommits *commits = nullptr);
  llvm::Error writeTensor(llvm::StringRef name, llvm::ArrayRef<uint8_t> bytes);
  llvm::Error finish();

private:
  struct Slot {
    uint64_t offset = 0, size = 0;
    bool written = false;
  };
  SafetensorsStream(std::unique_ptr<OutputFile> file) : file(std::move(file)) {}
  std::unique_ptr<OutputFile> file;
  std::vector<std::string> order;
  llvm::StringMap<Slot> slots;
};

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_SAFETENSORS_H
