//===- Tensor.cpp - views over storages, bounds checks, streaming ---------===//
#include "loom/Checkpoint/Tensor.h"

#include "llvm/ADT/APFloat.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include <cmath>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

using namespace loom::ckpt;
using llvm::ArrayRef;

llvm::Error loom::ckpt::fileError(const llvm::Twine &file, const llvm::Twine &message) {
  // Messages quote names taken from the input (entries, keys, globals); escaping
  // control characters keeps every error on one line whatever the file holds.
  std::string text = (file + ": " + message).str();
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f)
      out += llvm::formatv("\\x{0}", llvm::format_hex_no_prefix(byte, 2)).str();
    else
      out += c;
  }
  return llvm::createStringError(llvm::inconvertibleErrorCode(), out);
}

llvm::Expected<std::shared_ptr<const llvm::MemoryBuffer>>
loom::ckpt::mapFile(const llvm::Twine &path) {
  // No null terminator requested, so LLVM maps anything larger than a few pages.
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return fileError(path, "cannot open: " + buffer.getError().message());
  return std::shared_ptr<const llvm::MemoryBuffer>(std::move(*buffer));
}

llvm::SmallVector<int64_t, 4> loom::ckpt::contiguousStrides(ArrayRef<int64_t> shape) {
  llvm::SmallVector<int64_t, 4> strides(shape.size(), 1);
  for (size_t i = shape.size(); i > 1; --i)
    strides[i - 2] = strides[i - 1] * std::max<int64_t>(shape[i - 1], 1);
  return strides;
}

std::optional<uint64_t> loom::ckpt::checkedNumel(ArrayRef<int64_t> shape) {
  int64_t numel = 1;
  for (int64_t dim : shape)
    if (dim < 0 || __builtin_mul_overflow(numel, dim, &numel))
      return std::nullopt;
  return static_cast<uint64_t>(numel);
}

Tensor Tensor::contiguous(DType dtype, ArrayRef<int64_t> shape,
                          std::shared_ptr<const Storage> storage) {
  Tensor tensor;
  tensor.dtype = dtype;
  tensor.shape.assign(shape.begin(), shape.end());
  tensor.strides = contiguousStrides(shape);
  tensor.storage = std::move(storage);
  return tensor;
}

uint64_t Tensor::numel() const { return checkedNumel(shape).value_or(0); }

bool Tensor::isContiguous() const {
  if (numel() == 0)
    return true;
  int64_t expected = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != expected)
      return false;
    expected *= shape[i];
  }
  return true;
}

std::optional<std::string> Tensor::checkView() const {
  if (shape.size() != strides.size())
    return llvm::formatv("{0} sizes but {1} strides", shape.size(), strides.size()).str();
  if (offset < 0)
    return llvm::formatv("negative storage offset {0}", offset).str();
  std::optional<uint64_t> count = checkedNumel(shape);
  if (!count)
    return std::string("negative or overflowing shape");
  uint64_t storageBytes = storage ? storage->bytes().size() : 0;
  if (*count == 0)
    return std::nullopt;
  // The furthest element is offset + sum((size-1) * stride); everything else lies
  // between it and the offset because strides are non-negative.
  int64_t last = offset;
  for (size_t i = 0; i < shape.size(); ++i) {
    int64_t step;
    if (strides[i] < 0)
      return llvm::formatv("negative stride {0} in dimension {1}", strides[i], i).str();
    if (__builtin_mul_overflow(shape[i] - 1, strides[i], &step) ||
        __builtin_add_overflow(last, step, &last))
      return std::string("view extent overflows");
  }
  uint64_t end;
  if (__builtin_mul_overflow(static_cast<uint64_t>(last) + 1, dtypeSize(dtype), &end))
    return std::string("view extent overflows");
  if (end > storageBytes)
    return llvm::formatv("view reaches byte {0} but the storage has {1}", end, storageBytes)
        .str();
  return std::nullopt;
}

ArrayRef<uint8_t> Tensor::contiguousBytes() const {
  if (numel() == 0)
    return {};
  return storage->bytes().slice(offset * dtypeSize(dtype), nbytes());
}

llvm::Error
Tensor::forEachChunk(llvm::function_ref<llvm::Error(ArrayRef<uint8_t>)> sink) const {
  if (isContiguous())
    return nbytes() ? sink(contiguousBytes()) : llvm::Error::success();

  // Collapse the innermost dimensions that are laid out contiguously into one run;
  // the outer dimensions are walked with an odometer and runs gathered into a buffer.
  const unsigned elementSize = dtypeSize(dtype);
  size_t inner = shape.size();
  int64_t runElements = 1;
  while (inner > 0 && (shape[inner - 1] == 1 || strides[inner - 1] == runElements)) {
    runElements *= shape[inner - 1];
    --inner;
  }
  const uint64_t runBytes = runElements * elementSize;
  constexpr size_t kChunk = 4 << 20;
  std::vector<uint8_t> buffer;
  buffer.reserve(std::min<uint64_t>(kChunk, nbytes()));
  llvm::SmallVector<int64_t, 4> index(inner, 0);
  ArrayRef<uint8_t> bytes = storage->bytes();
  for (;;) {
    int64_t element = offset;
    for (size_t i = 0; i < inner; ++i)
      element += index[i] * strides[i];
    const uint8_t *run = bytes.data() + element * elementSize;
    if (buffer.size() + runBytes > kChunk && !buffer.empty()) {
      if (llvm::Error err = sink(buffer))
        return err;
      buffer.clear();
    }
    if (runBytes >= kChunk) {
      if (llvm::Error err = sink(ArrayRef<uint8_t>(run, runBytes)))
        return err;
    } else {
      buffer.insert(buffer.end(), run, run + runBytes);
    }
    size_t dim = inner;
    while (dim > 0 && ++index[dim - 1] == shape[dim - 1])
      index[--dim] = 0;
    if (dim == 0)
      break;
  }
  return buffer.empty() ? llvm::Error::success() : sink(buffer);
}

std::vector<uint8_t> Tensor::toBytes() const {
  std::vector<uint8_t> out;
  out.reserve(nbytes());
  llvm::cantFail(forEachChunk([&](ArrayRef<uint8_t> chunk) {
    out.insert(out.end(), chunk.begin(), chunk.end());
    return llvm::Error::success();
  }));
  return out;
}

std::optional<double> loom::ckpt::maxAbsDifference(const Tensor &a, const Tensor &b) {
  const llvm::fltSemantics *semantics = floatSemantics(a.dtype);
  if (!semantics || a.dtype != b.dtype || a.shape != b.shape)
    return std::nullopt;
  std::vector<uint8_t> x = a.toBytes(), y = b.toBytes();
  const unsigned size = dtypeSize(a.dtype);
  auto element = [&](const std::vector<uint8_t> &bytes, size_t at) {
    uint64_t raw = 0;
    std::memcpy(&raw, bytes.data() + at, size);
    return llvm::APFloat(*semantics, llvm::APInt(size * 8, raw)).convertToDouble();
  };
  double most = 0;
  for (size_t at = 0; at < x.size(); at += size) {
    double difference = std::fabs(element(x, at) - element(y, at));
    if (std::isnan(difference) || difference > most) // once NaN, it stays
      most = difference;
  }
  return most;
}

std::shared_ptr<Storage> loom::ckpt::Storage::uninitialized(size_t size) {
  constexpr size_t kMapAbove = size_t(1) << 20;
  std::shared_ptr<void> region;
  if (size >= kMapAbove) {
    void *address = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (address != MAP_FAILED)
      region = std::shared_ptr<void>(address, [size](void *p) { ::munmap(p, size); });
  }
  if (!region)
    region = std::shared_ptr<void>(new uint8_t[size ? size : 1],
                                   [](void *p) { delete[] static_cast<uint8_t *>(p); });
  auto *data = static_cast<uint8_t *>(region.get());
  auto storage = std::make_shared<Storage>(llvm::ArrayRef<uint8_t>(data, size), std::move(region));
  storage->writable = data;
  return storage;
}

std::shared_ptr<Storage> loom::ckpt::Storage::writableView(llvm::MutableArrayRef<uint8_t> bytes,
                                                           std::shared_ptr<const void> owner) {
  auto storage = std::make_shared<Storage>(bytes, std::move(owner));
  storage->writable = bytes.data();
  return storage;
}

std::shared_ptr<Storage> loom::ckpt::Storage::fileView(llvm::ArrayRef<uint8_t> bytes,
                                                       std::shared_ptr<const void> owner,
                                                       bool mapped,
                                                       std::optional<uint32_t> recordCrc) {
  auto storage = std::make_shared<Storage>(bytes, std::move(owner));
  storage->fileMapped = mapped;
  storage->crc = recordCrc;
  return storage;
}

void loom::ckpt::dropMappedPages(llvm::ArrayRef<uint8_t> bytes) {
  if (bytes.empty())
    return;
  static const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  uintptr_t begin = (uintptr_t(bytes.data()) + page - 1) & ~(page - 1);
  uintptr_t end = (uintptr_t(bytes.data()) + bytes.size()) & ~(page - 1);
  if (end > begin)
    ::madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
}

void loom::ckpt::populateMappedPages(llvm::ArrayRef<uint8_t> bytes) {
#ifdef MADV_POPULATE_READ
  if (bytes.empty())
    return;
  static const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  uintptr_t begin = uintptr_t(bytes.data()) & ~(page - 1);
  uintptr_t end = uintptr_t(bytes.data()) + bytes.size();
  (void)::madvise(reinterpret_cast<void *>(begin), end - begin, MADV_POPULATE_READ);
#else
  (void)bytes;
#endif
}

void loom::ckpt::Storage::dropResidentPages() const {
  if (fileMapped)
    dropMappedPages(view);
}
