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
#include <sys/mman.h>
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
  if (stream) { // abandoned: a failed write must not abort the process here
    stream->flush();
    stream->clear_error();
  }
  stream.reset();
  pipe.reset(); // stops its writes before the descriptor and the file go
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
/// Each bounce buffer: large enough that each direct write keeps the disk busy.
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

/// Two bounce buffers and a thread that sends one to the disk (O_DIRECT) while
/// the caller copies the next span of the file into the other: the copy, and the
/// caller's own work between spans, hide under the disk's time instead of adding
/// to it. A file system that opens O_DIRECT but refuses the writes (EINVAL) gets
/// the refused span and every later one through the page cache instead.
class OutputFile::DirectPipe {
public:
  /// Null when the buffers cannot be had.
  static std::unique_ptr<DirectPipe> create(int directFd, int cachedFd);
  DirectPipe(const DirectPipe &) = delete;
  DirectPipe &operator=(const DirectPipe &) = delete;
  /// Stops after the write under way; queued writes are dropped (the file is
  /// being abandoned: commit() drains first).
  ~DirectPipe();

  /// The buffer to fill next (kBounce bytes), once the disk is done with it;
  /// null after a failed write.
  uint8_t *next();
  /// Queues next()'s buffer, holding `length` bytes of the file at `offset`.
  void submit(uint64_t offset, uint64_t length, const llvm::Twine &what);
  /// Waits for every queued write; the first failure as "<what>: <reason>", or "".
  std::string drain();
  /// The first failure so far without waiting, or "".
  std::string failure();
  /// Whether writes now go through the page cache (the file system refused them).
  bool refused();
  /// Bytes that reached the disk around the page cache, once drained.
  uint64_t directBytes();

private:
  DirectPipe(int directFd, int cachedFd, uint8_t *mapping, size_t mapped, uint8_t *aligned);
  void run();

  const int directFd, cachedFd;
  uint8_t *mapping;
  size_t mapped;
  uint8_t *buffers[2];

  struct Job {
    uint64_t offset, length;
    int buffer;
    std::string what;
  };
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<Job> queue;
  bool inUse[2] = {false, false}; ///< queued or being written
  int fill = 0;                   ///< the buffer next() hands out
  bool stop = false, direct = true;
  std::string failed;
  uint64_t written = 0;
  std::thread worker;
};

std::unique_ptr<OutputFile::DirectPipe> OutputFile::DirectPipe::create(int directFd,
                                                                       int cachedFd) {
  // Both buffers on transparent huge pages, faulted in by one call: a virtual
  // machine faulting a fresh 16 MiB buffer in 4 KiB at a time spent ~0.1 s on it,
  // a tenth of the disk's time for a GiB.
  const size_t huge = size_t(2) << 20;
  size_t mapped = 2 * kBounce + huge;
  void *address = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (address == MAP_FAILED)
    return nullptr;
  auto *mapping = static_cast<uint8_t *>(address);
  auto *aligned = reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(mapping) + huge - 1) &
                                              ~uintptr_t(huge - 1));
#ifdef __linux__
  ::madvise(aligned, 2 * kBounce, MADV_HUGEPAGE);
  ::madvise(aligned, 2 * kBounce, MADV_POPULATE_WRITE); // refused before Linux 5.14: no harm
#endif
  return std::unique_ptr<DirectPipe>(new DirectPipe(directFd, cachedFd, mapping, mapped, aligned));
}

OutputFile::DirectPipe::DirectPipe(int directFd, int cachedFd, uint8_t *mapping, size_t mapped,
                                   uint8_t *aligned)
    : directFd(directFd), cachedFd(cachedFd), mapping(mapping), mapped(mapped),
      buffers{aligned, aligned + kBounce} {
  worker = std::thread([this] { run(); });
}

OutputFile::DirectPipe::~DirectPipe() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stop = true;
  }
  changed.notify_all();
  worker.join();
  ::munmap(mapping, mapped);
}

void OutputFile::DirectPipe::run() {
  std::unique_lock<std::mutex> lock(mutex);
  while (true) {
    changed.wait(lock, [&] { return stop || !queue.empty(); });
    if (stop)
      return;
    Job job = std::move(queue.front());
    queue.pop_front();
    bool skip = !failed.empty(), throughCache = !direct;
    lock.unlock();
    const uint8_t *bytes = buffers[job.buffer];
    int error = 0;
    bool wentDirect = false, refusedNow = false;
    if (!skip && !throughCache) {
      if (pwriteAll(directFd, bytes, job.length, job.offset))
        wentDirect = true;
      else if (errno == EINVAL)
        refusedNow = throughCache = true;
      else
        error = errno;
    }
    if (!skip && throughCache && !pwriteAll(cachedFd, bytes, job.length, job.offset))
      error = errno;
    lock.lock();
    if (refusedNow)
      direct = false;
    if (wentDirect)
      written += job.length;
    if (error && failed.empty())
      failed = job.what + ": " + std::error_code(error, std::generic_category()).message();
    inUse[job.buffer] = false;
    changed.notify_all();
  }
}

uint8_t *OutputFile::DirectPipe::next() {
  std::unique_lock<std::mutex> lock(mutex);
  changed.wait(lock, [&] { return !inUse[fill] || !failed.empty(); });
  return failed.empty() ? buffers[fill] : nullptr;
}

void OutputFile::DirectPipe::submit(uint64_t offset, uint64_t length, const llvm::Twine &what) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    inUse[fill] = true;
    queue.push_back({offset, length, fill, what.str()});
    fill ^= 1;
  }
  changed.notify_all();
}

std::string OutputFile::DirectPipe::drain() {
  std::unique_lock<std::mutex> lock(mutex);
  changed.wait(lock, [&] { return !inUse[0] && !inUse[1]; });
  return failed;
}

std::string OutputFile::DirectPipe::failure() {
  std::lock_guard<std::mutex> lock(mutex);
  return failed;
}

bool OutputFile::DirectPipe::refused() {
  std::lock_guard<std::mutex> lock(mutex);
  return !direct;
}

uint64_t OutputFile::DirectPipe::directBytes() {
  drain();
  std::lock_guard<std::mutex> lock(mutex);
  return written;
}

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
    if (directFd >= 0 && !(pipe = DirectPipe::create(directFd, temp->FD)))
      ::close(directFd);
    if (!pipe) // refused by the file system, or no memory for the buffers
      directFd = -2;
  }
  return pipe && !pipe->refused();
#else
  return false;
#endif
}

llvm::Error OutputFile::finishDirect() {
  if (!pipe)
    return llvm::Error::success();
  std::string failure = pipe->drain();
  if (failure.empty())
    return llvm::Error::success();
  return fileError(finalPath, failure);
}

uint64_t OutputFile::directBytes() { return pipe ? pipe->directBytes() : directWritten; }

llvm::Error OutputFile::writeAt(uint64_t offset, llvm::ArrayRef<uint8_t> bytes,
                                const llvm::Twine &what) {
  if (pipe) // an earlier span's direct write failed
    if (std::string failure = pipe->failure(); !failure.empty())
      return fileError(finalPath, failure);
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
      uint8_t *buffer = pipe->next();
      if (!buffer)
        return fileError(finalPath, pipe->failure());
      std::memcpy(buffer, data, chunk);
      pipe->submit(offset, chunk, what);
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
  if (llvm::Error err = finishDirect()) // the earlier bytes' failure first
    return err;
  stream->flush();
  if (llvm::Error err = check("writing"))
    return err;
  stream.reset();
  if (pipe) {
    directWritten = pipe->directBytes();
    pipe.reset();
  }
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
