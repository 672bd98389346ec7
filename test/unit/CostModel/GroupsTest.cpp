//===- GroupsTest.cpp - pipeline hops and nodes of a carved mesh ----------===//

#include "loom/CostModel/Groups.h"

#include <gtest/gtest.h>

using namespace loom;
using namespace loom::cost;

namespace {

// 2 datacenters x 4 nodes x 8 GPUs; the WAN is the slowest link.
std::vector<LinkLevel> levels() {
  return {{"dc", 2, 100, 10000, true}, {"node", 4, 400, 5, false}, {"gpu", 8, 3600, 1, false}};
}

std::vector<search::LogicalAxis> carve(const std::vector<search::AxisRequest> &requests,
                                       const std::vector<LinkLevel> &over = levels()) {
  std::vector<search::PhysicalAxis> physical;
  for (const LinkLevel &l : over)
    physical.push_back({l.name, l.size});
  search::Carving c = search::carveAxes(physical, requests);
  EXPECT_TRUE(c.ok()) << c.error;
  return c.axes;
}

TEST(Groups, PipelineHopsCrossTheLevelWhereTheCarryStops) {
  // pp = dc:2 * node:2: hops 0->1 and 2->3 stay in a datacenter, 1->2 and the
  // wrap 3->0 cross it.
  auto mesh = carve({{"tp", 8}, {"dp", 2}, {"pp", 4}});
  std::vector<PipelineHop> hops = axisHops(levels(), mesh, "pp");
  ASSERT_EQ(hops.size(), 4u);
  EXPECT_FALSE(hops[0].crossesDc);
  EXPECT_TRUE(hops[1].crossesDc);
  EXPECT_FALSE(hops[2].crossesDc);
  EXPECT_TRUE(hops[3].crossesDc);
  EXPECT_LT(hops[1].link.bandwidth, hops[0].link.bandwidth);
  EXPECT_GT(hops[1].link.latency, hops[0].link.latency);

  // Reordered stages 0, 2, 1, 3: every hop now changes datacenter.
  std::vector<PipelineHop> reordered = axisHops(levels(), mesh, "pp", {0, 2, 1, 3});
  for (const PipelineHop &hop : reordered)
    EXPECT_TRUE(hop.crossesDc);
}

// Datacenters of 3 and 1 cells (of 2 nodes of 8 GPUs): the dc level counts
// cells; only steps between the third and fourth cell leave a datacenter.
std::vector<LinkLevel> cellLevels() {
  return {{"dc", 4, 100, 10000, true, {0, 0, 0, 1}},
          {"node", 2, 400, 5, false, {}},
          {"gpu", 8, 3600, 1, false, {}}};
}

TEST(Groups, PipelineOverUnequalDatacentersLeavesOnlyAtTheBoundary) {
  // pp = dc:4, one stage per cell: the hops 2->3 and the wrap 3->0 cross the
  // WAN; 0->1 and 1->2 stay on the first datacenter's fabric.
  auto mesh = carve({{"tp", 8}, {"dp", 2}, {"pp", 4}}, cellLevels());
  std::vector<PipelineHop> hops = axisHops(cellLevels(), mesh, "pp");
  ASSERT_EQ(hops.size(), 4u);
  EXPECT_FALSE(hops[0].crossesDc);
  EXPECT_FALSE(hops[1].crossesDc);
  EXPECT_TRUE(hops[2].crossesDc);
  EXPECT_TRUE(hops[3].crossesDc);
  EXPECT_EQ(hops[0].link.bandwidth, hops[1].link.bandwidth);
  EXPECT_GT(hops[0].link.bandwidth, hops[2].link.bandwidth);
  EXPECT_FALSE(crossesDatacenters(cellLevels(), mesh, "dp"));
  EXPECT_TRUE(crossesDatacenters(cellLevels(), mesh, "pp"));

  // pp = dc:2 with dp = dc:2 inside it: stage 0 is cells 0-1, stage 1 cells
  // 2-3. One of the two pipelines (cells 1 -> 3) leaves the datacenter, and
  // stage 1's data-parallel group spans both.
  auto split = carve({{"tp", 8}, {"dp", 4}, {"pp", 2}}, cellLevels());
  hops = axisHops(cellLevels(), split, "pp");
  EXPECT_TRUE(hops[0].crossesDc);
  EXPECT_TRUE(crossesDatacenters(cellLevels(), split, "dp"));
}

TEST(Groups, DataParallelOverUnequalDatacentersIsPacedByTheSmallerOne) {
  // dp = dc:4 x node:2 (8 ranks): 6 in the first datacenter, 2 in the
  // second. The WAN step sees two datacenters, and the smaller one's shard
  // (1/2 of the buffer after its node-level reduction) crosses it.
  auto mesh = carve({{"tp", 8}, {"dp", 8}}, cellLevels());
  std::string_view dp[] = {"dp"};
  GroupShape g = groupOver(cellLevels(), mesh, dp);
  ASSERT_EQ(g.levels.size(), 4u);
  EXPECT_EQ(g.levels[0].size, 1); // gpu
  EXPECT_EQ(g.levels[1].size, 2); // node, inside a cell
  EXPECT_EQ(g.levels[2].size, 1); // cells of the second datacenter
  EXPECT_EQ(g.levels[3].size, 2); // datacenters
  EXPECT_EQ(g.size(), 8);
  EXPECT_GT(g.levels[2].bandwidth, g.levels[3].bandwidth);

  // The same ranks on equal datacenters (4 nodes each): the WAN shard is
  // half as large, so the all-reduce is faster there.
  std::vector<LinkLevel> equal = {{"dc", 2, 100, 10000, true, {}},
                                  {"node", 4, 400, 5, false, {}},
                                  {"gpu", 8, 3600, 1, false, {}}};
  GroupShape even = groupOver(equal, carve({{"tp", 8}, {"dp", 8}}, equal), dp);
  double bytes = 1e9;
  EXPECT_GT(collectiveTime(Collective::AllReduce, bytes, g).seconds,
            collectiveTime(Collective::AllReduce, bytes, even).seconds);
}

} // namespace
