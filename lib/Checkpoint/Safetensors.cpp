//===- Safetensors.cpp - validated safetensors reading and writing --------===//
#include "loom/Checkpoint/Safetensors.h"
#include "BoundedJson.h"
#include "loom/Checkpoint/OutputFile.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FormatVariadic.h"

#include <cerrno>
#include <unistd.h>

using namespace loom::ckpt;
using llvm::formatv;

namespace {
/// Root object -> tensor object -> shape/data_offsets array.
constexpr unsigned kHeaderDepth = 3;

struct Span {
  uint64_t begin;
  uint64_t end;
  size_t tensor;
};

llvm::Expected<NamedTensor> parseEntry(llvm::StringRef file, llvm::StringRef name,
                                       const llvm::json::Value &value, uint64_t dataSize,
                                       Span &span) {
  auto error = [&](const llvm::Twine &what) {
    return fileError(file, "tensor '" + name + "': " + what);
  };
  const llvm::json::Object *entry = value.getAsObject();
  if (!entry)
    return error("header entry is not an object");
  for (const auto &field : *entry)
    if (field.first != "dtype" && field.first != "shape" && field.first != "data_offsets")
      return error("unknown field '" + field.first.str() + "'");
  std::optional<llvm::StringRef> dtypeName = entry->getString("dtype");
  if (!dtypeName)
    return error("missing dtype");
  std::optional<DType> dtype = dtypeFromSafetensors(*dtypeName);
  if (!dtype)
    return error("unsupported dtype '" + *dtypeName + "'");
  const llvm::json::Array *shapeArray = entry->getArray("shape");
  if (!shapeArray)
    return error("missing shape");
  llvm::SmallVector<int64_t, 4> shape;
  for (const llvm::json::Value &dim : *shapeArray) {
    std::optional<int64_t> size = dim.getAsInteger();
    if (!size || *size < 0)
      return error("shape holds something other than a non-negative integer");
    shape.push_back(*size);
  }
  const llvm::json::Array *offsets = entry->getArray("data_offsets");
  std::optional<uint64_t> begin, end;
  if (offsets && offsets->size() == 2) {
    begin = (*offsets)[0].getAsUINT64();
    end = (*offsets)[1].getAsUINT64();
  }
  if (!begin || !end)
    return error("data_offsets is not [begin, end]");
  if (*begin > *end || *end > dataSize)
    return error(formatv("data_offsets [{0}, {1}] outside the {2}-byte data", *begin, *end,
                         dataSize));
  std::optional<uint64_t> numel = checkedNumel(shape);
  uint64_t bytes;
  if (!numel || __builtin_mul_overflow(*numel, dtypeSize(*dtype), &bytes) ||
      bytes != *end - *begin)
    return error(formatv("shape x {0} does not match the {1}-byte span", *dtypeName,
                         *end - *begin));
  span.begin = *begin;
  span.end = *end;
  Tensor tensor;
  tensor.dtype = *dtype;
  tensor.shape = std::move(shape);
  tensor.strides = contiguousStrides(tensor.shape);
  return NamedTensor{name.str(), std::move(tensor)};
}
} // namespace

llvm::Expected<SafetensorsFile> loom::ckpt::readSafetensors(const llvm::Twine &path) {
  auto buffer = mapFile(path);
  if (!buffer)
    return buffer.takeError();
  return parseSafetensors(std::move(*buffer), path.str());
}

llvm::Expected<SafetensorsFile>
loom::ckpt::parseSafetensors(std::shared_ptr<const llvm::MemoryBuffer> buffer,
                             llvm::StringRef name) {
  llvm::StringRef bytes = buffer->getBuffer();
  if (bytes.size() < 8)
    return fileError(name, formatv("{0} bytes is too short for a safetensors file", bytes.size()));
  uint64_t headerSize = llvm::support::endian::read64le(bytes.data());
  if (headerSize > kMaxSafetensorsHeader)
    return fileError(name, formatv("header of {0} bytes exceeds the {1}-byte limit", headerSize,
                                   kMaxSafetensorsHeader));
  if (headerSize > bytes.size() - 8)
    return fileError(name, formatv("header of {0} bytes runs past the end of the {1}-byte file",
                                   headerSize, bytes.size()));
  llvm::StringRef header = bytes.substr(8, headerSize);
  if (!header.starts_with("{"))
    return fileError(name, "header does not start with '{'");
  auto json = detail::parseBoundedJson(header, kHeaderDepth, name);
  if (!json)
    return json.takeError();
  const llvm::json::Object *root = json->getAsObject();
  if (!root)
    return fileError(name, "header is not a JSON object");

  const uint64_t dataStart = 8 + headerSize;
  const uint64_t dataSize = bytes.size() - dataStart;
  SafetensorsFile file;
  std::vector<Span> spans;
  for (const auto &[key, value] : *root) {
    if (key == "__metadata__") {
      const llvm::json::Object *metadata = value.getAsObject();
      if (!metadata)
        return fileError(name, "__metadata__ is not an object");
      for (const auto &[metaKey, metaValue] : *metadata) {
        std::optional<llvm::StringRef> text = metaValue.getAsString();
        if (!text)
          return fileError(name, "__metadata__ '" + metaKey.str() + "' is not a string");
        file.metadata.emplace_back(metaKey.str(), text->str());
      }
      continue;
    }
    Span span{0, 0, file.tensors.size()};
    auto tensor = parseEntry(name, key, value, dataSize, span);
    if (!tensor)
      return tensor.takeError();
    file.tensors.push_back(std::move(*tensor));
    spans.push_back(span);
  }
  llvm::sort(file.metadata);

  llvm::sort(spans, [](const Span &a, const Span &b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t covered = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    const Span &span = spans[i];
    if (span.begin < covered)
      return fileError(name, formatv("tensor '{0}' [{1}, {2}) overlaps tensor '{3}'",
                                     file.tensors[span.tensor].name, span.begin, span.end,
                                     file.tensors[spans[i - 1].tensor].name));
    if (span.begin > covered)
      return fileError(name, formatv("data bytes [{0}, {1}) belong to no tensor", covered,
                                     span.begin));
    covered = span.end;
  }
  if (covered != dataSize)
    return fileError(name, formatv("data bytes [{0}, {1}) belong to no tensor", covered,
                                   dataSize));

  const auto *base = reinterpret_cast<const uint8_t *>(bytes.data()) + dataStart;
  std::vector<NamedTensor> ordered;
  ordered.reserve(spans.size());
  for (const Span &span : spans) {
    NamedTensor &named = file.tensors[span.tensor];
    named.tensor.storage = Storage::fileView(
        llvm::ArrayRef<uint8_t>(base + span.begin, span.end - span.begin), buffer,
        buffer->getBufferKind() == llvm::MemoryBuffer::MemoryBuffer_MMap);
    ordered.push_back(std::move(named));
  }
  file.tensors = std::move(ordered);
  return file;
}

/// Checks names and views, and makes the 8-aligned JSON header laying `tensors` out
/// back to back in order.
static llvm::Expected<std::string>
safetensorsHeader(const llvm::Twine &path, llvm::ArrayRef<NamedTensor> tensors,
                  llvm::ArrayRef<std::pair<std::string, std::string>> metadata, bool checkViews) {
  llvm::StringSet<> names;
  for (const NamedTensor &named : tensors) {
    if (named.name == "__metadata__" || !names.insert(named.name).second)
      return fileError(path, "tensor name '" + named.name + "' is reserved or repeated");
    if (checkViews)
      if (std::optional<std::string> bad = named.tensor.checkView())
        return fileError(path, "tensor '" + named.name + "': " + *bad);
  }
  std::string header;
  {
    llvm::raw_string_ostream os(header);
    llvm::json::OStream json(os);
    json.object([&] {
      if (!metadata.empty())
        json.attributeObject("__metadata__", [&] {
          for (const auto &[key, value] : metadata)
            json.attribute(key, value);
        });
      uint64_t offset = 0;
      for (const NamedTensor &named : tensors) {
        uint64_t end = offset + named.tensor.nbytes();
        json.attributeObject(named.name, [&] {
          json.attribute("dtype", safetensorsName(named.tensor.dtype));
          json.attributeArray("shape", [&] {
            for (int64_t dim : named.tensor.shape)
              json.value(dim);
          });
          json.attributeArray("data_offsets", [&] {
            json.value(offset);
            json.value(end);
          });
        });
        offset = end;
      }
    });
  }
  // The data starts 8-aligned, as the reference writer pads it.
  header.append((8 - header.size() % 8) % 8, ' ');
  char size[8];
  llvm::support::endian::write64le(size, header.size());
  return std::string(size, 8) + header;
}

llvm::Error loom::ckpt::writeSafetensors(
    const llvm::Twine &path, llvm::ArrayRef<NamedTensor> tensors,
    llvm::ArrayRef<std::pair<std::string, std::string>> metadata) {
  auto header = safetensorsHeader(path, tensors, metadata, /*checkViews=*/true);
  if (!header)
    return header.takeError();
  auto file = OutputFile::create(path);
  if (!file)
    return file.takeError();
  (*file)->os() << *header;
  for (const NamedTensor &named : tensors)
    if (llvm::Error err = named.tensor.forEachChunk([&](llvm::ArrayRef<uint8_t> chunk) {
          return (*file)->append(chunk, "writing tensor '" + named.name + "'");
        }))
      return err;
  return (*file)->commit();
}

llvm::Expected<std::unique_ptr<SafetensorsStream>>
SafetensorsStream::create(const llvm::Twine &path, llvm::ArrayRef<NamedTensor> declared,
                          DeferredCommits *commits) {
  auto header = safetensorsHeader(path, declared, {}, /*checkViews=*/false);
  if (!header)
    return header.takeError();
  auto file = OutputFile::create(path, commits);
  if (!file)
    return file.takeError();
  std::unique_ptr<SafetensorsStream> stream(new SafetensorsStream(std::move(*file)));
  uint64_t offset = header->size();
  for (const NamedTensor &named : declared) {
    stream->order.push_back(named.name);
    stream->slots[named.name] = {offset, named.tensor.nbytes(), false};
    offset += named.tensor.nbytes();
  }
  llvm::raw_fd_ostream &os = stream->file->os();
  os << *header;
  // The data region at full size now, so records can land anywhere in it.
  if (offset > header->size()) {
    os.flush();
    if (::ftruncate(stream->file->fd(), off_t(offset)) != 0)
      return fileError(path, "cannot size the file: " +
                                 std::error_code(errno, std::generic_category()).message());
  }
  if (auto err = stream->file->check("writing the header"))
    return std::move(err);
  return stream;
}

llvm::Error SafetensorsStream::writeTensor(llvm::StringRef name, llvm::ArrayRef<uint8_t> bytes) {
  auto it = slots.find(name);
  if (it == slots.end())
    return fileError(file->path(), "tensor '" + name + "' is not declared");
  Slot &slot = it->second;
  if (slot.written)
    return fileError(file->path(), "tensor '" + name + "' written twice");
  if (bytes.size() != slot.size)
    return fileError(file->path(), llvm::formatv("tensor '{0}' has {1} bytes, given {2}", name,
                                                 slot.size, bytes.size()));
  slot.written = true;
  file->os().flush();
  if (auto err = file->writeAt(slot.offset, bytes, "writing tensor '" + name + "'"))
    return err;
  file->startWriteback(slot.offset, slot.size);
  return llvm::Error::success();
}

llvm::Error SafetensorsStream::finish() {
  for (const std::string &name : order)
    if (!slots[name].written)
      return fileError(file->path(), "tensor '" + name + "' was never written");
  return file->commit();
}
