//===- Groups.h - process groups laid over a cluster's links ----*- C++ -*-===//
//
// Both ways into the cost model (a strategy tuple, placed IR) describe a mesh
// of logical axes carved from physical levels; this one function turns a set
// of logical axes into the GroupShape its collectives run over, so both see
// the same links.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_COSTMODEL_GROUPS_H
#define LOOM_COSTMODEL_GROUPS_H

#include "loom/CostModel/Collectives.h"
#include "loom/Search/AxisMapping.h"

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace loom::cost {

/// One physical level of a cluster (dc, node, gpu) and the link joining it.
struct LinkLevel {
  std::string name;
  int64_t size = 1;
  double gbps = 0;      // what collectives reach, one direction
  double latencyUs = 0;
  bool perNode = false;
  /// The "dc" level of DCs of different sizes counts cells; this maps each
  /// cell to its datacenter (spec::ClusterLevel::cellDc). Empty otherwise.
  std::vector<int32_t> cellDc;
};

/// A hop between consecutive pipeline stages.
struct PipelineHop {
  GroupLevel link;
  bool crossesDc = false; // over the link between datacenters
};

/// Whether `levels` (outermost first) include a datacenter level of more than
/// one datacenter.
inline bool spansDatacenters(const std::vector<LinkLevel> &levels) {
  return !levels.empty() && levels.front().name == "dc" && levels.front().size > 1;
}

/// The group formed by the logical axes `names` of `mesh`, over `levels`
/// (outermost first; the innermost is the GPUs of a node), innermost level
/// first. Every rank of a node runs the same collective at once, so a
/// per-node link is shared by all of the node's GPUs.
///
/// On DCs of different sizes a group's cells may share a datacenter: its dc
/// level becomes two, the cells inside one DC (over the nodes' fabric) and
/// the DCs (over the WAN). Groups differ in how they spread, and the step
/// waits for the slowest, so the shape is that of the group spanning the
/// most DCs with the fewest members in one of them: a hierarchical reduction
/// sends the largest shard over the WAN from that DC.
GroupShape groupOver(const std::vector<LinkLevel> &levels,
                     const std::vector<search::LogicalAxis> &mesh,
                     std::span<const std::string_view> names);

/// Whether the group of logical axis `axis` spans more than one datacenter
/// (for some of its groups, on DCs of different sizes).
bool crossesDatacenters(const std::vector<LinkLevel> &levels,
                        const std::vector<search::LogicalAxis> &mesh, std::string_view axis);

/// The link from position r to position r+1 of logical axis `axis` (pipeline
/// stages), for every r; the last entry is the wrap from the final position
/// back to the first (interleaved schedules use it). A hop crosses the
/// outermost level whose piece of the axis changes; every GPU of a node sends
/// at once, so per-node links are shared. Empty when the axis is absent.
///
/// `order`, when given, lists the axis positions in pipeline order (a
/// permutation): hop s then joins positions order[s] and order[s+1].
std::vector<PipelineHop> axisHops(const std::vector<LinkLevel> &levels,
                                  const std::vector<search::LogicalAxis> &mesh,
                                  const std::string &axis,
                                  const std::vector<int64_t> &order = {});

} // namespace loom::cost

#endif // LOOM_COSTMODEL_GROUPS_H
