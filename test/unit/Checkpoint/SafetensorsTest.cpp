//===- SafetensorsTest.cpp - safetensors round trips ----------------------===//
#include "CheckpointTesting.h"
#include "loom/Checkpoint/Safetensors.h"
#include "loom/Checkpoint/TorchZip.h"

#include <gtest/gtest.h>

using namespace loom::ckpt;
using namespace loom::ckpt::testutil;

TEST(Safetensors, TorchTensorsRoundTripBitExact) {
  // weights.pt has bf16/fp16/fp32/fp64/int/bool tensors, views at offsets, a
  // transposed view and an empty tensor; safetensors stores them contiguously.
  std::string dir = scratchDir("safetensors-rt");
  ValuePtr weights = llvm::cantFail(readTorchZip(fixtures() + "/weights.pt"));
  std::vector<NamedTensor> tensors = collectTensors(*weights);
  llvm::cantFail(writeSafetensors(dir + "/w.safetensors", tensors, {{"format", "pt"}}));

  auto file = readSafetensors(dir + "/w.safetensors");
  ASSERT_TRUE(bool(file)) << message(file.takeError());
  expectMatchesManifest(file->tensors, readJson(fixtures() + "/weights.json"),
                        /*checkLayout=*/false);
  EXPECT_EQ(file->metadata,
            (std::vector<std::pair<std::string, std::string>>{{"format", "pt"}}));
  for (const NamedTensor &named : file->tensors)
    EXPECT_TRUE(named.tensor.isContiguous()) << named.name;

  // Written again from what was read: byte-identical file.
  llvm::cantFail(writeSafetensors(dir + "/again.safetensors", file->tensors, file->metadata));
  auto first = llvm::cantFail(mapFile(dir + "/w.safetensors"));
  auto second = llvm::cantFail(mapFile(dir + "/again.safetensors"));
  EXPECT_EQ(first->getBuffer(), second->getBuffer());

  std::string output;
  EXPECT_EQ(runScript("check_loom_output.py", {"safetensors", fixtures() + "/weights.pt",
                                               dir + "/w.safetensors"},
                      &output),
            0)
      << output;
}

TEST(Safetensors, WriterRefusesRepeatedAndReservedNames) {
  auto storage = std::make_shared<Storage>(std::vector<uint8_t>(4));
  Tensor t = Tensor::contiguous(DType::Float32, {1}, storage);
  std::string dir = scratchDir("safetensors-names");
  EXPECT_EQ(message(writeSafetensors(dir + "/x.safetensors", {{"a", t}, {"a", t}})),
            dir + "/x.safetensors: tensor name 'a' is reserved or repeated");
  EXPECT_EQ(message(writeSafetensors(dir + "/x.safetensors", {{"__metadata__", t}})),
            dir + "/x.safetensors: tensor name '__metadata__' is reserved or repeated");
}

TEST(Safetensors, EveryTruncationIsAnError) {
  std::string dir = scratchDir("safetensors-cut");
  auto storage = std::make_shared<Storage>(std::vector<uint8_t>(24, 7));
  llvm::cantFail(writeSafetensors(dir + "/x.safetensors",
                                  {{"a", Tensor::contiguous(DType::Float32, {2}, storage)},
                                   {"b", Tensor::contiguous(DType::BFloat16, {2, 2}, storage)}}));
  auto whole = llvm::cantFail(mapFile(dir + "/x.safetensors"));
  for (size_t length = 0; length < whole->getBufferSize(); ++length) {
    auto cut = llvm::MemoryBuffer::getMemBufferCopy(whole->getBuffer().take_front(length), "c");
    auto file = parseSafetensors(std::move(cut), "c");
    EXPECT_FALSE(bool(file)) << length;
    if (!file)
      message(file.takeError());
  }
}
