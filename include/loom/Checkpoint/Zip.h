//===- Zip.h - stored-entry zip archives as torch writes them ---*- C++ -*-===//
//
// torch.save (>= 1.6) writes an uncompressed zip: every entry stored, its data
// aligned to 64 bytes (so storages can be mapped and used in place), ZIP64 records
// once the archive or an entry passes 4 GiB. The reader maps the file and hands out
// entry bytes as views into the mapping; it validates the central directory, every
// local header and that no two entries overlap before returning anything, so later
// code can trust entry offsets. Compressed or encrypted entries are refused: no
// checkpoint format loom reads uses them.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_ZIP_H
#define LOOM_CHECKPOINT_ZIP_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"
#include "loom/Checkpoint/OutputFile.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace loom::ckpt {

struct ZipEntry {
  std::string name;
  uint64_t headerOffset = 0;
  uint64_t dataOffset = 0;
  uint64_t size = 0;
  uint32_t crc32 = 0;
};

class ZipArchive {
public:
  /// Maps `path` and validates its directory.
  static llvm::Expected<ZipArchive> open(const llvm::Twine &path);
  /// Validates an archive already in memory; `name` is used in messages.
  static llvm::Expected<ZipArchive> parse(std::shared_ptr<const llvm::MemoryBuffer> buffer,
                                          llvm::StringRef name);

  llvm::StringRef name() const { return archiveName; }
  llvm::ArrayRef<ZipEntry> entries() const { return entryList; }
  const ZipEntry *find(llvm::StringRef entryName) const;

  /// The entry's bytes as a view into the mapping, checked against its CRC32 when
  /// `verifyCrc` (a full pass over the bytes; streaming callers may defer it).
  /// `releaseChecked`: the checked bytes' pages are then dropped from this
  /// process (see TorchReadOptions::releaseChecked).
  llvm::Expected<llvm::ArrayRef<uint8_t>> read(const ZipEntry &entry, bool verifyCrc = true,
                                               bool releaseChecked = false) const;

  /// Checks the entry's bytes against its CRC32 and leaves their pages resident: for
  /// a reader that checks a record just before using it, so the data is brought in
  /// once for both.
  llvm::Error verify(const ZipEntry &entry) const;
  /// Checks `data`, the entry's bytes as read from the file another way, against
  /// its CRC32.
  llvm::Error verify(const ZipEntry &entry, llvm::ArrayRef<uint8_t> data) const;
  /// Checks `crc`, the CRC32 of all the entry's bytes computed by the caller (e.g.
  /// piece by piece as they were read), against the directory's.
  llvm::Error verifyCrc(const ZipEntry &entry, uint32_t crc) const;

  /// The entry whose data begins at `data` (a view read() handed out), if any.
  const ZipEntry *entryAt(const uint8_t *data) const;

  /// Keeps the mapping alive for views handed out by read().
  const std::shared_ptr<const llvm::MemoryBuffer> &buffer() const { return mapping; }

private:
  llvm::ArrayRef<uint8_t> bytesOf(const ZipEntry &entry) const;

  std::string archiveName;
  std::shared_ptr<const llvm::MemoryBuffer> mapping;
  std::vector<ZipEntry> entryList;
  llvm::StringMap<size_t> byName;
  /// Entries by data offset, made on the first entryAt().
  mutable llvm::DenseMap<uint64_t, size_t> byDataOffset;
};

/// Writes a stored-entry archive the way torch does (data descriptors, 64-byte data
/// alignment through an "FB" padding extra field, ZIP64 when needed), into a
/// temporary file renamed over `path` by finish().
class ZipWriter {
public:
  struct Options {
    /// Alignment of every entry's data (torch maps storages in place at 64).
    unsigned alignment = 64;
    /// Emit ZIP64 records even for small archives (tests the ZIP64 paths).
    bool forceZip64 = false;
    /// Where create()'s file goes when finished (fsync and rename off the
    /// caller's thread); null: finish() does it.
    DeferredCommits *commits = nullptr;
  };

  static llvm::Expected<std::unique_ptr<ZipWriter>> create(const llvm::Twine &path,
                                                           Options options);
  /// An archive written into `file` from its current position on, with offsets
  /// relative to that position (a DCP file holds one torch.save archive per chunk).
  /// finish() writes the central directory and leaves `file` open.
  static llvm::Expected<std::unique_ptr<ZipWriter>> embedded(OutputFile &file, Options options);

  /// Starts an entry of exactly `size` bytes, to be given through write().
  llvm::Error beginEntry(llvm::StringRef entryName, uint64_t size);
  llvm::Error write(llvm::ArrayRef<uint8_t> bytes);
  llvm::Error endEntry();
  llvm::Error addEntry(llvm::StringRef entryName, llvm::ArrayRef<uint8_t> bytes);

  /// Writes the central directory and moves the archive to its path (an embedded
  /// archive's file is committed by its owner).
  llvm::Error finish();

private:
  struct Written {
    std::string name;
    uint64_t headerOffset;
    uint64_t size;
    uint32_t crc32;
    bool zip64;
  };
  ZipWriter(std::unique_ptr<OutputFile> owned, OutputFile *file, Options options);
  llvm::Error error(const llvm::Twine &message);
  /// Position in the archive: the file's, less where the archive began.
  uint64_t tell() const;

  std::unique_ptr<OutputFile> owned;
  OutputFile *file;
  uint64_t base = 0;
  Options options;
  std::vector<Written> written;
  llvm::StringMap<bool> names;
  std::optional<Written> current;
  uint64_t currentBytes = 0;
  bool finished = false;
};

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_ZIP_H
