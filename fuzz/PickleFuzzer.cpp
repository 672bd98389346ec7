//===- PickleFuzzer.cpp - libFuzzer target for the pickle VM --------------===//
//
// Any input must give a value or an error, never a crash, hang or runaway
// allocation. Persistent ids resolve to small zeroed storages so the tensor rebuild
// paths run too. A value that was read must also survive the writer: pickle() then
// unpickle() succeeds, or the writer and reader disagree about what a tree can be.
//
//===----------------------------------------------------------------------===//
#include "loom/Checkpoint/Pickle.h"

#include <cstdlib>

using namespace loom::ckpt;

namespace {
llvm::Expected<ValuePtr> fakeStorage(const Value &pid) {
  StorageValue storage;
  const auto *fields = pid.get<TupleValue>();
  if (fields && fields->items.size() == 5) {
    if (const auto *type = fields->items[1]->get<GlobalValue>())
      storage.dtype = dtypeFromTorchStorage(type->name).value_or(DType::UInt8);
    if (const auto *numel = fields->items[4]->get<int64_t>(); numel && *numel >= 0)
      storage.numel = std::min<int64_t>(*numel, 4096);
  }
  storage.data = std::make_shared<Storage>(
      std::vector<uint8_t>(storage.numel * dtypeSize(storage.dtype)));
  return Value::make(std::move(storage));
}

llvm::Expected<StorageId> nameStorage(const std::shared_ptr<const Storage> &storage,
                                      DType dtype) {
  return StorageId{"0", dtype, storage->bytes().size() / dtypeSize(dtype)};
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  PickleLimits limits;
  limits.maxBytes = 256 << 20; // ASan's own overhead needs the rest of the RSS limit
  auto value = unpickle(llvm::ArrayRef<uint8_t>(data, size), "fuzz", fakeStorage, limits);
  if (!value) {
    llvm::consumeError(value.takeError());
    return 0;
  }
  auto written = pickle(**value, nameStorage);
  if (!written) {
    llvm::consumeError(written.takeError());
    return 0;
  }
  auto again = unpickle(
      llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(written->data()), written->size()),
      "fuzz-rewritten", fakeStorage, limits);
  if (!again) {
    llvm::errs() << "written pickle does not read back: " << llvm::toString(again.takeError())
                 << "\n";
    std::abort();
  }
  return 0;
}
