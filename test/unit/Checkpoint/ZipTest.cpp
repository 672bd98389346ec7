//===- ZipTest.cpp - zip writer/reader round trips and damaged archives ---===//
#include "CheckpointTesting.h"
#include "loom/Checkpoint/Crc32.h"
#include "loom/Checkpoint/Zip.h"

#include "llvm/Support/CRC.h"
#include "llvm/Support/MemoryBuffer.h"

#include <algorithm>
#include <gtest/gtest.h>
#include <mutex>
#include <numeric>

using namespace loom::ckpt;
using namespace loom::ckpt::testutil;

namespace {
llvm::ArrayRef<uint8_t> bytesOf(llvm::StringRef s) {
  return {reinterpret_cast<const uint8_t *>(s.data()), s.size()};
}

std::string writeSample(const std::string &dir, bool zip64) {
  std::string path = dir + (zip64 ? "/sample64.zip" : "/sample.zip");
  ZipWriter::Options options;
  options.forceZip64 = zip64;
  auto zip = llvm::cantFail(ZipWriter::create(path, options));
  llvm::cantFail(zip->addEntry("archive/data.pkl", bytesOf("pickle bytes")));
  // Streamed in uneven chunks, as tensors are.
  std::vector<uint8_t> data(1000);
  std::iota(data.begin(), data.end(), 0);
  llvm::cantFail(zip->beginEntry("archive/data/0", data.size()));
  llvm::cantFail(zip->write(llvm::ArrayRef(data).take_front(333)));
  llvm::cantFail(zip->write(llvm::ArrayRef(data).drop_front(333)));
  llvm::cantFail(zip->endEntry());
  llvm::cantFail(zip->addEntry("archive/version", bytesOf("3\n")));
  llvm::cantFail(zip->finish());
  return path;
}
} // namespace

class ZipRoundTrip : public ::testing::TestWithParam<bool> {};

TEST_P(ZipRoundTrip, EntriesComeBackAlignedAndChecked) {
  std::string path = writeSample(scratchDir("zip"), GetParam());
  auto archive = ZipArchive::open(path);
  ASSERT_TRUE(bool(archive)) << message(archive.takeError());
  ASSERT_EQ(archive->entries().size(), 3u);
  for (const ZipEntry &entry : archive->entries()) {
    EXPECT_EQ(entry.dataOffset % 64, 0u) << entry.name;
    auto data = archive->read(entry);
    ASSERT_TRUE(bool(data)) << message(data.takeError());
  }
  const ZipEntry *storage = archive->find("archive/data/0");
  ASSERT_TRUE(storage);
  auto data = llvm::cantFail(archive->read(*storage));
  ASSERT_EQ(data.size(), 1000u);
  EXPECT_EQ(data[999], uint8_t(999 % 256));
  // Zero copy: the entry is a view of the mapping.
  EXPECT_EQ(reinterpret_cast<const char *>(data.data()),
            archive->buffer()->getBufferStart() + storage->dataOffset);
}

INSTANTIATE_TEST_SUITE_P(Zip, ZipRoundTrip, ::testing::Values(false, true));

TEST(Zip, EntriesAreFoundByTheirDataAndCheckedInACopy) {
  std::string path = writeSample(scratchDir("zip-copy"), false);
  auto archive = llvm::cantFail(ZipArchive::open(path));
  const ZipEntry *storage = archive.find("archive/data/0");
  ASSERT_TRUE(storage);
  auto data = llvm::cantFail(archive.read(*storage, /*verifyCrc=*/false));
  EXPECT_EQ(archive.entryAt(data.data()), storage);
  EXPECT_EQ(archive.entryAt(data.data() + 1), nullptr);
  std::vector<uint8_t> copy(data.begin(), data.end());
  EXPECT_EQ(message(archive.verify(*storage, copy)), "");
  EXPECT_EQ(message(archive.verify(*storage)), "");
  copy[500] ^= 1;
  EXPECT_NE(message(archive.verify(*storage, copy)).find("entry 'archive/data/0': CRC32 is"),
            std::string::npos);
}

// A record large enough to be checked on every core, in an archive that is mapped
// (each thread maps its part in first) and in one copied into memory (nothing to
// map): both pass, and a byte flipped in the copy fails its check.
TEST(Zip, LargeRecordsAreCheckedMappedOrInMemory) {
  std::string path = scratchDir("zip-large") + "/large.zip";
  std::vector<uint8_t> bytes((64u << 20) + 4099);
  for (size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = uint8_t(i * 2654435761u >> 13);
  {
    auto zip = llvm::cantFail(ZipWriter::create(path, {}));
    llvm::cantFail(zip->addEntry("big", bytes));
    llvm::cantFail(zip->finish());
  }
  auto mapped = llvm::cantFail(ZipArchive::open(path));
  ASSERT_EQ(mapped.buffer()->getBufferKind(), llvm::MemoryBuffer::MemoryBuffer_MMap);
  auto file = llvm::MemoryBuffer::getFile(path, /*IsText=*/false, /*RequiresNullTerminator=*/false);
  ASSERT_TRUE(bool(file));
  std::shared_ptr<const llvm::MemoryBuffer> copy =
      llvm::MemoryBuffer::getMemBufferCopy((*file)->getBuffer(), "large.zip");
  ASSERT_NE(copy->getBufferKind(), llvm::MemoryBuffer::MemoryBuffer_MMap);
  auto inMemory = llvm::cantFail(ZipArchive::parse(copy, "large.zip"));
  for (const ZipArchive *archive : {&mapped, &inMemory}) {
    const ZipEntry *entry = archive->find("big");
    ASSERT_TRUE(entry);
    EXPECT_EQ(message(archive->verify(*entry)), "");
    auto read = archive->read(*entry);
    ASSERT_TRUE(bool(read)) << message(read.takeError());
    EXPECT_TRUE(*read == llvm::ArrayRef<uint8_t>(bytes));
  }
  const ZipEntry *entry = inMemory.find("big");
  auto *data = const_cast<uint8_t *>(llvm::cantFail(inMemory.read(*entry, false)).data());
  data[(40u << 20) + 7] ^= 1; // in the second thread's part
  EXPECT_NE(message(inMemory.verify(*entry)).find("entry 'big': CRC32 is"), std::string::npos);
}

TEST(Zip, EveryTruncationIsAnError) {
  std::string path = writeSample(scratchDir("zip-truncate"), true);
  auto whole = llvm::cantFail(mapFile(path));
  llvm::StringRef bytes = whole->getBuffer();
  for (size_t length = 0; length < bytes.size(); ++length) {
    auto cut = llvm::MemoryBuffer::getMemBufferCopy(bytes.take_front(length), "cut.zip");
    auto archive = ZipArchive::parse(std::move(cut), "cut.zip");
    if (!archive) {
      message(archive.takeError());
      continue;
    }
    // A cut that still parses can only have lost bytes the CRC or directory covers.
    bool failed = false;
    for (const ZipEntry &entry : archive->entries())
      if (auto data = archive->read(entry); !data) {
        message(data.takeError());
        failed = true;
      }
    EXPECT_TRUE(failed) << "truncated to " << length << " bytes and nothing noticed";
  }
}

TEST(Zip, FlippedBytesNeverCrashAndNeverPassSilently) {
  std::string path = writeSample(scratchDir("zip-flip"), false);
  auto whole = llvm::cantFail(mapFile(path));
  std::string bytes = whole->getBuffer().str();
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string damaged = bytes;
    damaged[i] ^= 0x5a;
    auto archive = ZipArchive::parse(llvm::MemoryBuffer::getMemBufferCopy(damaged, "d.zip"),
                                     "d.zip");
    if (!archive) {
      message(archive.takeError());
      continue;
    }
    for (const ZipEntry &entry : archive->entries())
      if (auto data = archive->read(entry); !data)
        message(data.takeError());
  }
}

TEST(Zip, WriterRefusesMisuse) {
  std::string dir = scratchDir("zip-misuse");
  auto zip = llvm::cantFail(ZipWriter::create(dir + "/x.zip", {}));
  llvm::cantFail(zip->addEntry("a", bytesOf("1")));
  EXPECT_EQ(message(zip->addEntry("a", bytesOf("2"))),
            dir + "/x.zip: zip entry 'a' written twice");
  llvm::cantFail(zip->beginEntry("b", 2));
  EXPECT_EQ(message(zip->write(bytesOf("123"))),
            dir + "/x.zip: zip entry 'b' given more than its 2 bytes");
  EXPECT_EQ(message(zip->endEntry()), dir + "/x.zip: zip entry 'b' got 0 of its 2 bytes");
}

TEST(Zip, UnfinishedArchiveLeavesNoFile) {
  std::string dir = scratchDir("zip-unfinished");
  {
    auto zip = llvm::cantFail(ZipWriter::create(dir + "/x.zip", {}));
    llvm::cantFail(zip->addEntry("a", bytesOf("1")));
  }
  EXPECT_FALSE(llvm::sys::fs::exists(dir + "/x.zip"));
  std::error_code ec;
  EXPECT_EQ(llvm::sys::fs::directory_iterator(dir, ec), llvm::sys::fs::directory_iterator());
}

// The folded CRC-32 against LLVM's table CRC: every length from 0 to 600 at every
// alignment 0..15, continuation across split points, and a multi-megabyte buffer.
TEST(Crc32, FoldedEqualsTableCrcForEveryLengthAndAlignment) {
  std::vector<uint8_t> bytes(4 << 20);
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (uint8_t &b : bytes) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    b = uint8_t(state);
  }
  llvm::ArrayRef<uint8_t> all(bytes);
  for (size_t align = 0; align < 16; ++align)
    for (size_t size = 0; size <= 1200; ++size) {
      llvm::ArrayRef<uint8_t> data = all.slice(align, size);
      ASSERT_EQ(zipCrc32(0, data), llvm::crc32(0, data)) << "align " << align << " size " << size;
    }
  for (size_t split : {size_t(1), size_t(63), size_t(64), size_t(1000), size_t(1 << 20)})
    EXPECT_EQ(zipCrc32(zipCrc32(0, all.take_front(split)), all.drop_front(split)), llvm::crc32(0, all))
        << split;
  EXPECT_EQ(zipCrc32(0, all), llvm::crc32(0, all));
  // The check value of the zip CRC: "123456789" gives 0xCBF43926.
  llvm::StringRef check = "123456789";
  EXPECT_EQ(zipCrc32(0, llvm::ArrayRef<uint8_t>(check.bytes_begin(), check.size())), 0xCBF43926u);
  std::printf("crc32 folds with carry-less multiply: %s\n", zipCrc32IsAccelerated() ? "yes" : "no");
}

// Combining CRCs of two parts gives the CRC of the whole; the parallel CRC, which
// combines its threads' parts, equals the serial one for any thread count.
TEST(Crc32, CombinedAndParallelEqualSerial) {
  std::vector<uint8_t> bytes((5 << 20) + 13);
  uint64_t state = 0x2545F4914F6CDD1Dull;
  for (uint8_t &b : bytes) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    b = uint8_t(state);
  }
  llvm::ArrayRef<uint8_t> all(bytes);
  uint32_t whole = llvm::crc32(0, all);
  for (size_t split : {size_t(0), size_t(1), size_t(7), size_t(64), size_t(4096), size_t(1 << 20),
                       bytes.size() - 1, bytes.size()}) {
    llvm::ArrayRef<uint8_t> a = all.take_front(split), b = all.drop_front(split);
    EXPECT_EQ(zipCrc32Combine(zipCrc32(0, a), zipCrc32(0, b), b.size()), whole) << split;
  }
  for (unsigned threads : {1u, 2u, 3u, 4u, 8u}) {
    // `prepare` sees each part once, on the thread that checks it: together,
    // exactly the data.
    std::mutex seenMutex;
    std::vector<std::pair<const uint8_t *, size_t>> seen;
    auto prepare = [&](llvm::ArrayRef<uint8_t> part) {
      std::lock_guard<std::mutex> lock(seenMutex);
      seen.push_back({part.data(), part.size()});
    };
    EXPECT_EQ(zipCrc32Parallel(all, threads, prepare), whole) << threads;
    std::sort(seen.begin(), seen.end());
    const uint8_t *next = all.data();
    for (auto [begin, size] : seen) {
      EXPECT_EQ(begin, next) << threads;
      next = begin + size;
    }
    EXPECT_EQ(next, all.data() + all.size()) << threads;
  }
  EXPECT_EQ(zipCrc32Parallel(all.take_front(100), 4), llvm::crc32(0, all.take_front(100)));
}
