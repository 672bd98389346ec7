//===- HFCheckpoint.cpp - sharded safetensors / pytorch_model.bin ---------===//
#include "loom/Checkpoint/HFCheckpoint.h"
#include "BoundedJson.h"
#include "loom/Checkpoint/OutputFile.h"
#include "loom/Checkpoint/Safetensors.h"
#include "loom/Checkpoint/TorchZip.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

#include <set>

using namespace loom::ckpt;
using llvm::formatv;

namespace {
/// Index files are a few MB even for the largest models.
constexpr uint64_t kMaxIndexBytes = 64 << 20;
/// Root -> {metadata, weight_map} -> values.
constexpr unsigned kIndexDepth = 3;

struct Layout {
  llvm::StringRef single;
  llvm::StringRef index;
  llvm::StringRef shardStem;
  llvm::StringRef extension;
};

const Layout &layoutOf(HFWeightFormat format) {
  static const Layout safetensors{"model.safetensors", "model.safetensors.index.json", "model",
                                  "safetensors"};
  static const Layout bin{"pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model",
                          "bin"};
  return format == HFWeightFormat::Safetensors ? safetensors : bin;
}

llvm::Expected<std::vector<NamedTensor>> readShard(const std::string &path,
                                                   HFWeightFormat format) {
  if (format == HFWeightFormat::Safetensors) {
    auto file = readSafetensors(path);
    if (!file)
      return file.takeError();
    return std::move(file->tensors);
  }
  auto root = readTorchZip(path, {/*verifyChecksums=*/true, {}, /*releaseChecked=*/true});
  if (!root)
    return root.takeError();
  if (!(*root)->get<DictValue>())
    return fileError(path, "holds a " + describe(**root) + ", not a state dict");
  return collectTensors(**root);
}

bool isPlainFileName(llvm::StringRef name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of("/\\") == llvm::StringRef::npos;
}

/// weight_map (tensor -> shard) from an index file.
llvm::Error readIndex(const std::string &path, HFCheckpoint &out,
                      std::vector<std::pair<std::string, std::string>> &weightMap) {
  auto buffer = mapFile(path);
  if (!buffer)
    return buffer.takeError();
  if ((*buffer)->getBufferSize() > kMaxIndexBytes)
    return fileError(path, formatv("index larger than {0} bytes", kMaxIndexBytes));
  auto json = detail::parseBoundedJson((*buffer)->getBuffer(), kIndexDepth, path);
  if (!json)
    return json.takeError();
  llvm::json::Object *root = json->getAsObject();
  const llvm::json::Object *map = root ? root->getObject("weight_map") : nullptr;
  if (!map)
    return fileError(path, "no \"weight_map\" object");
  if (llvm::json::Object *metadata = root->getObject("metadata"))
    out.indexMetadata = std::move(*metadata);
  for (const auto &[name, shard] : *map) {
    std::optional<llvm::StringRef> file = shard.getAsString();
    if (!file || !isPlainFileName(*file))
      return fileError(path, "weight_map entry '" + name.str() +
                                 "' does not name a file in the checkpoint directory");
    weightMap.emplace_back(name.str(), file->str());
  }
  llvm::sort(weightMap);
  return llvm::Error::success();
}
} // namespace

llvm::Expected<HFCheckpoint> loom::ckpt::readHFCheckpoint(const llvm::Twine &directory) {
  std::string dir = directory.str();
  auto in = [&](llvm::StringRef name) {
    llvm::SmallString<256> path(dir);
    llvm::sys::path::append(path, name);
    return std::string(path);
  };
  HFCheckpoint out;
  std::vector<std::pair<std::string, std::string>> weightMap;
  std::optional<std::string> single;
  for (HFWeightFormat format : {HFWeightFormat::Safetensors, HFWeightFormat::TorchBin}) {
    const Layout &layout = layoutOf(format);
    out.format = format;
    if (llvm::sys::fs::exists(in(layout.index))) {
      if (llvm::Error err = readIndex(in(layout.index), out, weightMap))
        return err;
      break;
    }
    if (llvm::sys::fs::exists(in(layout.single))) {
      single = layout.single.str();
      break;
    }
  }
  if (weightMap.empty() && !single)
    return fileError(dir, "no model.safetensors, pytorch_model.bin or index of either");

  if (single) {
    auto tensors = readShard(in(*single), out.format);
    if (!tensors)
      return tensors.takeError();
    out.tensors = std::move(*tensors);
    llvm::sort(out.tensors, [](const NamedTensor &a, const NamedTensor &b) {
      return a.name < b.name;
    });
    out.shardOf.assign(out.tensors.size(), *single);
    return out;
  }

  // Read each shard once and check it holds exactly what the index places in it.
  llvm::StringMap<NamedTensor> found;
  std::set<std::string> shards;
  for (const auto &[name, shard] : weightMap)
    shards.insert(shard);
  for (const std::string &shard : shards) {
    auto tensors = readShard(in(shard), out.format);
    if (!tensors)
      return tensors.takeError();
    for (NamedTensor &named : *tensors) {
      auto it = llvm::lower_bound(weightMap, std::make_pair(named.name, std::string()));
      if (it == weightMap.end() || it->first != named.name)
        return fileError(in(shard), "tensor '" + named.name + "' is not in the index");
      if (it->second != shard)
        return fileError(in(shard), "tensor '" + named.name + "' is indexed in shard " +
                                        it->second);
      std::string name = named.name;
      if (!found.try_emplace(name, std::move(named)).second)
        return fileError(in(shard), "tensor '" + name + "' appears twice");
    }
  }
  for (const auto &[name, shard] : weightMap) {
    auto it = found.find(name);
    if (it == found.end())
      return fileError(in(shard), "lacks tensor '" + name + "' that the index places there");
    out.tensors.push_back(std::move(it->second));
    out.shardOf.push_back(shard);
  }
  return out;
}

llvm::Error loom::ckpt::writeHFCheckpoint(const llvm::Twine &directory,
                                          llvm::ArrayRef<NamedTensor> tensors,
                                          HFWeightFormat format, uint64_t maxShardBytes) {
  std::string dir = directory.str();
  if (std::error_code ec = llvm::sys::fs::create_directories(dir))
    return fileError(dir, "cannot create directory: " + ec.message());
  const Layout &layout = layoutOf(format);

  // Greedy packing in the given order, as transformers' shard_checkpoint does.
  std::vector<std::vector<NamedTensor>> shards;
  uint64_t shardBytes = 0, totalBytes = 0;
  for (const NamedTensor &named : tensors) {
    uint64_t bytes = named.tensor.nbytes();
    if (shards.empty() || (shardBytes + bytes > maxShardBytes && shardBytes > 0)) {
      shards.emplace_back();
      shardBytes = 0;
    }
    shards.back().push_back(named);
    shardBytes += bytes;
    totalBytes += bytes;
  }
  if (shards.empty())
    shards.emplace_back();

  llvm::SmallString<256> path;
  auto in = [&](llvm::StringRef name) -> const llvm::SmallString<256> & {
    path = dir;
    llvm::sys::path::append(path, name);
    return path;
  };
  std::vector<std::pair<std::string, std::string>> weightMap;
  for (size_t i = 0; i < shards.size(); ++i) {
    std::string name = shards.size() == 1
                           ? layout.single.str()
                           : formatv("{0}-{1:d5}-of-{2:d5}.{3}", layout.shardStem, i + 1,
                                     shards.size(), layout.extension)
                                 .str();
    for (const NamedTensor &named : shards[i])
      weightMap.emplace_back(named.name, name);
    llvm::Error err = format == HFWeightFormat::Safetensors
                          ? writeSafetensors(in(name), shards[i], {{"format", "pt"}})
                          : writeTorchZip(in(name), *makeStateDict(shards[i]));
    if (err)
      return err;
  }
  if (shards.size() == 1)
    return llvm::Error::success();

  auto index = OutputFile::create(in(layout.index));
  if (!index)
    return index.takeError();
  llvm::json::OStream json((*index)->os(), 2);
  json.object([&] {
    json.attributeObject("metadata", [&] { json.attribute("total_size", totalBytes); });
    json.attributeObject("weight_map", [&] {
      for (const auto &[name, shard] : weightMap)
        json.attribute(name, shard);
    });
  });
  return (*index)->commit();
}
