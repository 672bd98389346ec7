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

namespace {

const search::LogicalAxis *findAxis(const std::vector<search::LogicalAxis> &mesh,
                                    const std::string &axis) {
  for (const search::LogicalAxis &a : mesh)
    if (a.name == axis)
      return &a;
  return nullptr;
}

} // namespace

std::vector<PipelineHop> loom::cost::axisHops(const std::vector<LinkLevel> &levels,
                                              const std::vector<search::LogicalAxis> &mesh,
                                              const std::string &axis,
                                              const std::vector<int64_t> &order) {
  const search::LogicalAxis *logical = findAxis(mesh, axis);
  if (!logical)
    return {};
  auto levelNamed = [&](const std::string &name) {
    for (const LinkLevel &level : levels)
      if (level.name == name)
        return &level;
    return &levels.back();
  };
  // Positions count in mixed radix over the pieces (outermost first): two
  // positions are joined by the level of the outermost piece whose digits
  // differ (from r to r+1 that is where the carry stops).
  int64_t n = logical->size();
  std::vector<PipelineHop> hops(n);
  for (int64_t s = 0; s < n; ++s) {
    int64_t a = order.empty() ? s : order[s];
    int64_t b = order.empty() ? (s + 1) % n : order[(s + 1) % n];
    const search::Piece *crossed = nullptr;
    for (auto p = logical->pieces.rbegin(); p != logical->pieces.rend(); ++p) {
      if (a % p->size != b % p->size)
        crossed = &*p;
      a /= p->size;
      b /= p->size;
    }
    if (!crossed)
      continue;
    const LinkLevel *level = levelNamed(crossed->physical);
    hops[s].link = levelOn(*level, 2, levels.back().size);
    hops[s].crossesDc = level->name == "dc";
  }
  return hops;
}

std::vector<std::vector<int64_t>> loom::cost::axisNodes(
    const std::vector<LinkLevel> &levels, const std::vector<search::LogicalAxis> &mesh,
    const std::string &axis) {
  const search::LogicalAxis *logical = findAxis(mesh, axis);
  int64_t positions = logical ? logical->size() : 1;
  std::vector<std::vector<int64_t>> out(positions);
  // A level's index splits over the pieces laid on it, most significant first
  // in mesh order (outer axes were carved last, so they vary slowest). Each
  // piece of `axis` contributes its digit times the sizes of the axis's
  // later pieces; a piece on the gpu level spans every value within a node.
  struct Digit {
    int64_t size, weight; // weight 0: another axis's piece
  };
  std::vector<std::vector<Digit>> perLevel(levels.size());
  int64_t gpuSpan = 1;
  for (const search::LogicalAxis &a : mesh)
    for (size_t k = 0; k < a.pieces.size(); ++k) {
      int64_t weight = 0;
      if (&a == logical) {
        weight = 1;
        for (size_t j = k + 1; j < a.pieces.size(); ++j)
          weight *= a.pieces[j].size;
      }
      for (size_t l = 0; l < levels.size(); ++l)
        if (levels[l].name == a.pieces[k].physical) {
          if (l + 1 == levels.size() && weight > 0)
            gpuSpan = a.pieces[k].size; // innermost piece: weight 1
          else
            perLevel[l].push_back({a.pieces[k].size, weight});
        }
    }
  int64_t nodes = 1;
  for (size_t l = 0; l + 1 < levels.size(); ++l)
    nodes *= levels[l].size;
  for (int64_t node = 0; node < nodes; ++node) {
    int64_t base = 0, rest = node;
    // Levels above the GPUs, innermost first, peel the node number apart.
    for (size_t l = levels.size() - 1; l-- > 0;) {
      int64_t index = rest % levels[l].size;
      rest /= levels[l].size;
      for (auto d = perLevel[l].rbegin(); d != perLevel[l].rend(); ++d) {
        base += (index % d->size) * d->weight;
        index /= d->size;
      }
    }
    for (int64_t g = 0; g < gpuSpan; ++g)
      if (out[base + g].empty() || out[base + g].back() != node)
        out[base + g].push_back(node);
  }
  return out;
}
