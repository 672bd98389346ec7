//===- AtomicFile.cpp - never leave a half-written file -------------------===//

#include "loom/Support/AtomicFile.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <unistd.h>

std::string loom::writeFileAtomic(const std::string &path, std::string_view content) {
  namespace fs = std::filesystem;
  fs::path target(path);
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string tmp = (dir / fmt::format(".{}.tmp.{}", target.filename().string(), getpid())).string();
  auto failWith = [&](const char *what) {
    std::string reason = fmt::format("cannot {} '{}': {}", what, path, std::strerror(errno));
    ::unlink(tmp.c_str());
    return reason;
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return failWith("create a temporary file for");
  const char *p = content.data();
  size_t left = content.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      ::close(fd);
      return failWith("write");
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return failWith("fsync");
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return failWith("rename a temporary file onto");
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}
