//===- Collectives.h - time of collectives on hierarchical links -*- C++ -*-===//
//
// Alpha-beta costs of the collectives training uses, for process groups that
// span several link tiers (NVLink inside a node, a fabric between nodes, a WAN
// between datacenters). Plain C++: seconds, bytes, bytes per second.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_COSTMODEL_COLLECTIVES_H
#define LOOM_COSTMODEL_COLLECTIVES_H

#include <cstdint>
#include <vector>

namespace loom::cost {

/// One level of a process group: `size` ranks of the group joined by one link
/// tier. `bandwidth` is what one rank of the group can send in one direction
/// over that tier (already divided among concurrent users: see levelFor).
struct GroupLevel {
  int64_t size = 1;
  double bandwidth = 0; // bytes per second, one direction, per rank
  double latency = 0;   // seconds per message
};

/// A process group spread over the hierarchy, innermost level first (gpu, node,
/// dc). Levels of size 1 may be present and cost nothing.
struct GroupShape {
  std::vector<GroupLevel> levels;
  /// Ranks in the group when the levels describe only its slowest part (a
  /// group over datacenters of different sizes: see cost::groupOver); 0
  /// when the levels' sizes multiply to it.
  int64_t ranks = 0;
  int64_t size() const;
};

/// The level a group sees on a link tier.
///   tierGbps         the tier's bandwidth in Gb/s, one direction
///   perNode          true when the tier is one pipe per node (a WAN uplink),
///                    false when each GPU has its own (NVLink, one NIC per GPU)
///   gpusPerNode      GPUs sharing a per-node pipe
///   concurrentGroups how many groups of this kind cross the tier at the same
///                    time from one node (e.g. 8 tp-ranks each running its own
///                    dp all-reduce): they split a per-node pipe
///
/// Sharing: the node has one pipe of the tier (perNode) or gpusPerNode of them
/// (one per GPU). The concurrentGroups streams leaving one node spread evenly
/// over those pipes, and one stream never gets more than one pipe:
///   bandwidth = tier * min(1, pipes / concurrentGroups).
/// So a per-node uplink gives tier / concurrentGroups, and one NIC per GPU
/// gives each of up to gpusPerNode streams a whole NIC. Count a stream for each
/// rank of the node that sends over the tier at once: in the usual layouts a
/// group has one rank per node on that level (tp inside the node, dp across),
/// so that is the number of groups; a group with r ranks on a node counts r
/// times, because hierarchical algorithms run its r outer rings side by side.
/// Values below 1 count as 1.
GroupLevel levelFor(int64_t size, double tierGbps, double latencyUs, bool perNode,
                    int64_t gpusPerNode, int64_t concurrentGroups);

enum class Collective { AllReduce, ReduceScatter, AllGather, AllToAll };
/// How a collective moves its bytes; see Collectives.cpp for each formula.
///   Ring          one ring over all ranks (all-reduce, reduce-scatter,
///                 all-gather); every step waits for the slowest hop
///   Tree          NCCL's double binary tree (all-reduce only)
///   Hierarchical  level by level, innermost first: each level's rings (or
///                 all-to-all exchanges) run on the shard the inner levels
///                 left, all inner ranks in parallel on their own links
///   Direct        all-to-all straight to every peer (pairwise exchange)
/// Asking for an algorithm the collective lacks (Tree for an all-gather, Ring
/// for an all-to-all) gets its flat one: Ring, or Direct for all-to-all.
enum class Algorithm { Auto, Ring, Tree, Hierarchical, Direct };

struct CommCost {
  double seconds = 0;
  Algorithm algorithm = Algorithm::Ring; // the one chosen (Auto picks the fastest)
  double slowestLevelBytes = 0;          // bytes each rank sends on the slowest level
};
// slowestLevelBytes is the volume a rank that uses the slowest level (the one
// of least bandwidth among levels of size > 1) pushes through it, so
// slowestLevelBytes / its bandwidth is that level's bandwidth term.

/// Time of `op` over `group`. `bytes` is the size of the full buffer on one
/// rank: the input of an all-reduce or reduce-scatter, the output of an
/// all-gather, what one rank sends in total in an all-to-all.
/// A group of one rank, or zero bytes, costs nothing. Auto takes the fastest
/// algorithm the collective has; ties go to the flat one. Allocates nothing.
CommCost collectiveTime(Collective op, double bytes, const GroupShape &group,
                        Algorithm algorithm = Algorithm::Auto);

/// Time to send `bytes` point to point over one level (pipeline activations).
double p2pTime(double bytes, const GroupLevel &link);

} // namespace loom::cost

#endif // LOOM_COSTMODEL_COLLECTIVES_H
