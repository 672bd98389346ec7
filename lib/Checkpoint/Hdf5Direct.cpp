//===- Hdf5Direct.cpp - an HDF5 file driver that writes data around the cache ===//
//
// HDF5 writes through a virtual file driver (VFD). Its POSIX driver (sec2) sends
// every write to the page cache, which must then grow by the whole file before
// the final fsync: on this project's VM a 1 GiB file still wrote at the disk's
// speed that way, but 2 and 4 GiB files at 0.45-0.63 of it (the cache grew into
// pages the VM is slow to touch first; with this driver 0.85-1.15).
//
// This driver is sec2 with one change: raw data writes (the universal writer's
// chunks, H5FD_MEM_DRAW) that follow one another in the file are gathered into
// runs of up to kRun bytes and written by a PositionedWriter, which sends each
// run's aligned middle to the disk directly (O_DIRECT) on its writer thread. HDF5
// still lays out the file and writes the metadata; the file is a plain HDF5 file
// that any driver reads.
//
// Ordering: a run is written before any write or read that overlaps it, and the
// direct writes under way are waited for before a read or metadata write touches
// their range, so every access sees the bytes HDF5 wrote last. HDF5 never writes
// the same raw bytes twice in the universal writer, so this never waits there.
//
//===----------------------------------------------------------------------===//
#include "Hdf5.h"
#include "loom/Checkpoint/OutputFile.h"

#include <H5FDpublic.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>

using namespace loom::ckpt;
using namespace loom::ckpt::hdf5;

namespace {
/// Runs of adjacent raw writes are gathered up to this size: each then fills a
/// bounce buffer of the direct writer.
constexpr uint64_t kRun = 16u << 20;
/// Raw writes smaller than this (a scalar, a tiny tensor) go to the cache as they come.
constexpr uint64_t kRunMin = 64u << 10;
constexpr haddr_t kMaxAddress = (haddr_t(1) << (8 * sizeof(off_t) - 1)) - 1;

/// What the file access property list carries to open(): the name errors use.
struct DriverInfo {
  const std::string *displayName;
};

struct DirectFile {
  H5FD_t pub; // HDF5's part, first
  int fd = -1;
  dev_t device = 0;
  ino_t inode = 0;
  haddr_t eoa = 0, eof = 0;
  std::unique_ptr<PositionedWriter> out;
  std::unique_ptr<uint8_t[]> run; ///< kRun bytes, allocated with the first run
  haddr_t runStart = 0;
  uint64_t runLength = 0;
  /// The range handed to the direct writer since it was last waited for.
  haddr_t directLow = HADDR_UNDEF, directHigh = 0;
  std::string failure;  ///< the first failure, for finishDirectWrites
  bool abandoned = false; ///< being discarded: nothing more is written
};

/// errno's message, for errors of the calls this driver makes itself.
std::string errnoText() { return std::error_code(errno, std::generic_category()).message(); }

herr_t fail(DirectFile *file, const std::string &message) {
  if (file && file->failure.empty())
    file->failure = message;
  H5Epush2(H5E_DEFAULT, __FILE__, "loom direct driver", __LINE__, H5E_ERR_CLS, H5E_VFL,
           H5E_WRITEERROR, "%s", message.c_str());
  return -1;
}

bool overlaps(haddr_t addr, uint64_t size, haddr_t low, haddr_t high) {
  return low != HADDR_UNDEF && addr < high && addr + size > low;
}

/// Hands [addr, addr + size) to the positioned writer, which may still be writing
/// it when this returns.
herr_t sendDirect(DirectFile *file, haddr_t addr, const uint8_t *data, uint64_t size) {
  if (llvm::Error err = file->out->writeAt(addr, {data, size}, "writing chunks"))
    return fail(file, llvm::toString(std::move(err)));
  file->directLow = file->directLow == HADDR_UNDEF ? addr : std::min(file->directLow, addr);
  file->directHigh = std::max(file->directHigh, addr + size);
  return 0;
}

/// Sends the gathered run to the positioned writer.
herr_t writeRun(DirectFile *file) {
  if (file->abandoned)
    file->runLength = 0;
  if (file->runLength == 0)
    return 0;
  uint64_t length = file->runLength;
  file->runLength = 0;
  return sendDirect(file, file->runStart, file->run.get(), length);
}

/// Waits for the direct writes under way; none of the file's range is then in flight.
herr_t waitDirect(DirectFile *file) {
  if (file->abandoned)
    return 0; // what is queued is dropped at close
  if (llvm::Error err = file->out->drain())
    return fail(file, llvm::toString(std::move(err)));
  file->directLow = HADDR_UNDEF;
  file->directHigh = 0;
  return 0;
}

/// Makes [addr, addr + size) safe to access through the page cache: the run
/// written out and the direct writes waited for if either overlaps it.
herr_t settle(DirectFile *file, haddr_t addr, uint64_t size) {
  if (file->runLength && overlaps(addr, size, file->runStart, file->runStart + file->runLength))
    if (writeRun(file) < 0)
      return -1;
  if (overlaps(addr, size, file->directLow, file->directHigh))
    return waitDirect(file);
  return 0;
}

/// Writes [addr, addr + size) through the page cache.
herr_t writeCached(DirectFile *file, haddr_t addr, uint64_t size, const uint8_t *data) {
  if (!pwriteAll(file->fd, data, size, addr))
    return fail(file, file->out->displayName() + ": writing: " + errnoText());
  return 0;
}

H5FD_t *openFile(const char *name, unsigned flags, hid_t fapl, haddr_t maxaddr) {
  if (!name || !*name || maxaddr == 0 || maxaddr > kMaxAddress)
    return nullptr;
  const auto *info = static_cast<const DriverInfo *>(H5Pget_driver_info(fapl));
  int mode = (flags & H5F_ACC_RDWR) ? O_RDWR : O_RDONLY;
  if (flags & H5F_ACC_TRUNC)
    mode |= O_TRUNC;
  if (flags & H5F_ACC_CREAT)
    mode |= O_CREAT;
  if (flags & H5F_ACC_EXCL)
    mode |= O_EXCL;
  int fd = ::open(name, mode | O_CLOEXEC, 0666);
  if (fd < 0) {
    fail(nullptr, std::string(name) + ": cannot open: " + errnoText());
    return nullptr;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return nullptr;
  }
  auto *file = new DirectFile();
  file->fd = fd;
  file->device = st.st_dev;
  file->inode = st.st_ino;
  file->eof = haddr_t(st.st_size);
  file->out = std::make_unique<PositionedWriter>(
      name, fd, info && info->displayName ? *info->displayName : std::string(name));
  return &file->pub;
}

herr_t closeFile(H5FD_t *handle) {
  auto *file = reinterpret_cast<DirectFile *>(handle);
  herr_t result = writeRun(file);
  if (result >= 0 && !file->abandoned)
    if (llvm::Error err = file->out->finish())
      result = fail(file, llvm::toString(std::move(err)));
  file->out.reset(); // abandons what a failure left queued
  if (::close(file->fd) != 0 && result >= 0)
    result = fail(file, "close failed");
  delete file;
  return result;
}

int compareFiles(const H5FD_t *a, const H5FD_t *b) {
  auto *x = reinterpret_cast<const DirectFile *>(a), *y = reinterpret_cast<const DirectFile *>(b);
  if (x->device != y->device)
    return x->device < y->device ? -1 : 1;
  if (x->inode != y->inode)
    return x->inode < y->inode ? -1 : 1;
  return 0;
}

herr_t query(const H5FD_t *, unsigned long *flags) {
  if (flags)
    *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA | H5FD_FEAT_DATA_SIEVE |
             H5FD_FEAT_AGGREGATE_SMALLDATA;
  return 0;
}

haddr_t getEoa(const H5FD_t *handle, H5FD_mem_t) {
  return reinterpret_cast<const DirectFile *>(handle)->eoa;
}

herr_t setEoa(H5FD_t *handle, H5FD_mem_t, haddr_t addr) {
  reinterpret_cast<DirectFile *>(handle)->eoa = addr;
  return 0;
}

haddr_t getEof(const H5FD_t *handle, H5FD_mem_t) {
  return reinterpret_cast<const DirectFile *>(handle)->eof;
}

herr_t getHandle(H5FD_t *handle, hid_t, void **out) {
  *out = handle;
  return 0;
}

herr_t readFile(H5FD_t *handle, H5FD_mem_t, hid_t, haddr_t addr, size_t size, void *buffer) {
  auto *file = reinterpret_cast<DirectFile *>(handle);
  if (settle(file, addr, size) < 0)
    return -1;
  auto *data = static_cast<uint8_t *>(buffer);
  while (size > 0) {
    ssize_t n = ::pread(file->fd, data, size, off_t(addr));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return fail(file, file->out->displayName() + ": reading: " + errnoText());
    if (n == 0) { // past the end of the file: what HDF5 allocated but never wrote
      std::memset(data, 0, size);
      break;
    }
    data += n, size -= size_t(n), addr += haddr_t(n);
  }
  return 0;
}

herr_t writeFile(H5FD_t *handle, H5FD_mem_t type, hid_t, haddr_t addr, size_t size,
                 const void *buffer) {
  auto *file = reinterpret_cast<DirectFile *>(handle);
  const auto *data = static_cast<const uint8_t *>(buffer);
  file->eof = std::max(file->eof, addr + size);
  if (file->abandoned)
    return 0;
  if (type == H5FD_MEM_DRAW && size >= kRunMin) {
    if (file->runLength &&
        (addr != file->runStart + file->runLength || file->runLength + size > kRun))
      if (writeRun(file) < 0)
        return -1;
    if (settle(file, addr, size) < 0)
      return -1;
    if (size > kRun) // larger than a run: as it is
      return sendDirect(file, addr, data, size);
    if (!file->run)
      file->run.reset(new uint8_t[kRun]);
    if (file->runLength == 0)
      file->runStart = addr;
    std::memcpy(file->run.get() + file->runLength, data, size);
    file->runLength += size;
    return 0;
  }
  if (settle(file, addr, size) < 0)
    return -1;
  return writeCached(file, addr, size, data);
}

herr_t flushFile(H5FD_t *handle, hid_t, hbool_t) {
  return writeRun(reinterpret_cast<DirectFile *>(handle));
}

herr_t truncateFile(H5FD_t *handle, hid_t, hbool_t) {
  auto *file = reinterpret_cast<DirectFile *>(handle);
  if (writeRun(file) < 0)
    return -1;
  if (file->eoa != file->eof && !file->abandoned) {
    if (::ftruncate(file->fd, off_t(file->eoa)) != 0)
      return fail(file, file->out->displayName() + ": cannot set the file's size: " + errnoText());
    file->eof = file->eoa;
  }
  return 0;
}

hid_t driver() {
  static const hid_t id = [] {
    static H5FD_class_t cls = {};
    cls.name = "loom_direct";
    cls.maxaddr = kMaxAddress;
    cls.fc_degree = H5F_CLOSE_WEAK;
    cls.fapl_size = sizeof(DriverInfo);
    cls.open = openFile;
    cls.close = closeFile;
    cls.cmp = compareFiles;
    cls.query = query;
    cls.get_eoa = getEoa;
    cls.set_eoa = setEoa;
    cls.get_eof = getEof;
    cls.get_handle = getHandle;
    cls.read = readFile;
    cls.write = writeFile;
    cls.flush = flushFile;
    cls.truncate = truncateFile;
    const H5FD_mem_t freeLists[H5FD_MEM_NTYPES] = H5FD_FLMAP_DICHOTOMY; // as sec2
    std::copy(std::begin(freeLists), std::end(freeLists), cls.fl_map);
    return H5FDregister(&cls);
  }();
  return id;
}
} // namespace

Handle hdf5::directWriteAccess(const std::string &displayName) {
  Handle access(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  hid_t id = driver();
  DriverInfo info{&displayName};
  if (!access || id < 0 || H5Pset_driver(access.get(), id, &info) < 0)
    return Handle();
  return access;
}

/// `file`'s state in this driver; null for another driver.
static DirectFile *directFileOf(hid_t file) {
  void *handle = nullptr;
  Handle access(H5Fget_access_plist(file), H5Pclose);
  if (!access || H5Pget_driver(access.get()) != driver() ||
      H5Fget_vfd_handle(file, access.get(), &handle) < 0)
    return nullptr;
  return static_cast<DirectFile *>(handle);
}

void hdf5::abandonDirectWrites(hid_t file) {
  if (DirectFile *direct = directFileOf(file))
    direct->abandoned = true;
}

llvm::Error hdf5::finishDirectWrites(hid_t file) {
  DirectFile *direct = directFileOf(file);
  if (!direct)
    return llvm::Error::success(); // another driver: nothing of ours under way
  if (!direct->failure.empty())
    return llvm::createStringError(llvm::inconvertibleErrorCode(), direct->failure);
  if (writeRun(direct) < 0 || waitDirect(direct) < 0)
    return llvm::createStringError(llvm::inconvertibleErrorCode(), direct->failure);
  return llvm::Error::success();
}
