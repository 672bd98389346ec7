//===- Spec.h - loading model, cluster and training specs -------*- C++ -*-===//
//
// The front door for user input. Specs come from YAML, JSON or textproto files
// (chosen by extension), from HF config.json files, or from the built-in catalog.
// Every failure is a SpecError whose message is one line that names the file, the
// line when known, the field and what was expected, e.g.
//   cluster.yaml:14: cluster.links[1].bandwidth_gbps: must be > 0, got -5
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SPEC_SPEC_H
#define LOOM_SPEC_SPEC_H

#include "loom/Spec/loom.pb.h"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace loom::spec {

/// A user-facing error in a spec: one line, ready to print after "error: ".
class SpecError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

enum class Format { Yaml, Json, TextProto };

/// Picks the format from a path's extension (.yaml/.yml, .json, .textproto/.txtpb/
/// .pbtxt); throws SpecError naming the accepted extensions otherwise.
Format formatForPath(std::string_view path);

/// Parses a spec document. `displayName` is used in error messages (a file name).
/// Unknown keys, wrong types and bad enum names are errors with their line.
/// Semantic checks (validateModel/validateCluster/validateTraining) run on whatever
/// parts are present.
SpecFile parseSpec(std::string_view text, Format format, std::string_view displayName);

/// Reads and parses a spec file from disk.
SpecFile loadSpecFile(const std::string &path);

/// Semantic validation; `where` prefixes messages (e.g. "model.yaml:3").
void validateModel(const Model &model, std::string_view where);
void validateCluster(const Cluster &cluster, std::string_view where);
void validateTraining(const Training &training, std::string_view where);
/// Why `training` cannot keep its gradients in bf16 (grad_reduce_in_bf16):
/// "needs bf16 or fp8 precision, got fp16" under fp16 or fp32 training, else
/// empty. validateTraining checks it; the CLI and Python flags say it first.
std::string bf16GradsConflict(const Training &training);

/// Imports a Hugging Face config.json (llama, mistral, mixtral, qwen2, gpt2,
/// gpt_neox, deepseek_v3). Unsupported `model_type` values are a SpecError naming
/// the supported ones.
Model importHFConfig(std::string_view jsonText, std::string_view displayName);

/// Resolves what a CLI user typed for --model: a catalog name, a spec file with a
/// `model:` section, or an HF config.json (detected by its `model_type` key).
Model loadModel(const std::string &nameOrPath);

/// Resolves --cluster: a catalog form such as "dgx-h100:nodes=64" or
/// "dgx-h100:nodes=64,dcs=2,wan-gbps=400,wan-ms=10", or a spec file with `cluster:`.
/// In a form, `nodes` (required) is the total, split evenly over `dcs` datacenters
/// (default 1) named dc0, dc1, ...; with more than one, a link tier "wan" joins
/// them: `wan-gbps` per node and direction (default 100), `wan-ms` one way
/// (default 10). The cluster carries the link tiers it uses and is named by the
/// canonical form (parameters in the order above, defaults spelled out, none of
/// the WAN ones with one datacenter).
Cluster loadCluster(const std::string &nameOrPath);

/// Resolves --training from a spec file (optimizer and precision default to ADAM
/// and BF16_MIXED); absent means defaultTraining(model).
Training loadTraining(const std::string &path);
/// `training` with what a spec may leave out filled in as loadTraining does:
/// Adam, bf16 mixed precision.
Training withTrainingDefaults(Training training);
/// seq_len = min(max_seq_len, 4096), global_batch = 2^21 tokens / seq_len, ADAM,
/// BF16_MIXED (FP16_MIXED for fp16 models), micro_batch left to the planner.
Training defaultTraining(const Model &model);

//===----------------------------------------------------------------------===//
// Catalog
//===----------------------------------------------------------------------===//

struct CatalogEntry {
  std::string name;
  std::string kind;      // "model", "gpu", "link", "cluster"
  std::string summary;   // one line for `loom catalog`
  std::string source;    // citation of the figures
};

std::vector<CatalogEntry> catalogEntries();
const Model *findCatalogModel(std::string_view name);
const GpuType *findCatalogGpu(std::string_view name);
/// Looks a GPU type up in the cluster's own gpu_types first, then the catalog.
const GpuType *findGpu(const Cluster &cluster, std::string_view name);
const LinkTier *findLink(const Cluster &cluster, std::string_view name);

//===----------------------------------------------------------------------===//
// Derived facts
//===----------------------------------------------------------------------===//

/// Resolved attention geometry (defaults filled in).
struct AttentionShape {
  uint32_t heads = 0, kvHeads = 0, headDim = 0;
  bool mla = false;
};
AttentionShape attentionShape(const Model &model, const Block &block);

struct ParamCount {
  uint64_t embedding = 0;   // token (+ learned position) embedding
  uint64_t perLayer = 0;    // summed over all transformer layers
  uint64_t activePerLayer = 0; // MoE: parameters touched per token (top_k + shared)
  uint64_t finalNorm = 0;
  uint64_t lmHead = 0;      // 0 when tied
  uint64_t total() const { return embedding + perLayer + finalNorm + lmHead; }
};
ParamCount countParameters(const Model &model);

/// Parameters of one layer of `block` (attention + norms + MLP/MoE).
uint64_t layerParameters(const Model &model, const Block &block);

/// The two halves of a layer, each with its pre-norm: attention, and the MLP or
/// MoE block (all experts, router and shared experts). Their sum is
/// layerParameters. ffnActiveParameters counts what one token touches (router,
/// top_k routed experts, shared experts; the whole MLP when dense).
uint64_t attentionParameters(const Model &model, const Block &block);
uint64_t ffnParameters(const Model &model, const Block &block);
uint64_t ffnActiveParameters(const Model &model, const Block &block);
/// The routed experts' share of ffnParameters (0 for a dense MLP).
uint64_t routedExpertParameters(const Model &model, const Block &block);

uint32_t numLayers(const Model &model);
/// The most layers a model may have in all (validateModel checks it).
inline constexpr uint64_t kMaxLayers = 65536;
/// The longest sequence and the largest global batch a training may ask for
/// (validateTraining, the CLI's --seq and --global-batch, the Python module).
inline constexpr uint64_t kMaxSeqLen = uint64_t(1) << 30;
inline constexpr uint64_t kMaxGlobalBatch = uint64_t(1) << 40;

/// Total GPUs, nodes and datacenters of a cluster.
struct ClusterSize {
  uint32_t datacenters = 0;
  uint64_t nodes = 0;
  uint64_t gpus = 0;
  bool regular = false;  // every DC has the same node count, one GPU type, same links
  bool uniform = false;  // one kind of node: one GPU type, GPU count and links
  /// Every node has the same GPU count and the DCs' node counts share a cell
  /// of `cellNodes` nodes (their greatest common divisor) that every level
  /// above the node is built from; GPU types or links may differ between
  /// node groups (a heterogeneous cluster the planner can still lay a mesh
  /// over). With equal DCs a cell is a whole DC.
  bool shapeRegular = false;
  /// DCs of different node counts: the mesh's outermost level counts cells,
  /// several of which may share a DC (ClusterLevel::cellDc).
  bool unequalDcs = false;
  uint64_t cellNodes = 0;
};
ClusterSize clusterSize(const Cluster &cluster);

/// One level of a regular cluster's hierarchy: "dc" (present only with more
/// than one datacenter), "node" and "gpu", each with the link tier joining the
/// members of that level.
struct ClusterLevel {
  std::string name;
  int64_t size = 1;
  const LinkTier *tier = nullptr;
  /// On the "dc" level of a cluster whose DCs differ in size: the level counts
  /// cells of ClusterSize::cellNodes nodes, and this maps each cell to its
  /// datacenter. Empty when a cell is a datacenter.
  std::vector<int32_t> cellDc;
};
/// Bandwidth collectives reach on `tier`, Gb/s per direction: the line rate
/// times its efficiency (1 when the spec gives none).
double effectiveGbps(const LinkTier &tier);

/// The levels outermost first; empty unless the cluster is shape-regular.
/// Where node groups differ, a level takes the slowest of their link tiers.
/// DCs of different sizes give a "dc" level of cells (see ClusterLevel::cellDc)
/// and a "node" level of ClusterSize::cellNodes nodes.
std::vector<ClusterLevel> clusterLevels(const Cluster &cluster);

/// GPU types in order of first appearance, and the index of each node's type
/// in that list (nodes numbered datacenter by datacenter, group by group).
struct NodeTypes {
  std::vector<const GpuType *> gpus;
  std::vector<int> nodeType;
};
NodeTypes nodeTypes(const Cluster &cluster);

std::string dtypeName(DType dtype);

/// Dense peak TFLOP/s of `gpu` for the GEMMs of `precision` (TF32 for fp32
/// training when the GPU has it).
double peakTflops(const GpuType &gpu, Precision precision);

} // namespace loom::spec

#endif // LOOM_SPEC_SPEC_H
