//===- EmitTest.cpp - launch files from plans -----------------------------===//
//
// Rank maps against their invariants, option and key names against the
// projects that define them, and the refusals.
//
//===----------------------------------------------------------------------===//

#include "loom/Emit/Emit.h"
#include "loom/Search/Planner.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <set>
#include <sstream>

using namespace loom;
using namespace loom::emit;

namespace {
/// A plan on `dcs` x `nodes` x `gpus` with mesh axes given outermost first as
/// (name, {(level, size)...}) and uniform stages.
spec::Plan makePlan(uint32_t dp, uint32_t tp, uint32_t pp, uint32_t ep, uint32_t cp,
                    std::vector<std::pair<std::string, std::vector<std::pair<std::string, uint32_t>>>>
                        mesh,
                    uint32_t layers = 32) {
  spec::Plan plan;
  plan.set_model("test-model");
  plan.set_cluster("test-cluster");
  plan.set_loom_version("0.1.0");
  spec::Strategy *s = plan.mutable_strategy();
  s->set_dp(dp);
  s->set_tp(tp);
  s->set_pp(pp);
  s->set_ep(ep);
  s->set_cp(cp);
  s->set_vpp(1);
  s->set_micro_batch(1);
  plan.mutable_training()->set_global_batch(dp * 8);
  plan.mutable_training()->set_seq_len(4096);
  plan.mutable_training()->set_precision(spec::BF16_MIXED);
  for (auto &[name, pieces] : mesh) {
    spec::LogicalAxis *axis = plan.add_mesh();
    axis->set_name(name);
    for (auto &[level, size] : pieces) {
      spec::AxisPiece *piece = axis->add_pieces();
      piece->set_physical(level);
      piece->set_size(size);
    }
  }
  for (uint32_t i = 0; i < pp; ++i) {
    spec::Stage *stage = plan.add_stages();
    stage->set_index(i);
    stage->set_first_layer(i * layers / pp);
    stage->set_num_layers(layers / pp);
  }
  return plan;
}

/// Group sizes equal the degrees and every rank is in exactly one group per dimension.
void expectPartitions(const spec::Plan &plan, const RankMap &map) {
  const spec::Strategy &s = plan.strategy();
  std::map<std::string, uint32_t> degrees = {
      {"tp", s.tp()}, {"pp", s.pp()}, {"dp", s.dp()}, {"ep", s.ep()}, {"cp", s.cp()}};
  for (auto &[dim, degree] : degrees) {
    std::vector<int> seen(map.worldSize(), 0);
    for (const std::vector<int64_t> &group : map.groups.at(dim)) {
      EXPECT_EQ(group.size(), degree) << dim;
      for (int64_t rank : group)
        ++seen[rank];
    }
    for (int64_t rank = 0; rank < map.worldSize(); ++rank)
      EXPECT_EQ(seen[rank], 1) << dim << " rank " << rank;
  }
}

int64_t nodeOf(const RankMap &map, int64_t rank) { return rank / map.gpusPerNode; }

TEST(RankMap, MegatronOrderOnTwoNodes) {
  // pp-outer: pp across nodes, dp and tp inside a node (as `loom plan` lays it).
  spec::Plan plan = makePlan(4, 2, 2, 1, 1,
                             {{"pp", {{"node", 2}}}, {"dp", {{"gpu", 4}}}, {"tp", {{"gpu", 2}}}});
  RankMap map = rankMap(plan);
  EXPECT_EQ(map.worldSize(), 16);
  EXPECT_EQ(map.gpusPerNode, 8);
  expectPartitions(plan, map);
  EXPECT_EQ(map.groups.at("tp").front(), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(map.groups.at("dp").front(), (std::vector<int64_t>{0, 2, 4, 6}));
  EXPECT_EQ(map.groups.at("pp").front(), (std::vector<int64_t>{0, 8}));
  for (const auto &group : map.groups.at("tp"))
    EXPECT_EQ(nodeOf(map, group.front()), nodeOf(map, group.back()));
}

TEST(RankMap, AxisSplitAcrossLevelsAndDatacenters) {
  // dp has a piece on each datacenter and one on the nodes; tp fills a node.
  spec::Plan plan = makePlan(8, 8, 1, 2, 1,
                             {{"dp", {{"dc", 2}, {"node", 2}}}, {"ep", {{"node", 2}}},
                              {"tp", {{"gpu", 8}}}});
  RankMap map = rankMap(plan);
  EXPECT_EQ(map.dcs, 2);
  EXPECT_EQ(map.nodesPerDc, 4);
  EXPECT_EQ(map.worldSize(), 64);
  expectPartitions(plan, map);
  // dp's dc piece is its most significant digit: coordinate 2 is dc 1's first node.
  EXPECT_EQ(map.coords[32].at("dp"), 2);
  EXPECT_EQ(map.coords[8].at("ep"), 1);
  for (const auto &group : map.groups.at("tp"))
    EXPECT_EQ(nodeOf(map, group.front()), nodeOf(map, group.back()));
}

TEST(RankMap, DisagreeingMeshIsRefused) {
  spec::Plan plan = makePlan(4, 2, 2, 1, 1,
                             {{"pp", {{"node", 2}}}, {"dp", {{"gpu", 2}}}, {"tp", {{"gpu", 4}}}});
  EXPECT_THROW(rankMap(plan), EmitError);
}

/// The flags an emitted argument list uses.
std::set<std::string> flags(const std::string &text) {
  std::set<std::string> out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("--", 0) == 0)
      out.insert(line.substr(0, line.find(' ')));
  return out;
}

TEST(Megatron, OptionNamesAreMegatronLMs) {
  // Megatron-LM (NVIDIA/Megatron-LM d98e8a6): megatron/training/arguments.py and
  // the dataclasses it turns into flags (ModelParallelConfig, TransformerConfig,
  // DistributedDataParallelConfig, OptimizerConfig).
  const std::set<std::string> known = {
      "--num-layers", "--tensor-model-parallel-size", "--pipeline-model-parallel-size",
      "--num-layers-per-virtual-pipeline-stage", "--decoder-first-pipeline-num-layers",
      "--decoder-last-pipeline-num-layers", "--expert-model-parallel-size",
      "--context-parallel-size", "--sequence-parallel", "--tp-comm-overlap",
      "--recompute-granularity", "--recompute-method", "--recompute-num-layers",
      "--use-distributed-optimizer", "--overlap-param-gather", "--optimizer-cpu-offload",
      "--overlap-grad-reduce",
      "--micro-batch-size", "--global-batch-size", "--seq-length", "--bf16", "--fp16",
      "--fp8-format"};
  spec::Plan plan = makePlan(2, 2, 4, 2, 2,
                             {{"pp", {{"node", 4}}}, {"dp", {{"gpu", 1}}}, {"ep", {{"gpu", 2}}},
                              {"cp", {{"gpu", 2}}}, {"tp", {{"gpu", 2}}}});
  plan.mutable_strategy()->set_vpp(2);
  plan.mutable_strategy()->set_sequence_parallel(true);
  plan.mutable_strategy()->set_tp_comm_overlap(true);
  plan.mutable_strategy()->set_recompute(spec::RECOMPUTE_FULL);
  plan.mutable_strategy()->set_zero(1);
  plan.mutable_strategy()->set_offload_optimizer(true);
  std::string text = emitMegatron(plan, {"plan.json", 0});
  std::set<std::string> used = flags(text);
  for (const std::string &flag : used)
    EXPECT_TRUE(known.count(flag)) << flag << " is not a Megatron-LM option";
  EXPECT_NE(text.find("--num-layers-per-virtual-pipeline-stage 4\n"), std::string::npos);
  EXPECT_NE(text.find("--recompute-granularity full\n--recompute-method uniform\n"
                      "--recompute-num-layers 1\n"),
            std::string::npos);
  EXPECT_TRUE(used.count("--expert-model-parallel-size") && used.count("--context-parallel-size"));
}

TEST(Megatron, UnevenStages) {
  spec::Plan plan = makePlan(1, 1, 4, 1, 1, {{"pp", {{"gpu", 4}}}});
  const uint32_t layers[4] = {7, 8, 8, 9};
  for (int i = 0; i < 4; ++i)
    plan.mutable_stages(i)->set_num_layers(layers[i]);
  std::string text = emitMegatron(plan, {"plan.json", 0});
  EXPECT_NE(text.find("--decoder-first-pipeline-num-layers 7\n"), std::string::npos);
  EXPECT_NE(text.find("--decoder-last-pipeline-num-layers 9\n"), std::string::npos);
  plan.mutable_stages(1)->set_num_layers(10);
  try {
    emitMegatron(plan, {"plan.json", 0});
    FAIL() << "uneven middle stages were accepted";
  } catch (const EmitError &e) {
    EXPECT_NE(std::string(e.what()).find("7,10,8,9"), std::string::npos) << e.what();
  }
}

TEST(Megatron, VirtualStagesMustBeEqual) {
  spec::Plan plan = makePlan(1, 1, 2, 1, 1, {{"pp", {{"gpu", 2}}}}, 32);
  plan.mutable_strategy()->set_vpp(2);
  plan.clear_stages();
  const uint32_t layers[4] = {9, 7, 9, 7}; // equal per rank, unequal per virtual stage
  for (uint32_t i = 0; i < 4; ++i) {
    spec::Stage *stage = plan.add_stages();
    stage->set_index(i);
    stage->set_num_layers(layers[i]);
  }
  EXPECT_THROW(emitMegatron(plan, {"plan.json", 0}), EmitError);
}

// Virtual stages of one layer more than the first (embedding) and the last
// (loss): Megatron-LM builds them with --account-for-*-in-pipeline-split.
TEST(Megatron, VirtualStagesCountingEmbeddingAndLoss) {
  auto interleaved = [](std::vector<uint32_t> layers) {
    uint32_t total = 0;
    for (uint32_t n : layers)
      total += n;
    spec::Plan plan = makePlan(1, 1, 4, 1, 1, {{"pp", {{"gpu", 4}}}}, total);
    plan.mutable_strategy()->set_vpp(uint32_t(layers.size() / 4));
    plan.clear_stages();
    for (uint32_t i = 0; i < layers.size(); ++i) {
      spec::Stage *stage = plan.add_stages();
      stage->set_index(i);
      stage->set_num_layers(layers[i]);
    }
    return plan;
  };
  std::string both = emitMegatron(interleaved({2, 3, 3, 3, 3, 3, 3, 2}), {"plan.json", 0});
  EXPECT_NE(both.find("--num-layers 22\n"), std::string::npos) << both;
  EXPECT_NE(both.find("--account-for-embedding-in-pipeline-split\n"
                      "--account-for-loss-in-pipeline-split\n"
                      "--num-layers-per-virtual-pipeline-stage 3\n"),
            std::string::npos)
      << both;
  EXPECT_EQ(both.find("--decoder-first-pipeline-num-layers"), std::string::npos) << both;
  std::string loss = emitMegatron(interleaved({3, 3, 3, 3, 3, 3, 3, 2}), {"plan.json", 0});
  EXPECT_EQ(loss.find("--account-for-embedding"), std::string::npos) << loss;
  EXPECT_NE(loss.find("--account-for-loss-in-pipeline-split\n"), std::string::npos) << loss;
  // A middle stage short, or the first two short: not Megatron-LM's split.
  EXPECT_THROW(emitMegatron(interleaved({3, 3, 2, 3, 3, 3, 3, 3}), {"plan.json", 0}), EmitError);
  EXPECT_THROW(emitMegatron(interleaved({2, 2, 3, 3, 3, 3, 3, 3}), {"plan.json", 0}), EmitError);
}

TEST(DeepSpeed, KeyNamesAreDeepSpeeds) {
  // DeepSpeed's JSON config reference (deepspeed.ai/docs/config-json) and
  // deepspeed/runtime/config.py's get_pipeline_config: the keys loom writes.
  const std::set<std::string> top = {"_comment",
                                     "train_batch_size",
                                     "train_micro_batch_size_per_gpu",
                                     "gradient_accumulation_steps",
                                     "zero_optimization",
                                     "bf16",
                                     "fp16",
                                     "activation_checkpointing",
                                     "pipeline"};
  const std::set<std::string> zero = {"stage",          "overlap_comm",
                                      "contiguous_gradients", "reduce_scatter",
                                      "reduce_bucket_size",   "allgather_bucket_size",
                                      "offload_optimizer"};
  spec::Plan plan = makePlan(4, 1, 1, 1, 1, {{"dp", {{"gpu", 4}}}});
  plan.mutable_strategy()->set_zero(2);
  plan.mutable_strategy()->set_offload_optimizer(true);
  plan.mutable_strategy()->set_recompute(spec::RECOMPUTE_FULL);
  nlohmann::json config = nlohmann::json::parse(emitDeepSpeed(plan, {"plan.json", 0}));
  for (auto &[key, value] : config.items())
    EXPECT_TRUE(top.count(key)) << key;
  for (auto &[key, value] : config["zero_optimization"].items())
    EXPECT_TRUE(zero.count(key)) << key;
  EXPECT_EQ(config["zero_optimization"]["offload_optimizer"]["device"], "cpu");
  EXPECT_EQ(config["train_batch_size"].get<int64_t>(),
            config["train_micro_batch_size_per_gpu"].get<int64_t>() *
                config["gradient_accumulation_steps"].get<int64_t>() * 4);
}

TEST(DeepSpeed, PipelineKeys) {
  const std::set<std::string> pipeline = {"stages", "partition", "activation_checkpoint_interval"};
  spec::Plan plan = makePlan(2, 1, 2, 1, 1, {{"pp", {{"gpu", 2}}}, {"dp", {{"gpu", 2}}}});
  plan.mutable_strategy()->set_recompute(spec::RECOMPUTE_FULL);
  nlohmann::json config = nlohmann::json::parse(emitDeepSpeed(plan, {"plan.json", 0}));
  for (auto &[key, value] : config["pipeline"].items())
    EXPECT_TRUE(pipeline.count(key)) << key;
  EXPECT_EQ(config["pipeline"]["stages"], 2);
  EXPECT_EQ(config["pipeline"]["activation_checkpoint_interval"], 1);
}

TEST(DeepSpeed, RefusesWhatItCannotRun) {
  spec::Plan cp = makePlan(1, 1, 1, 1, 2, {{"cp", {{"gpu", 2}}}});
  EXPECT_THROW(emitDeepSpeed(cp, {"plan.json", 0}), EmitError);
  spec::Plan zeroPipe = makePlan(1, 1, 2, 1, 1, {{"pp", {{"gpu", 2}}}});
  zeroPipe.mutable_strategy()->set_zero(2);
  EXPECT_THROW(emitDeepSpeed(zeroPipe, {"plan.json", 0}), EmitError);
}

TEST(PlanFile, ReadsWrappedAndSinglePlans) {
  std::string single = R"({"model": "m", "strategy": {"dp": 1, "tp": 2, "pp": 1,
    "micro_batch": 1}, "training": {"global_batch": "8", "seq_len": 16},
    "mesh": [{"name": "tp", "pieces": [{"physical": "gpu", "size": 2}]}],
    "stages": [{"index": 0, "num_layers": 2}]})";
  EXPECT_EQ(parsePlan(single, "p.json", 0).strategy().tp(), 2u);
  std::string wrapped = "{\"plans\": [" + single + "]}";
  EXPECT_EQ(parsePlan(wrapped, "p.json", 0).model(), "m");
  EXPECT_THROW(parsePlan(wrapped, "p.json", 1), EmitError);
  EXPECT_THROW(parsePlan("{\"plans\": [", "p.json", 0), EmitError);
  try {
    parsePlan(R"({"strategy": {"tp": "two"}})", "p.json", 0);
    FAIL();
  } catch (const EmitError &e) {
    EXPECT_NE(std::string(e.what()).find("p.json"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("tp"), std::string::npos) << e.what();
  }
}
} // namespace

TEST(StageOrder, PlansRunningStagesOnOtherRanksRoundTripAndAreRefusedWhereUnexpressible) {
  // Stage 0 on pipeline rank 1 and stage 1 on rank 0 (a mixed cluster whose
  // second device group suits the first stage): the plan keeps the order, the
  // planner's choice reads it back, and Megatron-LM, which runs stage s on
  // rank s, is refused with the reason.
  spec::Plan plan = makePlan(1, 1, 2, 1, 1, {{"pp", {{"gpu", 2}}}});
  plan.mutable_stages(0)->set_pp_rank(1);
  plan.mutable_stages(1)->set_pp_rank(0);
  EXPECT_EQ(search::choiceFromPlan(plan).stageOrder, (std::vector<int64_t>{1, 0}));
  try {
    emitMegatron(plan, {"plan.json", 0});
    ADD_FAILURE() << "a reordered plan was written for Megatron-LM";
  } catch (const EmitError &e) {
    EXPECT_NE(std::string(e.what()).find("stage 0 on pipeline rank 1"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(emitDeepSpeed(plan, {"plan.json", 0}), EmitError);
  // In rank order it is the default, and writes as before.
  plan.mutable_stages(0)->set_pp_rank(0);
  plan.mutable_stages(1)->set_pp_rank(1);
  EXPECT_TRUE(search::choiceFromPlan(plan).stageOrder.empty());
  EXPECT_NO_THROW(emitMegatron(plan, {"plan.json", 0}));
}

TEST(StageOrder, PlanFileRefusesWhatIsNotAPermutation) {
  std::string head = R"({"model": "m", "strategy": {"dp": 1, "tp": 1, "pp": 2,
    "micro_batch": 1}, "training": {"global_batch": "8", "seq_len": 16},
    "mesh": [{"name": "pp", "pieces": [{"physical": "gpu", "size": 2}]}], "stages": )";
  EXPECT_EQ(parsePlan(head + R"([{"index": 0, "num_layers": 2, "pp_rank": 1},
    {"index": 1, "num_layers": 2, "pp_rank": 0}]})", "p.json", 0).stages(0).pp_rank(), 1u);
  for (std::string stages : {R"([{"index": 0, "num_layers": 2, "pp_rank": 1},
                                 {"index": 1, "num_layers": 2, "pp_rank": 1}]})",
                             R"([{"index": 0, "num_layers": 2, "pp_rank": 2},
                                 {"index": 1, "num_layers": 2, "pp_rank": 0}]})",
                             R"([{"index": 0, "num_layers": 2, "pp_rank": 1},
                                 {"index": 1, "num_layers": 2}]})"}) {
    try {
      parsePlan(head + stages, "p.json", 0);
      ADD_FAILURE() << "accepted " << stages;
    } catch (const EmitError &e) {
      EXPECT_NE(std::string(e.what()).find("pp_rank"), std::string::npos) << e.what();
    }
  }
}
