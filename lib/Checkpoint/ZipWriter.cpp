//===- ZipWriter.cpp - stored zip archives laid out like torch.save's -----===//
//
// Entries are streamed: the local header goes out with zero CRC/sizes and flag bit 3,
// the data follows, and a data descriptor carries the CRC computed on the way. This
// is torch's own layout (so torch and Python's zipfile read it) and lets tensors be
// written straight from their storages without a second pass.
//
//===----------------------------------------------------------------------===//
#include "loom/Checkpoint/Tensor.h"
#include "loom/Checkpoint/Zip.h"

#include "loom/Checkpoint/Crc32.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FormatVariadic.h"

using namespace loom::ckpt;
using llvm::ArrayRef;

namespace {
constexpr uint32_t kSaturated32 = 0xffffffff;
// Bit 3: CRC and sizes follow the data. Bit 11: names are UTF-8.
constexpr uint16_t kFlags = 0x0808;
constexpr uint16_t kPaddingFieldId = 0x4246; // "FB", torch's alignment padding

void put16(std::string &out, uint16_t v) {
  char b[2];
  llvm::support::endian::write16le(b, v);
  out.append(b, 2);
}
void put32(std::string &out, uint32_t v) {
  char b[4];
  llvm::support::endian::write32le(b, v);
  out.append(b, 4);
}
void put64(std::string &out, uint64_t v) {
  char b[8];
  llvm::support::endian::write64le(b, v);
  out.append(b, 8);
}
uint32_t saturate(uint64_t v, bool zip64) {
  return zip64 ? kSaturated32 : static_cast<uint32_t>(v);
}
} // namespace

llvm::Expected<std::unique_ptr<ZipWriter>> ZipWriter::create(const llvm::Twine &path,
                                                             Options options) {
  if (options.alignment == 0 || options.alignment > 0x8000)
    return fileError(path, llvm::formatv("unsupported alignment {0}", options.alignment));
  auto file = OutputFile::create(path, options.commits);
  if (!file)
    return file.takeError();
  OutputFile *raw = file->get();
  return std::unique_ptr<ZipWriter>(new ZipWriter(std::move(*file), raw, options));
}

llvm::Expected<std::unique_ptr<ZipWriter>> ZipWriter::embedded(OutputFile &file,
                                                               Options options) {
  if (options.alignment == 0 || options.alignment > 0x8000)
    return fileError(file.path(), llvm::formatv("unsupported alignment {0}", options.alignment));
  return std::unique_ptr<ZipWriter>(new ZipWriter(nullptr, &file, options));
}

ZipWriter::ZipWriter(std::unique_ptr<OutputFile> owned, OutputFile *file, Options options)
    : owned(std::move(owned)), file(file), options(options), base(file->os().tell()) {}

uint64_t ZipWriter::tell() const { return file->os().tell() - base; }

llvm::Error ZipWriter::error(const llvm::Twine &message) {
  return fileError(file->path(), message);
}

llvm::Error ZipWriter::beginEntry(llvm::StringRef entryName, uint64_t size) {
  if (current || finished)
    return error("zip entry '" + entryName + "' started inside another entry");
  if (entryName.empty() || entryName.size() > 0xffff)
    return error(llvm::formatv("zip entry name of {0} bytes", entryName.size()));
  if (!names.try_emplace(entryName, true).second)
    return error("zip entry '" + entryName + "' written twice");
  llvm::raw_fd_ostream &out = file->os();
  uint64_t offset = tell();
  bool zip64 = options.forceZip64 || size >= kSaturated32 || offset >= kSaturated32;
  current = Written{entryName.str(), offset, size, 0, zip64};
  currentBytes = 0;

  std::string header;
  put32(header, 0x04034b50);
  put16(header, zip64 ? 45 : 20);
  put16(header, kFlags);
  put16(header, 0); // stored
  put16(header, 0); // time
  put16(header, 0x21); // 1980-01-01: fixed, so equal inputs give equal archives
  put32(header, 0);
  put32(header, zip64 ? kSaturated32 : 0);
  put32(header, zip64 ? kSaturated32 : 0);
  put16(header, entryName.size());
  size_t zip64Extra = zip64 ? 20 : 0;
  uint64_t beforePadding = offset + 30 + entryName.size() + zip64Extra + 4;
  uint64_t padding = (options.alignment - beforePadding % options.alignment) % options.alignment;
  put16(header, zip64Extra + 4 + padding);
  header += entryName;
  if (zip64) {
    put16(header, 0x0001);
    put16(header, 16);
    put64(header, size);
    put64(header, size);
  }
  put16(header, kPaddingFieldId);
  put16(header, padding);
  header.append(padding, 'Z');
  out << header;
  return file->check("writing zip entry '" + entryName + "'");
}

llvm::Error ZipWriter::write(ArrayRef<uint8_t> bytes) {
  if (!current)
    return error("zip data written outside an entry");
  if (bytes.size() > current->size - currentBytes)
    return error(llvm::formatv("zip entry '{0}' given more than its {1} bytes", current->name,
                               current->size));
  current->crc32 = zipCrc32(current->crc32, bytes);
  currentBytes += bytes.size();
  return file->append(bytes, "writing zip entry '" + current->name + "'");
}

llvm::Error ZipWriter::endEntry() {
  if (!current)
    return error("zip entry ended without one started");
  if (currentBytes != current->size)
    return error(llvm::formatv("zip entry '{0}' got {1} of its {2} bytes", current->name,
                               currentBytes, current->size));
  std::string descriptor;
  put32(descriptor, 0x08074b50);
  put32(descriptor, current->crc32);
  if (current->zip64) {
    put64(descriptor, current->size);
    put64(descriptor, current->size);
  } else {
    put32(descriptor, current->size);
    put32(descriptor, current->size);
  }
  file->os() << descriptor;
  if (llvm::Error err = file->check("writing zip data descriptor"))
    return err;
  file->startWriteback(base + current->headerOffset, tell() - current->headerOffset);
  written.push_back(std::move(*current));
  current.reset();
  return llvm::Error::success();
}

llvm::Error ZipWriter::addEntry(llvm::StringRef entryName, ArrayRef<uint8_t> bytes) {
  if (llvm::Error err = beginEntry(entryName, bytes.size()))
    return err;
  if (llvm::Error err = write(bytes))
    return err;
  return endEntry();
}

llvm::Error ZipWriter::finish() {
  if (current || finished)
    return error("zip archive finished twice or inside an entry");
  finished = true;
  uint64_t directoryOffset = tell();
  std::string directory;
  for (const Written &entry : written) {
    bool bigOffset = options.forceZip64 || entry.headerOffset >= kSaturated32;
    put32(directory, 0x02014b50);
    put16(directory, 45); // made by: spec 4.5
    put16(directory, entry.zip64 || bigOffset ? 45 : 20);
    put16(directory, kFlags);
    put16(directory, 0);
    put16(directory, 0);
    put16(directory, 0x21);
    put32(directory, entry.crc32);
    put32(directory, saturate(entry.size, entry.zip64));
    put32(directory, saturate(entry.size, entry.zip64));
    put16(directory, entry.name.size());
    put16(directory, entry.zip64 || bigOffset ? 4 + (entry.zip64 ? 16 : 0) + (bigOffset ? 8 : 0)
                                              : 0);
    put16(directory, 0); // comment
    put16(directory, 0); // disk
    put16(directory, 0); // internal attributes
    put32(directory, 0); // external attributes
    put32(directory, saturate(entry.headerOffset, bigOffset));
    directory += entry.name;
    if (entry.zip64 || bigOffset) {
      put16(directory, 0x0001);
      put16(directory, (entry.zip64 ? 16 : 0) + (bigOffset ? 8 : 0));
      if (entry.zip64) {
        put64(directory, entry.size);
        put64(directory, entry.size);
      }
      if (bigOffset)
        put64(directory, entry.headerOffset);
    }
  }
  uint64_t directorySize = directory.size();
  bool zip64 = options.forceZip64 || written.size() >= 0xffff ||
               directoryOffset >= kSaturated32 || directorySize >= kSaturated32;
  if (zip64) {
    uint64_t recordOffset = directoryOffset + directorySize;
    put32(directory, 0x06064b50);
    put64(directory, 44); // size of the rest of this record
    put16(directory, 45);
    put16(directory, 45);
    put32(directory, 0);
    put32(directory, 0);
    put64(directory, written.size());
    put64(directory, written.size());
    put64(directory, directorySize);
    put64(directory, directoryOffset);
    put32(directory, 0x07064b50);
    put32(directory, 0);
    put64(directory, recordOffset);
    put32(directory, 1);
  }
  put32(directory, 0x06054b50);
  put16(directory, 0);
  put16(directory, 0);
  put16(directory, zip64 ? 0xffff : written.size());
  put16(directory, zip64 ? 0xffff : written.size());
  put32(directory, saturate(directorySize, zip64));
  put32(directory, saturate(directoryOffset, zip64));
  put16(directory, 0);
  file->os() << directory;
  return owned ? owned->commit() : file->check("writing zip central directory");
}
