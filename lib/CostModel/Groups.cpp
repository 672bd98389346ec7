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

GroupLevel loom::cost::crossingLink(const std::vector<LinkLevel> &levels,
                                    const std::vector<search::LogicalAxis> &mesh,
                                    const std::string &axis) {
  for (const LinkLevel &level : levels) // outermost first
    for (const search::LogicalAxis &logical : mesh)
      if (logical.name == axis)
        for (const search::Piece &p : logical.pieces)
          if (p.physical == level.name)
            return levelOn(level, 2, levels.back().size);
  return {};
}
