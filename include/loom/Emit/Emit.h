//===- Emit.h - launch files from a loom plan -------------------*- C++ -*-===//
//
// Turns a plan (loom.proto's Plan, as `loom plan --json` writes it) into what a
// training job starts from: Megatron-LM arguments, a DeepSpeed config, torchrun
// and Slurm launch scripts, and the rank map (global rank -> dc/node/GPU and the
// process groups of every parallel dimension). Plain C++: failures a user can
// cause are EmitErrors carrying one line and a hint.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_EMIT_EMIT_H
#define LOOM_EMIT_EMIT_H

#include "loom/Spec/Spec.h"

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace loom::emit {

class EmitError : public std::runtime_error {
public:
  EmitError(const std::string &message, std::string hint)
      : std::runtime_error(message), hint(std::move(hint)) {}
  std::string hint;
};

/// The loom version that emits (the project's CMake version).
const char *loomVersion();

/// Reads plan `index` from `text`: a single Plan object or `loom plan --json`
/// output ({"plans": [...]}). `file` names the input in errors. Checks the
/// fields every emitter needs (strategy degrees, mesh, stages, batch).
spec::Plan parsePlan(const std::string &text, const std::string &file, int64_t index);

/// Where emitted files say they come from.
struct Provenance {
  std::string file;  // the plan file as given
  int64_t index = 0; // which plan of it
};

/// Physical levels (dc, node, gpu) with their sizes, outermost first; levels
/// the mesh does not use have size 1 and are absent.
struct RankMap {
  /// The mesh's levels. On datacenters of different sizes `dcs` counts cells
  /// (blocks of nodesPerDc nodes) and cellDc maps each to its datacenter.
  int64_t dcs = 1, nodesPerDc = 1, gpusPerNode = 1;
  std::vector<int32_t> cellDc;
  int64_t worldSize() const { return dcs * nodesPerDc * gpusPerNode; }
  /// Real datacenters, and the one holding `rank`.
  int64_t datacenters() const { return cellDc.empty() ? dcs : cellDc.back() + 1; }
  int64_t datacenterOf(int64_t rank) const {
    int64_t cell = rank / (nodesPerDc * gpusPerNode);
    return cellDc.empty() ? cell : cellDc[cell];
  }
  /// The dimensions (tp, cp, ep, dp, pp) with a group spanning datacenters.
  std::vector<std::string> acrossDatacenters() const;
  /// coords[rank][axis]: the rank's position along each logical axis of the mesh.
  std::vector<std::map<std::string, int64_t>> coords;
  /// groups[dim]: the process groups of each parallel dimension (tp, cp, ep,
  /// dp, pp; dp spans the ep and dp mesh axes, as Megatron-LM's data-parallel
  /// group does), each a rank list in ascending order.
  std::map<std::string, std::vector<std::vector<int64_t>>> groups;
};

/// Lays the plan's mesh onto ranks: rank = (dc * nodesPerDc + node) *
/// gpusPerNode + gpu; each level's index splits among the mesh pieces on it,
/// outer axes varying slowest (lib/CostModel/Groups.cpp's convention).
RankMap rankMap(const spec::Plan &plan);

std::string emitRankMap(const spec::Plan &plan, const Provenance &from);
std::string emitMegatron(const spec::Plan &plan, const Provenance &from);
std::string emitDeepSpeed(const spec::Plan &plan, const Provenance &from);

/// The plan's pipeline schedule as per-rank action tables (the JSON of `loom
/// schedule --json`, which loom.torch runs), generated for the plan's shape and
/// priced by the cost model on `model` and `cluster` (the plan's own), with the
/// layers of each stage and the pipeline rank of each global rank.
std::string emitSchedule(const spec::Plan &plan, const spec::Model &model,
                         const spec::Cluster &cluster, const Provenance &from);

/// What the launch scripts need beyond the plan.
struct LaunchOptions {
  std::vector<std::string> hosts; // one per node, in node order; empty: placeholders
  std::string masterAddr;         // empty: the first host, else a placeholder
  std::string script = "train.py";
  int port = 29500;
};
std::string emitTorchrun(const spec::Plan &plan, const Provenance &from,
                         const LaunchOptions &launch);
std::string emitSlurm(const spec::Plan &plan, const Provenance &from,
                      const LaunchOptions &launch);

} // namespace loom::emit

#endif // LOOM_EMIT_EMIT_H
