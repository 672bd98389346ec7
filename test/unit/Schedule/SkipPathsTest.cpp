//===- SkipPathsTest.cpp - skip and reorder paths on geo networks ---------===//

#include "loom/Schedule/Generators.h"
#include "loom/Schedule/SkipPaths.h"

#include "ScheduleTesting.h"

using namespace loom::sched;
using namespace loom::sched::testing;

namespace {

/// Iteration time of every microbatch taking the full path, list-scheduled
/// under the same options.
double fullPathTime(const Costs &c, const SkipOptions &o) {
  ListPolicy policy;
  policy.memoryLimit = o.memoryLimit;
  policy.splitBackward = o.splitBackward;
  return run(listSchedule(linearLayout(o.ranks, o.microBatches), c, policy), c).makespan;
}

TEST(SkipPaths, RouteAroundASlowStage) {
  // Six stages in one datacenter (50 ms hops) except stage 2, reached over a
  // 2 s WAN link in both directions.
  SkipOptions o;
  o.ranks = 6;
  o.microBatches = 12;
  o.memoryLimit = 6;
  o.rules = {.maxSkipFraction = 0.25, .maxSwaps = 0, .minStageShare = 0.5};
  Costs c = Costs::uniform(linearLayout(o.ranks, o.microBatches), 1, 1, 1, 0.05);
  for (int r = 0; r < o.ranks; ++r)
    if (r != 2) {
      c.setLink(r, 2, 2.0);
      c.setLink(2, r, 2.0);
    }
  Schedule s = skipPipe(c, o);
  ASSERT_EQ(diagnostics(s, {.memoryLimit = o.memoryLimit, .pathRules = o.rules}), "");
  int throughSlow = 0;
  for (const auto &path : s.paths)
    throughSlow += std::count(path.begin(), path.end(), 2);
  EXPECT_EQ(throughSlow, 6); // the share it must see, and no more
  double skip = run(s, c).makespan, full = fullPathTime(c, o);
  EXPECT_LT(skip, 0.8 * full) << "skip " << skip << " full " << full;
  EXPECT_LT(skip, run(oneFOneB(o.ranks, o.microBatches), c).makespan);
}

TEST(SkipPaths, ReorderAroundSlowLinks) {
  // Four stages on a ring of sites where 0-1 and 2-3 are far apart but
  // 0-2, 2-1 and 1-3 are close: visiting 0,2,1,3 avoids both slow hops.
  SkipOptions o;
  o.ranks = 4;
  o.microBatches = 8;
  o.rules = {.maxSkipFraction = 0, .maxSwaps = 1, .minStageShare = 1};
  Costs c = Costs::uniform(linearLayout(o.ranks, o.microBatches), 1, 1, 1, 0.05);
  for (auto [a, b] : {std::pair{0, 1}, std::pair{2, 3}}) {
    c.setLink(a, b, 1.5);
    c.setLink(b, a, 1.5);
  }
  std::vector<std::vector<int32_t>> paths = choosePaths(c, o);
  EXPECT_TRUE(verifyPaths(paths, o.ranks, o.rules).empty());
  int reordered = 0;
  for (const auto &path : paths)
    reordered += path == std::vector<int32_t>{0, 2, 1, 3};
  EXPECT_EQ(reordered, o.microBatches);
  EXPECT_LT(run(skipPipe(c, o), c).makespan, fullPathTime(c, o));
}

TEST(SkipPaths, UniformNetworkSkipsOnlyToShedWork) {
  // With equal links, skipping still saves compute; every stage keeps at
  // least its share, and the first and last stage see every microbatch.
  SkipOptions o;
  o.ranks = 5;
  o.microBatches = 10;
  o.rules = {.maxSkipFraction = 0.34, .maxSwaps = 0, .minStageShare = 0.7};
  Costs c = Costs::uniform(linearLayout(o.ranks, o.microBatches), 1, 1, 1, 0.05);
  Schedule s = skipPipe(c, o);
  ASSERT_EQ(diagnostics(s, {.pathRules = o.rules}), "");
  std::vector<int> visits(o.ranks, 0);
  for (const auto &path : s.paths)
    for (int32_t st : path)
      ++visits[st];
  EXPECT_EQ(visits.front(), o.microBatches);
  EXPECT_EQ(visits.back(), o.microBatches);
  EXPECT_LE(run(s, c).makespan, fullPathTime(c, o));
}

} // namespace
