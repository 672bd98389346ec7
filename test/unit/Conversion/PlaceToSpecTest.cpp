//===- PlaceToSpecTest.cpp - specs read back from place IR ----------------===//
//
// place-search plans on the cluster it reads back from place IR, so lowering
// a cluster and reading it back must keep what the planner sees: GPU, node
// and datacenter counts, the levels and their links, each node's GPU type,
// and so the estimate of a strategy. Node groups of hand-written IR may run
// past the end of a datacenter; they are split there.
//
//===----------------------------------------------------------------------===//

#include "loom/Conversion/PlaceToSpec.h"
#include "loom/Conversion/SpecToPlace.h"
#include "loom/CostModel/Estimate.h"
#include "loom/CostModel/FromStrategy.h"
#include "place/Place.h"

#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

using namespace mlir;
using namespace loom;

namespace {

/// Each node's GPU type, by name.
std::vector<std::string> nodeGpus(const spec::Cluster &cluster) {
  spec::NodeTypes types = spec::nodeTypes(cluster);
  std::vector<std::string> out;
  for (int type : types.nodeType)
    out.push_back(types.gpus[type]->name());
  return out;
}

void expectSameForThePlanner(const spec::Cluster &a, const spec::Cluster &b) {
  spec::ClusterSize x = spec::clusterSize(a), y = spec::clusterSize(b);
  EXPECT_EQ(x.datacenters, y.datacenters);
  EXPECT_EQ(x.nodes, y.nodes);
  EXPECT_EQ(x.gpus, y.gpus);
  EXPECT_EQ(x.uniform, y.uniform);
  EXPECT_EQ(x.shapeRegular, y.shapeRegular);
  EXPECT_EQ(x.unequalDcs, y.unequalDcs);
  EXPECT_EQ(x.cellNodes, y.cellNodes);
  std::vector<spec::ClusterLevel> p = spec::clusterLevels(a), q = spec::clusterLevels(b);
  ASSERT_EQ(p.size(), q.size());
  for (size_t l = 0; l < p.size(); ++l) {
    EXPECT_EQ(p[l].name, q[l].name);
    EXPECT_EQ(p[l].size, q[l].size);
    EXPECT_EQ(spec::effectiveGbps(*p[l].tier), spec::effectiveGbps(*q[l].tier)) << p[l].name;
    EXPECT_EQ(p[l].tier->latency_us(), q[l].tier->latency_us()) << p[l].name;
    EXPECT_EQ(p[l].tier->per_node(), q[l].tier->per_node()) << p[l].name;
    EXPECT_EQ(p[l].cellDc, q[l].cellDc) << p[l].name;
  }
  EXPECT_EQ(nodeGpus(a), nodeGpus(b));
}

struct Case {
  const char *cluster;
  int64_t pp; // with tp = 8, a pipeline that tiles the cluster
};

class PlaceToSpecRoundTrip : public ::testing::TestWithParam<Case> {};

TEST_P(PlaceToSpecRoundTrip, KeepsWhatThePlannerSees) {
  spec::Model model = spec::loadModel("llama3-8b");
  spec::Cluster cluster = spec::loadCluster(GetParam().cluster);
  spec::Training training = spec::defaultTraining(model);

  DialectRegistry registry;
  registerSpecToPlaceDialects(registry);
  MLIRContext ctx(registry);
  auto module = lowerSpecToPlace(&ctx, model, cluster, training, UnknownLoc::get(&ctx));
  ASSERT_TRUE(module);
  ASSERT_TRUE(succeeded(verify(*module)));
  FailureOr<SpecInputs> back = specFromPlace(*module);
  ASSERT_TRUE(succeeded(back));
  expectSameForThePlanner(cluster, back->cluster);

  // A pipeline over the nodes: the same price on both.
  cost::StrategyChoice choice;
  choice.tp = 8;
  choice.pp = GetParam().pp;
  cost::WorkloadResult w = cost::fromStrategy(model, cluster, training, choice);
  cost::WorkloadResult v = cost::fromStrategy(back->model, back->cluster, back->training, choice);
  ASSERT_TRUE(w.ok()) << w.error;
  ASSERT_TRUE(v.ok()) << v.error;
  cost::Estimate e = cost::estimate(w.workload, cost::computeModelsFor(cluster, training));
  cost::Estimate f =
      cost::estimate(v.workload, cost::computeModelsFor(back->cluster, back->training));
  EXPECT_DOUBLE_EQ(e.stepTime, f.stepTime);
  EXPECT_DOUBLE_EQ(e.peakMemoryBytes, f.peakMemoryBytes);
}

INSTANTIATE_TEST_SUITE_P(Clusters, PlaceToSpecRoundTrip,
                         ::testing::Values(Case{"dgx-h100:nodes=4", 4},
                                           Case{LOOM_TEST_INPUTS "/unequal-dcs.yaml", 4},
                                           Case{LOOM_TEST_INPUTS "/mixed-a100-h100.yaml", 4},
                                           Case{LOOM_TEST_INPUTS "/mixed-two-dcs.yaml", 12}));

TEST(PlaceToSpec, SplitsANodeGroupWhereItsDatacenterEnds) {
  // Two datacenters of 2 nodes; the H100 group holds the second node of the
  // first and both of the second.
  const char *ir = R"mlir(
    place.tier @nv {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
    place.tier @ib {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
    place.tier @wan {bandwidth_gbps = 100.0 : f64, latency_us = 10000.0 : f64, per_node}
    place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64, kind = "a100-80g"}
    place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64, kind = "h100-sxm"}
    place.cluster @c axes [#place.axis<"dc", 2, @wan>, #place.axis<"node", 2, @ib>, #place.axis<"gpu", 8, @nv>]
        groups [#place.nodes<count = 1, device = @a100, gpus_per_node = 8, intra_node = @nv, inter_node = @ib>,
                #place.nodes<count = 3, device = @h100, gpus_per_node = 8, intra_node = @nv, inter_node = @ib>]
    place.model @m attributes {vocab = 100 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 8 : i64, micro_batch = 1 : i64, dtype = "bf16"} {
      place.attention "layers.0.attention" {params = 16384 : i64, fwd_flops = 1 : i64, layer = 0 : i64, heads = 4 : i64, kv_heads = 4 : i64, head_dim = 16 : i64}
      place.mlp "layers.0.mlp" {params = 32768 : i64, fwd_flops = 1 : i64, layer = 0 : i64, ffn = 256 : i64, activation = "gelu"}
    }
  )mlir";
  DialectRegistry registry;
  registerSpecToPlaceDialects(registry);
  MLIRContext ctx(registry);
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(ir, &ctx);
  ASSERT_TRUE(module);
  FailureOr<SpecInputs> back = specFromPlace(*module);
  ASSERT_TRUE(succeeded(back));
  const spec::Cluster &c = back->cluster;
  ASSERT_EQ(c.datacenters_size(), 2);
  ASSERT_EQ(c.datacenters(0).node_groups_size(), 2);
  EXPECT_EQ(c.datacenters(0).node_groups(0).gpu(), "a100-80g");
  EXPECT_EQ(c.datacenters(0).node_groups(0).count(), 1u);
  EXPECT_EQ(c.datacenters(0).node_groups(1).gpu(), "h100-sxm");
  EXPECT_EQ(c.datacenters(0).node_groups(1).count(), 1u);
  ASSERT_EQ(c.datacenters(1).node_groups_size(), 1);
  EXPECT_EQ(c.datacenters(1).node_groups(0).gpu(), "h100-sxm");
  EXPECT_EQ(c.datacenters(1).node_groups(0).count(), 2u);
  EXPECT_EQ(c.inter_dc_link(), "wan");
}

} // namespace
