//===- DcpTest.cpp - torch DCP checkpoints written by 2 gloo processes ----===//
#include "CheckpointTesting.h"
#include "loom/Checkpoint/Dcp.h"

#include "llvm/Support/MemoryBuffer.h"

#include <gtest/gtest.h>

#include <fstream>

using namespace loom::ckpt;
using namespace loom::ckpt::testutil;

namespace {
const std::string &dcpFixtures() {
  static const std::string dir = [] {
    std::string dir = scratchDir("dcp");
    std::string output;
    EXPECT_EQ(runScript("make_dcp.py", {dir}, &output), 0) << output;
    return dir;
  }();
  return dir;
}

std::string readText(const std::string &path) {
  auto buffer = llvm::MemoryBuffer::getFile(path);
  return buffer ? (*buffer)->getBuffer().str() : std::string();
}
} // namespace

TEST(Dcp, ReassemblesTheTensorsTorchWrote) {
  auto ckpt = readDcp(dcpFixtures() + "/dcp");
  ASSERT_TRUE(bool(ckpt)) << message(ckpt.takeError());
  expectMatchesManifest(ckpt->tensors, readJson(dcpFixtures() + "/dcp.json"),
                        /*checkLayout=*/false);
  // layer.weight is a ShardedTensor split 6 + 4 rows over the two ranks' files.
  const DcpEntry *layer = nullptr;
  for (const DcpEntry &e : ckpt->metadata.entries)
    if (e.fqn == "layer.weight")
      layer = &e;
  ASSERT_TRUE(layer);
  ASSERT_EQ(layer->chunks.size(), 2u);
  EXPECT_EQ(layer->chunks[1].offsets, (llvm::SmallVector<int64_t, 4>{6, 0}));
  EXPECT_EQ(layer->chunks[1].sizes, (llvm::SmallVector<int64_t, 4>{4, 6}));
  EXPECT_NE(layer->chunks[0].file, layer->chunks[1].file);
  EXPECT_TRUE(ckpt->metadata.entries.back().isBytes); // "note"
}

TEST(Dcp, ChunkPastTheEndOfItsFileIsAnError) {
  std::string dir = scratchDir("dcp-truncated");
  std::string source = dcpFixtures() + "/dcp";
  for (const char *file : {".metadata", "__0_0.distcp", "__0_1.distcp", "__0_2.distcp",
                           "__0_3.distcp", "__1_0.distcp", "__1_1.distcp"})
    std::ofstream(dir + "/" + file, std::ios::binary) << readText(source + "/" + file);
  std::string cut = readText(source + "/__1_0.distcp");
  std::ofstream(dir + "/__1_0.distcp", std::ios::binary) << cut.substr(0, cut.size() / 2);
  std::string error = message(readDcp(dir).takeError());
  EXPECT_NE(error.find("__1_0.distcp: chunk of 'layer.weight' at offset 0"), std::string::npos)
      << error;
  EXPECT_NE(error.find("lies past the end"), std::string::npos) << error;
}

TEST(Dcp, MetadataThatIsNotDcpIsAnError) {
  // A pickled plain dict (protocol 2: PROTO 2, EMPTY_DICT, STOP).
  const uint8_t dict[] = {0x80, 0x02, '}', '.'};
  EXPECT_NE(message(parseDcpMetadata(dict, "x/.metadata").takeError())
                .find("x/.metadata: not a DCP Metadata object"),
            std::string::npos);
}
