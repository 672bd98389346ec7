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
  positioned = std::make_unique<PositionedWriter>(temp->TmpName, temp->FD, finalPath);
}

OutputFile::~OutputFile() {
  if (stream) { // abandoned: a failed write must not abort the process here
    stream->flush();
    stream->clear_error();
  }
  stream.reset();
  positioned.reset(); // stops its writes before the file goes
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
  stream->flush();
  positioned->startWriteback(offset, length);
}

bool loom::ckpt::pwriteAll(int fd, const uint8_t *data, uint64_t size, uint64_t offset) {
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

namespace {
/// O_DIRECT's alignment of offsets, lengths and buffers: the page size, which
/// every Linux block device's logical block divides.
constexpr uint64_t kAlign = 4096;
/// Each bounce buffer: large enough that each direct write keeps the disk busy.
constexpr uint64_t kBounce = 16u << 20;

std::string lastError() { return std::error_code(errno, std::generic_category()).message(); }

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

namespace {
/// The process's direct writer: two bounce buffers and a thread that sends one to
/// the disk (O_DIRECT) while a caller copies the next span of some file into the
/// other. The copy, and the caller's own work between spans, hide under the disk's
/// time instead of adding to it. One for the whole process, so that a converter
/// with many output files open holds two buffers, not two per file. A file system
/// that opens O_DIRECT but refuses the writes (EINVAL) gets the refused span and
/// every later one of that file through the page cache instead.
class DirectWriter {
public:
  /// What the writer keeps of one file (guarded by its mutex).
  struct File {
    int directFd, cachedFd;
    unsigned pending = 0; ///< reserved or queued buffers
    bool refused = false, abandoned = false;
    std::string failed;
    uint64_t written = 0;
  };

  /// The process's writer (a child of fork() makes its own); null when its
  /// buffers cannot be had. Never destroyed: its thread waits until the process ends.
  static DirectWriter *get();

  /// A buffer of kBounce bytes for `file` once the disk is done with it (its
  /// index; -1 after a failed write of `file`). Must be followed by submit().
  int reserve(File &file);
  uint8_t *buffer(int index) { return buffers[index]; }
  /// Queues the reserved buffer, holding `length` bytes of `file` at `offset`.
  void submit(File &file, int index, uint64_t offset, uint64_t length, const llvm::Twine &what);
  /// Waits for `file`'s queued writes; its first failure as "<what>: <reason>", or "".
  std::string drain(File &file);
  /// Reads a field of `file` under the lock.
  template <typename T> T read(File &file, T File::*field) {
    std::lock_guard<std::mutex> lock(mutex);
    return file.*field;
  }
  /// Drops `file`'s queued writes and waits for the one under way.
  void abandon(File &file);

private:
  DirectWriter(uint8_t *aligned) : buffers{aligned, aligned + kBounce} {
    std::thread([this] { run(); }).detach();
  }
  void run();

  uint8_t *buffers[2];
  struct Job {
    File *file;
    int buffer;
    uint64_t offset, length;
    std::string what;
  };
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<Job> queue;
  bool inUse[2] = {false, false}; ///< reserved, queued or being written
  int fill = 0;                   ///< the buffer reserve() hands out next
};

DirectWriter *DirectWriter::get() {
  static std::mutex creating;
  static DirectWriter *writer = nullptr;
  static pid_t owner = 0;
  std::lock_guard<std::mutex> lock(creating);
  if (writer && owner == ::getpid())
    return writer;
  // Both buffers on transparent huge pages, faulted in by one call: a virtual
  // machine faulting a fresh 16 MiB buffer in 4 KiB at a time spent ~0.1 s on it,
  // a tenth of the disk's time for a GiB.
  const size_t huge = size_t(2) << 20;
  void *address = ::mmap(nullptr, 2 * kBounce + huge, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (address == MAP_FAILED)
    return nullptr;
  auto *aligned = reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(address) + huge - 1) &
                                              ~uintptr_t(huge - 1));
#ifdef __linux__
  ::madvise(aligned, 2 * kBounce, MADV_HUGEPAGE);
  ::madvise(aligned, 2 * kBounce, MADV_POPULATE_WRITE); // refused before Linux 5.14: no harm
#endif
  // (A parent's writer, inherited by fork() without its thread, is left as it is.)
  writer = new DirectWriter(aligned);
  owner = ::getpid();
  return writer;
}

void DirectWriter::run() {
  std::unique_lock<std::mutex> lock(mutex);
  while (true) {
    changed.wait(lock, [&] { return !queue.empty(); });
    Job job = std::move(queue.front());
    queue.pop_front();
    File &file = *job.file;
    bool skip = !file.failed.empty() || file.abandoned, throughCache = file.refused;
    lock.unlock();
    const uint8_t *bytes = buffers[job.buffer];
    int error = 0;
    bool wentDirect = false, refusedNow = false;
    if (!skip && !throughCache) {
      if (pwriteAll(file.directFd, bytes, job.length, job.offset))
        wentDirect = true;
      else if (errno == EINVAL)
        refusedNow = throughCache = true;
      else
        error = errno;
    }
    if (!skip && throughCache && !pwriteAll(file.cachedFd, bytes, job.length, job.offset))
      error = errno;
    lock.lock();
    file.refused |= refusedNow;
    if (wentDirect)
      file.written += job.length;
    if (error && file.failed.empty())
      file.failed = job.what + ": " + std::error_code(error, std::generic_category()).message();
    inUse[job.buffer] = false;
    --file.pending;
    changed.notify_all();
  }
}

int DirectWriter::reserve(File &file) {
  std::unique_lock<std::mutex> lock(mutex);
  changed.wait(lock, [&] { return !inUse[fill] || !file.failed.empty(); });
  if (!file.failed.empty())
    return -1;
  int index = fill;
  inUse[index] = true;
  fill ^= 1;
  ++file.pending;
  return index;
}

void DirectWriter::submit(File &file, int index, uint64_t offset, uint64_t length,
                          const llvm::Twine &what) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    queue.push_back({&file, index, offset, length, what.str()});
  }
  changed.notify_all();
}

std::string DirectWriter::drain(File &file) {
  std::unique_lock<std::mutex> lock(mutex);
  changed.wait(lock, [&] { return file.pending == 0; });
  return file.failed;
}

void DirectWriter::abandon(File &file) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    file.abandoned = true;
  }
  drain(file);
}
} // namespace

/// One file's share of the process's DirectWriter.
class PositionedWriter::DirectPipe {
public:
  static std::unique_ptr<DirectPipe> create(int directFd, int cachedFd) {
    DirectWriter *writer = DirectWriter::get();
    if (!writer)
      return nullptr;
    return std::unique_ptr<DirectPipe>(new DirectPipe(writer, directFd, cachedFd));
  }
  /// Queued writes are dropped (the file is being abandoned: commit() drains
  /// first), and the one under way is waited for.
  ~DirectPipe() { writer->abandon(file); }

  /// A buffer to fill, once the disk is done with it; null after a failed write.
  /// Must be followed by submit().
  uint8_t *next() {
    reserved = writer->reserve(file);
    return reserved < 0 ? nullptr : writer->buffer(reserved);
  }
  /// Queues next()'s buffer, holding `length` bytes of the file at `offset`.
  void submit(uint64_t offset, uint64_t length, const llvm::Twine &what) {
    writer->submit(file, reserved, offset, length, what);
  }
  /// Waits for every queued write; the first failure as "<what>: <reason>", or "".
  std::string drain() { return writer->drain(file); }
  /// The first failure so far without waiting, or "".
  std::string failure() { return writer->read(file, &DirectWriter::File::failed); }
  /// Whether writes now go through the page cache (the file system refused them).
  bool refused() { return writer->read(file, &DirectWriter::File::refused); }
  /// Bytes that reached the disk around the page cache, once drained.
  uint64_t directBytes() {
    drain();
    return writer->read(file, &DirectWriter::File::written);
  }

private:
  DirectPipe(DirectWriter *writer, int directFd, int cachedFd)
      : writer(writer), file{directFd, cachedFd} {}
  DirectWriter *writer;
  DirectWriter::File file;
  int reserved = -1;
};

PositionedWriter::PositionedWriter(std::string path, int cachedFd, std::string displayName)
    : path(std::move(path)), name(std::move(displayName)), cachedFd(cachedFd) {}

PositionedWriter::~PositionedWriter() {
  pipe.reset(); // stops its writes before the descriptor goes
  if (directFd >= 0)
    ::close(directFd);
}

void PositionedWriter::startWriteback(uint64_t offset, uint64_t length) {
  // Below a few MiB the kernel's own writeback and the final fsync do as well.
  if (length < (4u << 20))
    return;
#ifdef __linux__
  // Advisory: a failure here (e.g. a file system without it) leaves the data to
  // fsync, which reports any real write error.
  (void)::sync_file_range(cachedFd, off_t(offset), off_t(length), SYNC_FILE_RANGE_WRITE);
#else
  (void)offset;
#endif
}

bool PositionedWriter::openDirect() {
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
    bool inMemory = ::fstatfs(cachedFd, &fs) == 0 &&
                    (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
    directFd = allowed && !inMemory
                   ? ::open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC)
                   : -2;
    if (directFd >= 0 && !(pipe = DirectPipe::create(directFd, cachedFd)))
      ::close(directFd);
    if (!pipe) // refused by the file system, or no memory for the buffers
      directFd = -2;
  }
  return pipe && !pipe->refused();
#else
  return false;
#endif
}

llvm::Error PositionedWriter::drain() {
  if (!pipe)
    return llvm::Error::success();
  std::string failure = pipe->drain();
  if (failure.empty())
    return llvm::Error::success();
  return fileError(name, failure);
}

llvm::Error PositionedWriter::finish() {
  llvm::Error err = drain();
  if (pipe) {
    directWritten = pipe->directBytes();
    pipe.reset();
  }
  if (directFd >= 0)
    ::close(directFd);
  directFd = -2;
  return err;
}

uint64_t PositionedWriter::directBytes() { return pipe ? pipe->directBytes() : directWritten; }

llvm::Error PositionedWriter::writeAt(uint64_t offset, llvm::ArrayRef<uint8_t> bytes,
                                const llvm::Twine &what) {
  if (pipe) // an earlier span's direct write failed
    if (std::string failure = pipe->failure(); !failure.empty())
      return fileError(name, failure);
  const uint8_t *data = bytes.data();
  uint64_t size = bytes.size();
  auto failed = [&] { return fileError(name, what + ": " + lastError()); };
  if (size >= kDirectMin && openDirect()) {
    // The unaligned head and tail go through the page cache; the aligned middle
    // around it. They share no page, so the cache never holds a stale copy of
    // what the direct writes put on the disk.
    uint64_t head = (kAlign - offset % kAlign) % kAlign;
    if (!pwriteAll(cachedFd, data, head, offset))
      return failed();
    data += head, size -= head, offset += head;
    while (size >= kAlign) {
      uint64_t chunk = std::min(kBounce, size / kAlign * kAlign);
      uint8_t *buffer = pipe->next();
      if (!buffer)
        return fileError(name, pipe->failure());
      std::memcpy(buffer, data, chunk);
      pipe->submit(offset, chunk, what);
      data += chunk, size -= chunk, offset += chunk;
    }
  }
  if (!pwriteAll(cachedFd, data, size, offset))
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
  if (llvm::Error err = positioned->finish()) // the earlier bytes' failure first
    return err;
  stream->flush();
  if (llvm::Error err = check("writing"))
    return err;
  stream.reset();
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
  Committed committed;
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
      if (!err && !skip && committed)
        err = committed(path);
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

DeferredCommits::DeferredCommits(Committed committed) : impl(std::make_unique<Impl>()) {
  impl->committed = std::move(committed);
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
