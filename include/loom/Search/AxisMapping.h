//===- AxisMapping.h - laying logical axes onto a device hierarchy -*- C++ -*-===//
//
// Which physical links does each parallel dimension cross? A cluster is a list of
// physical axes (dc, node, gpu; outermost first). A strategy asks for logical axes
// (tp, cp, ep, dp, pp) in an order, innermost first. Carving gives each logical
// axis the innermost devices still free, so the first one asked for (tp) lands in
// the NVLink domain and the last (pp) spans nodes or datacenters.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SEARCH_AXISMAPPING_H
#define LOOM_SEARCH_AXISMAPPING_H

#include <cstdint>
#include <string>
#include <vector>

namespace loom::search {

struct PhysicalAxis {
  std::string name;
  int64_t size = 1;
};

struct AxisRequest {
  std::string name;
  int64_t size = 1;
};

struct Piece {
  std::string physical;
  int64_t size = 1;
};

struct LogicalAxis {
  std::string name;
  std::vector<Piece> pieces; // outermost first
  int64_t size() const;
};

struct Carving {
  std::vector<LogicalAxis> axes; // outermost first; axes of size 1 omitted
  std::string error;             // empty on success
  bool ok() const { return error.empty(); }
};

/// Carves `requests` (innermost first) out of `physical` (outermost first). Each
/// request must tile the physical axes exactly: at every step it either fits in
/// what is left of the current axis (and divides it) or takes all of it and
/// continues outwards. All devices must be used. Failures explain themselves,
/// e.g. "tp=6 does not tile cluster axis 'gpu' (8 ranks left): pick a divisor
/// or a multiple of 8".
Carving carveAxes(const std::vector<PhysicalAxis> &physical,
                  const std::vector<AxisRequest> &requests);

/// Which of data and pipeline parallelism takes the outermost links — on a
/// multi-datacenter cluster, which one crosses the WAN. Tensor, context and
/// expert parallelism always come first (innermost), in that order.
///   PipelineOuter  Megatron-LM's order (tp, cp, ep, dp, pp): pipeline stages
///                  span datacenters, so only activations cross the WAN
///   DataOuter      (tp, cp, ep, pp, dp): each datacenter holds whole pipeline
///                  replicas and gradients are reduced across the WAN
enum class RankOrder { PipelineOuter, DataOuter };

/// The carving requests of a strategy, innermost first. `dp` includes `ep`.
std::vector<AxisRequest> strategyAxes(int64_t tp, int64_t cp, int64_t ep, int64_t dp,
                                      int64_t pp, RankOrder order);

/// The nodes holding ranks of each position of logical axis `axis` (an axis
/// the mesh lacks has one position, on every node). The innermost physical
/// axis runs over the GPUs of a node; nodes are numbered row-major over the
/// axes outside it, so datacenter by datacenter. A node appears once per
/// position, in increasing order.
std::vector<std::vector<int64_t>> axisNodes(const std::vector<PhysicalAxis> &physical,
                                            const std::vector<LogicalAxis> &mesh,
                                            const std::string &axis);

/// "pp-outer" / "dp-outer".
const char *rankOrderName(RankOrder order);
bool parseRankOrder(const std::string &word, RankOrder &out);

} // namespace loom::search

#endif // LOOM_SEARCH_AXISMAPPING_H
