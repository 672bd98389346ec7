//===- ZipFuzzer.cpp - libFuzzer target for zip and torch.save archives ---===//
//
// Parses the input as a zip, reads (and CRC-checks) every entry, then as a torch.save
// archive, which runs data.pkl through the pickle VM with storages resolved to the
// archive's own records and builds every tensor view over them.
//
//===----------------------------------------------------------------------===//
#include "loom/Checkpoint/TorchZip.h"

using namespace loom::ckpt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  auto buffer = llvm::MemoryBuffer::getMemBuffer(
      llvm::StringRef(reinterpret_cast<const char *>(data), size), "fuzz.zip",
      /*RequiresNullTerminator=*/false);
  auto archive = ZipArchive::parse(std::move(buffer), "fuzz.zip");
  if (!archive) {
    llvm::consumeError(archive.takeError());
    return 0;
  }
  for (const ZipEntry &entry : archive->entries()) {
    auto bytes = archive->read(entry);
    if (!bytes) {
      llvm::consumeError(bytes.takeError());
      continue;
    }
    // Touch both ends so ASan sees any view that strays outside the input.
    volatile uint8_t sink = bytes->empty() ? 0 : bytes->front() ^ bytes->back();
    (void)sink;
  }
  TorchReadOptions options;
  options.limits.maxBytes = 256 << 20;
  auto root = readTorchZip(*archive, options);
  if (!root) {
    llvm::consumeError(root.takeError());
    return 0;
  }
  for (const NamedTensor &named : collectTensors(**root))
    (void)named.tensor.toBytes();
  return 0;
}
