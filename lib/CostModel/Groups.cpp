//===- Groups.cpp - process groups laid over a cluster's links ------------===//

#include "loom/CostModel/Groups.h"

#include <algorithm>

using namespace loom;
using namespace loom::cost;

static GroupLevel levelOn(const LinkLevel &level, int64_t size, int64_t gpusPerNode) {
  return levelFor(size, level.gbps, level.latencyUs, level.perNode, gpusPerNode, gpusPerNode);
}

GroupShape loom::cost::groupOver(const std::vector<LinkLevel> &levels,
                                 const std::vector<search::LogicalAxis> &mesh,
                                 std::span<const std::string_view> names) {
  GroupShape g;
  int64_t gpusPerNode = levels.back().size;
  for (auto level = levels.rbegin(); level != levels.rend(); ++level) {
    int64_t size = 1;
    for (const search::LogicalAxis &axis : mesh)
      if (std::find(names.begin(), names.end(), axis.name) != names.end())
        for (const search::Piece &p : axis.pieces)
          if (p.physical == level->name)
            size *= p.size;
    g.levels.push_back(levelOn(*level, size, gpusPerNode));
  }
  return g;
}

std::vector<PipelineHop> loom::cost::axisHops(const std::vector<LinkLevel> &levels,
                                              const std::vector<search::LogicalAxis> &mesh,
                                              const std::string &axis) {
  const search::LogicalAxis *logical = nullptr;
  for (const search::LogicalAxis &a : mesh)
    if (a.name == axis)
      logical = &a;
  if (!logical)
    return {};
  auto levelNamed = [&](const std::string &name) {
    for (const LinkLevel &level : levels)
      if (level.name == name)
        return &level;
    return &levels.back();
  };
  // Positions count in mixed radix over the pieces (outermost first): going
  // from r to r+1 carries through the inner pieces that wrap, so the hop
  // crosses the outermost piece whose digit changes.
  int64_t n = logical->size();
  std::vector<PipelineHop> hops(n);
  for (int64_t r = 0; r < n; ++r) {
    int64_t next = (r + 1) % n;
    const search::Piece *crossed = nullptr;
    int64_t a = r, b = next;
    for (auto p = logical->pieces.rbegin(); p != logical->pieces.rend(); ++p) {
      if (a % p->size != b % p->size)
        crossed = &*p;
      a /= p->size;
      b /= p->size;
    }
    if (!crossed)
      continue;
    const LinkLevel *level = levelNamed(crossed->physical);
    hops[r].link = levelOn(*level, 2, levels.back().size);
    hops[r].crossesDc = level->name == "dc";
  }
  return hops;
}
