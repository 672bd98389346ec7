//===- BufferPoolTest.cpp - buffers reused across tensors -----------------===//
#include "loom/Checkpoint/BufferPool.h"

#include <gtest/gtest.h>
#include <cstring>

using namespace loom::ckpt;

namespace {
constexpr size_t kMiB = size_t(1) << 20;
}

TEST(BufferPool, ReleasedBuffersServeLaterTensors) {
  BufferPool pool;
  const uint8_t *first;
  {
    std::shared_ptr<Storage> a = pool.take(3 * kMiB);
    ASSERT_EQ(a->bytes().size(), 3 * kMiB);
    std::memset(a->mutableData(), 7, a->bytes().size());
    first = a->bytes().data();
    EXPECT_EQ(pool.idleBytes(), 0u);
  }
  // Back in the pool (whole huge pages), then handed out again for a smaller tensor.
  EXPECT_EQ(pool.idleBytes(), 4 * kMiB);
  std::shared_ptr<Storage> b = pool.take(2 * kMiB);
  EXPECT_EQ(b->bytes().data(), first);
  EXPECT_EQ(b->bytes().size(), 2 * kMiB);
  EXPECT_EQ(pool.mappedBuffers(), 1u);
  EXPECT_EQ(pool.idleBytes(), 0u);
}

TEST(BufferPool, TakesTheSmallestIdleBufferThatFits) {
  BufferPool pool;
  const uint8_t *small, *large;
  {
    std::shared_ptr<Storage> a = pool.take(8 * kMiB), b = pool.take(2 * kMiB);
    large = a->bytes().data();
    small = b->bytes().data();
  }
  EXPECT_EQ(pool.take(kMiB + 1)->bytes().data(), small);
  EXPECT_EQ(pool.take(5 * kMiB)->bytes().data(), large);
  EXPECT_EQ(pool.mappedBuffers(), 2u);
}

TEST(BufferPool, IdleBuffersTooSmallAreUnmappedBeforeALargerOne) {
  BufferPool pool;
  pool.take(2 * kMiB);
  pool.take(4 * kMiB);
  EXPECT_EQ(pool.idleBytes(), 4 * kMiB); // the 2 MiB one went when the 4 MiB one came
  pool.take(4 * kMiB);
  EXPECT_EQ(pool.mappedBuffers(), 2u);
}

TEST(BufferPool, SmallBuffersAndBuffersOutlivingThePool) {
  std::shared_ptr<Storage> kept;
  {
    BufferPool pool;
    std::shared_ptr<Storage> tiny = pool.take(100);
    EXPECT_EQ(tiny->bytes().size(), 100u);
    EXPECT_NE(tiny->mutableData(), nullptr);
    EXPECT_EQ(pool.mappedBuffers(), 0u);
    kept = pool.take(2 * kMiB);
  }
  // Still writable after the pool is gone; unmapped when released.
  std::memset(kept->mutableData(), 1, kept->bytes().size());
  EXPECT_EQ(kept->bytes()[kMiB], 1);
  kept.reset();
}
