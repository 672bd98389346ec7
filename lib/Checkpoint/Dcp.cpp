//===- Dcp.cpp - PyTorch distributed checkpoints (DCP) ---------------------===//
#include "loom/Checkpoint/Dcp.h"

#include "loom/Checkpoint/Pickle.h"
#include "loom/Checkpoint/OutputFile.h"
#include "loom/Checkpoint/TorchZip.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <map>
#include <set>
#include <unistd.h>

using namespace loom::ckpt;

namespace {
/// The BUILD state dict of a dataclass instance `value` of class `className`.
const DictValue *dataclassState(const ValuePtr &value, llvm::StringRef className) {
  const ObjectValue *object = value ? value->get<ObjectValue>() : nullptr;
  if (!object || object->type.name != className || !object->state)
    return nullptr;
  return object->state->get<DictValue>();
}

std::optional<llvm::SmallVector<int64_t, 4>> intTuple(const ValuePtr &value) {
  const std::vector<ValuePtr> *items = value ? value->sequence() : nullptr;
  if (!items)
    return std::nullopt;
  llvm::SmallVector<int64_t, 4> out;
  for (const ValuePtr &item : *items) {
    if (!item->get<int64_t>() || *item->get<int64_t>() < 0)
      return std::nullopt;
    out.push_back(*item->get<int64_t>());
  }
  return out;
}

std::optional<int64_t> intField(const DictValue &state, llvm::StringRef key) {
  ValuePtr value = state.find(key);
  if (value && value->get<int64_t>() && *value->get<int64_t>() >= 0)
    return *value->get<int64_t>();
  return std::nullopt;
}

/// A MemoryBuffer over a slice of another that keeps the parent mapped: chunk blobs
/// are parsed in place, and the tensors they yield hold the file mapping alive.
class SliceBuffer : public llvm::MemoryBuffer {
public:
  SliceBuffer(std::shared_ptr<const llvm::MemoryBuffer> parent, llvm::StringRef slice)
      : parent(std::move(parent)) {
    init(slice.begin(), slice.end(), /*RequiresNullTerminator=*/false);
  }
  /// The parent's kind: a slice of a file LLVM read into memory is not mapped.
  BufferKind getBufferKind() const override { return parent->getBufferKind(); }

private:
  std::shared_ptr<const llvm::MemoryBuffer> parent;
};
} // namespace

/// The first element, in row-major order, that no chunk of `entry` holds, as
/// "[i, j, ...]" (its chunks do not overlap and do not tile it). Along each dimension
/// in turn, the elements the chunks hold of the slab at an index change only where a
/// chunk starts or ends, so the first short slab is at 0 or at a chunk's end.
static std::string firstUncovered(const DcpEntry &entry) {
  llvm::SmallVector<int64_t, 4> at;
  auto volume = [](llvm::ArrayRef<int64_t> sizes) {
    uint64_t n = 1;
    for (int64_t s : sizes)
      n *= uint64_t(s);
    return n;
  };
  for (size_t d = 0; d < entry.size.size(); ++d) {
    std::vector<int64_t> candidates{0};
    for (const DcpChunk &c : entry.chunks)
      candidates.push_back(c.offsets[d] + c.sizes[d]);
    llvm::sort(candidates);
    uint64_t slab = volume(llvm::ArrayRef<int64_t>(entry.size).drop_front(d + 1));
    auto held = [&](int64_t i) {
      uint64_t n = 0;
      for (const DcpChunk &c : entry.chunks) {
        bool holds = i >= c.offsets[d] && i < c.offsets[d] + c.sizes[d];
        for (size_t k = 0; holds && k < d; ++k)
          holds = at[k] >= c.offsets[k] && at[k] < c.offsets[k] + c.sizes[k];
        if (holds)
          n += volume(llvm::ArrayRef<int64_t>(c.sizes).drop_front(d + 1));
      }
      return n;
    };
    auto shortSlab = llvm::find_if(candidates, [&](int64_t i) {
      return i < entry.size[d] && held(i) < slab;
    });
    if (shortSlab == candidates.end())
      break;
    at.push_back(*shortSlab);
  }
  std::string out = "[";
  for (size_t k = 0; k < at.size(); ++k)
    out += (k ? ", " : "") + std::to_string(at[k]);
  return out + "]";
}

llvm::Expected<DcpMetadata> loom::ckpt::parseDcpMetadata(llvm::ArrayRef<uint8_t> bytes,
                                                         llvm::StringRef name) {
  auto root = unpickle(bytes, name);
  if (!root)
    return root.takeError();
  const DictValue *metadata = dataclassState(*root, "Metadata");
  ValuePtr entries = metadata ? metadata->find("state_dict_metadata") : nullptr;
  ValuePtr storage = metadata ? metadata->find("storage_data") : nullptr;
  if (!entries || !entries->get<DictValue>() || !storage || !storage->get<DictValue>())
    return fileError(name, "not a DCP Metadata object with state_dict_metadata and storage_data");

  // (fqn, chunk offsets) -> storage location; a bytes entry has no offsets.
  std::map<std::pair<std::string, llvm::SmallVector<int64_t, 4>>, DcpChunk> locations;
  for (const auto &[key, info] : storage->get<DictValue>()->entries) {
    const DictValue *index = dataclassState(key, "MetadataIndex");
    const DictValue *where = dataclassState(info, "_StorageInfo");
    ValuePtr fqn = index ? index->find("fqn") : nullptr;
    ValuePtr file = where ? where->find("relative_path") : nullptr;
    if (!fqn || !fqn->get<std::string>() || !file || !file->get<std::string>())
      return fileError(name, "storage_data holds an entry that is not MetadataIndex -> _StorageInfo");
    const std::string &path = *file->get<std::string>();
    auto offset = intField(*where, "offset"), length = intField(*where, "length");
    if (!offset || !length)
      return fileError(name, "storage of '" + *fqn->get<std::string>() + "' lacks offset/length");
    // Chunk files sit beside .metadata: a path could otherwise read any file.
    if (path.empty() || llvm::StringRef(path).contains('/') || path == "." || path == "..")
      return fileError(name, "storage of '" + *fqn->get<std::string>() +
                                 "' names '" + path + "', not a file of the checkpoint");
    ValuePtr chunkOffset = index->find("offset");
    llvm::SmallVector<int64_t, 4> at;
    if (chunkOffset && chunkOffset->kind() != Value::Kind::None) {
      auto parsed = intTuple(chunkOffset);
      if (!parsed)
        return fileError(name, "MetadataIndex of '" + *fqn->get<std::string>() + "' has a bad offset");
      at = *parsed;
    }
    DcpChunk chunk;
    chunk.file = path;
    chunk.offset = uint64_t(*offset);
    chunk.length = uint64_t(*length);
    locations[{*fqn->get<std::string>(), at}] = chunk;
  }

  DcpMetadata out;
  for (const auto &[key, value] : entries->get<DictValue>()->entries) {
    if (!key->get<std::string>())
      return fileError(name, "state_dict_metadata has a key that is not a string");
    DcpEntry entry;
    entry.fqn = *key->get<std::string>();
    auto missing = [&] {
      return fileError(name, "no storage location for a chunk of '" + entry.fqn + "'");
    };
    // An empty dataclass: pickled without BUILD state.
    if (value->get<ObjectValue>() && value->get<ObjectValue>()->type.name == "BytesStorageMetadata") {
      entry.isBytes = true;
      auto found = locations.find({entry.fqn, {}});
      if (found == locations.end())
        return missing();
      entry.chunks.push_back(found->second);
      out.entries.push_back(std::move(entry));
      continue;
    }
    const DictValue *tensor = dataclassState(value, "TensorStorageMetadata");
    auto size = tensor ? intTuple(tensor->find("size")) : std::nullopt;
    ValuePtr chunks = tensor ? tensor->find("chunks") : nullptr;
    if (!size || !chunks || !chunks->sequence())
      return fileError(name, "'" + entry.fqn + "' is neither TensorStorageMetadata nor BytesStorageMetadata");
    entry.size = *size;
    // TensorProperties pickles its state as (dtype, layout, requires_grad, ...).
    if (ValuePtr properties = tensor->find("properties"))
      if (const ObjectValue *object = properties->get<ObjectValue>(); object && object->state)
        if (const std::vector<ValuePtr> *items = object->state->sequence(); items && !items->empty())
          if (const GlobalValue *global = (*items)[0]->get<GlobalValue>(); global && global->module == "torch")
            entry.dtype = dtypeFromTorchName(global->name);
    auto total = checkedNumel(entry.size);
    if (!total)
      return fileError(name, "'" + entry.fqn + "' has an impossible size");
    uint64_t covered = 0;
    for (const ValuePtr &chunkValue : *chunks->sequence()) {
      const DictValue *chunk = dataclassState(chunkValue, "ChunkStorageMetadata");
      auto offsets = chunk ? intTuple(chunk->find("offsets")) : std::nullopt;
      auto sizes = chunk ? intTuple(chunk->find("sizes")) : std::nullopt;
      if (!offsets || !sizes || offsets->size() != entry.size.size() ||
          sizes->size() != entry.size.size())
        return fileError(name, "'" + entry.fqn + "' has a chunk without offsets/sizes of its rank");
      for (size_t d = 0; d < entry.size.size(); ++d)
        if ((*offsets)[d] + (*sizes)[d] > entry.size[d])
          return fileError(name, "a chunk of '" + entry.fqn + "' reaches past dimension " +
                                     llvm::Twine(d) + " of size " + llvm::Twine(entry.size[d]));
      auto found = locations.find({entry.fqn, *offsets});
      if (found == locations.end())
        return missing();
      DcpChunk located = found->second;
      located.offsets = *offsets;
      located.sizes = *sizes;
      // Chunks that overlap could add up to the tensor and still leave a gap.
      uint64_t elements = *checkedNumel(located.sizes);
      for (const DcpChunk &other : entry.chunks) {
        bool overlap = elements && *checkedNumel(other.sizes);
        for (size_t d = 0; overlap && d < entry.size.size(); ++d)
          overlap = located.offsets[d] < other.offsets[d] + other.sizes[d] &&
                    other.offsets[d] < located.offsets[d] + located.sizes[d];
        if (overlap)
          return fileError(name, "two chunks of '" + entry.fqn + "' overlap");
      }
      covered += elements;
      entry.chunks.push_back(std::move(located));
    }
    if (covered != *total)
      return fileError(name, "chunks of '" + entry.fqn + "' hold " + llvm::Twine(covered) +
                                 " elements, the tensor has " + llvm::Twine(*total) +
                                 "; none holds " + firstUncovered(entry));
    out.entries.push_back(std::move(entry));
  }
  llvm::sort(out.entries, [](const DcpEntry &a, const DcpEntry &b) { return a.fqn < b.fqn; });
  return out;
}

/// Copies `chunk` (row-major bytes of shape chunk.sizes) into `full` at its offsets.
static void place(uint8_t *full, llvm::ArrayRef<int64_t> fullShape,
                  llvm::ArrayRef<uint8_t> chunkBytes, const DcpChunk &chunk, unsigned elementSize) {
  size_t rank = fullShape.size();
  if (rank == 0) {
    llvm::copy(chunkBytes, full);
    return;
  }
  llvm::SmallVector<int64_t, 4> fullStrides = contiguousStrides(fullShape);
  uint64_t runBytes = chunk.sizes[rank - 1] * elementSize;
  uint64_t runs = runBytes ? chunkBytes.size() / runBytes : 0;
  llvm::SmallVector<int64_t, 4> index(rank, 0); // position within the chunk
  for (uint64_t run = 0; run < runs; ++run) {
    int64_t at = 0;
    for (size_t d = 0; d < rank; ++d)
      at += (chunk.offsets[d] + index[d]) * fullStrides[d];
    std::copy_n(chunkBytes.begin() + run * runBytes, runBytes, full + at * elementSize);
    for (size_t d = rank - 1; d-- > 0;) {
      if (++index[d] < chunk.sizes[d])
        break;
      index[d] = 0;
    }
  }
}

llvm::Expected<std::unique_ptr<DcpReader>> DcpReader::open(const llvm::Twine &directory) {
  std::string dir = directory.str();
  std::string metadataPath = dir + "/.metadata";
  auto metadataBuffer = mapFile(metadataPath);
  if (!metadataBuffer)
    return metadataBuffer.takeError();
  llvm::StringRef metadataText = (*metadataBuffer)->getBuffer();
  auto metadata = parseDcpMetadata(
      llvm::ArrayRef<uint8_t>(metadataText.bytes_begin(), metadataText.size()), metadataPath);
  if (!metadata)
    return metadata.takeError();
  return std::unique_ptr<DcpReader>(new DcpReader(dir, std::move(*metadata)));
}

const DcpEntry *DcpReader::find(llvm::StringRef fqn) const {
  // Entries are sorted by name (parseDcpMetadata): a tensor at a time stays cheap.
  auto entry = llvm::lower_bound(meta.entries, fqn,
                                 [](const DcpEntry &e, llvm::StringRef name) { return e.fqn < name; });
  return entry == meta.entries.end() || entry->fqn != fqn ? nullptr : &*entry;
}

llvm::Expected<ZipArchive> DcpReader::archiveOf(const DcpChunk &chunk, const std::string &fqn) {
  std::string path = dir + "/" + chunk.file;
  auto &buffer = files[chunk.file];
  if (!buffer) {
    auto mapped = mapFile(path);
    if (!mapped)
      return mapped.takeError();
    buffer = *mapped;
  }
  if (chunk.offset > buffer->getBufferSize() ||
      chunk.length > buffer->getBufferSize() - chunk.offset)
    return fileError(path, "chunk of '" + fqn + "' at offset " + llvm::Twine(chunk.offset) +
                               " length " + llvm::Twine(chunk.length) + " lies past the end");
  return ZipArchive::parse(
      std::make_shared<SliceBuffer>(buffer, buffer->getBuffer().substr(chunk.offset, chunk.length)),
      path + "@" + std::to_string(chunk.offset));
}

llvm::Expected<ValuePtr> DcpReader::readBytes(llvm::StringRef fqn) {
  const DcpEntry *entry = find(fqn);
  if (!entry || !entry->isBytes)
    return fileError(dir + "/.metadata", "no bytes entry '" + fqn + "'");
  auto archive = archiveOf(entry->chunks.front(), entry->fqn);
  if (!archive)
    return archive.takeError();
  auto value = readTorchZip(*archive);
  if (!value) {
    // The archive's errors begin with its name; the entry's name goes after it.
    std::string why = llvm::toString(value.takeError());
    llvm::StringRef rest(why);
    rest.consume_front(archive->name().str() + ": ");
    return fileError(archive->name(), "bytes entry '" + entry->fqn + "': " + rest);
  }
  return value;
}

llvm::Expected<Tensor> DcpReader::chunkTensor(const DcpEntry &entry, const DcpChunk &chunk,
                                              std::optional<DType> dtype) {
  auto archive = archiveOf(chunk, entry.fqn);
  if (!archive)
    return archive.takeError();
  auto root = readTorchZip(*archive);
  if (!root)
    return root.takeError();
  const TensorValue *tensor = (*root)->get<TensorValue>();
  if (!tensor || tensor->tensor.shape != chunk.sizes)
    return fileError(archive->name(), "chunk of '" + entry.fqn + "' is not a tensor of the declared sizes");
  if (dtype && *dtype != tensor->tensor.dtype)
    return fileError(archive->name(), "chunks of '" + entry.fqn + "' differ in dtype");
  return tensor->tensor;
}

llvm::Expected<Tensor> DcpReader::read(llvm::StringRef fqn) {
  const DcpEntry *entry = find(fqn);
  // "name[i]": row i of a stacked tensor, "name[i][j]" row j of that (dcpRowKey).
  if (auto rowKey = entry ? std::nullopt : parseDcpRowKey(fqn)) {
    if ((entry = find(rowKey->first)) && !entry->isBytes)
      return readRow(*entry, rowKey->second);
    entry = nullptr;
  }
  if (!entry || entry->isBytes)
    return fileError(dir + "/.metadata", "no tensor '" + fqn + "'");
  std::shared_ptr<Storage> full;
  std::optional<DType> dtype;
  for (const DcpChunk &chunk : entry->chunks) {
    auto tensor = chunkTensor(*entry, chunk, dtype);
    if (!tensor)
      return tensor.takeError();
    // One chunk covering the tensor: its view of the mapped file is the tensor.
    if (entry->chunks.size() == 1 && tensor->isContiguous())
      return *tensor;
    if (!dtype) {
      dtype = tensor->dtype;
      full = Storage::uninitialized(*checkedNumel(entry->size) * dtypeSize(*dtype));
    }
    place(full->mutableData(), entry->size, tensor->toBytes(), chunk, dtypeSize(*dtype));
  }
  if (!dtype) // a tensor without elements has no chunks to take a dtype from
    return fileError(dir + "/.metadata", "tensor '" + fqn + "' has no chunks to take a dtype from");
  return Tensor::contiguous(*dtype, entry->size, std::move(full));
}

llvm::Expected<Tensor> DcpReader::readRow(const DcpEntry &entry, llvm::ArrayRef<int64_t> rows) {
  size_t lead = rows.size();
  auto text = [&] {
    std::string out;
    for (int64_t r : rows)
      out += "[" + std::to_string(r) + "]";
    return out;
  };
  if (entry.size.size() < lead)
    return fileError(dir + "/.metadata", "'" + entry.fqn + "' has no row " + text());
  for (size_t d = 0; d < lead; ++d)
    if (rows[d] < 0 || rows[d] >= entry.size[d])
      return fileError(dir + "/.metadata", "'" + entry.fqn + "' has no row " + text());
  llvm::SmallVector<int64_t, 4> shape(entry.size.begin() + lead, entry.size.end());
  std::shared_ptr<Storage> full;
  std::optional<DType> dtype;
  for (const DcpChunk &chunk : entry.chunks) {
    bool holds = true;
    for (size_t d = 0; d < lead; ++d)
      holds = holds && rows[d] >= chunk.offsets[d] && rows[d] < chunk.offsets[d] + chunk.sizes[d];
    if (!holds)
      continue;
    auto tensor = chunkTensor(entry, chunk, dtype);
    if (!tensor)
      return tensor.takeError();
    // The chunk's row, as a view.
    Tensor view = *tensor;
    for (size_t d = 0; d < lead; ++d)
      view.offset += (rows[d] - chunk.offsets[d]) * view.strides[d];
    view.shape.erase(view.shape.begin(), view.shape.begin() + lead);
    view.strides.erase(view.strides.begin(), view.strides.begin() + lead);
    DcpChunk part = chunk;
    part.offsets.erase(part.offsets.begin(), part.offsets.begin() + lead);
    part.sizes.erase(part.sizes.begin(), part.sizes.begin() + lead);
    // A chunk holding the whole row: the row is a view of the mapped file.
    if (part.sizes == shape && view.isContiguous())
      return view;
    if (!dtype) {
      dtype = view.dtype;
      full = Storage::uninitialized(*checkedNumel(shape) * dtypeSize(*dtype));
    }
    place(full->mutableData(), shape, view.toBytes(), part, dtypeSize(*dtype));
  }
  if (!dtype)
    return fileError(dir + "/.metadata", "row " + text() + " of '" + entry.fqn +
                                             "' has no chunks to take a dtype from");
  return Tensor::contiguous(*dtype, shape, std::move(full));
}

std::string loom::ckpt::dcpRowKey(llvm::StringRef fqn, int64_t row) {
  return (fqn + "[" + llvm::Twine(row) + "]").str();
}

std::optional<std::pair<llvm::StringRef, llvm::SmallVector<int64_t, 2>>>
loom::ckpt::parseDcpRowKey(llvm::StringRef key) {
  llvm::SmallVector<int64_t, 2> rows;
  llvm::StringRef name = key;
  while (name.ends_with("]")) {
    auto [inner, index] = name.drop_back().rsplit('[');
    int64_t row = 0;
    if (inner.size() == name.size() - 1 || index.getAsInteger(10, row) || row < 0)
      return std::nullopt;
    rows.insert(rows.begin(), row);
    name = inner;
  }
  if (rows.empty())
    return std::nullopt;
  return std::pair{name, std::move(rows)};
}

llvm::Expected<DcpCheckpoint> loom::ckpt::readDcp(const llvm::Twine &directory) {
  auto reader = DcpReader::open(directory);
  if (!reader)
    return reader.takeError();
  DcpCheckpoint ckpt{(*reader)->metadata(), {}};
  for (const DcpEntry &entry : ckpt.metadata.entries) {
    if (entry.isBytes || entry.chunks.empty())
      continue;
    auto tensor = (*reader)->read(entry.fqn);
    if (!tensor)
      return tensor.takeError();
    ckpt.tensors.push_back({entry.fqn, std::move(*tensor)});
  }
  return ckpt;
}

namespace {
/// Where `marker` ("state.", "param_groups.") first begins a component of `key`.
std::optional<size_t> componentAt(llvm::StringRef key, llvm::StringRef marker) {
  for (size_t at = key.find(marker); at != llvm::StringRef::npos; at = key.find(marker, at + 1))
    if (at == 0 || key[at - 1] == '.')
      return at;
  return std::nullopt;
}

/// A group's settings: `group` without "params" (copied, not erased: LLVM 19's
/// json::Object copies revive erased keys).
llvm::json::Value withoutParams(const llvm::json::Object &group) {
  llvm::json::Object out;
  for (const auto &[key, value] : group)
    if (key != "params")
      out[key] = value;
  return out;
}

bool isAdamState(llvm::StringRef key) {
  return key.ends_with(".exp_avg") || key.ends_with(".exp_avg_sq") || key.ends_with(".step");
}
} // namespace

llvm::Expected<std::optional<DcpOptimizer>> loom::ckpt::readDcpOptimizer(DcpReader &reader) {
  const std::vector<DcpEntry> &entries = reader.metadata().entries;
  std::string where = reader.directory() + "/.metadata";
  // The optimizer's root is what precedes "param_groups." (or, without groups,
  // "state." in a key naming an Adam state); every such key must agree on it.
  std::optional<std::string> root;
  for (const char *marker : {"param_groups.", "state."}) {
    for (const DcpEntry &e : entries) {
      std::optional<size_t> at = componentAt(e.fqn, marker);
      if (!at || (llvm::StringRef(marker) == "state." && !isAdamState(e.fqn)))
        continue;
      std::string found = e.fqn.substr(0, *at);
      if (root && *root != found)
        return fileError(where, "optimizer keys under two roots, '" + *root + "' and '" + found +
                                    "' (one optimizer per checkpoint)");
      root = found;
    }
    if (root)
      break;
  }
  if (!root)
    return std::nullopt;

  DcpOptimizer optimizer;
  optimizer.optimizerPrefix = *root;
  std::string statePrefix = *root + "state.", groupPrefix = *root + "param_groups.";
  // fqn -> its moments' entries; group settings in either spelling.
  std::map<std::string, std::pair<const DcpEntry *, const DcpEntry *>> moments;
  std::map<int64_t, llvm::json::Object> indexed;
  std::vector<std::pair<std::string, llvm::json::Object>> byFqn;
  std::optional<std::pair<std::string, int64_t>> firstStep;
  for (const DcpEntry &e : entries) {
    llvm::StringRef rest = e.fqn;
    if (rest.consume_front(statePrefix)) {
      auto [fqn, state] = rest.rsplit('.');
      if (state == "step") {
        std::optional<int64_t> step;
        if (e.isBytes) {
          auto value = reader.readBytes(e.fqn);
          if (!value)
            return value.takeError();
          step = stepNumber(*value);
        } else {
          auto tensor = reader.read(e.fqn);
          if (!tensor)
            return tensor.takeError();
          step = stepNumber(Value::make(TensorValue{*tensor}));
        }
        if (!step)
          return fileError(where, "'" + e.fqn + "' is not a step count");
        if (firstStep && firstStep->second != *step)
          return fileError(where, llvm::formatv("'{0}' is at step {1}, '{2}' at step {3}: loom "
                                                "keeps one step for the whole optimizer",
                                                firstStep->first, firstStep->second, e.fqn, *step)
                                      .str());
        if (!firstStep)
          firstStep = {e.fqn, *step};
        continue;
      }
      if (state != "exp_avg" && state != "exp_avg_sq")
        return fileError(where, "'" + e.fqn + "': loom keeps Adam's optimizer states (step, "
                                "exp_avg, exp_avg_sq), not '" + state + "'");
      if (e.isBytes || (e.dtype && *e.dtype != DType::Float32))
        return fileError(where, "'" + e.fqn + "' is not a float32 tensor (loom keeps Adam's "
                                "moments in float32)");
      auto &slot = moments[fqn.str()];
      (state == "exp_avg" ? slot.first : slot.second) = &e;
      continue;
    }
    if (!rest.consume_front(groupPrefix))
      continue;
    auto value = reader.readBytes(e.fqn);
    if (!value)
      return value.takeError();
    std::optional<llvm::json::Value> json = plainJson(**value);
    if (!json)
      return fileError(where, "'" + e.fqn + "' holds " + describe(**value) +
                                  ", not a plain value (an optimizer setting); nothing in it "
                                  "was run");
    auto [head, tail] = rest.split('.');
    int64_t group = 0;
    if (!tail.empty() && !head.getAsInteger(10, group) && group >= 0) {
      indexed[group][tail] = std::move(*json);
      continue;
    }
    // flatten_optimizer_state_dict: param_groups.<fqn>.<setting>.
    auto [fqn, setting] = rest.rsplit('.');
    if (byFqn.empty() || byFqn.back().first != fqn)
      byFqn.emplace_back(fqn.str(), llvm::json::Object());
    byFqn.back().second[setting] = std::move(*json);
  }
  if (firstStep)
    optimizer.step = firstStep->second;

  // The model's keys: a prefix that makes every fqn with states a tensor outside the
  // optimizer.
  auto isModelTensor = [&](const std::string &key) {
    const DcpEntry *entry = reader.find(key);
    return entry && !entry->isBytes && !llvm::StringRef(key).starts_with(*root);
  };
  if (!moments.empty()) {
    const std::string &first = moments.begin()->first;
    std::optional<std::string> prefix;
    for (const DcpEntry &e : entries) {
      llvm::StringRef key = e.fqn;
      if (e.isBytes || key.starts_with(*root) || !key.ends_with(first) ||
          (key.size() > first.size() && key[key.size() - first.size() - 1] != '.'))
        continue;
      std::string candidate = key.drop_back(first.size()).str();
      if (llvm::all_of(moments, [&](const auto &m) { return isModelTensor(candidate + m.first); })) {
        prefix = candidate;
        break;
      }
    }
    if (!prefix)
      return fileError(where, "the optimizer keeps states of '" + first +
                                  "', which no model tensor of the checkpoint is");
    optimizer.modelPrefix = *prefix;
  }
  for (const auto &[fqn, pair] : moments) {
    if (!pair.first || !pair.second)
      return fileError(where, "'" + fqn + "' has " + (pair.first ? "exp_avg" : "exp_avg_sq") +
                                  " but not " + (pair.first ? "exp_avg_sq" : "exp_avg"));
    const DcpEntry *param = reader.find(optimizer.modelPrefix + fqn);
    for (const DcpEntry *m : {pair.first, pair.second})
      if (m->size != param->size)
        return fileError(where, "'" + m->fqn + "' is not shaped as its parameter '" +
                                    param->fqn + "'");
    optimizer.params.push_back({fqn, pair.first->fqn, pair.second->fqn});
  }

  // Groups: indexed ones list their fqns under "params"; groups keyed by fqn are
  // the parameters with equal settings, in order.
  llvm::json::Array settings;
  for (auto &[index, group] : indexed) {
    if (index != int64_t(optimizer.groups.size()))
      return fileError(where, llvm::formatv("'{0}{1}.*' comes where group {2} should",
                                            groupPrefix, index, optimizer.groups.size())
                                  .str());
    optimizer.groups.emplace_back();
    if (const llvm::json::Array *params = group.getArray("params"))
      for (const llvm::json::Value &name : *params) {
        std::optional<llvm::StringRef> text = name.getAsString();
        if (!text)
          return fileError(where, "'" + groupPrefix + llvm::Twine(index) +
                                      ".params' is not a list of parameter names");
        optimizer.groups.back().push_back(text->str());
      }
    settings.push_back(withoutParams(group));
  }
  for (auto &[fqn, group] : byFqn) {
    llvm::json::Value plain = withoutParams(group);
    auto same = llvm::find(settings, plain);
    if (same == settings.end()) {
      settings.push_back(std::move(plain));
      optimizer.groups.emplace_back();
      same = settings.end() - 1;
    }
    optimizer.groups[same - settings.begin()].push_back(fqn);
  }
  optimizer.groupsJson = llvm::formatv("{0}", llvm::json::Value(std::move(settings))).str();
  return optimizer;
}

std::vector<DcpShard> loom::ckpt::dcpRowShards(llvm::ArrayRef<NamedTensor> tensors,
                                               unsigned ranks) {
  std::vector<DcpShard> shards;
  ranks = std::max(1u, ranks);
  for (const NamedTensor &named : tensors) {
    const Tensor &t = named.tensor;
    llvm::SmallVector<int64_t, 4> zero(t.shape.size(), 0);
    if (t.shape.empty() || t.shape[0] < int64_t(ranks)) {
      shards.push_back({named.name, t.shape, zero, t, 0});
      continue;
    }
    int64_t rows = t.shape[0], begin = 0;
    for (unsigned r = 0; r < ranks; ++r) {
      int64_t count = rows / ranks + (int64_t(r) < rows % ranks ? 1 : 0);
      Tensor chunk = t;
      chunk.shape[0] = count;
      chunk.offset = t.offset + begin * (t.strides.empty() ? 0 : t.strides[0]);
      llvm::SmallVector<int64_t, 4> at = zero;
      at[0] = begin;
      shards.push_back({named.name, t.shape, at, chunk, r});
      begin += count;
    }
  }
  return shards;
}

namespace {
ValuePtr str(llvm::StringRef s) { return Value::make(s.str()); }
ValuePtr global(llvm::StringRef module, llvm::StringRef name) {
  return Value::make(GlobalValue{module.str(), name.str()});
}
ValuePtr torchSize(llvm::ArrayRef<int64_t> dims) {
  TupleValue tuple;
  for (int64_t d : dims)
    tuple.items.push_back(Value::make(d));
  tuple.torchSize = true;
  return Value::make(std::move(tuple));
}
ValuePtr tuple(std::vector<ValuePtr> items) { return Value::make(TupleValue{std::move(items)}); }
/// `module.name()` then BUILD with `state`: how pickle restores a dataclass.
ValuePtr dataclass(llvm::StringRef module, llvm::StringRef name, ValuePtr state) {
  ObjectValue object;
  object.type = GlobalValue{module.str(), name.str()};
  object.newObj = true;
  object.args = tuple({});
  object.state = std::move(state);
  return Value::make(std::move(object));
}
ValuePtr reduce(ValuePtr callable, std::vector<ValuePtr> args) {
  ObjectValue object;
  object.type = *callable->get<GlobalValue>();
  object.args = tuple(std::move(args));
  return Value::make(std::move(object));
}
ValuePtr dict(std::vector<std::pair<ValuePtr, ValuePtr>> entries) {
  DictValue d;
  d.entries = std::move(entries);
  return Value::make(std::move(d));
}

constexpr llvm::StringLiteral kMetadataModule = "torch.distributed._shard.checkpoint.metadata";
constexpr llvm::StringLiteral kShardedModule = "torch.distributed._shard.sharded_tensor.metadata";

/// TensorProperties pickles its state as a tuple (dtype, layout, requires_grad,
/// memory_format, pin_memory), the memory format by name.
ValuePtr tensorProperties(DType dtype) {
  ValuePtr layout = reduce(global("torch.serialization", "_get_layout"), {str("torch.strided")});
  ValuePtr format = reduce(global("builtins", "getattr"),
                           {global(kShardedModule, "MEM_FORMAT_ENCODING"),
                            str("TORCH_CONTIGUOUS_FORMAT")});
  return dataclass(kShardedModule, "TensorProperties",
                   tuple({global("torch", torchDTypeName(dtype)), layout, Value::make(false),
                          format, Value::make(false)}));
}

std::string distcpName(unsigned rank) { return "__" + std::to_string(rank) + "_0.distcp"; }

/// Where an entry's archive lies: rank `rank`'s file, offset, length.
ValuePtr storageInfo(unsigned rank, uint64_t offset, uint64_t length) {
  return dataclass("torch.distributed._shard.checkpoint.filesystem", "_StorageInfo",
                   dict({{str("relative_path"), str(distcpName(rank))},
                         {str("offset"), Value::make(int64_t(offset))},
                         {str("length"), Value::make(int64_t(length))}}));
}

/// What the metadata says of one chunk.
struct ChunkRecord {
  std::string fqn;
  llvm::SmallVector<int64_t, 4> fullShape, offsets, sizes;
  DType dtype;
  unsigned rank;
  uint64_t fileOffset = 0, length = 0;
};

bool boxesOverlap(const ChunkRecord &a, const ChunkRecord &b) {
  for (size_t d = 0; d < a.offsets.size(); ++d)
    if (a.offsets[d] + a.sizes[d] <= b.offsets[d] || b.offsets[d] + b.sizes[d] <= a.offsets[d])
      return false;
  return true;
}

/// Checks that the chunks of every tensor tile it exactly, in one dtype.
llvm::Error checkTiling(const std::string &where, llvm::ArrayRef<ChunkRecord> records) {
  std::map<std::string, std::vector<const ChunkRecord *>> byFqn;
  for (const ChunkRecord &r : records) {
    if (r.fqn.empty())
      return fileError(where, "a chunk without a name");
    if (r.offsets.size() != r.fullShape.size() || r.sizes.size() != r.fullShape.size())
      return fileError(where, "chunk of '" + r.fqn + "' differs in rank from its tensor");
    for (size_t d = 0; d < r.sizes.size(); ++d)
      if (r.offsets[d] < 0 || r.offsets[d] + r.sizes[d] > r.fullShape[d])
        return fileError(where, "chunk of '" + r.fqn + "' reaches past dimension " +
                                    llvm::Twine(d) + " of size " + llvm::Twine(r.fullShape[d]));
    std::vector<const ChunkRecord *> &list = byFqn[r.fqn];
    if (!list.empty() && (list.front()->fullShape != r.fullShape || list.front()->dtype != r.dtype))
      return fileError(where, "chunks of '" + r.fqn + "' differ in shape or dtype");
    for (const ChunkRecord *other : list)
      if (*checkedNumel(r.sizes) && *checkedNumel(other->sizes) && boxesOverlap(*other, r))
        return fileError(where, "chunks of '" + r.fqn + "' overlap");
    list.push_back(&r);
  }
  for (const auto &[fqn, list] : byFqn) {
    uint64_t covered = 0;
    for (const ChunkRecord *r : list)
      covered += *checkedNumel(r->sizes);
    if (covered != *checkedNumel(list.front()->fullShape))
      return fileError(where, "chunks of '" + fqn + "' hold " + llvm::Twine(covered) +
                                  " elements, the tensor has " +
                                  llvm::Twine(*checkedNumel(list.front()->fullShape)));
  }
  return llvm::Error::success();
}
} // namespace

struct DcpWriter::Impl {
  std::string dir, staging;
  std::map<unsigned, std::unique_ptr<OutputFile>> files;
  std::vector<ChunkRecord> records;
  /// Bytes entries: fqn, and where rank 0's file holds the archive.
  struct BytesRecord {
    std::string fqn;
    uint64_t fileOffset = 0, length = 0;
  };
  std::vector<BytesRecord> bytesRecords;
  bool finished = false;

  /// Rank `rank`'s file, positioned at the next 64-byte boundary.
  llvm::Expected<OutputFile *> fileAt64(unsigned rank) {
    auto &file = files[rank];
    if (!file) {
      auto created = OutputFile::create(staging + "/" + distcpName(rank));
      if (!created)
        return created.takeError();
      file = std::move(*created);
    }
    while (file->os().tell() % 64)
      file->os() << '\0';
    return file.get();
  }

  void discard() {
    files.clear(); // each OutputFile removes its temporary
    llvm::sys::fs::remove_directories(staging);
    finished = true;
  }
};

DcpWriter::DcpWriter(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}
DcpWriter::~DcpWriter() {
  if (impl && !impl->finished)
    impl->discard();
}

llvm::Expected<std::unique_ptr<DcpWriter>> DcpWriter::create(const llvm::Twine &directory) {
  auto impl = std::make_unique<Impl>();
  impl->dir = directory.str();
  // Everything goes to a sibling folder renamed into place at the end: the final
  // name never holds part of a checkpoint.
  if (llvm::sys::fs::exists(impl->dir))
    return fileError(impl->dir, "already exists (a DCP checkpoint is written as a new folder)");
  impl->staging = impl->dir + ".loom-tmp-" + std::to_string(::getpid());
  if (auto ec = llvm::sys::fs::create_directories(impl->staging))
    return fileError(impl->staging, "cannot create the folder: " + ec.message());
  return std::unique_ptr<DcpWriter>(new DcpWriter(std::move(impl)));
}

llvm::Error DcpWriter::append(const DcpShard &shard) {
  if (impl->finished)
    return fileError(impl->dir, "written after finish");
  if (auto reason = shard.chunk.checkView())
    return fileError(impl->dir, "chunk of '" + shard.fqn + "': " + *reason);
  auto file = impl->fileAt64(shard.rank);
  if (!file)
    return file.takeError();
  // torch.save of the chunk alone: a view would carry its whole base storage.
  Tensor chunk = shard.chunk;
  if (!chunk.isWholeStorage())
    chunk = Tensor::contiguous(
        chunk.dtype, chunk.shape,
        chunk.isContiguous() ? std::make_shared<Storage>(chunk.contiguousBytes(), chunk.storage)
                             : std::make_shared<Storage>(chunk.toBytes()));
  llvm::raw_fd_ostream &os = (*file)->os();
  uint64_t offset = os.tell();
  if (auto err = appendTorchZip(**file, *Value::make(TensorValue{chunk})))
    return err;
  impl->records.push_back({shard.fqn, shard.fullShape, shard.offsets, chunk.shape, chunk.dtype,
                           shard.rank, offset, os.tell() - offset});
  return llvm::Error::success();
}

llvm::Error DcpWriter::appendBytes(llvm::StringRef fqn, const Value &value) {
  if (impl->finished)
    return fileError(impl->dir, "written after finish");
  if (fqn.empty())
    return fileError(impl->dir, "a bytes entry without a name");
  auto file = impl->fileAt64(0);
  if (!file)
    return file.takeError();
  uint64_t offset = (*file)->os().tell();
  if (auto err = appendTorchZip(**file, value))
    return err;
  impl->bytesRecords.push_back({fqn.str(), offset, (*file)->os().tell() - offset});
  return llvm::Error::success();
}

llvm::Error DcpWriter::addFile(llvm::StringRef name, llvm::StringRef content) {
  if (impl->finished)
    return fileError(impl->dir, "written after finish");
  if (name.empty() || name == "." || name == ".." || name.contains('/') || name == ".metadata" ||
      name.ends_with(".distcp"))
    return fileError(impl->dir, "cannot hold a file of its own named '" + name + "'");
  auto file = OutputFile::create(impl->staging + "/" + name);
  if (!file)
    return file.takeError();
  (*file)->os() << content;
  return (*file)->commit();
}

llvm::Error DcpWriter::finish() {
  if (impl->finished)
    return fileError(impl->dir, "finished twice");
  auto fail = [&](llvm::Error err) {
    impl->discard();
    return err;
  };
  std::string metadataPath = impl->staging + "/.metadata";
  if (auto err = checkTiling(impl->dir + "/.metadata", impl->records))
    return fail(std::move(err));
  std::map<std::string, std::vector<const ChunkRecord *>> byFqn;
  std::vector<std::pair<ValuePtr, ValuePtr>> storage;
  for (const ChunkRecord &r : impl->records) {
    byFqn[r.fqn].push_back(&r);
    ValuePtr index = dataclass(kMetadataModule, "MetadataIndex",
                               dict({{str("fqn"), str(r.fqn)},
                                     {str("offset"), torchSize(r.offsets)},
                                     {str("index"), Value::make(NoneValue{})}}));
    storage.emplace_back(index, storageInfo(r.rank, r.fileOffset, r.length));
  }
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;
  std::set<std::string> bytesNames;
  for (const Impl::BytesRecord &r : impl->bytesRecords) {
    if (byFqn.count(r.fqn) || !bytesNames.insert(r.fqn).second)
      return fail(fileError(impl->dir + "/.metadata", "two entries named '" + r.fqn + "'"));
    storage.emplace_back(dataclass(kMetadataModule, "MetadataIndex",
                                   dict({{str("fqn"), str(r.fqn)},
                                         {str("offset"), Value::make(NoneValue{})},
                                         {str("index"), Value::make(NoneValue{})}})),
                         storageInfo(0, r.fileOffset, r.length));
    // An empty dataclass: torch pickles it without BUILD state.
    entries.emplace_back(str(r.fqn), dataclass(kMetadataModule, "BytesStorageMetadata", nullptr));
  }
  for (const auto &[fqn, list] : byFqn) {
    std::vector<ValuePtr> chunks;
    for (const ChunkRecord *r : list)
      chunks.push_back(dataclass(kMetadataModule, "ChunkStorageMetadata",
                                 dict({{str("offsets"), torchSize(r->offsets)},
                                       {str("sizes"), torchSize(r->sizes)}})));
    entries.emplace_back(
        str(fqn), dataclass(kMetadataModule, "TensorStorageMetadata",
                            dict({{str("properties"), tensorProperties(list.front()->dtype)},
                                  {str("size"), torchSize(list.front()->fullShape)},
                                  {str("chunks"), Value::make(ListValue{std::move(chunks)})}})));
  }
  ValuePtr metadata = dataclass(kMetadataModule, "Metadata",
                                dict({{str("state_dict_metadata"), dict(std::move(entries))},
                                      {str("planner_data"), Value::make(NoneValue{})},
                                      {str("storage_data"), dict(std::move(storage))}}));
  auto bytes = pickle(*metadata, [&](const std::shared_ptr<const Storage> &,
                                     DType) -> llvm::Expected<StorageId> {
    return fileError(metadataPath, "metadata holds a tensor");
  });
  if (!bytes)
    return fail(bytes.takeError());
  // Chunk files first, .metadata last, then the folder into place.
  for (auto &[rank, file] : impl->files)
    if (auto err = file->commit())
      return fail(std::move(err));
  auto file = OutputFile::create(metadataPath);
  if (!file)
    return fail(file.takeError());
  (*file)->os() << *bytes;
  if (auto err = (*file)->commit())
    return fail(std::move(err));
  if (auto ec = llvm::sys::fs::rename(impl->staging, impl->dir))
    return fail(fileError(impl->dir, "cannot move the finished checkpoint into place: " + ec.message()));
  impl->finished = true;
  return llvm::Error::success();
}

llvm::Error loom::ckpt::writeDcp(const llvm::Twine &directory, llvm::ArrayRef<DcpShard> shards) {
  // Checked before anything is written.
  std::vector<ChunkRecord> planned;
  for (const DcpShard &shard : shards) {
    if (auto reason = shard.chunk.checkView())
      return fileError(directory + "/.metadata", "chunk of '" + shard.fqn + "': " + *reason);
    planned.push_back({shard.fqn, shard.fullShape, shard.offsets, shard.chunk.shape,
                       shard.chunk.dtype, shard.rank});
  }
  if (auto err = checkTiling(directory.str() + "/.metadata", planned))
    return err;
  auto writer = DcpWriter::create(directory);
  if (!writer)
    return writer.takeError();
  // Rank by rank, so each file is written front to back.
  std::vector<const DcpShard *> ordered;
  for (const DcpShard &shard : shards)
    ordered.push_back(&shard);
  llvm::stable_sort(ordered, [](const DcpShard *a, const DcpShard *b) { return a->rank < b->rank; });
  for (const DcpShard *shard : ordered)
    if (auto err = (*writer)->append(*shard))
      return err;
  return (*writer)->finish();
}
