//===- SafetensorsFuzzer.cpp - libFuzzer target for safetensors headers ---===//
//
// Parses the input as a safetensors file and reads every tensor it accepts, so any
// accepted span that strays outside the input is an ASan report.
//
//===----------------------------------------------------------------------===//
#include "loom/Checkpoint/Safetensors.h"

#include <cstdlib>

using namespace loom::ckpt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  auto buffer = llvm::MemoryBuffer::getMemBuffer(
      llvm::StringRef(reinterpret_cast<const char *>(data), size), "fuzz.safetensors",
      /*RequiresNullTerminator=*/false);
  auto file = parseSafetensors(std::move(buffer), "fuzz.safetensors");
  if (!file) {
    llvm::consumeError(file.takeError());
    return 0;
  }
  for (const NamedTensor &named : file->tensors) {
    if (named.tensor.checkView())
      std::abort(); // the reader accepted a tensor outside its own bytes
    (void)named.tensor.toBytes();
  }
  return 0;
}
