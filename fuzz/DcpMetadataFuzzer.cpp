//===- DcpMetadataFuzzer.cpp - libFuzzer target for DCP .metadata ---------===//
//
// Interprets the input as a DCP .metadata pickle. Whatever the parser accepts must
// keep its promises: chunks inside their tensor and adding up to it, locations that
// are plain file names — a violation aborts so libFuzzer keeps the input.
//
//===----------------------------------------------------------------------===//
#include "loom/Checkpoint/Dcp.h"

#include <cstdlib>

using namespace loom::ckpt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  auto metadata = parseDcpMetadata(llvm::ArrayRef<uint8_t>(data, size), "fuzz/.metadata");
  if (!metadata) {
    llvm::consumeError(metadata.takeError());
    return 0;
  }
  for (const DcpEntry &entry : metadata->entries) {
    uint64_t covered = 0;
    for (const DcpChunk &chunk : entry.chunks) {
      if (llvm::StringRef(chunk.file).contains('/'))
        std::abort();
      if (entry.isBytes)
        continue;
      for (size_t d = 0; d < entry.size.size(); ++d)
        if (chunk.offsets[d] + chunk.sizes[d] > entry.size[d])
          std::abort();
      covered += *checkedNumel(chunk.sizes);
    }
    if (!entry.isBytes && covered != *checkedNumel(entry.size))
      std::abort();
  }
  return 0;
}
