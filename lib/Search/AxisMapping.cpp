//===- AxisMapping.cpp - laying logical axes onto a device hierarchy ------===//

#include "loom/Search/AxisMapping.h"

#include <fmt/format.h>

using namespace loom::search;

int64_t LogicalAxis::size() const {
  int64_t n = 1;
  for (const Piece &p : pieces)
    n *= p.size;
  return n;
}

Carving loom::search::carveAxes(const std::vector<PhysicalAxis> &physical,
                                const std::vector<AxisRequest> &requests) {
  Carving out;
  int64_t devices = 1, asked = 1;
  for (const PhysicalAxis &a : physical)
    devices *= a.size;
  for (const AxisRequest &r : requests) {
    if (r.size < 1) {
      out.error = fmt::format("{}={} must be >= 1", r.name, r.size);
      return out;
    }
    asked *= r.size;
  }
  if (asked != devices) {
    std::string product;
    for (const AxisRequest &r : requests)
      product += fmt::format("{}{}={}", product.empty() ? "" : " x ", r.name, r.size);
    out.error = fmt::format("{} = {} ranks, but the cluster has {} GPUs", product,
                            asked, devices);
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
