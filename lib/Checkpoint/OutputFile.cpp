//===- OutputFile.cpp - temporary file renamed into place -----------------===//
#include "loom/Checkpoint/OutputFile.h"
#include "loom/Checkpoint/Tensor.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <fcntl.h>
#ifdef __linux__
#include <linux/magic.h>
#include <sys/vfs.h>
#endif
#include <system_error>
#include <unistd.h>

using namespace loom::ckpt;

llvm::Expected<std::unique_ptr<OutputFile>> OutputFile::create(const llvm::Twine &path,
                                                              DeferredCommits *commits) {
  auto temp = llvm::sys::fs::TempFile::create(path + ".tmp-%%%%%%");
  if (!temp)
    return fileError(path, "cannot create: " + llvm::toString(temp.takeError()));
  std::unique_ptr<OutputFile> file(new OutputFile(path.str(), std::move(*temp)));
  file->deferTo = commits;
  return file;
}

OutputFile::OutputFile(std::string path, llvm::sys::fs::TempFile tempFile)
    : finalPath(std::move(path)), temp(std::move(tempFile)) {
  stream = std::make_unique<llvm::raw_fd_ostream>(temp->FD, /*shouldClose=*/false);
}

OutputFile::~OutputFile() {
  stream.reset();
  if (directFd >= 0)
    ::close(directFd);
  if (temp)
    llvm::consumeError(temp->discard());
}

llvm::Error OutputFile::check(const llvm::Twine &what) {
  if (!stream->has_error())
    return llvm::Error::success();
  std::string reason = stream->error().message();
  stream->clear_error();
  return fileError(finalPath, what + ": " + reason);
}

void OutputFile::startWriteback(uint64_t offset, uint64_t length) {
  // Below a few MiB the kernel's own writeback and commit()'s fsync do as well.
  if (length < (4u << 20))
    return;
  stream->flush();
#ifdef __linux__
  // Advisory: a failure here (e.g. a file system without it) leaves the data to
  // fsync, which reports any real write error at commit().
  (void)::sync_file_range(temp->FD, off_t(offset), off_t(length), SYNC_FILE_RANGE_WRITE);
#else
  (void)offset;
#endif
}

namespace {
/// O_DIRECT's alignment of offsets, lengths and buffers: the page size, which
/// every Linux block device's logical block divides.
constexpr uint64_t kAlign = 4096;
/// The bounce buffer: large enough that each direct write keeps the disk busy.
constexpr uint64_t kBounce = 16u << 20;

std::string lastError() { return std::error_code(errno, std::generic_category()).message(); }

/// pwrite until done; false with errno on failure.
bool pwriteAll(int fd, const uint8_t *data, uint64_t size, uint64_t offset) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, off_t(offset));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    data += n;
    size -= uint64_t(n);
    offset += uint64_t(n);
  }
  return true;
}

/// Durable before visible: a crash after the rename must not expose a file whose
/// data never reached the disk. On failure the temporary is removed.
llvm::Error syncAndRename(const std::string &finalPath, llvm::sys::fs::TempFile &temp) {
  if (::fsync(temp.FD) != 0) {
    std::string reason = lastError();
    llvm::consumeError(temp.discard());
    return fileError(finalPath, "fsync: " + reason);
  }
  if (llvm::Error kept = temp.keep(finalPath))
    return fileError(finalPath, "cannot move into place: " + llvm::toString(std::move(kept)));
  return llvm::Error::success();
}
} // namespace

bool OutputFile::openDirect() {
#ifdef __linux__
  if (directFd == -1) {
    // LOOM_DIRECT_IO=0 keeps every write in the page cache (for file systems
    // whose O_DIRECT is slower than their cache, and to compare the two).
    static const bool allowed = [] {
      const char *setting = std::getenv("LOOM_DIRECT_IO");
      return !setting || std::strcmp(setting, "0") != 0;
    }();
    // In a file system kept in memory (tmpfs, ramfs) the page cache is the medium:
    // going around it only adds the bounce buffer's copy.
    struct statfs fs;
    bool inMemory = ::fstatfs(temp->FD, &fs) == 0 &&
                    (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
    directFd = allowed && !inMemory
                   ? ::open(temp->TmpName.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC)
                   : -2;
    if (directFd < 0) { // refused by the file system
      directFd = -2;
      return false;
    }
    void *buffer = nullptr;
    if (::posix_memalign(&buffer, kAlign, kBounce) != 0) {
      ::close(directFd);
      directFd = -2;
      return false;
    }
    bounce = {static_cast<uint8_t *>(buffer), &std::free};
  }
  return directFd >= 0;
#else
  return false;
#endif
}

llvm::Error OutputFile::writeAt(uint64_t offset, llvm::ArrayRef<uint8_t> bytes,
                                const llvm::Twine &what) {
  const uint8_t *data = bytes.data();
  uint64_t size = bytes.size();
  auto failed = [&] { return fileError(finalPath, what + ": " + lastError()); };
  if (size >= kDirectMin && openDirect()) {
    // The unaligned head and tail go through the page cache; the aligned middle
    // around it. They share no page, so the cache never holds a stale copy of
    // what the direct writes put on the disk.
    uint64_t head = (kAlign - offset % kAlign) % kAlign;
    if (!pwriteAll(temp->FD, data, head, offset))
      return failed();
    data += head, size -= head, offset += head;
    while (size >= kAlign) {
      uint64_t chunk = std::min(kBounce, size / kAlign * kAlign);
      std::memcpy(bounce.get(), data, chunk);
      if (!pwriteAll(directFd, bounce.get(), chunk, offset)) {
        if (errno != EINVAL)
          return failed();
        // A file system that opens O_DIRECT but refuses these writes: the rest
        // of this file goes through the cache.
        ::close(directFd);
        directFd = -2;
        break;
      }
      directWritten += chunk;
      data += chunk, size -= chunk, offset += chunk;
    }
  }
  if (!pwriteAll(temp->FD, data, size, offset))
    return failed();
  return llvm::Error::success();
}

llvm::Error OutputFile::append(llvm::ArrayRef<uint8_t> bytes, const llvm::Twine &what) {
  if (bytes.size() < kDirectMin) {
    stream->write(reinterpret_cast<const char *>(bytes.data()), bytes.size());
    return check(what);
  }
  stream->flush();
  if (llvm::Error err = check(what))
    return err;
  uint64_t at = stream->tell();
  if (llvm::Error err = writeAt(at, bytes, what))
    return err;
  stream->seek(at + bytes.size());
  return check(what);
}

llvm::Error OutputFile::commit() {
  stream->flush();
  if (llvm::Error err = check("writing"))
    return err;
  stream.reset();
  if (directFd >= 0) {
    ::close(directFd);
    directFd = -2;
  }
  llvm::sys::fs::TempFile finished = std::move(*temp);
  temp.reset();
  if (deferTo)
    return deferTo->add(finalPath, std::move(finished));
  return syncAndRename(finalPath, finished);
}


struct DeferredCommits::Impl {
  std::mutex mutex;
  std::condition_variable wake, idle;
  std::deque<std::pair<std::string, llvm::sys::fs::TempFile>> queue;
  bool busy = false, stop = false;
  std::string failure; ///< the first one, as a message
  std::thread worker;

  void run() {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      wake.wait(lock, [&] { return stop || !queue.empty(); });
      if (queue.empty())
        return;
      auto [path, temp] = std::move(queue.front());
      queue.pop_front();
      busy = true;
      bool skip = !failure.empty(); // after a failure nothing more becomes visible
      lock.unlock();
      llvm::Error err = skip ? temp.discard() : syncAndRename(path, temp);
      lock.lock();
      busy = false;
      if (err && failure.empty())
        failure = llvm::toString(std::move(err));
      else
        llvm::consumeError(std::move(err));
      if (queue.empty())
        idle.notify_all();
    }
  }
  llvm::Error takeFailure() {
    if (failure.empty())
      return llvm::Error::success();
    return llvm::createStringError(llvm::inconvertibleErrorCode(), failure);
  }
};

DeferredCommits::DeferredCommits() : impl(std::make_unique<Impl>()) {
  impl->worker = std::thread([this] { impl->run(); });
}

DeferredCommits::~DeferredCommits() {
  {
    std::lock_guard<std::mutex> lock(impl->mutex);
    impl->stop = true;
    for (auto &queued : impl->queue)
      llvm::consumeError(queued.second.discard());
    impl->queue.clear();
  }
  impl->wake.notify_all();
  impl->worker.join();
}

llvm::Error DeferredCommits::add(std::string finalPath, llvm::sys::fs::TempFile temp) {
  std::lock_guard<std::mutex> lock(impl->mutex);
  if (!impl->failure.empty()) {
    llvm::consumeError(temp.discard());
    return impl->takeFailure();
  }
  impl->queue.emplace_back(std::move(finalPath), std::move(temp));
  impl->wake.notify_one();
  return llvm::Error::success();
}

llvm::Error DeferredCommits::drain() {
  std::unique_lock<std::mutex> lock(impl->mutex);
  impl->idle.wait(lock, [&] { return impl->queue.empty() && !impl->busy; });
  return impl->takeFailure();
}
