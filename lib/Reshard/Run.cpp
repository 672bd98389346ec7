//===- Run.cpp - run a ckpt program ----------------------------------------===//
//
// Values are tensor views: a read points into the mapped source file (or, for a
// torch file, a pooled buffer its storage is read into), a slice or reshape of a
// contiguous tensor only changes the view, and bytes move once more, into the
// output tensor's pooled buffer, when a write places them. A complete tensor is
// written out on a second thread while the next is assembled; a source is closed
// and a value dropped after its last use, so memory follows the output being
// assembled rather than the checkpoint.
//
//===----------------------------------------------------------------------===//
#include "loom/Reshard/Reshard.h"

#include "Partial.h"

#include "loom/Checkpoint/BufferPool.h"
#include "loom/Checkpoint/Dcp.h"
#include "loom/Checkpoint/Crc32.h"
#include "loom/Checkpoint/Mpi.h"
#include "loom/Checkpoint/OutputFile.h"
#include "loom/Checkpoint/Safetensors.h"
#include "loom/Checkpoint/TorchZip.h"
#include "loom/Checkpoint/Universal.h"

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/APFloat.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"

#include <chrono>
#include <cstring>
#include <functional>
#include <list>
#include <thread>

using namespace loom;
using namespace loom::reshard;
using namespace loom::ckpt;
using mlir::Operation;
using mlir::RankedTensorType;

namespace {
std::string typeText(DType dtype, llvm::ArrayRef<int64_t> shape) {
  std::string text = torchDTypeName(dtype).str() + " [";
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

/// An opened source file: its tensors by key, or a universal or DCP reader that
/// reads a tensor when asked.
struct OpenSource {
  std::string path;
  llvm::StringMap<Tensor> tensors;
  /// A torch file's archive: each record is CRC-checked when a read first uses it,
  /// so its bytes come in once for the check and the copy that follows (checking
  /// every record on open brought the whole file in twice).
  std::optional<ZipArchive> archive;
  llvm::DenseSet<const ZipEntry *> verified;
  /// A torch or safetensors file's mapping, the file opened for pread, and the
  /// storages read from it into buffers (by the mapped storage they replace)
  /// while a value still views them.
  std::shared_ptr<const llvm::MemoryBuffer> mapping;
  std::optional<llvm::sys::fs::file_t> file;
  llvm::DenseMap<const Storage *, std::weak_ptr<const Storage>> loaded;
  std::unique_ptr<UniversalReader> universal;
  std::unique_ptr<DcpReader> dcp;

  OpenSource() = default;
  OpenSource(const OpenSource &) = delete;
  OpenSource &operator=(const OpenSource &) = delete;
  ~OpenSource() {
    if (file)
      llvm::sys::fs::closeFile(*file);
  }
};

/// Where reads of torch and safetensors sources put the storages they load: bytes
/// read with pread
/// into a buffer already mapped come in at about three times the speed of first
/// touches of the file's own mapping (each page is faulted in, and later dropped
/// again to keep memory bounded). Loaded bytes count against --max-memory while a
/// value views them; a storage that does not fit is used through the mapping.
struct SourceBuffers {
  BufferPool &pool;
  /// Whether `bytes` more may be loaded now.
  std::function<bool(uint64_t)> fits;
  std::vector<std::weak_ptr<const Storage>> live;

  /// Bytes of the loaded storages some value still views.
  uint64_t liveBytes() {
    llvm::erase_if(live, [](const std::weak_ptr<const Storage> &s) { return s.expired(); });
    uint64_t bytes = 0;
    for (const std::weak_ptr<const Storage> &s : live)
      if (std::shared_ptr<const Storage> alive = s.lock())
        bytes += alive->bytes().size();
    return bytes;
  }
};

llvm::Expected<std::unique_ptr<OpenSource>> openSource(const std::string &path,
                                                       llvm::StringRef format) {
  auto src = std::make_unique<OpenSource>();
  src->path = path;
  auto add = [&](std::vector<NamedTensor> tensors) {
    for (NamedTensor &t : tensors)
      src->tensors[t.name] = std::move(t.tensor);
  };
  auto openForPread = [&]() -> llvm::Error {
    auto file = llvm::sys::fs::openNativeFileForRead(path);
    if (!file)
      return fileError(path, "cannot open: " + llvm::toString(file.takeError()));
    src->file = *file;
    return llvm::Error::success();
  };
  if (format == "torch") {
    auto archive = ZipArchive::open(path);
    if (!archive)
      return archive.takeError();
    src->archive = std::move(*archive);
    src->mapping = src->archive->buffer();
    if (llvm::Error err = openForPread())
      return std::move(err);
    auto root = readTorchZip(*src->archive, {/*verifyChecksums=*/false, {}});
    if (!root)
      return root.takeError();
    add(collectTensors(**root));
  } else if (format == "safetensors") {
    auto mapping = mapFile(path);
    if (!mapping)
      return mapping.takeError();
    auto file = parseSafetensors(*mapping, path);
    if (!file)
      return file.takeError();
    src->mapping = std::move(*mapping);
    if (llvm::Error err = openForPread())
      return std::move(err);
    add(std::move(file->tensors));
  } else if (format == "dcp") {
    auto dcp = DcpReader::open(path);
    if (!dcp)
      return dcp.takeError();
    src->dcp = std::move(*dcp);
  } else {
    auto reader = UniversalReader::open(path);
    if (!reader)
      return reader.takeError();
    src->universal = std::move(*reader);
  }
  return src;
}

/// The state a key's "#state" suffix names ("" for the parameter itself), as the
/// universal format names its optimizer states.
std::optional<UniversalState> stateOfKey(llvm::StringRef stateText) {
  if (stateText.empty())
    return UniversalState::Param;
  for (UniversalState s : {UniversalState::Fp32, UniversalState::ExpAvg, UniversalState::ExpAvgSq})
    if (stateText == universalStateName(s))
      return s;
  return std::nullopt;
}

/// `mapped`'s bytes (a view of the source's mapping) read from the file into a
/// buffer, and the CRC-32 of what was read when `crc` is given: each 2 MiB piece is
/// checked just after its read, while it is still in the CPU's cache, instead of
/// in a second pass over the whole buffer from memory.
llvm::Expected<std::shared_ptr<const Storage>> load(OpenSource &src, const Storage &mapped,
                                                    BufferPool &pool, uint32_t *crc = nullptr) {
  constexpr size_t kPiece = 2u << 20;
  std::shared_ptr<Storage> buffer = pool.take(mapped.bytes().size());
  auto start = reinterpret_cast<const uint8_t *>(src.mapping->getBufferStart());
  uint64_t offset = mapped.bytes().data() - start;
  llvm::MutableArrayRef<char> rest(reinterpret_cast<char *>(buffer->mutableData()),
                                   mapped.bytes().size());
  while (!rest.empty()) {
    auto got = llvm::sys::fs::readNativeFileSlice(*src.file, rest.take_front(kPiece), offset);
    if (!got)
      return fileError(src.path, "reading: " + llvm::toString(got.takeError()));
    if (*got == 0)
      return fileError(src.path, "shorter than when it was opened");
    if (crc)
      *crc = zipCrc32(*crc, llvm::ArrayRef(reinterpret_cast<const uint8_t *>(rest.data()), *got));
    rest = rest.drop_front(*got);
    offset += *got;
  }
  return buffer;
}

/// A torch or safetensors source's tensor: its storage loaded into a buffer when it
/// fits, and a torch record CRC-checked the first time a read uses it.
llvm::Expected<Tensor> readFileTensor(OpenSource &src, Tensor tensor, SourceBuffers &buffers) {
  if (!tensor.storage)
    return tensor;
  const Storage *mapped = tensor.storage.get();
  if (auto found = src.loaded.find(mapped); found != src.loaded.end())
    if (std::shared_ptr<const Storage> alive = found->second.lock()) {
      tensor.storage = std::move(alive);
      return tensor;
    }
  const ZipEntry *entry = src.archive ? src.archive->entryAt(mapped->bytes().data()) : nullptr;
  bool check = entry && !src.verified.contains(entry);
  uint64_t size = mapped->bytes().size();
  if (size > 0 && buffers.fits(size)) {
    // A record the storage fills is checked as it is read.
    bool whole = check && entry->size == size;
    uint32_t crc = 0;
    auto loaded = load(src, *mapped, buffers.pool, whole ? &crc : nullptr);
    if (!loaded)
      return loaded.takeError();
    if (whole) {
      if (llvm::Error err = src.archive->verifyCrc(*entry, crc))
        return std::move(err);
      src.verified.insert(entry);
      check = false;
    }
    src.loaded[mapped] = *loaded;
    buffers.live.push_back(*loaded);
    tensor.storage = std::move(*loaded);
  }
  if (check) {
    if (llvm::Error err = src.archive->verify(*entry))
      return std::move(err);
    src.verified.insert(entry);
  }
  return tensor;
}

llvm::Expected<Tensor> readKey(OpenSource &src, llvm::StringRef key, SourceBuffers &buffers) {
  if (src.dcp)
    return src.dcp->read(key);
  if (src.universal) {
    auto [name, stateText] = key.split('#');
    std::optional<UniversalState> state = stateOfKey(stateText);
    if (!state)
      return fileError(src.path, "'" + key + "': no optimizer state '" + stateText + "'");
    return src.universal->read(name, *state);
  }
  auto found = src.tensors.find(key);
  if (found == src.tensors.end())
    return fileError(src.path, "no tensor '" + key + "'");
  if (src.file)
    return readFileTensor(src, found->second, buffers);
  return found->second;
}

/// Copies `src` (any view) into the row-major tensor at `dst` of shape `dstShape`, at
/// `offsets`: the innermost dimension moves as one memcpy when both sides are dense there.
void copyInto(const Tensor &src, uint8_t *dst, llvm::ArrayRef<int64_t> dstShape,
              llvm::ArrayRef<int64_t> offsets) {
  const unsigned es = dtypeSize(src.dtype);
  const size_t rank = src.shape.size();
  const uint8_t *base = src.storage->bytes().data();
  if (rank == 0) {
    std::memcpy(dst, base + src.offset * es, es);
    return;
  }
  if (src.numel() == 0)
    return;
  llvm::SmallVector<int64_t, 4> dstStrides = contiguousStrides(dstShape);
  const int64_t inner = src.shape[rank - 1];
  const bool dense = src.strides[rank - 1] == 1;
  llvm::SmallVector<int64_t, 4> index(rank - 1, 0);
  for (;;) {
    int64_t s = src.offset, d = offsets[rank - 1];
    for (size_t i = 0; i + 1 < rank; ++i) {
      s += index[i] * src.strides[i];
      d += (offsets[i] + index[i]) * dstStrides[i];
    }
    if (dense) {
      std::memcpy(dst + d * es, base + s * es, inner * es);
    } else {
      for (int64_t j = 0; j < inner; ++j)
        std::memcpy(dst + (d + j) * es, base + (s + j * src.strides[rank - 1]) * es, es);
    }
    size_t i = rank - 1;
    while (i > 0 && ++index[i - 1] == src.shape[i - 1])
      index[--i] = 0;
    if (i == 0)
      return;
  }
}

Tensor owned(DType dtype, llvm::ArrayRef<int64_t> shape, std::vector<uint8_t> bytes) {
  return Tensor::contiguous(dtype, shape, std::make_shared<Storage>(std::move(bytes)));
}

/// Element-wise conversion with round-to-nearest-even, as torch's .to() does
/// (floating-point dtypes only, as the ckpt dialect's cast is).
Tensor cast(const Tensor &in, DType to) {
  std::vector<uint8_t> src = in.toBytes();
  const unsigned inSize = dtypeSize(in.dtype), outSize = dtypeSize(to);
  std::vector<uint8_t> out(in.numel() * outSize);
  for (uint64_t i = 0; i < in.numel(); ++i) {
    uint64_t raw = 0;
    std::memcpy(&raw, src.data() + i * inSize, inSize);
    llvm::APFloat value(*floatSemantics(in.dtype), llvm::APInt(inSize * 8, raw));
    bool lost = false;
    value.convert(*floatSemantics(to), llvm::APFloat::rmNearestTiesToEven, &lost);
    uint64_t bits = value.bitcastToAPInt().getZExtValue();
    std::memcpy(out.data() + i * outSize, &bits, outSize);
  }
  return owned(to, in.shape, std::move(out));
}

/// An output file being assembled.
struct PendingOutput {
  ckptir::OutputOp op;
  std::string path;
  bool skip = false;
  /// Skipped because another rank of an MPI job writes it (not kept from an
  /// earlier run).
  bool elsewhere = false;
  /// The output's tensors as writes fill them: a tensor written whole from a value
  /// that is exactly its own storage is kept as that value (no copy); others are
  /// assembled in a buffer the writes tile exactly (the verifier checks that).
  llvm::StringMap<Tensor> buffers;
  /// torch, torch-tree and safetensors outputs are streamed: the pickle or header goes
  /// out when the output starts and each tensor's bytes as soon as writes complete
  /// it, so a file's tensors are never all held at once.
  std::unique_ptr<TorchZipStream> stream;
  std::unique_ptr<SafetensorsStream> safetensors;
  std::unique_ptr<UniversalStream> universal;
  std::unique_ptr<DcpWriter> dcp;
  /// A universal output written by every rank of an MPI job (RunOptions::mpi).
  bool parallel = false;
  unsigned dcpRanks = 1;
  /// DCP tensors whose rows are declared one by one (as dcpRowKey(name, row), or a row
  /// key of a row key): name -> the sizes of its stacked leading axes. Megatron's
  /// torch_dist stacks a parameter of every layer so ([layers]), and a routed
  /// expert's of every layer and expert ([layers, experts]).
  llvm::StringMap<llvm::SmallVector<int64_t, 2>> dcpStacked;
  std::optional<int64_t> universalStep;
  llvm::StringSet<> withStates; ///< universal parameters given optimizer states
  bool streamed() const { return stream || safetensors || universal || dcp; }
  llvm::StringMap<std::shared_ptr<const Storage>> placeholders;
  llvm::StringMap<uint64_t> filled; ///< elements written so far, by key
};

llvm::Expected<llvm::json::Object> parseMeta(PendingOutput &out) {
  auto parsed = llvm::json::parse(out.op.getMeta().empty() ? "{}" : out.op.getMeta());
  if (!parsed)
    return fileError(out.path, "meta is not JSON: " + llvm::toString(parsed.takeError()));
  if (!parsed->getAsObject())
    return fileError(out.path, "meta is not a JSON object");
  return std::move(*parsed->getAsObject());
}

/// Builds the object tree a "torch-tree" output's skeleton describes (see
/// docs/reshard.md): JSON scalars, arrays as lists, objects as dicts with sorted keys,
/// and the markers {"$tensor": key}, {"$size": [...]}, {"$dict": [[k, v], ...]},
/// {"$odict": [[k, v], ...]} (keys built like values: str, int, tuple; in order),
/// {"$object": "module.Name", "state": {...}} (an object built by NEWOBJ + BUILD),
/// {"$tuple": [...]}, {"$global": "torch.bfloat16"} (a torch dtype, which torch
/// pickles as the module-level name; Megatron's distrib_optim.pt keys its buffers by
/// a tuple of two), and {"$float": x} (a float JSON would print as an integer).
llvm::Expected<ValuePtr> buildTree(const llvm::json::Value &v,
                                  const llvm::StringMap<const Tensor *> &tensors,
                                  const std::string &file) {
  if (v.getAsNull())
    return Value::make(NoneValue{});
  if (auto b = v.getAsBoolean())
    return Value::make(*b);
  if (auto i = v.getAsInteger())
    return Value::make(int64_t(*i));
  if (auto d = v.getAsNumber())
    return Value::make(*d);
  if (auto str = v.getAsString())
    return Value::make(str->str());
  // The items of a list or tuple.
  auto build = [&](const llvm::json::Array &array) -> llvm::Expected<std::vector<ValuePtr>> {
    std::vector<ValuePtr> items;
    for (const llvm::json::Value &item : array) {
      auto child = buildTree(item, tensors, file);
      if (!child)
        return child.takeError();
      items.push_back(std::move(*child));
    }
    return items;
  };
  if (auto *array = v.getAsArray()) {
    auto items = build(*array);
    if (!items)
      return items.takeError();
    return Value::make(ListValue{std::move(*items)});
  }
  const llvm::json::Object &o = *v.getAsObject();
  if (auto key = o.getString("$tensor")) {
    auto found = tensors.find(*key);
    if (found == tensors.end())
      return fileError(file, "the skeleton names '" + *key + "', which the output does not declare");
    return Value::make(TensorValue{*found->second});
  }
  if (auto x = o.getNumber("$float"))
    return Value::make(*x);
  if (auto global = o.getString("$global")) {
    // Only what checkpoints need: a written pickle names no callable.
    auto [module, name] = global->rsplit('.');
    if (module != "torch" || !dtypeFromTorchName(name))
      return fileError(file, "the skeleton's $global '" + *global + "' is not a torch dtype");
    return Value::make(GlobalValue{module.str(), name.str()});
  }
  if (auto *array = o.getArray("$tuple")) {
    auto items = build(*array);
    if (!items)
      return items.takeError();
    return Value::make(TupleValue{std::move(*items)});
  }
  if (auto *dims = o.getArray("$size")) {
    TupleValue size;
    size.torchSize = true;
    for (const llvm::json::Value &d : *dims)
      size.items.push_back(Value::make(int64_t(d.getAsInteger().value_or(0))));
    return Value::make(std::move(size));
  }
  if (auto type = o.getString("$object")) {
    auto [module, name] = type->rsplit('.');
    ObjectValue object;
    object.type = {module.str(), name.str()};
    object.newObj = true;
    object.args = Value::make(TupleValue{});
    if (const llvm::json::Value *state = o.get("state")) {
      auto built = buildTree(*state, tensors, file);
      if (!built)
        return built.takeError();
      object.state = std::move(*built);
    }
    return Value::make(std::move(object));
  }
  DictValue dict;
  const llvm::json::Array *pairs = o.getArray("$dict");
  if (!pairs && (pairs = o.getArray("$odict")))
    dict.ordered = true;
  auto add = [&](ValuePtr key, const llvm::json::Value &value) -> llvm::Error {
    auto built = buildTree(value, tensors, file);
    if (!built)
      return built.takeError();
    dict.entries.emplace_back(std::move(key), std::move(*built));
    return llvm::Error::success();
  };
  if (pairs) {
    for (const llvm::json::Value &pair : *pairs) {
      const llvm::json::Array *kv = pair.getAsArray();
      if (!kv || kv->size() != 2)
        return fileError(file, "a skeleton dict entry is not a [key, value] pair");
      auto key = buildTree((*kv)[0], tensors, file);
      if (!key)
        return key.takeError();
      if (llvm::Error err = add(std::move(*key), (*kv)[1]))
        return std::move(err);
    }
  } else {
    std::vector<std::string> keys;
    for (const auto &kv : o)
      keys.push_back(kv.first.str());
    llvm::sort(keys);
    for (const std::string &k : keys)
      if (llvm::Error err = add(Value::make(k), *o.get(k)))
        return std::move(err);
  }
  return Value::make(std::move(dict));
}

/// The dataset a universal output's key names: "name" is the parameter,
/// "name#fp32" / "#exp_avg" / "#exp_avg_sq" its optimizer states.
llvm::Expected<std::pair<llvm::StringRef, UniversalState>> universalDataset(PendingOutput &out,
                                                                           llvm::StringRef key) {
  auto [name, stateText] = key.split('#');
  std::optional<UniversalState> state = stateOfKey(stateText);
  if (!state)
    return fileError(out.path, "unknown optimizer state '" + stateText + "'");
  if (*state != UniversalState::Param)
    out.withStates.insert(name);
  return std::pair{name, *state};
}

llvm::Error universalWrite(PendingOutput &out, llvm::StringRef key, const Tensor &tensor) {
  auto dataset = universalDataset(out, key);
  if (!dataset)
    return dataset.takeError();
  return out.universal->write(dataset->first, dataset->second, tensor);
}

/// A complete tensor of a streamed DCP output: its row blocks, one per rank's file. A
/// row of a stacked tensor goes in at its row, its blocks with a leading axis of one
/// per stacked axis.
llvm::Error dcpWrite(PendingOutput &out, llvm::StringRef key, const Tensor &tensor) {
  auto rowKey = parseDcpRowKey(key);
  auto stacked = rowKey ? out.dcpStacked.find(rowKey->first) : out.dcpStacked.end();
  if (stacked != out.dcpStacked.end() && stacked->second.size() != rowKey->second.size())
    return fileError(out.path, "'" + key + "' names " + llvm::Twine(rowKey->second.size()) +
                                   " stacked axes of '" + rowKey->first + "', which has " +
                                   llvm::Twine(stacked->second.size()));
  for (DcpShard shard : dcpRowShards({{key.str(), tensor}}, out.dcpRanks)) {
    if (stacked != out.dcpStacked.end()) {
      size_t lead = stacked->second.size();
      shard.fqn = rowKey->first.str();
      shard.fullShape.insert(shard.fullShape.begin(), stacked->second.begin(),
                             stacked->second.end());
      shard.offsets.insert(shard.offsets.begin(), rowKey->second.begin(), rowKey->second.end());
      shard.chunk.shape.insert(shard.chunk.shape.begin(), lead, 1);
      shard.chunk.strides.insert(shard.chunk.strides.begin(), lead, 0);
    }
    if (auto err = out.dcp->append(shard))
      return err;
  }
  return llvm::Error::success();
}

/// Hands a complete tensor of a streamed output to its format's writer.
llvm::Error writeComplete(PendingOutput &out, llvm::StringRef key, const Tensor &tensor) {
  if (out.dcp)
    return dcpWrite(out, key, tensor);
  if (out.universal)
    return universalWrite(out, key, tensor);
  if (out.safetensors)
    return out.safetensors->writeTensor(key, tensor.contiguousBytes());
  return out.stream->writeStorage(out.placeholders.lookup(key).get(), tensor.contiguousBytes());
}

/// What a DCP output's meta adds to its tensors: "scalars", [[key, "float32", x]] (an
/// optimizer's 0-dim step tensors), and "bytes", [[key, skeleton]] (its settings,
/// built as buildTree builds a skeleton without tensors).
llvm::Error writeDcpExtras(PendingOutput &out, const llvm::json::Object &meta) {
  if (const llvm::json::Array *scalars = meta.getArray("scalars"))
    for (const llvm::json::Value &entry : *scalars) {
      const llvm::json::Array *item = entry.getAsArray();
      std::optional<llvm::StringRef> key = item && item->size() == 3 ? (*item)[0].getAsString() : std::nullopt;
      std::optional<double> x = key ? (*item)[2].getAsNumber() : std::nullopt;
      if (!x || (*item)[1].getAsString() != llvm::StringRef("float32"))
        return fileError(out.path, "a DCP scalar is not [key, \"float32\", number]");
      float value = float(*x);
      std::vector<uint8_t> bytes(sizeof value);
      std::memcpy(bytes.data(), &value, sizeof value);
      Tensor t = Tensor::contiguous(DType::Float32, {}, std::make_shared<Storage>(std::move(bytes)));
      if (auto err = out.dcp->append({key->str(), {}, {}, t, 0}))
        return err;
    }
  if (const llvm::json::Array *bytes = meta.getArray("bytes"))
    for (const llvm::json::Value &entry : *bytes) {
      const llvm::json::Array *item = entry.getAsArray();
      std::optional<llvm::StringRef> key = item && item->size() == 2 ? (*item)[0].getAsString() : std::nullopt;
      if (!key)
        return fileError(out.path, "a DCP bytes entry is not [key, skeleton]");
      auto value = buildTree((*item)[1], {}, out.path);
      if (!value)
        return value.takeError();
      if (auto err = out.dcp->appendBytes(*key, **value))
        return err;
    }
  return llvm::Error::success();
}

/// Opens a streamed output: a DCP folder, a universal file with its metadata, the safetensors
/// header, or the pickle of a torch or torch-tree file with placeholder storages
/// standing for the declared tensors. A torch or safetensors file, once written,
/// is made durable and renamed by `commits` while the run goes on.
llvm::Error startStream(PendingOutput &out, DeferredCommits &commits) {
  std::vector<NamedTensor> tensors;
  llvm::DenseMap<const Storage *, uint64_t> sizes;
  for (auto decl : out.op.getBodyBlock()->getOps<ckptir::TensorOp>()) {
    auto type = mlir::cast<RankedTensorType>(decl.getType());
    DType dtype = *ckptir::dtypeOf(type.getElementType());
    auto placeholder = std::make_shared<Storage>(std::vector<uint8_t>());
    sizes[placeholder.get()] = type.getNumElements() * dtypeSize(dtype);
    out.placeholders[decl.getKey()] = placeholder;
    tensors.push_back({decl.getKey().str(), Tensor::contiguous(dtype, type.getShape(), placeholder)});
  }
  if (out.op.getFormat() == "universal") {
    auto meta = parseMeta(out);
    if (!meta)
      return meta.takeError();
    UniversalMetadata m;
    m.sourceFormat = meta->getString("source_format").value_or("").str();
    m.iteration = meta->getInteger("iteration").value_or(0);
    m.modelConfig = meta->getString("model_config").value_or("{}").str();
    m.sourceLayout = meta->getString("source_layout").value_or("{}").str();
    out.universalStep = meta->getInteger("step");
    // An MPI job declares every dataset up front: the ranks create them together.
    std::vector<UniversalDataset> declared;
    if (out.parallel)
      for (const NamedTensor &t : tensors) {
        auto dataset = universalDataset(out, t.name);
        if (!dataset)
          return dataset.takeError();
        declared.push_back({dataset->first.str(), dataset->second, t.tensor.dtype, t.tensor.shape});
      }
    auto stream = out.parallel ? UniversalStream::createParallel(out.path, m, declared)
                               : UniversalStream::create(out.path, m);
    if (!stream)
      return stream.takeError();
    out.universal = std::move(*stream);
  } else if (out.op.getFormat() == "dcp") {
    auto meta = parseMeta(out);
    if (!meta)
      return meta.takeError();
    int64_t ranks = meta->getInteger("ranks").value_or(1);
    if (ranks < 1 || ranks > 65536)
      return fileError(out.path, "a DCP output needs ranks from 1 to 65536 in its meta");
    out.dcpRanks = unsigned(ranks);
    if (const llvm::json::Object *stacked = meta->getObject("stacked"))
      for (const auto &[name, axes] : *stacked) {
        llvm::SmallVector<int64_t, 2> sizes;
        if (const llvm::json::Array *array = axes.getAsArray())
          for (const llvm::json::Value &size : *array)
            sizes.push_back(size.getAsInteger().value_or(0));
        if (sizes.empty() || llvm::any_of(sizes, [](int64_t n) { return n < 1; }))
          return fileError(out.path, "a DCP output's stacked '" + name.str() +
                                         "' has no row counts (an array of its stacked "
                                         "axes' sizes)");
        out.dcpStacked[name.str()] = std::move(sizes);
      }
    auto writer = DcpWriter::create(out.path);
    if (!writer)
      return writer.takeError();
    out.dcp = std::move(*writer);
    if (std::optional<llvm::StringRef> config = meta->getString("config"))
      if (llvm::Error err = out.dcp->addFile("config.json", *config))
        return err;
    if (auto err = writeDcpExtras(out, *meta))
      return err;
  } else if (out.op.getFormat() == "safetensors") {
    auto stream = SafetensorsStream::create(out.path, tensors, &commits);
    if (!stream)
      return stream.takeError();
    out.safetensors = std::move(*stream);
  } else {
    ValuePtr root;
    if (out.op.getFormat() == "torch") {
      root = makeStateDict(tensors);
    } else {
      llvm::StringMap<const Tensor *> byKey;
      for (const NamedTensor &t : tensors)
        byKey[t.name] = &t.tensor;
      auto skeleton = llvm::json::parse(out.op.getMeta());
      if (!skeleton)
        return fileError(out.path,
                         "the skeleton is not JSON: " + llvm::toString(skeleton.takeError()));
      auto built = buildTree(*skeleton, byKey, out.path);
      if (!built)
        return built.takeError();
      root = *built;
    }
    TorchWriteOptions writeOptions;
    writeOptions.commits = &commits;
    auto stream = TorchZipStream::create(out.path, *root, sizes, writeOptions);
    if (!stream)
      return stream.takeError();
    out.stream = std::move(*stream);
  }
  // Empty tensors are complete before any write: their declarations stand for them
  // (a parallel universal file has created them already).
  for (const NamedTensor &t : tensors)
    if (t.tensor.numel() == 0 && !out.parallel)
      if (auto err = writeComplete(out, t.name, t.tensor))
        return err;
  return llvm::Error::success();
}

/// A complete tensor being written on a second thread while the main thread reads
/// and assembles the next: the write's copy into the page cache and its CRC then
/// overlap the reads' (two cores). One tensor at a time, in program order; the main
/// thread calls no writer until wait() has returned, and only it touches the
/// tensor's buffer (a BufferPool is not shared between threads).
class BackgroundWrite {
public:
  BackgroundWrite() = default;
  BackgroundWrite(const BackgroundWrite &) = delete;
  BackgroundWrite &operator=(const BackgroundWrite &) = delete;
  ~BackgroundWrite() { llvm::consumeError(wait()); }

  /// Waits for the write in flight, if any, and gives its error.
  llvm::Error wait() {
    if (!worker.joinable())
      return llvm::Error::success();
    worker.join();
    tensor.storage->dropResidentPages();
    tensor = Tensor();
    return std::move(result);
  }

  /// Starts `write` of `t` (after wait()).
  void start(std::function<llvm::Error(const Tensor &)> write, Tensor t) {
    assert(!worker.joinable() && "one write in flight at a time");
    tensor = std::move(t);
    worker = std::thread([this, write = std::move(write)] { result = write(tensor); });
  }

  /// Bytes of the tensor in flight (they count against --max-memory).
  uint64_t bytesInFlight() const { return worker.joinable() ? tensor.nbytes() : 0; }

private:
  std::thread worker;
  Tensor tensor;
  llvm::Error result = llvm::Error::success();
};

/// Writes the record of a streamed output's tensor that writes have just completed,
/// and lets its bytes go: a torch or safetensors record in the background (their
/// writers share nothing with the rest of the run) when its bytes `fit` in
/// --max-memory, others here.
llvm::Error streamTensor(PendingOutput &out, llvm::StringRef key, RunStats &stats,
                         BackgroundWrite &background,
                         const std::function<bool(uint64_t)> &fits) {
  auto found = out.buffers.find(key);
  Tensor tensor = std::move(found->second);
  out.buffers.erase(found);
  stats.bytesWritten += tensor.nbytes();
  ++stats.tensors;
  if (llvm::Error err = background.wait())
    return err;
  if ((out.stream || out.safetensors) && fits(tensor.nbytes())) {
    background.start(
        [&out, key = key.str()](const Tensor &t) { return writeComplete(out, key, t); },
        std::move(tensor));
    return llvm::Error::success();
  }
  if (auto err = writeComplete(out, key, tensor))
    return err;
  tensor.storage->dropResidentPages();
  return llvm::Error::success();
}

/// How many files a finished output is on disk: a DCP output is .metadata, a
/// .distcp file per rank that holds chunks and the model's config.json (in a folder
/// other outputs may share, as torch_dist's common.pt does), the others one file each.
uint64_t filesOf(PendingOutput &out) {
  if (out.op.getFormat() != "dcp")
    return 1;
  uint64_t files = 0;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(out.path, ec), end; it != end && !ec; it.increment(ec)) {
    llvm::StringRef name = llvm::sys::path::filename(it->path());
    files += name == ".metadata" || name.ends_with(".distcp") || name == "config.json";
  }
  return files;
}

/// Finishes a committed output: a streamed one, or writes a text file.
llvm::Error writeOutput(PendingOutput &out, RunStats &stats) {
  if (out.universal) {
    // In name order: in an MPI job every rank must make the same calls in turn.
    std::vector<llvm::StringRef> names;
    for (const auto &name : out.withStates)
      names.push_back(name.getKey());
    llvm::sort(names);
    if (out.universalStep)
      for (llvm::StringRef name : names)
        if (auto err = out.universal->setStep(name, *out.universalStep))
          return err;
    return out.universal->finish();
  }
  if (out.dcp)
    return out.dcp->finish();
  if (out.safetensors)
    return out.safetensors->finish();
  if (out.stream)
    return out.stream->finish();
  if (out.op.getFormat() != "text")
    return fileError(out.path, "no writer for output format '" + out.op.getFormat() + "'");
  auto file = OutputFile::create(out.path);
  if (!file)
    return file.takeError();
  (*file)->os() << out.op.getMeta();
  stats.bytesWritten += out.op.getMeta().size();
  return (*file)->commit();
}

/// Removes the temporaries a killed run leaves ("<name>.tmp-XXXXXX", see OutputFile,
/// and DcpWriter's staging folders "<name>.loom-tmp-<pid>") under `dir`, or only
/// those of `only` when given.
void removeStaleTemps(const std::string &dir, llvm::StringRef only = "") {
  std::vector<std::string> stale, staging;
  auto consider = [&](const std::string &path) {
    llvm::StringRef name = llvm::sys::path::filename(path);
    size_t at = name.rfind(".tmp-");
    if (at != llvm::StringRef::npos && name.size() - at == 11 &&
        (only.empty() || name.take_front(at) == only))
      stale.push_back(path);
    auto [base, pid] = name.rsplit(".loom-tmp-");
    bool digits = !pid.empty() && llvm::all_of(pid, [](char c) { return c >= '0' && c <= '9'; });
    if (only.empty() && digits && base.size() < name.size() && llvm::sys::fs::is_directory(path))
      staging.push_back(path);
  };
  std::error_code ec;
  if (only.empty()) {
    for (llvm::sys::fs::recursive_directory_iterator it(dir, ec), end; it != end && !ec;
         it.increment(ec))
      consider(it->path());
  } else {
    for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
      consider(it->path());
  }
  for (const std::string &path : stale)
    llvm::sys::fs::remove(path);
  for (const std::string &path : staging)
    llvm::sys::fs::remove_directories(path);
}

std::string join(llvm::StringRef root, llvm::StringRef path) {
  return path == "." ? root.str() : (root + "/" + path).str();
}
} // namespace

/// This rank's share of an MPI job's work, as partitionProgram recorded it: the
/// output files it writes, or its tensors of the one universal file.
struct MpiShare {
  bool byOutput = false; ///< whole output files, not a shared file's tensors
  llvm::StringSet<> mine; ///< output symbols, or tensor keys
  bool writes(ckptir::WriteOp write) const {
    return mine.contains(byOutput ? write.getOutput() : write.getKey());
  }
};

/// The folder a directory output is assembled in, as far as a run got with it.
struct PartialRun {
  std::string path; ///< empty for a single-file output
  /// What the ranks have finished in it.
  std::optional<Journal> journal;
  /// It held nothing of an earlier run (see preparePartial); set with `journal`.
  bool fresh = false;
};

/// runProgram, but for what a failure leaves: in `partialRun`.
static llvm::Expected<RunStats> execute(ckptir::ProgramOp program, const RunOptions &options,
                                        PartialRun &partialRun) {
  auto start = std::chrono::steady_clock::now();
  std::string sourceRoot = options.sourceRoot.empty() ? program.getSource().str() : options.sourceRoot;
  std::string outputRoot = options.outputRoot.empty() ? program.getOutput().str() : options.outputRoot;
  mlir::Block *body = program.getBodyBlock();

  auto outputs = body->getOps<ckptir::OutputOp>();
  bool singleFile = writesOneFile(program);
  if (llvm::sys::fs::exists(outputRoot))
    return llvm::make_error<RunError>(outputRoot +
                                          ": already exists; reshard writes a new checkpoint",
                                      "choose another output path, or remove this one");
  std::string partial = singleFile ? outputRoot : outputRoot + ".loom-partial";
  // In an MPI job rank 0 prepares the output folder and renames it into place.
  bool leader = !options.mpi || mpi::rank() == 0;
  std::optional<Journal> &journal = partialRun.journal;
  if (singleFile) {
    llvm::StringRef parent = llvm::sys::path::parent_path(outputRoot);
    removeStaleTemps(parent.empty() ? "." : parent.str(), llvm::sys::path::filename(outputRoot));
  } else {
    partialRun.path = partial;
    bool fresh = false;
    if (leader) {
      if (options.resume && llvm::sys::fs::exists(partial))
        removeStaleTemps(partial);
      if (llvm::sys::fs::exists(partial) && !options.resume)
        return llvm::make_error<RunError>(partial + ": left by an interrupted run",
                                          leftBehind(partial));
      std::vector<std::string> sourcePaths;
      for (auto source : body->getOps<ckptir::SourceOp>())
        sourcePaths.push_back(join(sourceRoot, source.getPath()));
      auto prepared = preparePartial(partial, runFingerprint(program, sourcePaths), options.resume);
      if (!prepared)
        return prepared.takeError();
      fresh = *prepared;
    }
    if (options.mpi) {
      (void)mpi::max(0); // every rank waits for the folder
      if (!llvm::sys::fs::is_directory(partial))
        return fileError(partial, "rank 0 did not create it (on a file system every rank "
                                  "shares?)");
    }
    journal.emplace(partial, options.mpi ? mpi::rank() : 0);
    partialRun.fresh = fresh;
  }

  // Last uses, so that values and sources are released as soon as possible.
  llvm::DenseMap<Operation *, unsigned> position;
  llvm::DenseMap<mlir::Value, unsigned> lastUse;
  llvm::StringMap<unsigned> lastRead;
  uint64_t totalBytes = 0;
  unsigned n = 0;
  for (Operation &op : *body) {
    position[&op] = n;
    for (mlir::Value operand : op.getOperands())
      lastUse[operand] = n;
    if (auto read = mlir::dyn_cast<ckptir::ReadOp>(op))
      lastRead[read.getSource()] = n;
    if (auto output = mlir::dyn_cast<ckptir::OutputOp>(op))
      for (auto decl : output.getBodyBlock()->getOps<ckptir::TensorOp>())
        totalBytes += mlir::cast<RankedTensorType>(decl.getType()).getNumElements() *
                      dtypeSize(*ckptir::dtypeOf(
                          mlir::cast<RankedTensorType>(decl.getType()).getElementType()));
    ++n;
  }

  MpiShare share;
  if (options.mpi) {
    // A script partitioned for another number of ranks is partitioned again.
    if (partitionRanks(program) != mpi::size())
      if (llvm::Error err = partitionProgram(program, mpi::size()))
        return fileError(outputRoot, "--mpi: " + llvm::toString(std::move(err)));
    int rank = mpi::rank();
    share.byOutput = !singleFile;
    for (ckptir::OutputOp output : outputs) {
      if (share.byOutput && partitionRankOf(output) == rank)
        share.mine.insert(output.getSymName());
      for (auto decl : output.getBodyBlock()->getOps<ckptir::TensorOp>())
        if (!share.byOutput && partitionRankOf(decl) == rank)
          share.mine.insert(decl.getKey());
    }
  }
  // Whether `op`'s result reaches a write this run makes (not of a skipped output,
  // and this rank's own tensor in an MPI job); memoised.
  llvm::DenseMap<Operation *, bool> feedsWrite;
  // Finished files' fsync and rename, overlapping the next file's writing; a run
  // that fails discards what it had not yet renamed. Each file in place is
  // journaled, for --resume.
  DeferredCommits commits([&](const std::string &path) {
    return journal ? journal->finished(path) : llvm::Error::success();
  });
  llvm::StringMap<PendingOutput> pending;
  // Declared after `pending`, so that a run that fails joins its write before the
  // outputs go.
  BackgroundWrite background;
  std::function<bool(Operation *)> needed = [&](Operation *op) -> bool {
    if (auto write = mlir::dyn_cast<ckptir::WriteOp>(op))
      return !pending[write.getOutput()].skip && (!options.mpi || share.writes(write));
    auto [it, fresh] = feedsWrite.try_emplace(op, false);
    if (!fresh)
      return it->second;
    bool any = op->getUsers().empty();
    for (Operation *user : op->getUsers())
      any = any || needed(user);
    return feedsWrite[op] = any;
  };

  RunStats stats;
  // Mapped source storages whose pages this process holds, least recently used
  // first. A read or a write touches its tensor's storage; past the limit the
  // oldest others give their pages back.
  std::list<const Storage *> residentOrder;
  llvm::DenseMap<const Storage *, std::list<const Storage *>::iterator> residentAt;
  uint64_t residentBytes = 0;
  auto release = [&](const Storage *storage) {
    auto found = residentAt.find(storage);
    if (found == residentAt.end())
      return;
    residentBytes -= storage->bytes().size();
    residentOrder.erase(found->second);
    residentAt.erase(found);
  };
  // Where outputs' tensors are assembled, and torch sources' storages loaded: a
  // written tensor's buffer serves the next.
  BufferPool assembly;
  SourceBuffers sourceBuffers{assembly, nullptr, {}};
  sourceBuffers.fits = [&](uint64_t bytes) {
    return residentBytes + sourceBuffers.liveBytes() + background.bytesInFlight() + bytes <=
           options.maxResidentSourceBytes;
  };
  // After a read or write has used `t`: its storage becomes the most recent;
  // while over the limit (loaded storages and the tensor being written count too)
  // the oldest give their pages back, and then `t`'s own storage if it alone is over (a ZeRO flat partition
  // feeding many tensors: the next slice faults in only its own pages).
  auto touched = [&](const Tensor &t) {
    const Storage *storage = t.storage.get();
    if (!storage || !storage->isFileMapped()) {
      stats.peakResidentSourceBytes = std::max(stats.peakResidentSourceBytes,
                                               residentBytes + sourceBuffers.liveBytes());
      return;
    }
    if (auto found = residentAt.find(storage); found != residentAt.end()) {
      residentOrder.splice(residentOrder.end(), residentOrder, found->second);
    } else {
      residentAt[storage] = residentOrder.insert(residentOrder.end(), storage);
      residentBytes += storage->bytes().size();
    }
    uint64_t loadedBytes = sourceBuffers.liveBytes();
    while (!residentOrder.empty() && residentBytes + loadedBytes + background.bytesInFlight() >
                                         options.maxResidentSourceBytes) {
      const Storage *oldest = residentOrder.front();
      oldest->dropResidentPages();
      release(oldest);
      ++stats.sourceEvictions;
    }
    stats.peakResidentSourceBytes =
        std::max(stats.peakResidentSourceBytes, residentBytes + loadedBytes);
  };
  llvm::StringMap<ckptir::SourceOp> sourceOps;
  llvm::StringMap<std::unique_ptr<OpenSource>> open;
  llvm::DenseMap<mlir::Value, Tensor> values;
  uint64_t doneBytes = 0;
  for (Operation &op : *body) {
    unsigned here = position[&op];
    auto at = [&](const llvm::Twine &message) { return fileError(sourceRoot, message); };
    (void)at;
    if (auto src = mlir::dyn_cast<ckptir::SourceOp>(op)) {
      sourceOps[src.getSymName()] = src;
    } else if (auto output = mlir::dyn_cast<ckptir::OutputOp>(op)) {
      PendingOutput &out = pending[output.getSymName()];
      out.op = output;
      out.path = join(partial, output.getPath());
      out.elsewhere = share.byOutput && !share.mine.contains(output.getSymName());
      out.skip = out.elsewhere || (options.resume && journal && journal->kept(output.getPath()));
      out.parallel = options.mpi && !share.byOutput;
      // What an earlier run left there unfinished, or changed since, is written again.
      if (!out.skip && options.resume && journal && llvm::sys::fs::exists(out.path))
        if (std::error_code ec = llvm::sys::fs::is_directory(out.path)
                                     ? llvm::sys::fs::remove_directories(out.path)
                                     : llvm::sys::fs::remove(out.path))
          return fileError(out.path, "cannot remove what an earlier run left: " + ec.message());
      llvm::StringRef parent = llvm::sys::path::parent_path(out.path);
      if (!out.skip && !parent.empty())
        if (std::error_code ec = llvm::sys::fs::create_directories(parent))
          return fileError(out.path, "cannot create its folder: " + ec.message());
      if (!out.skip && (output.getFormat() == "torch" || output.getFormat() == "torch-tree" ||
                        output.getFormat() == "safetensors" || output.getFormat() == "universal" ||
                        output.getFormat() == "dcp")) {
        if (llvm::Error err = background.wait())
          return std::move(err);
        if (llvm::Error err = startStream(out, commits))
          return std::move(err);
      }
    } else if (auto read = mlir::dyn_cast<ckptir::ReadOp>(op)) {
      // Reads that only feed skipped outputs (or other ranks' tensors) are not done.
      if (needed(read)) {
        llvm::StringRef sym = read.getSource();
        auto &source = open[sym];
        if (!source) {
          ckptir::SourceOp decl = sourceOps.lookup(sym);
          auto opened = openSource(join(sourceRoot, decl.getPath()), decl.getFormat());
          if (!opened)
            return opened.takeError();
          source = std::move(*opened);
        }
        auto tensor = readKey(*source, read.getKey(), sourceBuffers);
        if (!tensor)
          return tensor.takeError();
        auto type = read.getType();
        DType want = *ckptir::dtypeOf(type.getElementType());
        if (tensor->dtype != want || llvm::ArrayRef<int64_t>(tensor->shape) != type.getShape())
          return fileError(source->path, "'" + read.getKey() + "' is " +
                                             typeText(tensor->dtype, tensor->shape) +
                                             ", the program expects " +
                                             typeText(want, type.getShape()) +
                                             " (the checkpoint changed since the program was made)");
        if (auto reason = tensor->checkView())
          return fileError(source->path, "'" + read.getKey() + "': " + *reason);
        stats.bytesRead += tensor->nbytes();
        touched(*tensor);
        values[read.getResult()] = std::move(*tensor);
      }
      if (lastRead[read.getSource()] == here)
        open.erase(read.getSource());
    } else if (auto slice = mlir::dyn_cast<ckptir::SliceOp>(op)) {
      auto in = values.find(slice.getInput());
      if (in != values.end()) {
        Tensor view = in->second;
        for (size_t d = 0; d < view.shape.size(); ++d)
          view.offset += slice.getOffsets()[d] * view.strides[d];
        view.shape.assign(slice.getType().getShape().begin(), slice.getType().getShape().end());
        values[slice.getResult()] = std::move(view);
      }
    } else if (auto reshape = mlir::dyn_cast<ckptir::ReshapeOp>(op)) {
      auto in = values.find(reshape.getInput());
      if (in != values.end()) {
        Tensor t = in->second.isContiguous()
                       ? in->second
                       : owned(in->second.dtype, in->second.shape, in->second.toBytes());
        t.shape.assign(reshape.getType().getShape().begin(), reshape.getType().getShape().end());
        t.strides = contiguousStrides(t.shape);
        values[reshape.getResult()] = std::move(t);
      }
    } else if (auto c = mlir::dyn_cast<ckptir::CastOp>(op)) {
      auto in = values.find(c.getInput());
      if (in != values.end())
        values[c.getResult()] = cast(in->second, *ckptir::dtypeOf(c.getType().getElementType()));
    } else if (auto zeros = mlir::dyn_cast<ckptir::ZerosOp>(op)) {
      auto type = zeros.getType();
      DType dtype = *ckptir::dtypeOf(type.getElementType());
      values[zeros.getResult()] =
          owned(dtype, type.getShape(), std::vector<uint8_t>(type.getNumElements() * dtypeSize(dtype)));
    } else if (auto write = mlir::dyn_cast<ckptir::WriteOp>(op)) {
      PendingOutput &out = pending[write.getOutput()];
      if (needed(write)) {
        auto decl = llvm::find_if(out.op.getBodyBlock()->getOps<ckptir::TensorOp>(),
                                  [&](ckptir::TensorOp t) { return t.getKey() == write.getKey(); });
        auto type = mlir::cast<RankedTensorType>((*decl).getType());
        DType dtype = *ckptir::dtypeOf(type.getElementType());
        const Tensor &input = values.find(write.getInput())->second;
        auto slot = out.buffers.find(write.getKey());
        bool whole = llvm::all_of(write.getOffsets(), [](int64_t o) { return o == 0; }) &&
                     llvm::ArrayRef<int64_t>(input.shape) == type.getShape();
        if (slot == out.buffers.end() && whole && input.isWholeStorage()) {
          out.buffers[write.getKey()] = input;
        } else {
          if (slot == out.buffers.end())
            slot = out.buffers
                       .try_emplace(write.getKey(),
                                    Tensor::contiguous(dtype, type.getShape(),
                                                       assembly.take(type.getNumElements() *
                                                                     dtypeSize(dtype))))
                       .first;
          copyInto(input, slot->second.storage->mutableData(), type.getShape(), write.getOffsets());
        }
        if (out.streamed()) {
          uint64_t &filled = out.filled[write.getKey()];
          filled += input.numel();
          // (Empty tensors went out when the output started.)
          if (filled == uint64_t(type.getNumElements()) && type.getNumElements() > 0)
            if (llvm::Error err = streamTensor(out, write.getKey(), stats, background,
                                                         sourceBuffers.fits))
              return std::move(err);
        }
        touched(input);
      }
    } else if (auto commit = mlir::dyn_cast<ckptir::CommitOp>(op)) {
      PendingOutput &out = pending[commit.getOutput()];
      uint64_t bytes = 0;
      for (auto decl : out.op.getBodyBlock()->getOps<ckptir::TensorOp>()) {
        auto type = mlir::cast<RankedTensorType>(decl.getType());
        bytes += type.getNumElements() * dtypeSize(*ckptir::dtypeOf(type.getElementType()));
      }
      if (llvm::Error err = background.wait())
        return std::move(err);
      if (out.skip) {
        stats.skippedFiles += out.elsewhere ? 0 : filesOf(out);
      } else {
        if (llvm::Error err = writeOutput(out, stats))
          return std::move(err);
        stats.files += filesOf(out);
        // (`commits` journals torch and safetensors files once they are in place.)
        if (journal && !out.stream && !out.safetensors)
          if (llvm::Error err = journal->finished(out.path))
            return std::move(err);
      }
      pending.erase(commit.getOutput());
      doneBytes += bytes;
      if (options.progress)
        options.progress(doneBytes, totalBytes);
    }
    // A value's last use: release it, and the source pages it was read from (they
    // come back from the page cache if another value still views them).
    for (mlir::Value operand : op.getOperands())
      if (lastUse.lookup(operand) == here)
        if (auto found = values.find(operand); found != values.end()) {
          found->second.storage->dropResidentPages();
          release(found->second.storage.get());
          values.erase(found);
        }
  }
  if (llvm::Error err = background.wait())
    return std::move(err);
  if (llvm::Error err = commits.drain())
    return std::move(err);
  if (!singleFile) {
    if (options.mpi)
      (void)mpi::max(0); // every rank's files are complete (a rank that failed ended the job)
    if (leader) {
      if (llvm::Error err = sealPartial(partial))
        return std::move(err);
      if (std::error_code ec = llvm::sys::fs::rename(partial, outputRoot))
        return fileError(outputRoot, "cannot move the finished output into place: " + ec.message());
    }
  }
  stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

char RunError::ID = 0;

llvm::Expected<RunStats> reshard::runProgram(ckptir::ProgramOp program, const RunOptions &options) {
  PartialRun partial;
  llvm::Expected<RunStats> stats = execute(program, options, partial);
  if (stats)
    return stats;
  // A folder that held nothing of an earlier run and got no finished file goes
  // (not in an MPI job, whose other ranks may be finishing theirs).
  if (partial.fresh && !options.mpi && partial.journal->finishedHere() == 0)
    llvm::sys::fs::remove_directories(partial.path);
  std::string hint = leftBehind(partial.path);
  return llvm::handleErrors(stats.takeError(),
                            [&](std::unique_ptr<llvm::ErrorInfoBase> err) -> llvm::Error {
                              if (err->isA<RunError>())
                                return llvm::Error(std::move(err));
                              return llvm::make_error<RunError>(err->message(), hint);
                            });
}
