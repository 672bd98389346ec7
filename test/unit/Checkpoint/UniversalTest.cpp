//===- UniversalTest.cpp - the HDF5 universal format -----------------------===//
#include "CheckpointTesting.h"
#include "loom/Checkpoint/Universal.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>
#include <hdf5.h>

#include <fstream>
#include <random>
#include <unistd.h>

using namespace loom::ckpt;
using namespace loom::ckpt::testutil;

namespace {
Tensor randomTensor(DType dtype, llvm::ArrayRef<int64_t> shape, unsigned seed) {
  std::mt19937 gen(seed);
  std::vector<uint8_t> bytes(*checkedNumel(shape) * dtypeSize(dtype));
  for (uint8_t &b : bytes)
    b = uint8_t(gen());
  if (dtype == DType::Bool)
    for (uint8_t &b : bytes)
      b &= 1;
  return Tensor::contiguous(dtype, shape, std::make_shared<Storage>(std::move(bytes)));
}

/// A small model with every dtype, a scalar, an empty tensor, a transposed view,
/// parameters spanning several chunks (one with a short last chunk, one whose chunks
/// have an odd number of bytes), and Adam state on some parameters.
UniversalCheckpoint sampleCheckpoint() {
  UniversalCheckpoint ckpt;
  ckpt.metadata.modelConfig = R"({"hidden_size":64,"num_layers":2})";
  ckpt.metadata.sourceFormat = "megatron";
  ckpt.metadata.sourceLayout = R"({"tp":2,"pp":2})";
  ckpt.metadata.iteration = 1234;
  ckpt.metadata.tokensSeen = 5056000;
  ckpt.metadata.nameMapping = {{"embed.weight", "embedding.word_embeddings.weight"}};
  auto add = [&](std::string name, Tensor t, bool adam) {
    UniversalParam p{std::move(name), t, {}, {}, {}, {}};
    if (adam) {
      p.fp32 = randomTensor(DType::Float32, t.shape, 7);
      p.expAvg = randomTensor(DType::Float32, t.shape, 8);
      p.expAvgSq = randomTensor(DType::Float32, t.shape, 9);
      p.step = 1234;
    }
    ckpt.params.push_back(std::move(p));
  };
  add("big.weight", randomTensor(DType::Float32, {1024, 512}, 1), true);
  add("embed.weight", randomTensor(DType::BFloat16, {50, 64}, 2), true);
  add("half.weight", randomTensor(DType::Float16, {3, 5}, 3), false);
  add("ids", randomTensor(DType::Int64, {7}, 4), false);
  add("mask", randomTensor(DType::Bool, {2, 3}, 5), false);
  add("scale", randomTensor(DType::Float64, {}, 6), false);
  add("empty", randomTensor(DType::Float32, {0, 4}, 0), false);
  // 1000 rows of 1200 bytes: chunks of 873 rows, the second one short (127 rows).
  add("edge.weight", randomTensor(DType::Float32, {1000, 300}, 11), false);
  // Rows of 347 bytes: chunks of 3021 rows = 1,048,287 bytes, an odd count.
  add("odd.mask", randomTensor(DType::Bool, {5000, 347}, 12), false);
  // Fletcher-32's edge cases: words summing to a multiple of 65535 (all 0xffff),
  // and all zeros.
  add("ones.weight", Tensor::contiguous(DType::Int16, {700, 1024},
                                        std::make_shared<Storage>(std::vector<uint8_t>(700 * 1024 * 2, 0xff))),
      false);
  add("zeros.weight", Tensor::contiguous(DType::Float32, {300, 1024},
                                         std::make_shared<Storage>(std::vector<uint8_t>(300 * 1024 * 4, 0))),
      false);
  Tensor t = randomTensor(DType::Float32, {6, 4}, 10);
  t.shape = {4, 6};
  t.strides = {1, 4}; // a transposed view: written gathered
  add("transposed.weight", t, false);
  return ckpt;
}

void expectSameBytes(const Tensor &got, const Tensor &want) {
  EXPECT_EQ(got.dtype, want.dtype);
  EXPECT_EQ(got.shape, want.shape);
  EXPECT_EQ(got.toBytes(), want.toBytes());
}

std::string writeSample(const std::string &dir) {
  std::string path = dir + "/model.h5";
  llvm::Error err = writeUniversal(path, sampleCheckpoint());
  EXPECT_FALSE(bool(err)) << message(std::move(err));
  return path;
}
} // namespace

TEST(Universal, RoundTripIsBitExact) {
  std::string path = writeSample(scratchDir("universal-roundtrip"));
  auto reader = UniversalReader::open(path);
  ASSERT_TRUE(bool(reader)) << message(reader.takeError());
  auto read = (*reader)->readAll();
  ASSERT_TRUE(bool(read)) << message(read.takeError());
  UniversalCheckpoint want = sampleCheckpoint();
  EXPECT_EQ(read->metadata.modelConfig, want.metadata.modelConfig);
  EXPECT_EQ(read->metadata.sourceFormat, "megatron");
  EXPECT_EQ(read->metadata.sourceLayout, want.metadata.sourceLayout);
  EXPECT_EQ(read->metadata.iteration, 1234);
  EXPECT_EQ(read->metadata.tokensSeen, 5056000);
  EXPECT_EQ(read->metadata.nameMapping, want.metadata.nameMapping);
  llvm::sort(want.params, [](auto &a, auto &b) { return a.name < b.name; });
  ASSERT_EQ(read->params.size(), want.params.size());
  for (size_t i = 0; i < want.params.size(); ++i) {
    const UniversalParam &got = read->params[i], &exp = want.params[i];
    SCOPED_TRACE(exp.name);
    EXPECT_EQ(got.name, exp.name);
    expectSameBytes(got.param, exp.param);
    ASSERT_EQ(bool(got.fp32), bool(exp.fp32));
    ASSERT_EQ(bool(got.expAvgSq), bool(exp.expAvgSq));
    if (exp.fp32) {
      expectSameBytes(*got.fp32, *exp.fp32);
      expectSameBytes(*got.expAvg, *exp.expAvg);
      expectSameBytes(*got.expAvgSq, *exp.expAvgSq);
    }
    EXPECT_EQ(got.step, exp.step);
  }
  EXPECT_FALSE(bool((*reader)->verify()));
}

TEST(Universal, H5pyReadsTheSameValues) {
  std::string dir = scratchDir("universal-h5py");
  std::string path = writeSample(dir);
  // The manifest says what h5py must find: loom's bytes, hashed here.
  llvm::json::Array tensors;
  for (const UniversalParam &p : sampleCheckpoint().params) {
    auto entry = [&](std::string dataset, const Tensor &t) {
      tensors.push_back(llvm::json::Object{{"dataset", dataset},
                                           {"dtype", torchDTypeName(t.dtype)},
                                           {"shape", llvm::json::Array(t.shape)},
                                           {"sha256", sha256(t)}});
    };
    entry("params/" + p.name, p.param);
    if (p.fp32) {
      entry("optimizer/" + p.name + "/fp32", *p.fp32);
      entry("optimizer/" + p.name + "/exp_avg", *p.expAvg);
      entry("optimizer/" + p.name + "/exp_avg_sq", *p.expAvgSq);
    }
  }
  std::string manifest = dir + "/manifest.json";
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(manifest, ec);
    os << llvm::json::Value(llvm::json::Object{{"tensors", std::move(tensors)}});
  }
  std::string output;
  EXPECT_EQ(runScript("check_universal.py", {path, manifest}, &output), 0) << output;
}

TEST(Universal, CorruptChunkByteIsAnErrorNamingTheDataset) {
  std::string path = writeSample(scratchDir("universal-corrupt"));
  // Where HDF5 put the first chunk of params/embed.weight.
  haddr_t address = 0;
  {
    hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t dataset = H5Dopen2(file, "params/embed.weight", H5P_DEFAULT);
    hid_t space = H5Dget_space(dataset);
    hsize_t offset[2], size = 0;
    unsigned mask = 0;
    ASSERT_GE(H5Dget_chunk_info(dataset, space, 0, offset, &mask, &address, &size), 0);
    H5Sclose(space);
    H5Dclose(dataset);
    H5Fclose(file);
  }
  {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(std::streamoff(address + 17));
    char byte = 0;
    file.read(&byte, 1);
    byte ^= 0x40;
    file.seekp(std::streamoff(address + 17));
    file.write(&byte, 1);
  }
  auto reader = UniversalReader::open(path);
  ASSERT_TRUE(bool(reader)) << message(reader.takeError());
  // A whole read skips HDF5's per-chunk Fletcher-32 and is caught by the dataset's
  // XXH3-64; a partial read has no whole-dataset checksum and is caught per chunk.
  std::string error = message((*reader)->verify());
  EXPECT_NE(error.find("model.h5: params/embed.weight: checksum mismatch"), std::string::npos)
      << error;
  auto rows = (*reader)->readRows("embed.weight", UniversalState::Param, 0, 1);
  ASSERT_FALSE(bool(rows));
  std::string partial = message(rows.takeError());
  EXPECT_NE(partial.find("params/embed.weight"), std::string::npos) << partial;
  EXPECT_NE(partial.find("Fletcher32"), std::string::npos) << partial;
  // Other datasets are still readable.
  EXPECT_TRUE(bool((*reader)->read("half.weight")));
}

TEST(Universal, DataChangedBehindTheChecksumIsAnError) {
  std::string path = writeSample(scratchDir("universal-rewritten"));
  // Rewrite the data through HDF5 (so chunk checksums are recomputed) but leave
  // xxh3_64 alone: only loom's whole-dataset checksum can notice.
  {
    hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t dataset = H5Dopen2(file, "optimizer/embed.weight/exp_avg", H5P_DEFAULT);
    std::vector<float> zeros(50 * 64, 0.0f);
    ASSERT_GE(H5Dwrite(dataset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros.data()), 0);
    H5Dclose(dataset);
    H5Fclose(file);
  }
  auto reader = UniversalReader::open(path);
  ASSERT_TRUE(bool(reader)) << message(reader.takeError());
  std::string error = message((*reader)->verify());
  EXPECT_NE(error.find("model.h5: optimizer/embed.weight/exp_avg: checksum mismatch"),
            std::string::npos)
      << error;
}

TEST(Universal, RowRangeReadEqualsTheSlice) {
  std::string path = writeSample(scratchDir("universal-rows"));
  auto reader = UniversalReader::open(path);
  ASSERT_TRUE(bool(reader)) << message(reader.takeError());
  Tensor full = sampleCheckpoint().params[0].param; // big.weight, 1024 x 512 fp32
  // Rows 300..700 cross the boundary between the first two 512-row chunks.
  for (auto [begin, end] : {std::pair{300, 700}, std::pair{0, 1}, std::pair{1023, 1024},
                            std::pair{5, 5}}) {
    SCOPED_TRACE(begin);
    auto rows = (*reader)->readRows("big.weight", UniversalState::Param, begin, end);
    ASSERT_TRUE(bool(rows)) << message(rows.takeError());
    EXPECT_EQ(rows->shape, (llvm::SmallVector<int64_t, 4>{end - begin, 512}));
    std::vector<uint8_t> all = full.toBytes();
    std::vector<uint8_t> slice(all.begin() + begin * 512 * 4, all.begin() + end * 512 * 4);
    EXPECT_EQ(rows->toBytes(), slice);
  }
  auto moments = (*reader)->readRows("big.weight", UniversalState::ExpAvgSq, 10, 20);
  ASSERT_TRUE(bool(moments));
  std::vector<uint8_t> all = sampleCheckpoint().params[0].expAvgSq->toBytes();
  EXPECT_EQ(moments->toBytes(),
            std::vector<uint8_t>(all.begin() + 10 * 512 * 4, all.begin() + 20 * 512 * 4));
  EXPECT_NE(message((*reader)->readRows("big.weight", UniversalState::Param, 1000, 1025).takeError())
                .find("params/big.weight: rows [1000, 1025) outside dimension 0 of size 1024"),
            std::string::npos);
  EXPECT_NE(message((*reader)->read("half.weight", UniversalState::Fp32).takeError())
                .find("no dataset optimizer/half.weight/fp32"),
            std::string::npos);
}

// Whole reads and writes of row-chunked datasets bypass HDF5's filter pipeline and
// compute Fletcher-32 themselves; a row-range read goes through HDF5 with its
// checksum check on, so it fails unless loom's checksums are the ones HDF5 expects.
TEST(Universal, DirectChunksCarryTheChecksumsHdf5Expects) {
  std::string path = writeSample(scratchDir("universal-direct"));
  auto reader = UniversalReader::open(path);
  ASSERT_TRUE(bool(reader)) << message(reader.takeError());
  for (const UniversalParam &p : sampleCheckpoint().params) {
    if (p.param.shape.size() != 2 || p.param.numel() == 0)
      continue;
    SCOPED_TRACE(p.name);
    int64_t rows = p.param.shape[0];
    auto viaHdf5 = (*reader)->readRows(p.name, UniversalState::Param, 0, rows);
    ASSERT_TRUE(bool(viaHdf5)) << message(viaHdf5.takeError());
    EXPECT_EQ(viaHdf5->toBytes(), p.param.toBytes());
    auto direct = (*reader)->read(p.name);
    ASSERT_TRUE(bool(direct)) << message(direct.takeError());
    EXPECT_EQ(direct->toBytes(), p.param.toBytes());
  }
}

namespace {
/// Tensors large enough that the writer's runs of chunks go around the page cache
/// (more than PositionedWriter::kDirectMin each, several runs per dataset), one with
/// chunks that cut its middle dimension (edge chunks padded), optimizer state: the
/// file reads back byte for byte through HDF5's filter pipeline (which checks each
/// chunk's Fletcher-32) and through direct chunk reads, and verifies.
void largeRoundTrip(const std::string &dir) {
  UniversalCheckpoint ckpt;
  ckpt.metadata.modelConfig = "{}";
  ckpt.metadata.sourceLayout = "{}";
  // 3 x 1100 x 2100 fp32 (28 MB): chunks of 1 x 124 x 2100, the 9th of each
  // slice short (108 rows).
  ckpt.params.push_back({"cube", randomTensor(DType::Float32, {3, 1100, 2100}, 21), {}, {}, {}, {}});
  UniversalParam wide{"wide.weight", randomTensor(DType::BFloat16, {2051, 4096}, 22), {}, {}, {}, {}};
  wide.expAvg = randomTensor(DType::Float32, {2051, 4096}, 23);
  wide.step = 9;
  ckpt.params.push_back(std::move(wide));
  ckpt.params.push_back({"small", randomTensor(DType::Float32, {5, 7}, 24), {}, {}, {}, {}});
  std::string path = dir + "/large.h5";
  llvm::Error err = writeUniversal(path, ckpt);
  ASSERT_FALSE(bool(err)) << message(std::move(err));
  auto reader = UniversalReader::open(path);
  ASSERT_TRUE(bool(reader)) << message(reader.takeError());
  llvm::Error verified = (*reader)->verify();
  EXPECT_FALSE(bool(verified)) << message(std::move(verified));
  auto check = [&](const std::string &name, UniversalState state, const Tensor &want) {
    SCOPED_TRACE(name);
    auto whole = (*reader)->read(name, state);
    ASSERT_TRUE(bool(whole)) << message(whole.takeError());
    expectSameBytes(*whole, want);
    auto rows = (*reader)->readRows(name, state, 0, want.shape[0]);
    ASSERT_TRUE(bool(rows)) << message(rows.takeError());
    expectSameBytes(*rows, want);
  };
  check("cube", UniversalState::Param, ckpt.params[0].param);
  check("wide.weight", UniversalState::Param, ckpt.params[1].param);
  check("wide.weight", UniversalState::ExpAvg, *ckpt.params[1].expAvg);
  check("small", UniversalState::Param, ckpt.params[2].param);
}
} // namespace

TEST(Universal, LargeDatasetsReadBackExactlyOnDisk) {
  largeRoundTrip(scratchDir("universal-large"));
}

TEST(Universal, LargeDatasetsReadBackExactlyInMemoryFileSystem) {
  if (!llvm::sys::fs::is_directory("/dev/shm"))
    GTEST_SKIP() << "no /dev/shm";
  std::string dir = "/dev/shm/loom-universal-large-" + std::to_string(::getpid());
  llvm::sys::fs::create_directories(dir);
  largeRoundTrip(dir); // no O_DIRECT there: every span through the page cache
  llvm::sys::fs::remove_directories(dir);
}

TEST(Universal, FailedWriteLeavesNothingBehind) {
  std::string dir = scratchDir("universal-failed");
  UniversalCheckpoint ckpt = sampleCheckpoint();
  ckpt.params.push_back({"layers/0.weight", randomTensor(DType::Float32, {2}, 1), {}, {}, {}, {}});
  std::string error = message(writeUniversal(dir + "/model.h5", ckpt));
  EXPECT_NE(error.find("parameter name 'layers/0.weight' cannot be an HDF5 link name"),
            std::string::npos)
      << error;
  std::error_code ec;
  llvm::sys::fs::directory_iterator it(dir, ec);
  EXPECT_EQ(it, llvm::sys::fs::directory_iterator()) << it->path();
}

TEST(Universal, RefusesFilesThatAreNotUniversalCheckpoints) {
  std::string dir = scratchDir("universal-foreign");
  {
    hid_t file = H5Fcreate((dir + "/other.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(file);
  }
  EXPECT_NE(message(UniversalReader::open(dir + "/other.h5").takeError())
                .find("other.h5: not a loom universal checkpoint"),
            std::string::npos);
  std::ofstream(dir + "/text.h5") << "hello";
  EXPECT_NE(message(UniversalReader::open(dir + "/text.h5").takeError())
                .find("text.h5: not an HDF5 file"),
            std::string::npos);
}

// Streaming: datasets in any order (states before their parameter), read back as
// the one-pass writer's; a state without its parameter fails finish() and leaves no
// file, and a dropped stream leaves no temporary.
TEST(UniversalStream, DatasetsInAnyOrderAndEveryStateHasItsParameter) {
  std::string dir = scratchDir("universal-stream");
  UniversalCheckpoint want = sampleCheckpoint();
  {
    auto stream = UniversalStream::create(dir + "/s.h5", want.metadata);
    ASSERT_TRUE(bool(stream)) << message(stream.takeError());
    for (auto it = want.params.rbegin(); it != want.params.rend(); ++it) {
      if (it->expAvgSq)
        ASSERT_FALSE(bool((*stream)->write(it->name, UniversalState::ExpAvgSq, *it->expAvgSq)));
      ASSERT_FALSE(bool((*stream)->write(it->name, UniversalState::Param, it->param)));
      if (it->fp32) {
        ASSERT_FALSE(bool((*stream)->write(it->name, UniversalState::Fp32, *it->fp32)));
        ASSERT_FALSE(bool((*stream)->write(it->name, UniversalState::ExpAvg, *it->expAvg)));
      }
      if (it->step)
        ASSERT_FALSE(bool((*stream)->setStep(it->name, *it->step)));
    }
    ASSERT_FALSE(bool((*stream)->finish()));
  }
  auto reader = UniversalReader::open(dir + "/s.h5");
  ASSERT_TRUE(bool(reader)) << message(reader.takeError());
  auto read = (*reader)->readAll();
  ASSERT_TRUE(bool(read)) << message(read.takeError());
  llvm::sort(want.params, [](auto &a, auto &b) { return a.name < b.name; });
  ASSERT_EQ(read->params.size(), want.params.size());
  for (size_t i = 0; i < want.params.size(); ++i) {
    SCOPED_TRACE(want.params[i].name);
    expectSameBytes(read->params[i].param, want.params[i].param);
    ASSERT_EQ(bool(read->params[i].expAvgSq), bool(want.params[i].expAvgSq));
    if (want.params[i].expAvgSq)
      expectSameBytes(*read->params[i].expAvgSq, *want.params[i].expAvgSq);
    EXPECT_EQ(read->params[i].step, want.params[i].step);
  }

  {
    auto orphan = UniversalStream::create(dir + "/orphan.h5", want.metadata);
    ASSERT_TRUE(bool(orphan));
    ASSERT_FALSE(bool((*orphan)->write("w", UniversalState::ExpAvg, want.params[0].param)));
    EXPECT_NE(message((*orphan)->finish()).find("optimizer/w/exp_avg: optimizer state of no parameter"),
              std::string::npos);
    auto dropped = UniversalStream::create(dir + "/dropped.h5", want.metadata);
    ASSERT_TRUE(bool(dropped));
    ASSERT_FALSE(bool((*dropped)->write("w", UniversalState::Param, want.params[0].param)));
  }
  std::error_code ec;
  std::vector<std::string> left;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
    left.push_back(llvm::sys::path::filename(it->path()).str());
  EXPECT_EQ(left, std::vector<std::string>{"s.h5"});
}
