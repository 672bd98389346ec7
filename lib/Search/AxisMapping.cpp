//===- AxisMapping.cpp - laying logical axes onto a device hierarchy ------===//

#include "loom/Search/AxisMapping.h"
#include "loom/Support/Checked.h"

#include <fmt/format.h>

using namespace loom::search;

int64_t LogicalAxis::size() const {
  int64_t n = 1;
  for (const Piece &p : pieces)
    n = mulUpTo(n, p.size);
  return n;
}

Carving loom::search::carveAxes(const std::vector<PhysicalAxis> &physical,
                                const std::vector<AxisRequest> &requests) {
  Carving out;
  int64_t devices = 1, asked = 1;
  for (const PhysicalAxis &a : physical)
    devices = mulUpTo(devices, a.size);
  for (const AxisRequest &r : requests) {
    if (r.size < 1) {
      out.error = fmt::format("{}={} must be >= 1", r.name, r.size);
      return out;
    }
    asked = mulUpTo(asked, r.size);
  }
  if (asked != devices) {
    std::string product;
    for (const AxisRequest &r : requests)
      product += fmt::format("{}{}={}", product.empty() ? "" : " x ", r.name, r.size);
    out.error = fmt::format("{} = {} ranks, but the cluster has {} GPUs", product,
                            productText(asked), devices);
    return out;
  }

  // left[i]: devices of physical axis i not yet given to a logical axis.
  std::vector<int64_t> left;
  for (const PhysicalAxis &a : physical)
    left.push_back(a.size);
  int cur = static_cast<int>(physical.size()) - 1;

  std::vector<LogicalAxis> innerFirst;
  for (const AxisRequest &r : requests) {
    LogicalAxis axis{r.name, {}};
    int64_t need = r.size;
    while (need > 1) {
      while (cur >= 0 && left[cur] == 1)
        --cur;
      if (cur < 0) // unreachable while sizes multiply to the device count
        break;
      int64_t take;
      if (left[cur] % need == 0)
        take = need;
      else if (need % left[cur] == 0)
        take = left[cur];
      else {
        out.error = fmt::format(
            "{}={} does not tile cluster axis '{}' ({} ranks left): pick a divisor "
            "or a multiple of {}",
            r.name, r.size, physical[cur].name, left[cur], left[cur]);
        return out;
      }
      axis.pieces.insert(axis.pieces.begin(), Piece{physical[cur].name, take});
      left[cur] /= take;
      need /= take;
    }
    if (!axis.pieces.empty())
      innerFirst.push_back(std::move(axis));
  }
  out.axes.assign(innerFirst.rbegin(), innerFirst.rend());
  return out;
}

std::vector<AxisRequest> loom::search::strategyAxes(int64_t tp, int64_t cp, int64_t ep,
                                                    int64_t dp, int64_t pp, RankOrder order) {
  if (order == RankOrder::DataOuter)
    return {{"tp", tp}, {"cp", cp}, {"ep", ep}, {"pp", pp}, {"dp", dp / ep}};
  return {{"tp", tp}, {"cp", cp}, {"ep", ep}, {"dp", dp / ep}, {"pp", pp}};
}

std::vector<std::vector<int64_t>> loom::search::axisNodes(
    const std::vector<PhysicalAxis> &physical, const std::vector<LogicalAxis> &mesh,
    const std::string &axis) {
  const LogicalAxis *logical = nullptr;
  for (const LogicalAxis &a : mesh)
    if (a.name == axis)
      logical = &a;
  std::vector<std::vector<int64_t>> out(logical ? logical->size() : 1);
  if (physical.empty())
    return out;
  // A physical index splits over the pieces laid on it, most significant
  // first in mesh order (earlier axes are outer). Each piece of `axis`
  // contributes its digit times the sizes of the axis's later pieces; pieces
  // on the GPUs of a node add every one of their digits to each node.
  struct Digit {
    int64_t size, weight; // weight 0: another axis's piece
  };
  size_t gpuLevel = physical.size() - 1;
  std::vector<std::vector<Digit>> perLevel(gpuLevel);
  std::vector<int64_t> inNode{0}; // offsets the node's GPUs add to a position
  for (const LogicalAxis &a : mesh)
    for (size_t k = 0; k < a.pieces.size(); ++k) {
      int64_t weight = 0;
      if (&a == logical) {
        weight = 1;
        for (size_t j = k + 1; j < a.pieces.size(); ++j)
          weight *= a.pieces[j].size;
      }
      for (size_t l = 0; l < physical.size(); ++l) {
        if (physical[l].name != a.pieces[k].physical)
          continue;
        if (l < gpuLevel) {
          perLevel[l].push_back({a.pieces[k].size, weight});
        } else if (weight > 0) {
          std::vector<int64_t> spread;
          for (int64_t offset : inNode)
            for (int64_t g = 0; g < a.pieces[k].size; ++g)
              spread.push_back(offset + g * weight);
          inNode = std::move(spread);
        }
      }
    }
  int64_t nodes = 1;
  for (size_t l = 0; l < gpuLevel; ++l)
    nodes *= physical[l].size;
  for (int64_t node = 0; node < nodes; ++node) {
    int64_t base = 0, rest = node;
    // Axes above the GPUs, innermost first, peel the node number apart.
    for (size_t l = gpuLevel; l-- > 0;) {
      int64_t index = rest % physical[l].size;
      rest /= physical[l].size;
      for (auto d = perLevel[l].rbegin(); d != perLevel[l].rend(); ++d) {
        base += (index % d->size) * d->weight;
        index /= d->size;
      }
    }
    for (int64_t offset : inNode)
      if (out[base + offset].empty() || out[base + offset].back() != node)
        out[base + offset].push_back(node);
  }
  return out;
}

const char *loom::search::rankOrderName(RankOrder order) {
  return order == RankOrder::DataOuter ? "dp-outer" : "pp-outer";
}

bool loom::search::parseRankOrder(const std::string &word, RankOrder &out) {
  if (word == "pp-outer")
    out = RankOrder::PipelineOuter;
  else if (word == "dp-outer")
    out = RankOrder::DataOuter;
  else
    return false;
  return true;
}
