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
