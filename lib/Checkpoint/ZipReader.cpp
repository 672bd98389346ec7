//===- ZipReader.cpp - validated, mapped reading of stored zip archives ---===//
//
// Every number the archive declares is checked against the bytes that exist before
// it is used: counts against the directory size, offsets and sizes against the file
// and the central directory, entries against each other. Nothing is allocated in
// proportion to a declared size.
//
//===----------------------------------------------------------------------===//
#include "loom/Checkpoint/Tensor.h"
#include "loom/Checkpoint/Zip.h"

#include "llvm/ADT/STLExtras.h"
#include "loom/Checkpoint/Crc32.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"

#include <thread>

using namespace loom::ckpt;
using llvm::ArrayRef;
using llvm::formatv;

/// Records this long and longer are CRC-checked on every core.
static constexpr uint64_t kParallelFrom = 64u << 20;

namespace {
constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kEndSize = 22;
constexpr size_t kZip64EndSize = 56;
constexpr size_t kZip64LocatorSize = 20;

uint16_t le16(const uint8_t *p) { return llvm::support::endian::read16le(p); }
uint32_t le32(const uint8_t *p) { return llvm::support::endian::read32le(p); }
uint64_t le64(const uint8_t *p) { return llvm::support::endian::read64le(p); }

/// Where the central directory is, from the (ZIP64) end records.
struct Directory {
  uint64_t offset;
  uint64_t size;
  uint64_t entries;
  /// Everything before this belongs to entries or the directory.
  uint64_t end;
};

class Parser {
public:
  Parser(llvm::StringRef name, ArrayRef<uint8_t> bytes) : name(name), bytes(bytes) {}

  llvm::Error error(const llvm::Twine &message) { return fileError(name, message); }

  llvm::Expected<Directory> findDirectory();
  llvm::Error readEntries(const Directory &dir, std::vector<ZipEntry> &entries);

private:
  llvm::Expected<Directory> readZip64(uint64_t endOffset);
  llvm::Error applyZip64Extra(ArrayRef<uint8_t> extra, ZipEntry &entry, bool sizeSaturated,
                              bool offsetSaturated);
  llvm::Error readLocalHeader(const Directory &dir, ZipEntry &entry);

  llvm::StringRef name;
  ArrayRef<uint8_t> bytes;
};
} // namespace

llvm::Expected<Directory> Parser::findDirectory() {
  if (bytes.size() < kEndSize)
    return error(formatv("{0} bytes is too short for a zip archive", bytes.size()));
  // The end record sits before a comment of at most 64 KiB; take the last candidate
  // whose comment runs exactly to the end of the file.
  uint64_t lowest = bytes.size() > kEndSize + 0xffff ? bytes.size() - kEndSize - 0xffff : 0;
  for (uint64_t pos = bytes.size() - kEndSize + 1; pos-- > lowest;) {
    const uint8_t *p = bytes.data() + pos;
    if (le32(p) != kEndSig || pos + kEndSize + le16(p + 20) != bytes.size())
      continue;
    if (le16(p + 4) != 0 || le16(p + 6) != 0)
      return error("multi-disk archives are not supported");
    Directory dir{le32(p + 16), le32(p + 12), le16(p + 10), pos};
    if (dir.entries == 0xffff || dir.size == 0xffffffff || dir.offset == 0xffffffff)
      return readZip64(pos);
    return dir;
  }
  return error("no end-of-central-directory record (not a zip archive, or truncated)");
}

llvm::Expected<Directory> Parser::readZip64(uint64_t endOffset) {
  if (endOffset < kZip64LocatorSize ||
      le32(bytes.data() + endOffset - kZip64LocatorSize) != kZip64LocatorSig)
    return error(formatv("end record at offset {0} needs a ZIP64 locator, none found",
                         endOffset));
  const uint8_t *locator = bytes.data() + endOffset - kZip64LocatorSize;
  uint64_t recordOffset = le64(locator + 8);
  uint64_t limit = endOffset - kZip64LocatorSize;
  if (recordOffset > limit || limit - recordOffset < kZip64EndSize ||
      le32(bytes.data() + recordOffset) != kZip64EndSig)
    return error(formatv("ZIP64 end record offset {0} is invalid", recordOffset));
  const uint8_t *p = bytes.data() + recordOffset;
  if (le32(p + 16) != 0 || le32(p + 20) != 0)
    return error("multi-disk archives are not supported");
  return Directory{le64(p + 48), le64(p + 40), le64(p + 32), recordOffset};
}

llvm::Error Parser::applyZip64Extra(ArrayRef<uint8_t> extra, ZipEntry &entry,
                                    bool sizeSaturated, bool offsetSaturated) {
  while (extra.size() >= 4) {
    uint16_t id = le16(extra.data());
    uint16_t length = le16(extra.data() + 2);
    if (length > extra.size() - 4)
      return error(formatv("entry '{0}': extra field runs past its header", entry.name));
    ArrayRef<uint8_t> field = extra.slice(4, length);
    extra = extra.drop_front(4 + length);
    if (id != 0x0001)
      continue;
    // Only the saturated fields appear, in the order usize, csize, offset.
    size_t needed = (sizeSaturated ? 16 : 0) + (offsetSaturated ? 8 : 0);
    if (field.size() < needed)
      return error(formatv("entry '{0}': ZIP64 extra field has {1} bytes, needs {2}",
                           entry.name, field.size(), needed));
    size_t at = 0;
    if (sizeSaturated) {
      uint64_t usize = le64(field.data()), csize = le64(field.data() + 8);
      if (usize != csize)
        return error(formatv("entry '{0}': compressed and uncompressed sizes differ",
                             entry.name));
      entry.size = usize;
      at = 16;
    }
    if (offsetSaturated)
      entry.headerOffset = le64(field.data() + at);
    return llvm::Error::success();
  }
  return error(formatv("entry '{0}': sizes need a ZIP64 extra field, none found", entry.name));
}

llvm::Error Parser::readLocalHeader(const Directory &dir, ZipEntry &entry) {
  uint64_t at = entry.headerOffset;
  if (at > dir.offset || dir.offset - at < kLocalHeaderSize)
    return error(formatv("entry '{0}': local header offset {1} is outside the data area",
                         entry.name, at));
  const uint8_t *p = bytes.data() + at;
  if (le32(p) != kLocalHeaderSig)
    return error(formatv("entry '{0}': no local header at offset {1}", entry.name, at));
  uint64_t nameLength = le16(p + 26), extraLength = le16(p + 28);
  entry.dataOffset = at + kLocalHeaderSize + nameLength + extraLength;
  if (entry.dataOffset > dir.offset || dir.offset - entry.dataOffset < entry.size)
    return error(formatv("entry '{0}' at offset {1}: {2} data bytes run past the data "
                         "area (truncated archive?)",
                         entry.name, at, entry.size));
  llvm::StringRef localName(reinterpret_cast<const char *>(p + kLocalHeaderSize), nameLength);
  if (localName != entry.name)
    return error(formatv("entry '{0}': local header at offset {1} names '{2}'", entry.name,
                         at, localName));
  return llvm::Error::success();
}

llvm::Error Parser::readEntries(const Directory &dir, std::vector<ZipEntry> &entries) {
  if (dir.offset > dir.end || dir.end - dir.offset < dir.size)
    return error(formatv("central directory (offset {0}, {1} bytes) runs past its end record",
                         dir.offset, dir.size));
  if (dir.entries > dir.size / kCentralHeaderSize)
    return error(formatv("declares {0} entries but its {1}-byte directory holds at most {2}",
                         dir.entries, dir.size, dir.size / kCentralHeaderSize));
  entries.reserve(dir.entries);
  ArrayRef<uint8_t> cd = bytes.slice(dir.offset, dir.size);
  for (uint64_t i = 0; i < dir.entries; ++i) {
    if (cd.size() < kCentralHeaderSize || le32(cd.data()) != kCentralHeaderSig)
      return error(formatv("central directory entry {0} is malformed", i));
    const uint8_t *p = cd.data();
    uint16_t flags = le16(p + 8), method = le16(p + 10);
    uint64_t nameLength = le16(p + 28), extraLength = le16(p + 30),
             commentLength = le16(p + 32);
    if (cd.size() - kCentralHeaderSize < nameLength + extraLength + commentLength)
      return error(formatv("central directory entry {0} runs past the directory", i));
    ZipEntry entry;
    entry.name.assign(reinterpret_cast<const char *>(p + kCentralHeaderSize), nameLength);
    entry.crc32 = le32(p + 16);
    uint64_t csize = le32(p + 20);
    entry.size = le32(p + 24);
    entry.headerOffset = le32(p + 42);
    if (flags & 0x1)
      return error(formatv("entry '{0}' is encrypted", entry.name));
    if (method != 0)
      return error(formatv("entry '{0}' is compressed (method {1}); only stored entries are "
                           "supported",
                           entry.name, method));
    bool sizeSaturated = entry.size == 0xffffffff || csize == 0xffffffff;
    bool offsetSaturated = entry.headerOffset == 0xffffffff;
    if (!sizeSaturated && csize != entry.size)
      return error(formatv("entry '{0}': stored entry declares {1} compressed but {2} "
                           "uncompressed bytes",
                           entry.name, csize, entry.size));
    if (sizeSaturated || offsetSaturated)
      if (llvm::Error err =
              applyZip64Extra(ArrayRef<uint8_t>(p + kCentralHeaderSize + nameLength, extraLength),
                              entry, sizeSaturated, offsetSaturated))
        return err;
    if (llvm::Error err = readLocalHeader(dir, entry))
      return err;
    entries.push_back(std::move(entry));
    cd = cd.drop_front(kCentralHeaderSize + nameLength + extraLength + commentLength);
  }

  // Entries must not share bytes: overlapping entries would let one tensor's data be
  // read as another's (and are how "zip bombs" and polyglots are made).
  std::vector<const ZipEntry *> order;
  for (const ZipEntry &entry : entries)
    order.push_back(&entry);
  llvm::sort(order, [](const ZipEntry *a, const ZipEntry *b) {
    return a->headerOffset < b->headerOffset;
  });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i - 1]->dataOffset + order[i - 1]->size > order[i]->headerOffset)
      return error(formatv("entry '{0}' at offset {1} overlaps entry '{2}' at offset {3}",
                           order[i - 1]->name, order[i - 1]->headerOffset, order[i]->name,
                           order[i]->headerOffset));
  return llvm::Error::success();
}

llvm::Expected<ZipArchive> ZipArchive::open(const llvm::Twine &path) {
  auto buffer = mapFile(path);
  if (!buffer)
    return buffer.takeError();
  return parse(std::move(*buffer), path.str());
}

llvm::Expected<ZipArchive> ZipArchive::parse(std::shared_ptr<const llvm::MemoryBuffer> buffer,
                                             llvm::StringRef name) {
  ArrayRef<uint8_t> bytes(reinterpret_cast<const uint8_t *>(buffer->getBufferStart()),
                          buffer->getBufferSize());
  Parser parser(name, bytes);
  auto dir = parser.findDirectory();
  if (!dir)
    return dir.takeError();
  ZipArchive archive;
  archive.archiveName = name.str();
  archive.mapping = std::move(buffer);
  if (llvm::Error err = parser.readEntries(*dir, archive.entryList))
    return err;
  for (size_t i = 0; i < archive.entryList.size(); ++i)
    if (!archive.byName.try_emplace(archive.entryList[i].name, i).second)
      return parser.error(formatv("entry '{0}' appears twice", archive.entryList[i].name));
  return archive;
}

const ZipEntry *ZipArchive::find(llvm::StringRef entryName) const {
  auto it = byName.find(entryName);
  return it == byName.end() ? nullptr : &entryList[it->second];
}

ArrayRef<uint8_t> ZipArchive::bytesOf(const ZipEntry &entry) const {
  return ArrayRef<uint8_t>(
      reinterpret_cast<const uint8_t *>(mapping->getBufferStart()) + entry.dataOffset,
      entry.size);
}

llvm::Error ZipArchive::verify(const ZipEntry &entry) const { return verify(entry, bytesOf(entry)); }

llvm::Error ZipArchive::verify(const ZipEntry &entry, ArrayRef<uint8_t> data) const {
  if (data.size() != entry.size)
    return fileError(archiveName, formatv("entry '{0}': checked {1} bytes of its {2}", entry.name,
                                          data.size(), entry.size));
  if (data.size() < kParallelFrom)
    return verifyCrc(entry, zipCrc32(0, data));
  // Storages of 64 MiB and more are checked on every core (a full pass per file).
  // Bytes of the file mapping are mapped in by each thread, its part with one call,
  // before its pass (a fault every few pages costs more than the CRC). (Not
  // `inMapping ? populateMappedPages : nullptr`: a function_ref made from a null
  // function pointer is not empty, and calling it would crash.)
  unsigned threads = std::thread::hardware_concurrency();
  const auto *start = reinterpret_cast<const uint8_t *>(mapping->getBufferStart());
  bool inMapping = mapping->getBufferKind() == llvm::MemoryBuffer::MemoryBuffer_MMap &&
                   data.data() >= start && data.end() <= start + mapping->getBufferSize();
  return verifyCrc(entry, inMapping ? zipCrc32Parallel(data, threads, populateMappedPages)
                                    : zipCrc32Parallel(data, threads));
}

llvm::Error ZipArchive::verifyCrc(const ZipEntry &entry, uint32_t crc) const {
  if (crc != entry.crc32)
    return fileError(archiveName,
                     formatv("entry '{0}': CRC32 is {1:x8} but the directory says {2:x8}",
                             entry.name, crc, entry.crc32));
  return llvm::Error::success();
}

llvm::Expected<ArrayRef<uint8_t>> ZipArchive::read(const ZipEntry &entry, bool verifyCrc,
                                                   bool releaseChecked) const {
  ArrayRef<uint8_t> data = bytesOf(entry);
  if (verifyCrc) {
    llvm::Error checked = verify(entry);
    if (releaseChecked && mapping->getBufferKind() == llvm::MemoryBuffer::MemoryBuffer_MMap)
      dropMappedPages(data);
    if (checked)
      return std::move(checked);
  }
  return data;
}

const ZipEntry *ZipArchive::entryAt(const uint8_t *data) const {
  if (byDataOffset.empty())
    for (size_t i = 0; i < entryList.size(); ++i)
      byDataOffset.try_emplace(entryList[i].dataOffset, i);
  auto start = reinterpret_cast<const uint8_t *>(mapping->getBufferStart());
  if (data < start || data >= start + mapping->getBufferSize())
    return nullptr;
  auto found = byDataOffset.find(uint64_t(data - start));
  return found == byDataOffset.end() ? nullptr : &entryList[found->second];
}
