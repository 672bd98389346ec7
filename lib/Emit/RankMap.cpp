//===- RankMap.cpp - global ranks and process groups from a plan's mesh ---===//
//
// The mesh lists logical axes outermost first, each as pieces (outermost first)
// on the physical levels dc, node and gpu. A level's index splits among the
// pieces laid on it, in mesh order, the first most significant; an axis's
// coordinate weighs each of its pieces by the sizes of its later pieces. This is
// lib/CostModel/Groups.cpp's convention, so the groups priced are those emitted.
//
//===----------------------------------------------------------------------===//

#include "loom/Emit/Emit.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>

using namespace loom;
using namespace loom::emit;

namespace {
/// The parallel dimensions groups are emitted for, and the mesh axes each spans.
struct Dimension {
  const char *name;
  std::vector<std::string> axes;
};
const std::vector<Dimension> &dimensions() {
  static const std::vector<Dimension> dims = {
      {"tp", {"tp"}}, {"cp", {"cp"}}, {"ep", {"ep"}}, {"dp", {"ep", "dp"}}, {"pp", {"pp"}}};
  return dims;
}

uint32_t degree(const spec::Strategy &s, const std::string &dim) {
  if (dim == "tp")
    return s.tp();
  if (dim == "cp")
    return std::max(1u, s.cp());
  if (dim == "ep")
    return std::max(1u, s.ep());
  if (dim == "dp")
    return s.dp();
  return s.pp();
}
} // namespace

RankMap loom::emit::rankMap(const spec::Plan &plan) {
  RankMap map;
  for (const spec::LogicalAxis &axis : plan.mesh())
    for (const spec::AxisPiece &piece : axis.pieces()) {
      int64_t &level = piece.physical() == "dc"     ? map.dcs
                       : piece.physical() == "node" ? map.nodesPerDc
                                                    : map.gpusPerNode;
      level *= piece.size();
    }
  const char *levelName[3] = {"dc", "node", "gpu"};
  map.cellDc.assign(plan.cell_dc().begin(), plan.cell_dc().end());
  if (!map.cellDc.empty() && int64_t(map.cellDc.size()) != map.dcs)
    throw EmitError(fmt::format("the plan maps {} cells to datacenters, but its mesh has {} "
                                "on the dc level",
                                map.cellDc.size(), map.dcs),
                    "write the plan again with `loom plan --json`");

  map.coords.resize(map.worldSize());
  for (int64_t rank = 0; rank < map.worldSize(); ++rank) {
    int64_t levelIndex[3] = {rank / (map.nodesPerDc * map.gpusPerNode),
                             rank / map.gpusPerNode % map.nodesPerDc, rank % map.gpusPerNode};
    std::map<std::string, int64_t> &coords = map.coords[rank];
    for (int l = 0; l < 3; ++l) {
      // Digits of this level, innermost piece first.
      int64_t index = levelIndex[l];
      for (auto axis = plan.mesh().rbegin(); axis != plan.mesh().rend(); ++axis) {
        int64_t weight = 1;
        for (int k = axis->pieces_size() - 1; k >= 0; --k) {
          const spec::AxisPiece &piece = axis->pieces(k);
          if (piece.physical() == levelName[l]) {
            coords[axis->name()] += index % piece.size() * weight;
            index /= piece.size();
          }
          weight *= piece.size();
        }
      }
    }
  }

  for (const Dimension &dim : dimensions()) {
    // Ranks sharing every coordinate off this dimension form one group.
    std::map<std::vector<int64_t>, std::vector<int64_t>> byRest;
    for (int64_t rank = 0; rank < map.worldSize(); ++rank) {
      std::vector<int64_t> rest;
      for (const spec::LogicalAxis &axis : plan.mesh())
        if (std::find(dim.axes.begin(), dim.axes.end(), axis.name()) == dim.axes.end())
          rest.push_back(map.coords[rank][axis.name()]);
      byRest[rest].push_back(rank);
    }
    std::vector<std::vector<int64_t>> &groups = map.groups[dim.name];
    for (auto &[rest, ranks] : byRest)
      groups.push_back(std::move(ranks));
    std::sort(groups.begin(), groups.end());
    uint32_t want = degree(plan.strategy(), dim.name);
    if (groups.front().size() != want)
      throw EmitError(fmt::format("the plan's mesh gives {} groups of {} ranks, but "
                                  "strategy.{} is {}",
                                  dim.name, groups.front().size(), dim.name, want),
                      "the mesh and the strategy disagree: write the plan again with "
                      "`loom plan --json`");
  }
  return map;
}

std::vector<std::string> RankMap::acrossDatacenters() const {
  std::vector<std::string> out;
  for (const Dimension &dim : dimensions()) {
    auto it = groups.find(dim.name);
    if (it == groups.end())
      continue;
    bool crosses = false;
    for (const std::vector<int64_t> &group : it->second)
      for (int64_t rank : group)
        crosses |= datacenterOf(rank) != datacenterOf(group.front());
    if (crosses)
      out.push_back(dim.name);
  }
  return out;
}

std::string loom::emit::emitRankMap(const spec::Plan &plan, const Provenance &from) {
  RankMap map = rankMap(plan);
  nlohmann::ordered_json out;
  out["_comment"] = fmt::format("rank map of plan {} in {}: {} on {}; plan by loom {}, "
                                "emitted by loom {}",
                                from.index, from.file, plan.model(), plan.cluster(),
                                plan.loom_version(), loomVersion());
  out["world_size"] = map.worldSize();
  out["levels"] = {{"dc", map.datacenters()}, {"node", map.nodesPerDc}, {"gpu", map.gpusPerNode}};
  if (!map.cellDc.empty())
    out["cells"] = {{"count", map.dcs}, {"nodes", map.nodesPerDc}, {"dc", map.cellDc}};
  nlohmann::ordered_json ranks = nlohmann::ordered_json::array();
  for (int64_t rank = 0; rank < map.worldSize(); ++rank) {
    nlohmann::ordered_json r;
    r["rank"] = rank;
    r["dc"] = map.datacenterOf(rank);
    r["node"] = rank / map.gpusPerNode; // global node index: the launch scripts' node rank
    r["gpu"] = rank % map.gpusPerNode;
    nlohmann::ordered_json coords = nlohmann::ordered_json::object();
    for (const spec::LogicalAxis &axis : plan.mesh())
      coords[axis.name()] = map.coords[rank][axis.name()];
    r["axes"] = coords;
    ranks.push_back(r);
  }
  out["ranks"] = ranks;
  nlohmann::ordered_json groups;
  for (const Dimension &dim : dimensions())
    groups[dim.name] = map.groups[dim.name];
  out["groups"] = groups;
  return out.dump(1) + "\n";
}
