//===- Inspect.cpp - `loom inspect` and `loom verify-ckpt` ----------------===//
//
// Both commands open a checkpoint of any format loom reads, detected from what is on
// disk rather than from a flag: a user pointing at a directory should not need to know
// which trainer wrote it. inspect lists; verify-ckpt reads everything the way a
// conversion would (CRCs, checksums, shard completeness, shape agreement across
// shards) and fails on the first problem with its one-line error.
//
//===----------------------------------------------------------------------===//
#include "Driver.h"

#include "loom/Checkpoint/Dcp.h"
#include "loom/Checkpoint/HFCheckpoint.h"
#include "loom/Checkpoint/Megatron.h"
#include "loom/Checkpoint/Safetensors.h"
#include "loom/Checkpoint/TorchZip.h"
#include "loom/Checkpoint/Universal.h"
#include "loom/Reshard/Layout.h"
#include "loom/Support/Table.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

using namespace loom;
using namespace loom::cli;
using namespace loom::ckpt;

namespace {
struct TensorRow {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t bytes;
};

/// What both commands learn from opening a checkpoint.
struct Summary {
  std::string format;
  nlohmann::json layout = nlohmann::json::object();
  std::vector<TensorRow> tensors;
  /// The format keeps no checksums of the values (safetensors): verifying checks
  /// the structure and reads every byte, and cannot tell a changed value.
  bool noChecksums = false;
  /// Copies a Megatron checkpoint should hold equal and does not.
  std::vector<DivergentReplica> divergentReplicas;
};

enum class Format { TorchZip, Safetensors, HFDir, Megatron, MegatronDist, Universal, DCP, DeepSpeed };

bool hasPrefix(const std::string &path, llvm::StringRef magic) {
  auto buffer = llvm::MemoryBuffer::getFileSlice(path, magic.size(), 0);
  return buffer && (*buffer)->getBuffer() == magic;
}

bool anyFile(const std::string &dir, llvm::function_ref<bool(llvm::StringRef)> match) {
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
    if (match(llvm::sys::path::filename(it->path())))
      return true;
  return false;
}

Format detect(const std::string &path) {
  if (!llvm::sys::fs::exists(path))
    throw UserError(path + ": no such file or directory");
  if (llvm::sys::fs::is_directory(path)) {
    if (isMegatronDistCheckpoint(path))
      return Format::MegatronDist;
    if (isMegatronCheckpoint(path))
      return Format::Megatron;
    if (llvm::sys::fs::exists(path + "/.metadata"))
      return Format::DCP;
    if (anyFile(path, [](llvm::StringRef n) { return n.ends_with("_model_states.pt"); }) ||
        llvm::sys::fs::exists(path + "/latest") ||
        llvm::sys::fs::exists(path + "/latest_universal"))
      return Format::DeepSpeed;
    return Format::HFDir;
  }
  if (hasPrefix(path, "\x89HDF\r\n\x1a\n"))
    return Format::Universal;
  if (hasPrefix(path, "PK\x03\x04"))
    return Format::TorchZip;
  return Format::Safetensors;
}

template <typename T> T orThrow(llvm::Expected<T> value) {
  if (!value)
    throw UserError(llvm::toString(value.takeError()),
                    "the checkpoint is damaged or incomplete; loom reads torch zip, "
                    "safetensors, HF, DCP, Megatron, DeepSpeed ZeRO and loom universal checkpoints");
  return std::move(*value);
}

/// Reads every byte of `path` (through pread, so that a failing disk is an error
/// rather than a fault in a mapping): what verifying can do where no checksum is kept.
void readEveryByte(const std::string &path) {
  auto file = llvm::sys::fs::openNativeFileForRead(path);
  if (!file)
    orThrow<int>(fileError(path, "cannot open: " + llvm::toString(file.takeError())));
  auto close = llvm::make_scope_exit([&] { llvm::sys::fs::closeFile(*file); });
  std::vector<char> buffer(8 << 20);
  for (uint64_t offset = 0;;) {
    auto got = llvm::sys::fs::readNativeFileSlice(*file, buffer, offset);
    if (!got)
      orThrow<int>(fileError(path, "reading: " + llvm::toString(got.takeError())));
    if (*got == 0)
      return;
    offset += *got;
  }
}

void addTensors(Summary &summary, const std::vector<NamedTensor> &tensors) {
  for (const NamedTensor &t : tensors)
    summary.tensors.push_back({t.name, t.tensor.dtype,
                               std::vector<int64_t>(t.tensor.shape.begin(), t.tensor.shape.end()),
                               t.tensor.nbytes()});
}

/// The full tensors of a layout, optimizer states as "name/state"; only those when
/// `statesOnly`.
void addLayoutTensors(Summary &summary, const loom::reshard::Layout &l, bool statesOnly) {
  for (const loom::reshard::FullTensor &f : l.fulls) {
    auto [name, state] = llvm::StringRef(f.name).split('#');
    if (statesOnly && state.empty())
      continue;
    summary.tensors.push_back({state.empty() ? name.str() : (name + "/" + state).str(), f.dtype,
                               {f.shape.begin(), f.shape.end()},
                               *checkedNumel(f.shape) * dtypeSize(f.dtype)});
  }
}

/// A mixture of experts as Megatron's args shape it: experts per layer, how many
/// expert-parallel ranks share them, the router's top-k and any shared experts.
void addExperts(nlohmann::json &layout, const MegatronDims &d, unsigned ep) {
  layout["ep"] = ep;
  layout["experts"] = d.experts;
  layout["router_topk"] = d.topK;
  if (d.sharedFfn) {
    layout["shared_expert_ffn"] = d.sharedFfn;
    layout["shared_expert_gate"] = d.sharedGate;
  }
}

/// A DCP folder's files and bytes entries; with `verify`, every tensor reassembled and
/// every bytes entry read through the safe VM.
nlohmann::json dcpSummary(const std::string &dir, bool verify) {
  auto reader = orThrow(DcpReader::open(dir));
  std::set<std::string> files;
  size_t bytesEntries = 0;
  for (const DcpEntry &e : reader->metadata().entries) {
    bytesEntries += e.isBytes;
    for (const DcpChunk &c : e.chunks)
      files.insert(c.file);
    if (!verify)
      continue;
    if (llvm::Error err = e.isBytes ? reader->readBytes(e.fqn).takeError()
                                    : reader->read(e.fqn).takeError())
      orThrow<int>(std::move(err));
  }
  nlohmann::json out = {{"files", files.size()}};
  if (bytesEntries)
    out["bytes_entries"] = bytesEntries;
  return out;
}

Summary open(const std::string &path, bool verify) {
  Summary summary;
  switch (detect(path)) {
  case Format::TorchZip: {
    summary.format = "torch-zip";
    ValuePtr root = orThrow(readTorchZip(path, {/*verifyChecksums=*/verify, {}, /*releaseChecked=*/true}));
    addTensors(summary, collectTensors(*root));
    break;
  }
  case Format::Safetensors:
    summary.format = "safetensors";
    addTensors(summary, orThrow(readSafetensors(path)).tensors);
    summary.noChecksums = true;
    if (verify)
      readEveryByte(path);
    break;
  case Format::HFDir: {
    HFCheckpoint hf = orThrow(readHFCheckpoint(path));
    std::set<std::string> shards(hf.shardOf.begin(), hf.shardOf.end());
    summary.format = hf.format == HFWeightFormat::Safetensors ? "hf-safetensors" : "hf-bin";
    summary.layout = {{"shards", shards.size()}};
    addTensors(summary, hf.tensors);
    // Its .bin shards are torch zips, whose CRCs reading checked.
    summary.noChecksums = hf.format == HFWeightFormat::Safetensors;
    if (verify && summary.noChecksums)
      for (const std::string &shard : shards)
        readEveryByte(path + "/" + shard);
    break;
  }
  case Format::Megatron: {
    MegatronCheckpoint megatron = orThrow(readMegatron(path));
    const MegatronLayout &l = megatron.layout;
    if (verify && !l.divergentReplicas.empty())
      throw UserError(summarizeDivergence(l.divergentReplicas),
                      "a rank's file is damaged or the run let its copies drift apart; `loom "
                      "reshard --allow-divergent-replicas` converts it keeping the copies the "
                      "others were compared with (" + keptCopies(l.divergentReplicas) + ")");
    summary.divergentReplicas = l.divergentReplicas;
    summary.format = l.naming == MegatronNaming::Legacy ? "megatron-legacy" : "megatron-mcore";
    summary.layout = {{"tp", l.tp}, {"pp", l.pp}, {"iteration", l.iteration},
                      {"layers_per_stage", l.layersPerStage},
                      {"vocab", l.dims.vocab}, {"padded_vocab", l.dims.paddedVocab}};
    if (l.dims.experts) {
      addExperts(summary.layout, l.dims, l.ep);
      summary.layout["experts_per_rank"] = l.dims.experts / l.ep;
      if (l.etp != l.tp)
        summary.layout["etp"] = l.etp;
      summary.layout["expert_names"] = l.dims.groupedGemm
                                           ? "TEGroupedMLP (linear_fc1.weight<i>)"
                                           : "SequentialMLP (local_experts.<i>.linear_fc1.weight)";
    }
    addTensors(summary, megatron.tensors);
    if (l.optimizer) {
      // Optimizer states are listed from the layout, as full tensors, like DeepSpeed's.
      if (l.optimizer->step)
        summary.layout["optimizer_step"] = *l.optimizer->step;
      summary.layout["optimizer"] = l.optimizer->distributed ? "distributed" : "mixed-precision";
      if (l.optimizer->chained)
        summary.layout["optimizers"] = "ChainedOptimizer: dense parameters, experts";
      loom::reshard::Layout layout = orThrow(loom::reshard::describeCheckpoint(path));
      // readMegatron checked the model files' CRCs; the distributed optimizer's
      // distrib_optim.pt files are read for their layout only.
      if (verify)
        for (const loom::reshard::ShardFile &f : layout.files)
          if (llvm::StringRef(f.path).ends_with("/distrib_optim.pt"))
            orThrow(readTorchZip(path + "/" + f.path, {/*verifyChecksums=*/true, {}, /*releaseChecked=*/true}));
      addLayoutTensors(summary, layout, /*statesOnly=*/true);
    }
    break;
  }
  case Format::Universal: {
    auto reader = orThrow(UniversalReader::open(path));
    summary.format = "loom-universal";
    const UniversalMetadata &meta = reader->metadata();
    summary.layout = {{"source_format", meta.sourceFormat},
                      {"source_layout", nlohmann::json::parse(meta.sourceLayout, nullptr, false)},
                      {"iteration", meta.iteration}, {"tokens_seen", meta.tokensSeen}};
    if (verify)
      if (llvm::Error err = reader->verify())
        orThrow<int>(std::move(err));
    for (const UniversalEntry &e : reader->entries()) {
      uint64_t numel = *checkedNumel(e.shape);
      summary.tensors.push_back({e.name, e.dtype, {e.shape.begin(), e.shape.end()},
                                 numel * dtypeSize(e.dtype)});
      for (UniversalState state : e.states)
        summary.tensors.push_back({e.name + "/" + universalStateName(state).str(),
                                   DType::Float32, {e.shape.begin(), e.shape.end()}, numel * 4});
    }
    break;
  }
  case Format::DCP: {
    // Listed from its layout: parameters without the model's prefix, an optimizer's
    // moments as "name/exp_avg".
    loom::reshard::Layout l = orThrow(loom::reshard::describeCheckpoint(path));
    summary.format = "torch-dcp";
    summary.layout = dcpSummary(path, verify);
    nlohmann::json args = nlohmann::json::parse(l.sourceArgs, nullptr, false);
    if (args.is_object()) {
      summary.layout["model_prefix"] = args["model_prefix"];
      summary.layout["optimizer_prefix"] = args["optimizer_prefix"];
      summary.layout["param_groups"] = l.paramGroups.size();
    }
    if (l.optimizerStep)
      summary.layout["optimizer_step"] = *l.optimizerStep;
    addLayoutTensors(summary, l, /*statesOnly=*/false);
    break;
  }
  case Format::MegatronDist: {
    // The global tensors of the DCP part, unfused to HF names, with the states.
    loom::reshard::Layout l = orThrow(loom::reshard::describeCheckpoint(path));
    summary.format = "megatron-torch-dist";
    std::string dcpDir = path + "/" + l.files.front().path;
    summary.layout = dcpSummary(dcpDir, verify);
    if (verify)
      orThrow(readTorchZip(dcpDir + "/common.pt", {/*verifyChecksums=*/true, {}, /*releaseChecked=*/true}));
    summary.layout["iteration"] = l.iteration;
    summary.layout["layers"] = l.dims->layers;
    summary.layout["vocab"] = l.dims->vocab;
    // Experts are global in the keys: ep is the saving run's, from its args.
    MegatronDistCheckpoint read = orThrow(readMegatronDist(path));
    if (read.layout.dims.experts) {
      auto args = nlohmann::json::parse(read.layout.argsJson, nullptr, false);
      auto ep = args.is_object() ? args.find("expert_model_parallel_size") : args.end();
      addExperts(summary.layout, read.layout.dims,
                 ep != args.end() && ep->is_number_unsigned() ? ep->get<unsigned>() : 1u);
      if (read.layout.optimizer && read.layout.optimizer->chained)
        summary.layout["optimizers"] = "ChainedOptimizer: dense parameters, experts";
    }
    if (read.layout.optimizer)
      summary.layout["optimizer"] =
          read.layout.optimizer->distributed ? "distributed, model space" : "mixed-precision";
    if (l.optimizerStep)
      summary.layout["optimizer_step"] = *l.optimizerStep;
    // The distributed optimizer's buckets (dp_reshardable) rather than model-space states.
    if (llvm::any_of(l.files.front().tensors, [](const loom::reshard::LocalTensor &t) {
          return llvm::StringRef(t.key).starts_with("optimizer.distributed.");
        }))
      summary.layout["optimizer"] = "distributed, dp_reshardable buckets";
    addLayoutTensors(summary, l, /*statesOnly=*/false);
    break;
  }
  case Format::DeepSpeed: {
    // Listed from its layout: the full tensors the ZeRO partitions make up.
    bool universal = loom::reshard::detectFormat(path) == "deepspeed-universal";
    loom::reshard::Layout l = orThrow(universal ? loom::reshard::describeDeepSpeedUniversal(path)
                                                : loom::reshard::describeDeepSpeed(path));
    summary.format = l.format;
    if (universal) {
      summary.layout = {{"files", l.files.size()}};
    } else {
      // The degrees and optimizer describeDeepSpeed found.
      nlohmann::json args = nlohmann::json::parse(l.sourceArgs, nullptr, false);
      for (const char *key : {"dp", "tp", "pp", "ep", "zero_stage", "optimizer"})
        if (args.is_object() && args.contains(key))
          summary.layout[key] = args[key];
    }
    summary.layout["iteration"] = l.iteration;
    summary.layout["param_groups"] = l.paramGroups.size();
    if (l.optimizerStep)
      summary.layout["optimizer_step"] = *l.optimizerStep;
    if (verify)
      for (const loom::reshard::ShardFile &f : l.files)
        if (!f.tensors.empty())
          orThrow(readTorchZip(path + "/" + f.path, {/*verifyChecksums=*/true, {}, /*releaseChecked=*/true}));
    addLayoutTensors(summary, l, /*statesOnly=*/false);
    break;
  }
  }
  return summary;
}

std::string shapeText(const std::vector<int64_t> &shape) {
  return "[" + fmt::format("{}", fmt::join(shape, ", ")) + "]";
}

/// Divergent replicas are warned of on stderr (verify-ckpt fails on them), in both
/// modes, and listed under "divergent_replicas" in --json.
void printInspect(const Summary &s, bool json) {
  for (const DivergentReplica &replica : s.divergentReplicas)
    fmt::print(stderr, "warning: {}\n", replica.what);
  uint64_t bytes = 0, elements = 0;
  for (const TensorRow &t : s.tensors) {
    bytes += t.bytes;
    elements += t.bytes / dtypeSize(t.dtype);
  }
  if (json) {
    nlohmann::json tensors = nlohmann::json::array();
    for (const TensorRow &t : s.tensors)
      tensors.push_back({{"name", t.name}, {"dtype", torchDTypeName(t.dtype).str()},
                         {"shape", t.shape}, {"bytes", t.bytes}});
    nlohmann::json out = {{"format", s.format}, {"layout", s.layout}, {"tensors", tensors},
                          {"total_tensors", s.tensors.size()}, {"total_elements", elements},
                          {"total_bytes", bytes}};
    if (!s.divergentReplicas.empty()) {
      nlohmann::json &lines = out["divergent_replicas"] = nlohmann::json::array();
      for (const DivergentReplica &replica : s.divergentReplicas)
        lines.push_back(replica.what);
    }
    writeOutput("", out.dump(2) + "\n");
    return;
  }
  std::string text = "format: " + s.format + "\n";
  for (const auto &[key, value] : s.layout.items())
    text += "  " + key + ": " + value.dump() + "\n";
  Table table({"tensor", "dtype", "shape", "bytes"});
  for (const TensorRow &t : s.tensors)
    table.addRow({t.name, torchDTypeName(t.dtype).str(), shapeText(t.shape), std::to_string(t.bytes)});
  text += table.render();
  text += fmt::format("total: {} tensors, {} elements, {} bytes\n", s.tensors.size(), elements, bytes);
  writeOutput("", text);
}
} // namespace

void loom::cli::addCheckpointCommands(CLI::App &app) {
  auto *inspect = app.add_subcommand(
      "inspect", "Show a checkpoint: detected format and sharding layout, tensors with shapes,\n"
                 "dtypes and sizes, totals. Sharded checkpoints are listed unsharded.");
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  inspect->add_option("CKPT", *path, "checkpoint file or directory")->required();
  inspect->add_flag("--json", *json, "machine-readable output");
  inspect->callback([path, json] { printInspect(open(*path, /*verify=*/false), *json); });

  auto *verify = app.add_subcommand(
      "verify-ckpt", "Read a whole checkpoint and check it: CRCs and checksums where the format\n"
                     "has them (safetensors has none: its bytes are read, its values cannot be\n"
                     "checked), every shard present, shapes agreeing across shards.");
  auto verifyPath = std::make_shared<std::string>();
  verify->add_option("CKPT", *verifyPath, "checkpoint file or directory")->required();
  verify->callback([verifyPath] {
    Summary s = open(*verifyPath, /*verify=*/true);
    if (s.noChecksums)
      writeOutput("", fmt::format("ok: {} checkpoint, {} tensors: header, shapes and offsets "
                                  "valid, every byte readable; safetensors keeps no checksums, "
                                  "so the values themselves are not verified\n",
                                  s.format, s.tensors.size()));
    else
      writeOutput("", fmt::format("ok: {} checkpoint, {} tensors verified\n", s.format,
                                  s.tensors.size()));
  });
}
