//===- SpecInternal.h - pieces shared by the Spec sources -------*- C++ -*-===//
//
// Not installed: the loaders, the validators and the catalog share the YAML-to-
// protobuf mapping, the field-path-to-line bookkeeping that lets a semantic
// error point at the line of the offending field, and the did-you-mean helper.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_LIB_SPEC_SPECINTERNAL_H
#define LOOM_LIB_SPEC_SPECINTERNAL_H

#include "loom/Spec/Spec.h"

#include <nlohmann/json_fwd.hpp>
#include <yaml-cpp/yaml.h>

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace loom::spec::detail {

/// Field path ("cluster.links[1].bandwidth_gbps") -> 1-based line in the
/// source.
using LineMap = std::unordered_map<std::string, int>;

/// Turns a field path into the "file:line" prefix of an error message. Paths
/// the map does not know (a missing field) take the line of their nearest
/// ancestor.
class Locator {
public:
  /// No line information: messages start with `where` (may be empty).
  explicit Locator(std::string_view where) : where(where) {}
  Locator(std::string_view file, const LineMap &lines)
      : where(file), lines(&lines) {}

  [[noreturn]] void fail(std::string_view path, std::string_view what) const;

private:
  std::string where;
  const LineMap *lines = nullptr;
};

/// Throws the one-line SpecError "<file>:<line>: <path>: <what>"; line 0 and an
/// empty path are left out.
[[noreturn]] void fail(std::string_view file, int line, std::string_view path,
                       std::string_view what);

void validateModel(const Model &model, const Locator &at);
void validateCluster(const Cluster &cluster, const Locator &at);
void validateTraining(const Training &training, const Locator &at);

/// Parses strict JSON, reporting syntax errors with their line.
nlohmann::json parseJson(std::string_view text, std::string_view file);

/// Parses YAML (or JSON, a subset), reporting syntax errors with their line.
YAML::Node parseYaml(std::string_view text, std::string_view file);

/// Fills `msg` from a YAML mapping, field by field through protobuf reflection,
/// recording the line of every field under `path` in `lines`.
void yamlToMessage(const YAML::Node &node, google::protobuf::Message &msg,
                   const std::string &path, std::string_view file,
                   LineMap &lines);

/// Parses textproto into `msg`, recording field lines like yamlToMessage.
void parseTextProto(std::string_view text, std::string_view file,
                    google::protobuf::Message &msg, LineMap &lines);

/// "unknown field 'x' in Model" with a suggestion, or the valid names if none
/// is close.
std::string unknownField(std::string_view name,
                         const google::protobuf::Descriptor *owner);

/// An enum's names as users type them: lower case, without the proto3 zero
/// value that only means "not given".
std::vector<std::string>
enumNames(const google::protobuf::EnumDescriptor *desc);

/// " (did you mean 'x'?)" with the candidate closest to `word` by edit distance
/// or as its abbreviation, or "" when none is close.
std::string didYouMean(std::string_view word,
                       const std::vector<std::string> &candidates);

/// The catalog's GPU types and link tiers (Catalog.cpp), parsed on first use.
const std::vector<GpuType> &catalogGpus();
const std::vector<LinkTier> &catalogLinks();

/// Builds a cluster from a catalog form such as "dgx-h100:nodes=64,dcs=2".
/// Returns false when the part before ':' names no cluster template.
bool clusterFromForm(std::string_view form, Cluster &cluster);
/// The template names, for error messages.
std::vector<std::string> clusterFormNames();

} // namespace loom::spec::detail

#endif // LOOM_LIB_SPEC_SPECINTERNAL_H
