//===- Collectives.cpp - alpha-beta costs of collectives on link tiers ----===//
//
// Every formula is the alpha-beta (Hockney) model: a message of m bytes over a
// link of per-rank bandwidth B and latency a costs a + m/B. Notation: S is
// `bytes`, n the group size, level i joins k_i units with bandwidth B_i and
// latency a_i; only levels with k_i > 1 take part.
//
// Sources:
//  [TRG05]  Thakur, Rabenseifner, Gropp, "Optimization of Collective
//           Communication Operations in MPICH", IJHPCA 19(1), 2005: ring
//           all-gather and reduce-scatter (n-1)a + (n-1)/n S/B, pairwise-
//           exchange all-to-all (n-1)a + (n-1)/n S/B.
//  [PY09]   Patarasuk, Yuan, "Bandwidth optimal all-reduce algorithms for
//           clusters of workstations", JPDC 69(2), 2009: ring all-reduce =
//           reduce-scatter then all-gather, 2(n-1) steps of S/n.
//  [NT]     NVIDIA nccl-tests, doc/PERFORMANCE.md: busbw = algbw * 2(n-1)/n
//           for all-reduce, * (n-1)/n for all-gather and reduce-scatter, i.e.
//           the ring's per-link volume; the ring formulas below reproduce it.
//  [NCCL24] Jeaugey, "Massively Scale Your Deep Learning Training with NCCL
//           2.4", NVIDIA developer blog, 2019: double binary trees, each rank
//           a leaf in one tree, so full bandwidth and log2(n) latency.
//  [JIA18]  Jia et al., "Highly Scalable Deep Learning Training System with
//           Mixed-Precision", arXiv:1807.11205: hierarchical all-reduce
//           (intra-node reduce, inter-node all-reduce, intra-node broadcast).
//  [TUTEL]  Hwang et al., "Tutel: Adaptive Mixture-of-Experts at Scale",
//           arXiv:2206.03382: two-dimensional hierarchical all-to-all.
//
// The planner calls collectiveTime millions of times: the code walks the
// group's levels in place and allocates nothing.
//
//===----------------------------------------------------------------------===//

#include "loom/CostModel/Collectives.h"

#include <algorithm>
#include <bit>

using namespace loom::cost;

int64_t GroupShape::size() const {
  if (ranks > 0)
    return ranks;
  int64_t n = 1;
  for (const GroupLevel &l : levels)
    n *= l.size;
  return n;
}

GroupLevel loom::cost::levelFor(int64_t size, double tierGbps, double latencyUs,
                                bool perNode, int64_t gpusPerNode,
                                int64_t concurrentGroups) {
  double pipe = tierGbps * 1e9 / 8;
  double pipes = perNode ? 1.0 : double(std::max<int64_t>(1, gpusPerNode));
  double streams = double(std::max<int64_t>(1, concurrentGroups));
  return {size, pipe * std::min(1.0, pipes / streams), latencyUs * 1e-6};
}

double loom::cost::p2pTime(double bytes, const GroupLevel &link) {
  return bytes > 0 ? link.latency + bytes / link.bandwidth : 0.0;
}

namespace {

bool crossed(const GroupLevel &l) { return l.size > 1; }

/// The level of least bandwidth the group crosses (the first on ties).
const GroupLevel *slowestLevel(const GroupShape &g) {
  const GroupLevel *slowest = nullptr;
  for (const GroupLevel &l : g.levels)
    if (crossed(l) && (!slowest || l.bandwidth < slowest->bandwidth))
      slowest = &l;
  return slowest;
}

/// Ring passes over the data: reduce-scatter + all-gather for an all-reduce
/// [PY09], one for either half alone.
int passes(Collective op) { return op == Collective::AllReduce ? 2 : 1; }

/// One ring over all n ranks [TRG05, PY09]: passes*(n-1) steps, in each every
/// rank sends S/n to its neighbour. The ring crosses every level, and all hops
/// of a step run together, so a step lasts as long as the slowest hop:
///   T = passes (n-1) max_i(S/(n B_i) + a_i).
/// Each hop is one rank's link: a single ring does not use the other ranks'
/// NICs on a node (Hierarchical does).
CommCost ring(int passCount, double bytes, const GroupShape &g) {
  double n = double(g.size());
  double chunk = bytes / n;
  double step = 0;
  for (const GroupLevel &l : g.levels)
    if (crossed(l))
      step = std::max(step, chunk / l.bandwidth + l.latency);
  double steps = passCount * (n - 1);
  return {steps * step, Algorithm::Ring, steps * chunk};
}

/// Double binary tree all-reduce [NCCL24]: each tree reduces and broadcasts
/// half the buffer, pipelined; a rank inner in one tree and a leaf in the
/// other sends 2S in all, bounded by the slowest link. The trees are built
/// level by level, so their depth is sum_i ceil(log2 k_i) hops, walked up and
/// down:  T = 2S/B_min + 2 sum_i ceil(log2 k_i) a_i.
CommCost tree(double bytes, const GroupShape &g, const GroupLevel *slowest) {
  double depthLatency = 0;
  for (const GroupLevel &l : g.levels)
    if (crossed(l))
      depthLatency += double(std::bit_width(uint64_t(l.size - 1))) * l.latency;
  return {2 * bytes / slowest->bandwidth + 2 * depthLatency, Algorithm::Tree,
          2 * bytes};
}

/// Level by level, innermost first [JIA18, TUTEL]. At level i, every rank runs
/// a ring (or an all-to-all exchange) with its k_i peers on the shard s_i the
/// inner levels left it; the prod_{j<i} k_j ranks of a unit do so side by
/// side, each on its own link. Reduce-scatter shrinks the shard, s_{i+1} =
/// s_i/k_i, and all-gather retraces it outermost first, so both cost
///   T = sum_i (k_i-1)/k_i s_i/B_i + (k_i-1) a_i,   s_0 = S,
/// and all-reduce, being both, twice that. The hierarchical all-to-all keeps
/// s_i = S: each phase regroups the whole buffer by the destination's index
/// on that level, so later phases send fewer, larger messages.
CommCost levelByLevel(int passCount, bool shrinks, double bytes,
                      const GroupShape &g, const GroupLevel *slowest) {
  CommCost c{0, Algorithm::Hierarchical, 0};
  double shard = bytes;
  for (const GroupLevel &l : g.levels) {
    if (!crossed(l))
      continue;
    double k = double(l.size);
    double sent = passCount * (k - 1) / k * shard;
    c.seconds += sent / l.bandwidth + passCount * (k - 1) * l.latency;
    if (&l == slowest)
      c.slowestLevelBytes = sent;
    if (shrinks)
      shard /= k;
  }
  return c;
}

/// All-to-all sent straight to every peer, pairwise exchange [TRG05]. Level
/// i's link lies on the path of everything leaving the rank's unit below it,
/// i.e. to the n - m_i ranks outside it (m_i = prod_{j<i} k_j): a NIC also
/// carries what goes on to other datacenters, and NCCL's PXN sends off-node
/// traffic over NVLink to the GPU on the right rail first. The levels work in
/// parallel, each sending its messages one after another:
///   T = max_i (n-m_i)/n S/B_i + (n-m_i) a_i.
/// One level gives [TRG05]'s (n-1)a + (n-1)/n S/B.
CommCost direct(double bytes, const GroupShape &g, const GroupLevel *slowest) {
  double n = double(g.size());
  double inner = 1;
  CommCost c{0, Algorithm::Direct, 0};
  for (const GroupLevel &l : g.levels) {
    if (!crossed(l))
      continue;
    double peers = n - inner;
    double sent = bytes * peers / n;
    c.seconds = std::max(c.seconds, sent / l.bandwidth + peers * l.latency);
    if (&l == slowest)
      c.slowestLevelBytes = sent;
    inner *= double(l.size);
  }
  return c;
}

bool has(Collective op, Algorithm a) {
  switch (a) {
  case Algorithm::Ring:
    return op != Collective::AllToAll;
  case Algorithm::Tree:
    return op == Collective::AllReduce;
  case Algorithm::Hierarchical:
    return true;
  case Algorithm::Direct:
    return op == Collective::AllToAll;
  case Algorithm::Auto:
    break;
  }
  return false;
}

Algorithm flat(Collective op) {
  return op == Collective::AllToAll ? Algorithm::Direct : Algorithm::Ring;
}

/// `a` must be one `op` has.
CommCost run(Collective op, Algorithm a, double bytes, const GroupShape &g,
             const GroupLevel *slowest) {
  switch (a) {
  case Algorithm::Ring:
    return ring(passes(op), bytes, g);
  case Algorithm::Tree:
    return tree(bytes, g, slowest);
  case Algorithm::Direct:
    return direct(bytes, g, slowest);
  case Algorithm::Hierarchical:
  case Algorithm::Auto: // never: collectiveTime resolves Auto first
    break;
  }
  return levelByLevel(passes(op), op != Collective::AllToAll, bytes, g, slowest);
}

} // namespace

CommCost loom::cost::collectiveTime(Collective op, double bytes,
                                    const GroupShape &group,
                                    Algorithm algorithm) {
  // Auto, and an algorithm `op` lacks, start from the flat one.
  Algorithm asked = has(op, algorithm) ? algorithm : flat(op);
  const GroupLevel *slowest = slowestLevel(group);
  if (bytes <= 0 || !slowest)
    return {0, asked, 0};
  if (algorithm != Algorithm::Auto)
    return run(op, asked, bytes, group, slowest);

  // Auto: the flat algorithm, unless another is strictly faster.
  CommCost best = run(op, asked, bytes, group, slowest);
  for (Algorithm a : {Algorithm::Tree, Algorithm::Hierarchical}) {
    if (!has(op, a))
      continue;
    CommCost c = run(op, a, bytes, group, slowest);
    if (c.seconds < best.seconds)
      best = c;
  }
  return best;
}
