//===- EstimateAgreementTest.cpp - IR and strategy paths agree ------------===//
//
// The planner estimates strategy tuples directly (cost::fromStrategy); the
// compiler estimates placed IR (place-estimate). Both must give the same
// figures, to rounding: dense, MoE and MLA models, with and without pipelines,
// interleaving, ZB-V, context parallelism and every ZeRO stage, on one datacenter,
// equal ones and unequal ones, and on a cluster of A100 and H100 nodes with
// uneven stages run on the pp ranks in another order.
//
//===----------------------------------------------------------------------===//

#include "loom/Analysis/PlaceWorkload.h"
#include "loom/Conversion/SpecToPlace.h"
#include "loom/CostModel/Estimate.h"
#include "loom/CostModel/FromStrategy.h"
#include "loom/Transforms/ApplyCandidate.h"

#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

using namespace mlir;
using namespace loom;

namespace {

struct Case {
  const char *model, *cluster;
  int64_t tp, pp, vpp, ep, cp, zero;
  const char *recompute;
  bool sp;
  double tolerance;
  bool sgd = false;
  const char *order = "pp-outer";
  std::vector<int64_t> stageLayers = {}, stageOrder = {};
  bool vShape = false; // ZB-V: vpp = 2 in a V (the model's v_shape)
};

class EstimateAgreement : public ::testing::TestWithParam<Case> {};

TEST_P(EstimateAgreement, SameFiguresFromIRAndFromTheTuple) {
  const Case &c = GetParam();
  spec::Model model = spec::loadModel(c.model);
  spec::Cluster cluster = spec::loadCluster(c.cluster);
  spec::Training training = spec::defaultTraining(model);
  if (c.sgd)
    training.set_optimizer(spec::SGD);

  cost::StrategyChoice choice;
  choice.tp = c.tp;
  choice.pp = c.pp;
  choice.vpp = c.vpp;
  choice.ep = c.ep;
  choice.cp = c.cp;
  choice.zero = c.zero;
  choice.sequenceParallel = c.sp;
  choice.stageLayers = c.stageLayers;
  choice.stageOrder = c.stageOrder;
  if (c.vShape)
    choice.schedule = cost::Schedule::ZeroBubbleV;
  ASSERT_TRUE(cost::parseRecompute(c.recompute, choice.recompute));
  ASSERT_TRUE(search::parseRankOrder(c.order, choice.order));
  cost::WorkloadResult tuple = cost::fromStrategy(model, cluster, training, choice);
  ASSERT_TRUE(tuple.ok()) << tuple.error;

  DialectRegistry registry;
  registerSpecToPlaceDialects(registry);
  MLIRContext ctx(registry);
  auto module = lowerSpecToPlace(&ctx, model, cluster, training, UnknownLoc::get(&ctx));
  ASSERT_TRUE(module);
  // The same mapping to pass options that loom plan and place-search use.
  search::Candidate candidate;
  candidate.choice = choice;
  candidate.dp = tuple.workload.dp;
  PassManager pm(&ctx);
  pm.addPass(createPlaceApplyStrategy(applyOptionsFor(candidate)));
  ASSERT_TRUE(succeeded(pm.run(*module)));
  SymbolTableCollection symbols;
  auto modelOp = *module->getOps<place::ModelOp>().begin();
  FailureOr<cost::Workload> fromIR = workloadFromPlace(modelOp, symbols);
  ASSERT_TRUE(succeeded(fromIR));
  // The same GPU type, and memory, for every pipeline rank.
  EXPECT_EQ(fromIR->stageDevice, tuple.workload.stageDevice);
  EXPECT_EQ(fromIR->stageHbmBytes, tuple.workload.stageHbmBytes);

  auto clusterOp = *module->getOps<place::ClusterOp>().begin();
  cost::Estimate a =
      cost::estimate(tuple.workload, cost::computeModelsFor(cluster, training));
  cost::Estimate b = cost::estimate(*fromIR, computeModelsFor(clusterOp, symbols));
  double tol = c.tolerance;
  EXPECT_NEAR(b.stepTime, a.stepTime, tol * a.stepTime);
  EXPECT_NEAR(b.tflopsPerGpu, a.tflopsPerGpu, tol * a.tflopsPerGpu);
  EXPECT_NEAR(b.mfu, a.mfu, tol * a.mfu);
  EXPECT_NEAR(b.crossDcBytes, a.crossDcBytes, tol * a.crossDcBytes);
  ASSERT_EQ(a.memory.size(), b.memory.size());
  for (size_t r = 0; r < a.memory.size(); ++r) {
    EXPECT_NEAR(b.memory[r].params, a.memory[r].params, tol * a.memory[r].params) << r;
    EXPECT_NEAR(b.memory[r].optim, a.memory[r].optim, tol * a.memory[r].optim) << r;
    EXPECT_NEAR(b.memory[r].activations, a.memory[r].activations,
                tol * a.memory[r].activations) << r;
    EXPECT_NEAR(b.memory[r].total(), a.memory[r].total(), tol * a.memory[r].total()) << r;
  }
}

constexpr double kExact = 1e-9;
INSTANTIATE_TEST_SUITE_P(
    Plans, EstimateAgreement,
    ::testing::Values(
        Case{"llama3-70b", "dgx-h100:nodes=8", 8, 2, 1, 1, 1, 1, "selective", true, kExact},
        Case{"llama3-70b", "dgx-h100:nodes=64,dcs=2,wan-gbps=400,wan-ms=10", 8, 4, 5, 1, 1, 1,
             "none", true, kExact},
        Case{"llama3-70b", "dgx-h100:nodes=64,dcs=2,wan-gbps=100,wan-ms=20", 4, 4, 2, 1, 1, 2,
             "none", true, kExact, false, "dp-outer"},
        // Datacenters of 48 and 16 nodes (cells of 16): a pipeline over the
        // cells, and data parallelism over them.
        Case{"llama3-70b", LOOM_TEST_INPUTS "/unequal-dcs.yaml", 2, 8, 1, 1, 4, 2, "none", true,
             kExact},
        Case{"llama3-70b", LOOM_TEST_INPUTS "/unequal-dcs.yaml", 4, 2, 8, 1, 2, 2, "none", true,
             kExact, false, "dp-outer"},
        Case{"llama3-8b", "dgx-h100:nodes=4", 2, 1, 1, 1, 2, 2, "none", false, kExact},
        Case{"llama3-8b", "dgx-h100:nodes=4", 4, 2, 1, 1, 1, 1, "full", true, kExact, /*sgd=*/true},
        Case{"megatron-39.1b", "dgx-a100:nodes=64", 8, 2, 3, 1, 1, 0, "full", false, kExact},
        Case{"gpt3-175b", "dgx-a100:nodes=128", 8, 8, 1, 1, 1, 3, "full", true, kExact},
        Case{"mixtral-8x7b", "dgx-h100:nodes=16", 2, 4, 1, 8, 1, 1, "selective", true, kExact},
        Case{"deepseek-v3", "dgx-h100:nodes=128", 1, 8, 1, 64, 1, 1, "full", false, kExact},
        // 8 A100 + 8 H100 nodes: the planner's Llama 3 8B plan (its first
        // stage on the H100 rank), 70B split unevenly over 8 stages, a
        // pipeline rank of both kinds of node (dp outside pp), and none.
        Case{"llama3-8b", LOOM_TEST_INPUTS "/mixed-a100-h100.yaml", 1, 2, 1, 1, 2, 1, "none",
             false, kExact, false, "pp-outer", {26, 6}, {1, 0}},
        Case{"llama3-70b", LOOM_TEST_INPUTS "/mixed-a100-h100.yaml", 1, 8, 1, 1, 4, 2, "none",
             false, kExact, false, "pp-outer", {5, 5, 5, 5, 15, 15, 16, 14}, {}},
        Case{"llama3-70b", LOOM_TEST_INPUTS "/mixed-a100-h100.yaml", 8, 4, 1, 1, 1, 1, "full",
             true, kExact, false, "dp-outer"},
        Case{"llama3-70b", LOOM_TEST_INPUTS "/mixed-a100-h100.yaml", 8, 1, 1, 1, 1, 3, "full",
             true, kExact},
        // ZB-V: the embedding and the head both on the first pipeline rank,
        // over unequal datacenters and over A100 and H100 nodes.
        Case{"llama3-70b", LOOM_TEST_INPUTS "/unequal-dcs.yaml", 4, 4, 2, 1, 1, 2, "none", true,
             kExact, false, "pp-outer", {}, {}, /*vShape=*/true},
        Case{"llama3-70b", LOOM_TEST_INPUTS "/mixed-a100-h100.yaml", 2, 8, 2, 1, 1, 1, "full",
             true, kExact, false, "pp-outer", {}, {}, /*vShape=*/true}));

} // namespace
