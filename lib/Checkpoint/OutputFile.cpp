//===- OutputFile.cpp - temporary file renamed into place -----------------===//
#include "loom/Checkpoint/OutputFile.h"
#include "loom/Checkpoint/Tensor.h"

#include <cerrno>
#include <fcntl.h>
#include <system_error>
#include <unistd.h>

using namespace loom::ckpt;

llvm::Expected<std::unique_ptr<OutputFile>> OutputFile::create(const llvm::Twine &path) {
  auto temp = llvm::sys::fs::TempFile::create(path + ".tmp-%%%%%%");
  if (!temp)
    return fileError(path, "cannot create: " + llvm::toString(temp.takeError()));
  return std::unique_ptr<OutputFile>(new OutputFile(path.str(), std::move(*temp)));
}

OutputFile::OutputFile(std::string path, llvm::sys::fs::TempFile tempFile)
    : finalPath(std::move(path)), temp(std::move(tempFile)) {
  stream = std::make_unique<llvm::raw_fd_ostream>(temp->FD, /*shouldClose=*/false);
}

OutputFile::~OutputFile() {
  stream.reset();
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

llvm::Error OutputFile::commit() {
  stream->flush();
  if (llvm::Error err = check("writing"))
    return err;
  stream.reset();
  // Durable before visible: a crash after the rename must not expose a file whose
  // data never reached the disk.
  if (::fsync(temp->FD) != 0)
    return fileError(finalPath, "fsync: " + std::error_code(errno, std::generic_category()).message());
  llvm::Error kept = temp->keep(finalPath);
  temp.reset();
  if (kept)
    return fileError(finalPath, "cannot move into place: " + llvm::toString(std::move(kept)));
  return llvm::Error::success();
}
