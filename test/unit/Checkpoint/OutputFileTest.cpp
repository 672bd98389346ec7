//===- OutputFileTest.cpp - positioned and direct writes ------------------===//
//
// Large spans written through OutputFile go around the page cache (O_DIRECT)
// where the file system allows it, with their unaligned head and tail through
// the cache. Whatever the path, the file must hold exactly the bytes given, in
// order, beside what the stream wrote.
//
//===----------------------------------------------------------------------===//
#include "CheckpointTesting.h"
#include "loom/Checkpoint/OutputFile.h"
#include "loom/Checkpoint/Safetensors.h"
#include "loom/Checkpoint/TorchZip.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstring>
#include <fcntl.h>
#include <csignal>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

using namespace loom::ckpt;
using namespace loom::ckpt::testutil;

namespace {
std::vector<uint8_t> pattern(uint64_t size, uint64_t seed) {
  std::vector<uint8_t> bytes(size);
  uint64_t x = seed;
  for (uint8_t &b : bytes) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    b = uint8_t(x >> 56);
  }
  return bytes;
}

/// Whether `dir`'s file system accepts O_DIRECT opens (ext4 does).
bool directAllowed(const std::string &dir) {
  std::string probe = dir + "/direct-probe";
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0644);
  if (fd >= 0)
    ::close(fd);
  llvm::sys::fs::remove(probe);
  return fd >= 0;
}

/// A stream header, a large unaligned span appended, text, a span written at an
/// odd offset past the end, and a small span: the file reads back byte for byte.
void writeAndCheck(const std::string &dir, bool expectDirect) {
  std::string path = dir + "/mixed.bin";
  std::vector<uint8_t> big = pattern(OutputFile::kDirectMin + 4096 * 3 + 77, 1);
  std::vector<uint8_t> later = pattern(OutputFile::kDirectMin * 2 + 5, 2);
  std::vector<uint8_t> small = pattern(1000, 3);
  const uint64_t gap = 123; // bytes never written: zeros
  uint64_t laterAt;
  uint64_t direct;
  {
    auto file = llvm::cantFail(OutputFile::create(path));
    file->os() << "header of 21 bytes..."; // leaves the span unaligned
    llvm::cantFail(file->append(big, "big"));
    file->os() << "tail";
    file->os().flush();
    laterAt = file->os().tell() + gap;
    llvm::cantFail(file->writeAt(laterAt, later, "later"));
    file->os().seek(laterAt + later.size());
    llvm::cantFail(file->append(small, "small"));
    direct = file->directBytes();
    llvm::cantFail(file->commit());
  }
  std::vector<uint8_t> expected;
  auto add = [&](llvm::ArrayRef<uint8_t> bytes) { expected.insert(expected.end(), bytes.begin(), bytes.end()); };
  add(llvm::arrayRefFromStringRef("header of 21 bytes..."));
  add(big);
  add(llvm::arrayRefFromStringRef("tail"));
  expected.resize(expected.size() + gap, 0);
  ASSERT_EQ(expected.size(), laterAt);
  add(later);
  add(small);
  auto mapped = llvm::cantFail(mapFile(path));
  ASSERT_EQ(mapped->getBufferSize(), expected.size());
  EXPECT_EQ(std::memcmp(mapped->getBufferStart(), expected.data(), expected.size()), 0);
  if (expectDirect) {
    // All but each span's partial pages went around the cache.
    EXPECT_GE(direct, big.size() + later.size() - 4 * 4096) << dir;
  } else {
    EXPECT_EQ(direct, 0u) << dir;
  }
}
} // namespace

TEST(OutputFile, LargeSpansReadBackExactlyOnDisk) {
  std::string dir = scratchDir("output-file");
  writeAndCheck(dir, directAllowed(dir));
}

TEST(OutputFile, LargeSpansReadBackExactlyInMemoryFileSystem) {
  if (!llvm::sys::fs::is_directory("/dev/shm"))
    GTEST_SKIP() << "no /dev/shm";
  std::string dir = "/dev/shm/loom-output-file-" + std::to_string(::getpid());
  llvm::sys::fs::create_directories(dir);
  writeAndCheck(dir, /*expectDirect=*/false); // the page cache is the medium there
  llvm::sys::fs::remove_directories(dir);
}

TEST(OutputFile, AFailedDirectWriteFailsTheFileAndLeavesNothing) {
  // Writes past RLIMIT_FSIZE fail (EFBIG): the span's later chunks fail on the
  // writing thread, after append() has copied them and returned. The failure
  // must still reach the caller, and the file must not appear.
  std::string dir = scratchDir("output-file-failure");
  if (!directAllowed(dir))
    GTEST_SKIP() << "no O_DIRECT in " << dir;
  std::vector<uint8_t> span = pattern(40u << 20, 5);
  struct rlimit old;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  void (*oldHandler)(int) = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 20u << 20;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string reported;
  {
    auto file = llvm::cantFail(OutputFile::create(dir + "/big.bin"));
    llvm::Error err = file->append(span, "the span");
    if (!err) {
      file->os() << "after";
      err = file->commit();
    }
    ASSERT_TRUE(bool(err));
    reported = message(std::move(err));
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, oldHandler);
  EXPECT_NE(reported.find("the span"), std::string::npos) << reported;
  EXPECT_NE(reported.find(dir + "/big.bin"), std::string::npos) << reported;
  EXPECT_FALSE(llvm::sys::fs::exists(dir + "/big.bin"));
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
    ADD_FAILURE() << "left behind: " << it->path();
}

TEST(OutputFile, LargeRecordsOfTorchAndSafetensorsStreamsReadBack) {
  // A 12 MiB tensor: its zip record and its safetensors slot are direct writes.
  std::string dir = scratchDir("output-file-formats");
  std::vector<uint8_t> bytes = pattern(12u << 20, 4);
  auto storage = std::make_shared<Storage>(std::vector<uint8_t>(bytes));
  Tensor tensor = Tensor::contiguous(DType::Float32, {int64_t(bytes.size() / 4 / 1024), 1024}, storage);
  std::vector<NamedTensor> tensors{{"w", tensor}};

  llvm::cantFail(writeTorchZip(dir + "/w.pt", *makeStateDict(tensors)));
  auto root = readTorchZip(dir + "/w.pt"); // CRC checked
  ASSERT_TRUE(bool(root)) << message(root.takeError());
  llvm::ArrayRef<uint8_t> back = collectTensors(**root)[0].tensor.contiguousBytes();
  EXPECT_TRUE(back == llvm::ArrayRef<uint8_t>(bytes));

  auto stream = llvm::cantFail(SafetensorsStream::create(dir + "/w.safetensors", tensors));
  llvm::cantFail(stream->writeTensor("w", bytes));
  llvm::cantFail(stream->finish());
  auto file = readSafetensors(dir + "/w.safetensors");
  ASSERT_TRUE(bool(file)) << message(file.takeError());
  EXPECT_TRUE(file->tensors[0].tensor.contiguousBytes() == llvm::ArrayRef<uint8_t>(bytes));
}

TEST(DeferredCommits, FilesAppearAfterDrainAndAFailureStopsTheRest) {
  std::string dir = scratchDir("deferred-commits");
  {
    DeferredCommits commits;
    for (int i = 0; i < 3; ++i) {
      auto file = llvm::cantFail(OutputFile::create(dir + "/f" + std::to_string(i), &commits));
      file->os() << "file " << i;
      llvm::cantFail(file->commit());
    }
    llvm::cantFail(commits.drain());
    for (int i = 0; i < 3; ++i) {
      auto text = llvm::MemoryBuffer::getFile(dir + "/f" + std::to_string(i));
      ASSERT_TRUE(bool(text)) << i;
      EXPECT_EQ((*text)->getBuffer(), "file " + std::to_string(i));
    }
  }
  {
    // The first file cannot be renamed (a non-empty folder holds its name): the
    // drain names it, and the file queued after it never appears.
    DeferredCommits commits;
    auto blocked = llvm::cantFail(OutputFile::create(dir + "/blocked", &commits));
    auto after = llvm::cantFail(OutputFile::create(dir + "/after", &commits));
    llvm::sys::fs::create_directories(dir + "/blocked/inside");
    blocked->os() << "x";
    after->os() << "y";
    llvm::cantFail(blocked->commit());
    llvm::Error queued = after->commit(); // fails if the worker was already done
    llvm::consumeError(std::move(queued));
    llvm::Error drained = commits.drain();
    ASSERT_TRUE(bool(drained));
    EXPECT_NE(message(std::move(drained)).find(dir + "/blocked"), std::string::npos);
    EXPECT_FALSE(llvm::sys::fs::exists(dir + "/after"));
  }
  // No temporary is left behind by either.
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
    EXPECT_EQ(llvm::StringRef(it->path()).find(".tmp-"), llvm::StringRef::npos) << it->path();
}
