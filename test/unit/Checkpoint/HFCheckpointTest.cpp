//===- HFCheckpointTest.cpp - sharded HF checkpoints ----------------------===//
#include "CheckpointTesting.h"
#include "loom/Checkpoint/HFCheckpoint.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/MemoryBuffer.h"

#include <gtest/gtest.h>
#include <map>
#include <set>

using namespace loom::ckpt;
using namespace loom::ckpt::testutil;

namespace {
/// name -> sha256 from a manifest.
std::map<std::string, std::string> expectedHashes() {
  std::map<std::string, std::string> out;
  llvm::json::Value manifest = readJson(fixtures() + "/hf.json");
  for (const llvm::json::Value &t : *manifest.getAsObject()->getArray("tensors"))
    out[t.getAsObject()->getString("name")->str()] = t.getAsObject()->getString("sha256")->str();
  return out;
}

std::map<std::string, std::string> hashes(const HFCheckpoint &checkpoint) {
  std::map<std::string, std::string> out;
  for (const NamedTensor &named : checkpoint.tensors)
    out[named.name] = sha256(named.tensor);
  return out;
}

void copyDir(const std::string &from, const std::string &to) {
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(from, ec), end; it != end && !ec; it.increment(ec))
    llvm::sys::fs::copy_file(it->path(), to + "/" + llvm::sys::path::filename(it->path()));
}

void rewrite(const std::string &path, llvm::StringRef from, llvm::StringRef to) {
  std::string text = llvm::cantFail(llvm::errorOrToExpected(llvm::MemoryBuffer::getFile(path)))
                         ->getBuffer()
                         .str();
  ASSERT_NE(text.find(from.str()), std::string::npos) << from.str();
  for (size_t at = text.find(from.str()); at != std::string::npos;
       at = text.find(from.str(), at + to.size()))
    text.replace(at, from.size(), to.str());
  std::error_code ec;
  llvm::raw_fd_ostream(path, ec) << text;
}
} // namespace

class HFFixture : public ::testing::TestWithParam<const char *> {};

TEST_P(HFFixture, ReadsEveryShardThroughTheIndex) {
  auto checkpoint = readHFCheckpoint(fixtures() + "/" + GetParam());
  ASSERT_TRUE(bool(checkpoint)) << message(checkpoint.takeError());
  EXPECT_EQ(hashes(*checkpoint), expectedHashes());
  uint64_t total = 0;
  for (const NamedTensor &named : checkpoint->tensors)
    total += named.tensor.nbytes();
  EXPECT_EQ(*checkpoint->indexMetadata.getInteger("total_size"), int64_t(total));
  EXPECT_TRUE(std::is_sorted(checkpoint->tensors.begin(), checkpoint->tensors.end(),
                             [](auto &a, auto &b) { return a.name < b.name; }));
}

INSTANTIATE_TEST_SUITE_P(HF, HFFixture, ::testing::Values("hf_safetensors", "hf_bin"));

class HFRoundTrip : public ::testing::TestWithParam<HFWeightFormat> {};

TEST_P(HFRoundTrip, WritesShardsAndIndexThatReadBack) {
  auto original = llvm::cantFail(readHFCheckpoint(fixtures() + "/hf_safetensors"));
  std::string dir = scratchDir(GetParam() == HFWeightFormat::Safetensors ? "hf-st" : "hf-bin");
  llvm::cantFail(writeHFCheckpoint(dir, original.tensors, GetParam(), 2048));
  auto again = readHFCheckpoint(dir);
  ASSERT_TRUE(bool(again)) << message(again.takeError());
  EXPECT_EQ(again->format, GetParam());
  EXPECT_EQ(hashes(*again), expectedHashes());
  std::set<std::string> shards(again->shardOf.begin(), again->shardOf.end());
  EXPECT_GT(shards.size(), 2u);
}

INSTANTIATE_TEST_SUITE_P(HF, HFRoundTrip,
                         ::testing::Values(HFWeightFormat::Safetensors, HFWeightFormat::TorchBin));

TEST(HFCheckpoint, IndexAndShardsMustAgree) {
  const std::string index = "/model.safetensors.index.json";
  const std::string shard1 = "model-00001-of-00003.safetensors";
  const std::string shard2 = "model-00002-of-00003.safetensors";
  struct Case {
    const char *name;
    std::string from, to, expected;
  };
  std::vector<Case> cases = {
      {"traversal", "\"" + shard1 + "\"", "\"../" + shard1 + "\"",
       "does not name a file in the checkpoint directory"},
      {"missing_shard", "\"" + shard2 + "\"", "\"model-gone.safetensors\"", "cannot open"},
      {"wrong_shard", "\"embedding.word_embeddings.weight\": \"" + shard1,
       "\"embedding.word_embeddings.weight\": \"" + shard2,
       "tensor 'embedding.word_embeddings.weight' is indexed in shard " + shard2},
      {"unlisted", "\"embedding.word_embeddings.weight\": \"" + shard1 + "\",", "",
       "tensor 'embedding.word_embeddings.weight' is not in the index"},
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(c.name);
    std::string dir = scratchDir(std::string("hf-bad-") + c.name);
    copyDir(fixtures() + "/hf_safetensors", dir);
    rewrite(dir + index, c.from, c.to);
    auto checkpoint = readHFCheckpoint(dir);
    ASSERT_FALSE(bool(checkpoint));
    std::string text = message(checkpoint.takeError());
    EXPECT_NE(text.find(c.expected), std::string::npos) << text;
  }
}

TEST(HFCheckpoint, EmptyDirectoryIsAnError) {
  std::string dir = scratchDir("hf-empty");
  EXPECT_EQ(message(readHFCheckpoint(dir).takeError()),
            dir + ": no model.safetensors, pytorch_model.bin or index of either");
}
