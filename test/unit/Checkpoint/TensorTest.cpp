//===- TensorTest.cpp - views, bounds and streaming of tensors ------------===//
#include "CheckpointTesting.h"
#include "loom/Checkpoint/Tensor.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sys/mman.h>
#include <unistd.h>
#include <numeric>

using namespace loom::ckpt;
using loom::ckpt::testutil::residentPages;

namespace {
std::shared_ptr<const Storage> iota(size_t bytes) {
  std::vector<uint8_t> data(bytes);
  std::iota(data.begin(), data.end(), 0);
  return std::make_shared<Storage>(std::move(data));
}

Tensor view(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides,
            int64_t offset, std::shared_ptr<const Storage> storage) {
  Tensor t;
  t.dtype = dtype;
  t.shape.assign(shape.begin(), shape.end());
  t.strides.assign(strides.begin(), strides.end());
  t.offset = offset;
  t.storage = std::move(storage);
  return t;
}
} // namespace

TEST(Tensor, ContiguousStridesAndNumel) {
  EXPECT_EQ(contiguousStrides({2, 3, 4}), (llvm::SmallVector<int64_t, 4>{12, 4, 1}));
  EXPECT_EQ(checkedNumel({2, 3, 4}), 24u);
  EXPECT_EQ(checkedNumel({}), 1u);
  EXPECT_EQ(checkedNumel({-1}), std::nullopt);
  EXPECT_EQ(checkedNumel({int64_t(1) << 40, int64_t(1) << 40}), std::nullopt);
}

TEST(Tensor, CheckViewFindsOutOfBoundsViews) {
  auto storage = iota(64); // 16 floats
  EXPECT_EQ(view(DType::Float32, {4, 4}, {4, 1}, 0, storage).checkView(), std::nullopt);
  EXPECT_EQ(view(DType::Float32, {4, 4}, {1, 4}, 0, storage).checkView(), std::nullopt);
  EXPECT_EQ(*view(DType::Float32, {4, 4}, {4, 1}, 1, storage).checkView(),
            "view reaches byte 68 but the storage has 64");
  EXPECT_EQ(*view(DType::Float32, {4}, {-1}, 3, storage).checkView(),
            "negative stride -1 in dimension 0");
  EXPECT_EQ(*view(DType::Float32, {4}, {1, 1}, 0, storage).checkView(), "1 sizes but 2 strides");
  EXPECT_EQ(*view(DType::Float32, {2}, {int64_t(1) << 62}, 0, storage).checkView(),
            "view extent overflows");
  // Empty tensors read nothing, whatever their offset.
  EXPECT_EQ(view(DType::Float32, {0, 4}, {4, 1}, 100, storage).checkView(), std::nullopt);
}

TEST(Tensor, MaxAbsDifferenceComparesElementsAsNumbers) {
  auto floats = [](std::vector<float> values, llvm::SmallVector<int64_t, 4> shape) {
    std::vector<uint8_t> bytes(values.size() * 4);
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return Tensor::contiguous(DType::Float32, shape, std::make_shared<Storage>(std::move(bytes)));
  };
  Tensor a = floats({1, -2, 3, 4}, {4});
  EXPECT_EQ(maxAbsDifference(a, a), 0.0);
  EXPECT_EQ(maxAbsDifference(a, floats({1, 2.5f, 3, 3}, {4})), 4.5);
  // bf16 elements are read as bf16: 0x3f80 is 1.0, 0x4040 is 3.0.
  auto bf16 = [](std::vector<uint8_t> bytes) {
    int64_t numel = int64_t(bytes.size() / 2);
    return Tensor::contiguous(DType::BFloat16, {numel}, std::make_shared<Storage>(std::move(bytes)));
  };
  EXPECT_EQ(maxAbsDifference(bf16({0x80, 0x3f}), bf16({0x40, 0x40})), 2.0);
  // A NaN anywhere makes the difference NaN, whatever follows it.
  std::optional<double> nan =
      maxAbsDifference(a, floats({std::numeric_limits<float>::quiet_NaN(), -2, 3, 100}, {4}));
  ASSERT_TRUE(nan);
  EXPECT_TRUE(std::isnan(*nan));
  // Only floating-point tensors of one dtype and shape compare.
  EXPECT_EQ(maxAbsDifference(a, floats({1, -2, 3, 4}, {2, 2})), std::nullopt);
  Tensor ints = a;
  ints.dtype = DType::Int32;
  EXPECT_EQ(maxAbsDifference(ints, ints), std::nullopt);
}

TEST(Tensor, TransposedViewStreamsInRowMajorOrder) {
  auto storage = iota(6); // uint8 [[0,1,2],[3,4,5]]
  Tensor t = view(DType::UInt8, {3, 2}, {1, 3}, 0, storage);
  EXPECT_FALSE(t.isContiguous());
  EXPECT_EQ(t.toBytes(), (std::vector<uint8_t>{0, 3, 1, 4, 2, 5}));
  Tensor slice = view(DType::UInt8, {2, 2}, {3, 1}, 1, storage);
  EXPECT_EQ(slice.toBytes(), (std::vector<uint8_t>{1, 2, 4, 5}));
}

TEST(Tensor, ContiguousTensorIsOneChunkWithoutCopy) {
  auto storage = iota(64);
  Tensor t = view(DType::Int16, {2, 4}, {4, 1}, 8, storage);
  int chunks = 0;
  llvm::cantFail(t.forEachChunk([&](llvm::ArrayRef<uint8_t> chunk) {
    ++chunks;
    EXPECT_EQ(chunk.data(), storage->bytes().data() + 16);
    EXPECT_EQ(chunk.size(), 16u);
    return llvm::Error::success();
  }));
  EXPECT_EQ(chunks, 1);
}

TEST(Tensor, LongRunsOfStridedViewsAreNotCopied) {
  // Rows 0 and 2 of a [4, 5 MiB] byte storage: each row is a run larger than the
  // gather buffer and goes to the sink straight from the storage.
  const int64_t row = 5 << 20;
  auto storage = iota(4 * row);
  Tensor t = view(DType::UInt8, {2, row}, {2 * row, 1}, 0, storage);
  std::vector<const uint8_t *> starts;
  llvm::cantFail(t.forEachChunk([&](llvm::ArrayRef<uint8_t> chunk) {
    starts.push_back(chunk.data());
    EXPECT_EQ(chunk.size(), size_t(row));
    return llvm::Error::success();
  }));
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_EQ(starts[0], storage->bytes().data());
  EXPECT_EQ(starts[1], storage->bytes().data() + 2 * row);
}

TEST(Tensor, SinkErrorsStopStreaming) {
  auto storage = iota(6);
  Tensor t = view(DType::UInt8, {3, 2}, {1, 3}, 0, storage);
  llvm::Error err = t.forEachChunk([](llvm::ArrayRef<uint8_t>) {
    return llvm::createStringError(llvm::inconvertibleErrorCode(), "disk full");
  });
  EXPECT_EQ(llvm::toString(std::move(err)), "disk full");
}

// A mapped file view gives its pages back and still reads the same bytes; owned and
// anonymous storages are never touched (dropping their pages would zero them).
TEST(Storage, DroppingPagesOfAFileViewKeepsItsBytes) {
  llvm::SmallString<128> path;
  ASSERT_FALSE(llvm::sys::fs::createTemporaryFile("loom-pages", "bin", path));
  std::vector<uint8_t> want(8 << 20);
  for (size_t i = 0; i < want.size(); ++i)
    want[i] = uint8_t(i * 131 + 7);
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(path, ec);
    os.write(reinterpret_cast<const char *>(want.data()), want.size());
  }
  auto mapped = mapFile(path);
  ASSERT_TRUE(bool(mapped));
  ASSERT_EQ((*mapped)->getBufferKind(), llvm::MemoryBuffer::MemoryBuffer_MMap);
  llvm::ArrayRef<uint8_t> bytes(reinterpret_cast<const uint8_t *>((*mapped)->getBufferStart()),
                                (*mapped)->getBufferSize());
  auto view = Storage::fileView(bytes, *mapped, /*mapped=*/true);
  EXPECT_EQ(std::vector<uint8_t>(bytes.begin(), bytes.end()), want);
  size_t before = residentPages(), pages = bytes.size() / size_t(::sysconf(_SC_PAGESIZE));
  view->dropResidentPages();
  size_t after = residentPages();
  EXPECT_GE(before, after + pages * 3 / 4) << before << " -> " << after;
  EXPECT_EQ(std::vector<uint8_t>(bytes.begin(), bytes.end()), want);
  llvm::sys::fs::remove(path);

  auto anonymous = Storage::uninitialized(4 << 20);
  std::memset(anonymous->mutableData(), 0x5a, 4 << 20);
  anonymous->dropResidentPages();
  EXPECT_EQ(anonymous->bytes()[12345], 0x5a);
  Storage owned(std::vector<uint8_t>(1 << 20, 0x33));
  owned.dropResidentPages();
  EXPECT_EQ(owned.bytes()[777], 0x33);
}
