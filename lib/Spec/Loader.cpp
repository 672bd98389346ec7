//===- Loader.cpp - spec files, HF configs and catalog names --------------===//
//
// The public entry points: parse a document in any of the three formats, then
// validate what it holds with the lines the parse recorded; and resolve what a
// user typed for --model/--cluster/--training, which is either a file that
// exists or a catalog name.
//
//===----------------------------------------------------------------------===//

#include "SpecInternal.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

namespace loom::spec {

namespace {

constexpr const char *kExtensions =
    ".yaml/.yml, .json or .textproto/.txtpb/.pbtxt";

std::string extensionOf(std::string_view path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return ext;
}

std::optional<Format> formatOf(std::string_view path) {
  std::string ext = extensionOf(path);
  if (ext == ".yaml" || ext == ".yml")
    return Format::Yaml;
  if (ext == ".json")
    return Format::Json;
  if (ext == ".textproto" || ext == ".txtpb" || ext == ".pbtxt")
    return Format::TextProto;
  return std::nullopt;
}

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw SpecError(
        fmt::format("cannot read '{}': {}", path, std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool isFile(const std::string &path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

/// A name with a slash or a spec extension was meant as a file, so a miss is
/// "no such file" rather than "unknown catalog entry".
void requireFileIfPath(const std::string &nameOrPath) {
  if (nameOrPath.find('/') != std::string::npos || formatOf(nameOrPath))
    throw SpecError(fmt::format("cannot read '{}': no such file", nameOrPath));
}

void requireSection(bool present, const std::string &path,
                    std::string_view section) {
  if (!present)
    throw SpecError(fmt::format("{}: no '{}' section", path, section));
}

} // namespace

Format formatForPath(std::string_view path) {
  if (std::optional<Format> format = formatOf(path))
    return *format;
  throw SpecError(fmt::format("{}: unknown spec format '{}' (use {})", path,
                              extensionOf(path), kExtensions));
}

SpecFile parseSpec(std::string_view text, Format format,
                   std::string_view displayName) {
  SpecFile spec;
  detail::LineMap lines;
  switch (format) {
  case Format::Json:
    // yaml-cpp reads JSON leniently (it takes "a: 1" and trailing commas), so
    // the syntax is checked by a strict JSON parser first.
    (void)detail::parseJson(text, displayName);
    [[fallthrough]];
  case Format::Yaml:
    detail::yamlToMessage(detail::parseYaml(text, displayName), spec, "",
                          displayName, lines);
    break;
  case Format::TextProto:
    detail::parseTextProto(text, displayName, spec, lines);
    break;
  }
  detail::Locator at(displayName, lines);
  if (spec.has_model())
    detail::validateModel(spec.model(), at);
  if (spec.has_cluster())
    detail::validateCluster(spec.cluster(), at);
  if (spec.has_training())
    detail::validateTraining(spec.training(), at);
  return spec;
}

SpecFile loadSpecFile(const std::string &path) {
  Format format = formatForPath(path);
  return parseSpec(readFile(path), format, path);
}

Model loadModel(const std::string &nameOrPath) {
  if (isFile(nameOrPath)) {
    Format format = formatForPath(nameOrPath);
    std::string text = readFile(nameOrPath);
    if (format == Format::Json) {
      auto json =
          nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (json.is_object() && json.contains("model_type"))
        return importHFConfig(text, nameOrPath);
    }
    SpecFile spec = parseSpec(text, format, nameOrPath);
    requireSection(spec.has_model(), nameOrPath, "model");
    Model model = spec.model();
    // Plans and reports name the model; a file that does not gets its stem.
    if (model.name().empty())
      model.set_name(std::filesystem::path(nameOrPath).stem().string());
    return model;
  }
  if (const Model *model = findCatalogModel(nameOrPath))
    return *model;
  requireFileIfPath(nameOrPath);
  std::vector<std::string> known;
  for (const CatalogEntry &entry : catalogEntries())
    if (entry.kind == "model")
      known.push_back(entry.name);
  throw SpecError(fmt::format(
      "unknown model '{}'{}; known: {}; or give a path to a {} spec or an HF "
      "config.json",
      nameOrPath, detail::didYouMean(nameOrPath, known), fmt::join(known, ", "),
      kExtensions));
}

Cluster loadCluster(const std::string &nameOrPath) {
  if (isFile(nameOrPath)) {
    SpecFile spec = loadSpecFile(nameOrPath);
    requireSection(spec.has_cluster(), nameOrPath, "cluster");
    return spec.cluster();
  }
  Cluster cluster;
  if (detail::clusterFromForm(nameOrPath, cluster))
    return cluster;
  requireFileIfPath(nameOrPath);
  std::vector<std::string> forms = detail::clusterFormNames();
  std::string base = nameOrPath.substr(0, nameOrPath.find(':'));
  throw SpecError(fmt::format(
      "unknown cluster '{}'{}; known: {}, each as <name>:nodes=N; or give a "
      "path to a {} spec",
      nameOrPath, detail::didYouMean(base, forms), fmt::join(forms, ", "),
      kExtensions));
}

Training loadTraining(const std::string &path) {
  SpecFile spec = loadSpecFile(path);
  requireSection(spec.has_training(), path, "training");
  return withTrainingDefaults(spec.training());
}

Training withTrainingDefaults(Training training) {
  if (training.optimizer() == OPTIMIZER_UNSPECIFIED)
    training.set_optimizer(ADAM);
  if (training.precision() == PRECISION_UNSPECIFIED)
    training.set_precision(BF16_MIXED);
  return training;
}

Training defaultTraining(const Model &model) {
  // Sequences as long as the model allows up to 4096 (the pre-training length
  // of most current models; GPT-style rows stop at their 2048), and about 2M
  // tokens per step, the order of GPT-3's and Llama's early-training batches.
  constexpr uint32_t kMaxSeqLen = 4096;
  constexpr uint64_t kTokensPerStep = uint64_t(1) << 21;
  Training training;
  uint32_t seqLen = model.max_seq_len()
                        ? std::min(model.max_seq_len(), kMaxSeqLen)
                        : kMaxSeqLen;
  training.set_seq_len(seqLen);
  training.set_global_batch(std::max<uint64_t>(1, kTokensPerStep / seqLen));
  training.set_optimizer(ADAM);
  // Models published in fp16 (the Megatron-LM rows) are reproduced in fp16.
  training.set_precision(model.dtype() == FP16 ? FP16_MIXED : BF16_MIXED);
  return training;
}

} // namespace loom::spec
