//===- Groups.cpp - process groups laid over a cluster's links ------------===//

#include "loom/CostModel/Groups.h"

#include <algorithm>

using namespace loom;
using namespace loom::cost;

static GroupLevel levelOn(const LinkLevel &level, int64_t size, int64_t gpusPerNode) {
  return levelFor(size, level.gbps, level.latencyUs, level.perNode, gpusPerNode, gpusPerNode);
}

namespace {

/// The pieces laid on a level, in mesh order: the level's index is their
/// digits, the first most significant (outer axes were carved last).
struct LevelPiece {
  const search::LogicalAxis *axis;
  const search::Piece *piece;
  int64_t weight; // the digit's place value in the level's index
};
std::vector<LevelPiece> piecesOn(const std::vector<search::LogicalAxis> &mesh,
                                 const std::string &level) {
  std::vector<LevelPiece> out;
  for (const search::LogicalAxis &a : mesh)
    for (const search::Piece &p : a.pieces)
      if (p.physical == level)
        out.push_back({&a, &p, 1});
  for (size_t i = out.size(); i-- > 1;)
    out[i - 1].weight = out[i].weight * out[i].piece->size;
  return out;
}

/// Over the cells of an unequal-DC "dc" level: the group of `names` spanning
/// the most datacenters, and the fewest of its cells in one of them.
std::pair<int64_t, int64_t> worstDcSpread(const LinkLevel &dc,
                                          const std::vector<search::LogicalAxis> &mesh,
                                          std::span<const std::string_view> names) {
  std::vector<LevelPiece> pieces = piecesOn(mesh, dc.name);
  auto member = [&](const LevelPiece &p) {
    return std::find(names.begin(), names.end(), p.axis->name) != names.end();
  };
  int64_t cells = int64_t(dc.cellDc.size());
  int32_t dcs = dc.cellDc.empty() ? 0 : *std::max_element(dc.cellDc.begin(), dc.cellDc.end()) + 1;
  // Cells of one group share the digits of the other axes' pieces: the cell
  // with the members' digits zeroed names the group.
  std::vector<std::vector<int64_t>> counts(cells);
  for (int64_t c = 0; c < cells; ++c) {
    int64_t key = c;
    for (const LevelPiece &p : pieces)
      if (member(p))
        key -= (c / p.weight % p.piece->size) * p.weight;
    if (counts[key].empty())
      counts[key].assign(dcs, 0);
    ++counts[key][dc.cellDc[c]];
  }
  std::pair<int64_t, int64_t> worst{1, cells};
  for (const std::vector<int64_t> &perDc : counts) {
    if (perDc.empty())
      continue;
    int64_t spanned = 0, fewest = cells;
    for (int64_t n : perDc)
      if (n > 0) {
        ++spanned;
        fewest = std::min(fewest, n);
      }
    if (spanned > worst.first || (spanned == worst.first && fewest < worst.second))
      worst = {spanned, fewest};
  }
  return worst;
}

} // namespace

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
    if (!level->cellDc.empty() && level != levels.rbegin()) {
      auto [dcs, fewest] = size > 1 ? worstDcSpread(*level, mesh, names)
                                    : std::pair<int64_t, int64_t>{1, 1};
      // The cells inside one DC talk over the nodes' fabric (the next level in).
      g.levels.push_back(levelOn(*(level - 1), dcs > 1 ? fewest : size, gpusPerNode));
      g.levels.push_back(levelOn(*level, dcs, gpusPerNode));
      if (dcs > 1 && fewest * dcs != size) {
        g.ranks = size; // times the levels inside the cells
        for (size_t i = 0; i + 2 < g.levels.size(); ++i)
          g.ranks *= g.levels[i].size;
      }
      continue;
    }
    g.levels.push_back(levelOn(*level, size, gpusPerNode));
  }
  return g;
}

bool loom::cost::crossesDatacenters(const std::vector<LinkLevel> &levels,
                                    const std::vector<search::LogicalAxis> &mesh,
                                    std::string_view axis) {
  if (!spansDatacenters(levels))
    return false;
  std::string_view names[] = {axis};
  GroupShape g = groupOver(levels, mesh, names);
  return g.levels.back().size > 1;
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
    int64_t digitA = 0, digitB = 0;
    for (auto p = logical->pieces.rbegin(); p != logical->pieces.rend(); ++p) {
      if (a % p->size != b % p->size) {
        crossed = &*p;
        digitA = a % p->size;
        digitB = b % p->size;
      }
      a /= p->size;
      b /= p->size;
    }
    if (!crossed)
      continue;
    const LinkLevel *level = levelNamed(crossed->physical);
    bool crossesDc = level->name == "dc";
    if (crossesDc && !level->cellDc.empty()) {
      // Cells of unequal DCs: the hop leaves the DC if it does so for any
      // of the pipelines (the slowest sets the pace); otherwise it stays on
      // the nodes' fabric.
      int64_t weight = 1;
      for (const LevelPiece &p : piecesOn(mesh, level->name))
        if (p.piece == crossed)
          weight = p.weight;
      crossesDc = false;
      for (int64_t c = 0; c < int64_t(level->cellDc.size()); ++c)
        if (c / weight % crossed->size == digitA &&
            level->cellDc[c] != level->cellDc[c + (digitB - digitA) * weight])
          crossesDc = true;
      if (!crossesDc)
        level = &levels[1]; // the node level, under the dc level
    }
    hops[s].link = levelOn(*level, 2, levels.back().size);
    hops[s].crossesDc = crossesDc;
  }
  return hops;
}
