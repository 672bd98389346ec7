//===- TorchZip.cpp - torch.save archives: records, storages, data.pkl ----===//
#include "loom/Checkpoint/TorchZip.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FormatVariadic.h"

using namespace loom::ckpt;
using llvm::formatv;

namespace {
llvm::Error plain(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// Resolves torch's ('storage', <class>, key, location, numel) persistent ids to
/// views of `<root>/data/<key>`, one StorageValue per key.
class StorageLoader {
public:
  StorageLoader(const ZipArchive &archive, llvm::StringRef root, bool verify, bool release)
      : archive(archive), root(root), verify(verify), release(release) {}

  llvm::Expected<ValuePtr> operator()(const Value &pid);

private:
  const ZipArchive &archive;
  llvm::StringRef root;
  bool verify, release;
  llvm::StringMap<ValuePtr> loaded;
};

llvm::Expected<ValuePtr> StorageLoader::operator()(const Value &pid) {
  const auto *fields = pid.get<TupleValue>();
  if (!fields || fields->items.size() != 5)
    return plain("persistent id is not a 5-tuple ('storage', class, key, location, numel)");
  const auto &items = fields->items;
  const auto *tag = items[0]->get<std::string>();
  const auto *type = items[1]->get<GlobalValue>();
  const auto *key = items[2]->get<std::string>();
  const auto *location = items[3]->get<std::string>();
  const auto *numel = items[4]->get<int64_t>();
  if (!tag || *tag != "storage" || !type || !key || !location || !numel || *numel < 0)
    return plain("persistent id is not ('storage', class, key, location, numel)");
  std::optional<DType> dtype;
  if (type->module == "torch")
    dtype = (type->name == "UntypedStorage" || type->name == "_UntypedStorage")
                ? std::optional<DType>(DType::UInt8)
                : dtypeFromTorchStorage(type->name);
  if (!dtype)
    return plain("storage '" + *key + "' has unsupported type " + type->qualified());

  if (auto it = loaded.find(*key); it != loaded.end()) {
    if (it->second->get<StorageValue>()->dtype != *dtype)
      return plain("storage '" + *key + "' is used with two element types");
    return it->second;
  }
  std::string recordName = (root + "/data/" + *key).str();
  const ZipEntry *entry = archive.find(recordName);
  if (!entry)
    return plain("storage '" + *key + "' has no record " + recordName);
  uint64_t bytes;
  if (__builtin_mul_overflow(static_cast<uint64_t>(*numel), dtypeSize(*dtype), &bytes) ||
      bytes > entry->size)
    return plain(formatv("storage '{0}' declares {1} elements of {2} bytes but its record has "
                         "{3} bytes",
                         *key, *numel, dtypeSize(*dtype), entry->size));
  auto data = archive.read(*entry, verify, release);
  if (!data)
    return data.takeError();
  StorageValue storage;
  storage.dtype = *dtype;
  storage.numel = *numel;
  storage.location = *location;
  // The record's CRC-32 is the storage's when the storage is all of the record.
  storage.data = Storage::fileView(
      data->take_front(bytes), archive.buffer(),
      archive.buffer()->getBufferKind() == llvm::MemoryBuffer::MemoryBuffer_MMap,
      bytes == entry->size ? std::optional<uint32_t>(entry->crc32) : std::nullopt);
  ValuePtr value = Value::make(std::move(storage));
  loaded[*key] = value;
  return value;
}
} // namespace

llvm::Expected<ValuePtr> loom::ckpt::readTorchZip(const llvm::Twine &path,
                                                  const TorchReadOptions &options) {
  auto archive = ZipArchive::open(path);
  if (!archive)
    return archive.takeError();
  return readTorchZip(*archive, options);
}

llvm::Expected<ValuePtr> loom::ckpt::readTorchZip(const ZipArchive &archive,
                                                  const TorchReadOptions &options) {
  // Like torch, take the root directory from the first record.
  if (archive.entries().empty())
    return fileError(archive.name(), "empty archive (not a torch.save file)");
  llvm::StringRef root = llvm::StringRef(archive.entries().front().name).split('/').first;
  auto record = [&](llvm::StringRef name) { return archive.find((root + "/" + name).str()); };

  const ZipEntry *pickleEntry = record("data.pkl");
  if (!pickleEntry)
    return fileError(archive.name(), "no " + root + "/data.pkl record (not a torch.save file)");
  if (const ZipEntry *byteorder = record("byteorder")) {
    auto text = archive.read(*byteorder);
    if (!text)
      return text.takeError();
    llvm::StringRef order(reinterpret_cast<const char *>(text->data()), text->size());
    if (order.trim() != "little")
      return fileError(archive.name(), "byteorder '" + order.trim() +
                                           "' is not supported (only little-endian)");
  }
  const ZipEntry *versionEntry = record("version");
  if (!versionEntry)
    return fileError(archive.name(), "no " + root + "/version record");
  auto versionText = archive.read(*versionEntry);
  if (!versionText)
    return versionText.takeError();
  unsigned version;
  if (llvm::StringRef(reinterpret_cast<const char *>(versionText->data()), versionText->size())
          .trim()
          .getAsInteger(10, version))
    return fileError(archive.name(), root + "/version is not a number");

  auto pickleBytes = archive.read(*pickleEntry);
  if (!pickleBytes)
    return pickleBytes.takeError();
  StorageLoader loader(archive, root, options.verifyChecksums, options.releaseChecked);
  std::string source = (archive.name() + ": " + pickleEntry->name).str();
  return unpickle(*pickleBytes, source, loader, options.limits);
}

/// Writes the whole archive of `root` through the writer `open` makes: the stream
/// with every storage's own bytes, in key order; `path` names the file in errors.
static llvm::Error writeTorchArchive(const llvm::Twine &path, const Value &root,
                                     const TorchWriteOptions &options,
                                     TorchZipStream::Opener open) {
  auto stream = TorchZipStream::open(
      path, root, [](const Storage *s) -> std::optional<uint64_t> { return s->bytes().size(); },
      options, open);
  if (!stream)
    return stream.takeError();
  for (const Storage *storage : (*stream)->storages())
    if (llvm::Error err = (*stream)->writeStorage(storage, storage->bytes()))
      return err;
  return (*stream)->finish();
}

llvm::Error loom::ckpt::writeTorchZip(const llvm::Twine &path, const Value &root,
                                      const TorchWriteOptions &options) {
  return writeTorchArchive(path, root, options, [&](ZipWriter::Options zipOptions) {
    return ZipWriter::create(path, zipOptions);
  });
}

llvm::Error loom::ckpt::appendTorchZip(OutputFile &file, const Value &root,
                                       const TorchWriteOptions &options) {
  return writeTorchArchive(file.path(), root, options, [&](ZipWriter::Options zipOptions) {
    return ZipWriter::embedded(file, zipOptions);
  });
}

ValuePtr loom::ckpt::makeStateDict(llvm::ArrayRef<NamedTensor> tensors) {
  DictValue dict;
  dict.ordered = true;
  for (const NamedTensor &named : tensors)
    dict.entries.emplace_back(Value::make(named.name), Value::make(TensorValue{named.tensor}));
  return Value::make(std::move(dict));
}

llvm::Expected<std::unique_ptr<TorchZipStream>>
TorchZipStream::open(const llvm::Twine &pathTwine, const Value &root, SizeOf sizeOf,
                     const TorchWriteOptions &options, Opener opener) {
  std::string path = pathTwine.str();
  llvm::DenseMap<const Storage *, Record> records;
  std::vector<const Storage *> order;
  auto namer = [&](const std::shared_ptr<const Storage> &storage,
                   DType dtype) -> llvm::Expected<StorageId> {
    if (!storage)
      return fileError(path, "tensor without storage");
    auto found = records.find(storage.get());
    if (found != records.end()) {
      const Record &record = found->second;
      if (record.dtype != dtype)
        return fileError(path, "one storage is viewed as both " + torchDTypeName(record.dtype) +
                                   " and " + torchDTypeName(dtype) + " (torch cannot load that)");
      return StorageId{record.key, dtype, record.size / dtypeSize(dtype)};
    }
    std::optional<uint64_t> size = sizeOf(storage.get());
    if (!size)
      return fileError(path, "a tensor views a storage of unknown size");
    if (*size % dtypeSize(dtype))
      return fileError(path, formatv("storage of {0} bytes is not a whole number of {1}", *size,
                                     torchDTypeName(dtype)));
    Record &record = records[storage.get()];
    record = {std::to_string(order.size()), dtype, *size, false};
    order.push_back(storage.get());
    return StorageId{record.key, dtype, *size / dtypeSize(dtype)};
  };
  auto data = pickle(root, namer);
  if (!data)
    return data.takeError();
  ZipWriter::Options zipOptions;
  zipOptions.forceZip64 = options.forceZip64;
  zipOptions.commits = options.commits;
  auto zip = opener(zipOptions);
  if (!zip)
    return zip.takeError();
  if (llvm::Error err = (*zip)->addEntry(
          options.rootName + "/data.pkl",
          llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(data->data()), data->size())))
    return std::move(err);
  std::unique_ptr<TorchZipStream> stream(
      new TorchZipStream(std::move(*zip), path, options.rootName));
  stream->records = std::move(records);
  stream->order = std::move(order);
  return stream;
}

llvm::Expected<std::unique_ptr<TorchZipStream>>
TorchZipStream::create(const llvm::Twine &path, const Value &root,
                       const llvm::DenseMap<const Storage *, uint64_t> &sizes,
                       const TorchWriteOptions &options) {
  return open(
      path, root,
      [&](const Storage *s) -> std::optional<uint64_t> {
        auto found = sizes.find(s);
        return found == sizes.end() ? std::nullopt : std::optional<uint64_t>(found->second);
      },
      options, [&](ZipWriter::Options zipOptions) { return ZipWriter::create(path, zipOptions); });
}

llvm::Error TorchZipStream::writeStorage(const Storage *placeholder, llvm::ArrayRef<uint8_t> bytes) {
  auto it = records.find(placeholder);
  if (it == records.end())
    return fileError(path, "a storage the pickle does not name");
  Record &record = it->second;
  if (record.written)
    return fileError(path, "storage " + record.key + " written twice");
  if (bytes.size() != record.size)
    return fileError(path, formatv("storage {0} has {1} bytes, given {2}", record.key, record.size,
                                   bytes.size()));
  record.written = true;
  return zip->addEntry(root + "/data/" + record.key, bytes);
}

llvm::Error TorchZipStream::finish() {
  for (const Storage *storage : order)
    if (!records[storage].written)
      return fileError(path, "storage " + records[storage].key + " was never written");
  auto text = [](llvm::StringRef s) {
    return llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(s.data()), s.size());
  };
  // Version 3 is what torch 1.6-2.x write for this layout.
  if (llvm::Error err = zip->addEntry(root + "/version", text("3\n")))
    return err;
  if (llvm::Error err = zip->addEntry(root + "/byteorder", text("little")))
    return err;
  return zip->finish();
}
