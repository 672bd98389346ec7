//===- AxisMappingTest.cpp - carving logical axes out of a hierarchy ------===//

#include "loom/Search/AxisMapping.h"

#include <gtest/gtest.h>

using namespace loom::search;

namespace {
std::vector<PhysicalAxis> dgx(int64_t dcs, int64_t nodes) {
  std::vector<PhysicalAxis> axes;
  if (dcs > 1)
    axes.push_back({"dc", dcs});
  axes.push_back({"node", nodes});
  axes.push_back({"gpu", 8});
  return axes;
}

std::string render(const Carving &c) {
  std::string s;
  for (const LogicalAxis &a : c.axes) {
    s += (s.empty() ? "" : ", ") + a.name + " =";
    for (const Piece &p : a.pieces)
      s += " " + p.physical + ":" + std::to_string(p.size);
  }
  return s;
}
} // namespace

TEST(AxisMapping, TensorParallelStaysInNode) {
  Carving c = carveAxes(dgx(1, 64), {{"tp", 8}, {"dp", 16}, {"pp", 4}});
  ASSERT_TRUE(c.ok()) << c.error;
  EXPECT_EQ(render(c), "pp = node:4, dp = node:16, tp = gpu:8");
}

TEST(AxisMapping, AxisSpansNodesWhenLargerThanTheNode) {
  Carving c = carveAxes(dgx(1, 4), {{"tp", 16}, {"dp", 2}});
  ASSERT_TRUE(c.ok()) << c.error;
  EXPECT_EQ(render(c), "dp = node:2, tp = node:2 gpu:8");
}

TEST(AxisMapping, SharesAPhysicalAxisInnerFirst) {
  Carving c = carveAxes(dgx(1, 2), {{"tp", 2}, {"cp", 2}, {"dp", 4}});
  ASSERT_TRUE(c.ok()) << c.error;
  EXPECT_EQ(render(c), "dp = node:2 gpu:2, cp = gpu:2, tp = gpu:2");
}

TEST(AxisMapping, PipelineSpansDatacenters) {
  Carving c = carveAxes(dgx(2, 64), {{"tp", 8}, {"dp", 32}, {"pp", 4}});
  ASSERT_TRUE(c.ok()) << c.error;
  EXPECT_EQ(render(c), "pp = dc:2 node:2, dp = node:32, tp = gpu:8");
  EXPECT_EQ(c.axes[0].size(), 4);
}

TEST(AxisMapping, SizeOneAxesAreOmitted) {
  Carving c = carveAxes(dgx(1, 1), {{"tp", 1}, {"dp", 8}, {"pp", 1}});
  ASSERT_TRUE(c.ok()) << c.error;
  EXPECT_EQ(render(c), "dp = gpu:8");
}

TEST(AxisMapping, RejectsWrongRankCount) {
  Carving c = carveAxes(dgx(1, 4), {{"tp", 8}, {"dp", 2}});
  EXPECT_EQ(c.error, "tp=8 x dp=2 = 16 ranks, but the cluster has 32 GPUs");
}

TEST(AxisMapping, RejectsSizesThatDoNotTile) {
  Carving c = carveAxes(dgx(1, 3), {{"tp", 3}, {"dp", 8}});
  EXPECT_EQ(c.error, "tp=3 does not tile cluster axis 'gpu' (8 ranks left): pick a "
                     "divisor or a multiple of 8");
  // tp=8 over 6 nodes x 4 GPUs is fine (node:2 x gpu:4); cp=3 after tp=2 is not.
  EXPECT_TRUE(carveAxes({{"node", 6}, {"gpu", 4}}, {{"tp", 8}, {"dp", 3}}).ok());
  Carving d = carveAxes({{"node", 6}, {"gpu", 4}}, {{"tp", 2}, {"cp", 3}, {"dp", 4}});
  EXPECT_EQ(d.error, "cp=3 does not tile cluster axis 'gpu' (2 ranks left): pick a "
                     "divisor or a multiple of 2");
}

TEST(AxisMapping, RejectsNonPositiveSizes) {
  Carving c = carveAxes(dgx(1, 1), {{"tp", 0}, {"dp", 8}});
  EXPECT_EQ(c.error, "tp=0 must be >= 1");
}

TEST(AxisMapping, NodesOfEachPipelinePosition) {
  // Megatron order on 2 datacenters x 4 nodes: pp outermost = dc:2 * node:2,
  // so position p holds nodes 2p and 2p+1 (numbered datacenter by datacenter).
  Carving ppOuter = carveAxes(dgx(2, 4), {{"tp", 8}, {"dp", 2}, {"pp", 4}});
  ASSERT_TRUE(ppOuter.ok()) << ppOuter.error;
  std::vector<std::vector<int64_t>> nodes = axisNodes(dgx(2, 4), ppOuter.axes, "pp");
  ASSERT_EQ(nodes.size(), 4u);
  EXPECT_EQ(nodes[0], (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(nodes[1], (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(nodes[3], (std::vector<int64_t>{6, 7}));

  // Data parallelism outside: pp = node:4 inside each datacenter, so
  // position p holds node p of both datacenters.
  Carving dpOuter = carveAxes(dgx(2, 4), {{"tp", 8}, {"pp", 4}, {"dp", 2}});
  ASSERT_TRUE(dpOuter.ok()) << dpOuter.error;
  nodes = axisNodes(dgx(2, 4), dpOuter.axes, "pp");
  EXPECT_EQ(nodes[1], (std::vector<int64_t>{1, 5}));

  // Pipeline inside a node (pp = gpu:2): both positions on every node.
  Carving inNode = carveAxes(dgx(2, 4), {{"tp", 4}, {"pp", 2}, {"dp", 8}});
  ASSERT_TRUE(inNode.ok()) << inNode.error;
  nodes = axisNodes(dgx(2, 4), inNode.axes, "pp");
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].size(), 8u);
  EXPECT_EQ(nodes[1].size(), 8u);

  // An axis the mesh lacks: one position on every node.
  nodes = axisNodes(dgx(1, 4), inNode.axes, "cp");
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0], (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(AxisMapping, NodesOfAnAxisWhosePiecesAreListedInnerFirst) {
  // Hand-written IR may list pp = gpu:2 * node:2: the gpu digit is the outer
  // one, so positions 0 and 1 are node 0 and 1 (GPU digit 0), 2 and 3 the
  // same nodes again.
  std::vector<LogicalAxis> mesh{{"pp", {{"gpu", 2}, {"node", 2}}}, {"tp", {{"gpu", 4}}}};
  std::vector<std::vector<int64_t>> nodes = axisNodes(dgx(1, 2), mesh, "pp");
  ASSERT_EQ(nodes.size(), 4u);
  EXPECT_EQ(nodes[0], (std::vector<int64_t>{0}));
  EXPECT_EQ(nodes[1], (std::vector<int64_t>{1}));
  EXPECT_EQ(nodes[2], (std::vector<int64_t>{0}));
  EXPECT_EQ(nodes[3], (std::vector<int64_t>{1}));
}
