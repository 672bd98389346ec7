//===- SafetensorsTest.cpp - safetensors round trips ----------------------===//
#include "CheckpointTesting.h"
#include "loom/Checkpoint/Safetensors.h"
#include "loom/Checkpoint/TorchZip.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"

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

// Streaming: the header first, tensors at their offsets in any order; the file reads
// back bit-exact; a tensor never written fails finish() and leaves no file.
TEST(SafetensorsStream, TensorsInAnyOrderAndNothingMissing) {
  std::string dir = scratchDir("safetensors-stream");
  std::vector<NamedTensor> real;
  for (int i = 0; i < 3; ++i) {
    std::vector<uint8_t> bytes(size_t(3 + i) * 10 * 2);
    for (size_t b = 0; b < bytes.size(); ++b)
      bytes[b] = uint8_t(b * 13 + i);
    real.push_back({"w" + std::to_string(i),
                    Tensor::contiguous(DType::BFloat16, {int64_t(3 + i), 10},
                                       std::make_shared<Storage>(std::move(bytes)))});
  }
  real.push_back({"empty", Tensor::contiguous(DType::Float32, {0, 4},
                                              std::make_shared<Storage>(std::vector<uint8_t>()))});
  auto stream = SafetensorsStream::create(dir + "/s.safetensors", real);
  ASSERT_TRUE(bool(stream)) << message(stream.takeError());
  for (int i : {2, 0, 3, 1})
    ASSERT_FALSE(bool((*stream)->writeTensor(real[i].name, real[i].tensor.contiguousBytes())));
  EXPECT_NE(message((*stream)->writeTensor("w0", real[0].tensor.contiguousBytes())).find("written twice"),
            std::string::npos);
  ASSERT_FALSE(bool((*stream)->finish()));
  auto back = readSafetensors(dir + "/s.safetensors");
  ASSERT_TRUE(bool(back)) << message(back.takeError());
  ASSERT_EQ(back->tensors.size(), real.size());
  for (size_t i = 0; i < real.size(); ++i) {
    EXPECT_EQ(back->tensors[i].name, real[i].name);
    EXPECT_EQ(back->tensors[i].tensor.shape, real[i].tensor.shape);
    EXPECT_EQ(back->tensors[i].tensor.toBytes(), real[i].tensor.toBytes()) << real[i].name;
  }
  // The same bytes as the one-pass writer.
  ASSERT_FALSE(bool(writeSafetensors(dir + "/one-pass.safetensors", real)));
  auto a = llvm::MemoryBuffer::getFile(dir + "/s.safetensors");
  auto b = llvm::MemoryBuffer::getFile(dir + "/one-pass.safetensors");
  ASSERT_TRUE(a && b);
  EXPECT_EQ((*a)->getBuffer(), (*b)->getBuffer());

  auto partial = SafetensorsStream::create(dir + "/partial.safetensors", real);
  ASSERT_TRUE(bool(partial));
  EXPECT_NE(message((*partial)->writeTensor("w1", real[0].tensor.contiguousBytes()))
                .find("tensor 'w1' has 80 bytes, given 60"),
            std::string::npos);
  EXPECT_NE(message((*partial)->finish()).find("tensor 'w0' was never written"), std::string::npos);
  partial->reset();
  EXPECT_FALSE(llvm::sys::fs::exists(dir + "/partial.safetensors"));
}
