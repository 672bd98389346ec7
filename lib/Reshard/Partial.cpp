//===- Partial.cpp - run record and journals of OUT.loom-partial -----------===//
#include "Partial.h"

#include "loom/Checkpoint/OutputFile.h"
#include "loom/Checkpoint/Tensor.h"
#include "loom/Reshard/Reshard.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_sha1_ostream.h"

using namespace loom;
using namespace loom::reshard;

namespace {
constexpr llvm::StringLiteral kRecord = ".loom-run";
constexpr llvm::StringLiteral kJournal = ".loom-done-";

struct FileState {
  std::string path;
  uint64_t size;
  int64_t mtime; ///< nanoseconds since the epoch
};

/// The regular files at `path`: the file itself, or every file under the folder,
/// in name order.
std::vector<FileState> filesAt(const std::string &path) {
  std::vector<FileState> files;
  auto add = [&](const std::string &file) {
    llvm::sys::fs::file_status st;
    if (!llvm::sys::fs::status(file, st) && llvm::sys::fs::is_regular_file(st))
      files.push_back(
          {file, st.getSize(), int64_t(st.getLastModificationTime().time_since_epoch().count())});
  };
  if (!llvm::sys::fs::is_directory(path)) {
    add(path);
    return files;
  }
  std::error_code ec;
  for (llvm::sys::fs::recursive_directory_iterator it(path, ec), end; it != end && !ec;
       it.increment(ec))
    add(it->path());
  llvm::sort(files, [](const FileState &a, const FileState &b) { return a.path < b.path; });
  return files;
}

using Recorded = std::map<std::string, std::vector<std::pair<uint64_t, int64_t>>>;

/// Every complete line "<size> <mtime> <relative path>" of the journals of `partial`
/// (a line a killed run cut short has no newline and is left out).
Recorded readJournals(const std::string &partial) {
  Recorded recorded;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(partial, ec), end; it != end && !ec; it.increment(ec)) {
    if (!llvm::sys::path::filename(it->path()).starts_with(kJournal))
      continue;
    auto text = llvm::MemoryBuffer::getFile(it->path());
    if (!text)
      continue;
    llvm::StringRef rest = (*text)->getBuffer();
    while (rest.contains('\n')) {
      auto [line, next] = rest.split('\n');
      rest = next;
      auto [sizeText, tail] = line.split(' ');
      auto [mtimeText, relative] = tail.split(' ');
      uint64_t size = 0;
      int64_t mtime = 0;
      if (!sizeText.getAsInteger(10, size) && !mtimeText.getAsInteger(10, mtime) &&
          !relative.empty())
        recorded[relative.str()].emplace_back(size, mtime);
    }
  }
  return recorded;
}
} // namespace

std::string reshard::runFingerprint(ckptir::ProgramOp program,
                                    llvm::ArrayRef<std::string> sourcePaths) {
  llvm::raw_sha1_ostream hash;
  program->print(hash);
  for (const std::string &source : sourcePaths)
    for (const FileState &file : filesAt(source))
      hash << '\n' << file.path << ' ' << file.size << ' ' << file.mtime;
  return llvm::toHex(hash.sha1(), /*LowerCase=*/true);
}

llvm::Expected<bool> reshard::preparePartial(const std::string &path,
                                             llvm::StringRef fingerprint, bool resume) {
  std::string record = path + "/" + kRecord.str();
  std::string line = ("loom reshard run " + fingerprint + "\n").str();
  if (resume && llvm::sys::fs::exists(path)) {
    if (auto text = llvm::MemoryBuffer::getFile(record)) {
      if ((*text)->getBuffer() != line)
        return llvm::make_error<RunError>(
            path + ": left by a conversion of another source or target (its run record differs)",
            "remove it, or resume with the same SRC and --to as the run that left it");
      return false;
    }
    // Empty, it is what a run killed before it wrote its record left: nothing to keep.
    std::error_code ec;
    if (llvm::sys::fs::directory_iterator(path, ec) != llvm::sys::fs::directory_iterator())
      return llvm::make_error<RunError>(path + ": holds no run record (" + kRecord.str() +
                                            "), so --resume cannot tell which conversion left it",
                                        "remove it and run again without --resume");
  }
  if (std::error_code ec = llvm::sys::fs::create_directories(path))
    return ckpt::fileError(path, "cannot create: " + ec.message());
  auto file = ckpt::OutputFile::create(record);
  if (!file)
    return file.takeError();
  (*file)->os() << line;
  if (llvm::Error err = (*file)->commit())
    return std::move(err);
  return true;
}

llvm::Error reshard::sealPartial(const std::string &path) {
  std::vector<std::string> extra{path + "/" + kRecord.str()};
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(path, ec), end; it != end && !ec; it.increment(ec))
    if (llvm::sys::path::filename(it->path()).starts_with(kJournal))
      extra.push_back(it->path());
  if (ec)
    return ckpt::fileError(path, "cannot list: " + ec.message());
  for (const std::string &file : extra)
    if (std::error_code removed = llvm::sys::fs::remove(file))
      return ckpt::fileError(file, "cannot remove: " + removed.message());
  return llvm::Error::success();
}

std::string reshard::leftBehind(const std::string &path) {
  if (path.empty() || !llvm::sys::fs::exists(path))
    return "nothing was left under the output path; fix the cause and run again";
  size_t files = readJournals(path).size();
  if (files == 0)
    return path + " is left, with no file finished in it: remove it, or run again with --resume";
  return llvm::formatv("the {0} file{1} finished so far {2} kept in {3}: run again with --resume "
                       "to continue, or remove it",
                       files, files == 1 ? "" : "s", files == 1 ? "is" : "are", path)
      .str();
}

Journal::Journal(std::string partialPath, int rank)
    : partial(std::move(partialPath)), own(partial + "/" + kJournal.str() + std::to_string(rank)),
      recorded(readJournals(partial)) {}

bool Journal::kept(llvm::StringRef relative) const {
  std::vector<FileState> files = filesAt(partial + "/" + relative.str());
  if (files.empty())
    return false;
  for (const FileState &file : files) {
    auto found = recorded.find(file.path.substr(partial.size() + 1));
    if (found == recorded.end() ||
        !llvm::is_contained(found->second, std::pair{file.size, file.mtime}))
      return false;
  }
  // And no file recorded under a folder is missing from it.
  size_t listed = recorded.count(relative.str());
  std::string under = relative.str() + "/";
  for (auto it = recorded.lower_bound(under);
       it != recorded.end() && llvm::StringRef(it->first).starts_with(under); ++it)
    ++listed;
  return listed == files.size();
}

llvm::Error Journal::finished(const std::string &path) {
  std::string lines;
  for (const FileState &file : filesAt(path))
    lines += std::to_string(file.size) + " " + std::to_string(file.mtime) + " " +
             file.path.substr(partial.size() + 1) + "\n";
  std::lock_guard<std::mutex> lock(mutex);
  // Not synced: a record lost in a crash only makes --resume write the file again;
  // the file itself was made durable before it was renamed into place.
  std::error_code ec;
  llvm::raw_fd_ostream os(own, ec, llvm::sys::fs::OF_Append);
  if (!ec) {
    os << lines;
    os.close();
    ec = os.error();
    os.clear_error();
  }
  if (ec)
    return ckpt::fileError(own, "cannot record " + path + ": " + ec.message());
  ++finishedCount;
  return llvm::Error::success();
}

size_t Journal::finishedHere() {
  std::lock_guard<std::mutex> lock(mutex);
  return finishedCount;
}
