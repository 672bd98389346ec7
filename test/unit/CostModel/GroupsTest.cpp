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

std::vector<search::LogicalAxis> carve(const std::vector<search::AxisRequest> &requests) {
  std::vector<search::PhysicalAxis> physical;
  for (const LinkLevel &l : levels())
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

TEST(Groups, NodesOfEachPipelinePosition) {
  // Megatron order: pp outermost = dc:2 * node:2, so position p holds nodes
  // 2p and 2p+1 (nodes numbered datacenter by datacenter).
  auto ppOuter = carve({{"tp", 8}, {"dp", 2}, {"pp", 4}});
  std::vector<std::vector<int64_t>> nodes = axisNodes(levels(), ppOuter, "pp");
  ASSERT_EQ(nodes.size(), 4u);
  EXPECT_EQ(nodes[0], (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(nodes[1], (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(nodes[3], (std::vector<int64_t>{6, 7}));

  // Data parallelism outside: pp = node:4 inside each datacenter, so
  // position p holds node p of both datacenters.
  auto dpOuter = carve({{"tp", 8}, {"pp", 4}, {"dp", 2}});
  nodes = axisNodes(levels(), dpOuter, "pp");
  EXPECT_EQ(nodes[1], (std::vector<int64_t>{1, 5}));

  // Pipeline inside a node (pp = gpu:2): both positions on every node.
  auto inNode = carve({{"tp", 4}, {"pp", 2}, {"dp", 8}});
  nodes = axisNodes(levels(), inNode, "pp");
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].size(), 8u);
  EXPECT_EQ(nodes[1].size(), 8u);
}

} // namespace
