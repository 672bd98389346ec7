//===- Schedule.cpp - the plan's pipeline schedule as action tables --------===//
//
// What loom.torch's executor (or any other) runs on each pipeline rank: the
// schedule the plan chose, generated for its shape and priced by the cost
// model (the same per-stage F, B, W and hop times the planner simulated), as
// sched/ScheduleJson's per-rank action tables, plus what ties them to the job:
// each stage's layers and each global rank's pipeline rank.
//
//===----------------------------------------------------------------------===//

#include "EmitInternal.h"

#include "loom/CostModel/Estimate.h"
#include "loom/CostModel/FromStrategy.h"
#include "loom/Schedule/ScheduleJson.h"
#include "loom/Search/Planner.h"
#include "loom/Search/SimulatedPipeline.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>

using namespace loom;

std::string loom::emit::emitSchedule(const spec::Plan &plan, const spec::Model &model,
                                     const spec::Cluster &cluster, const Provenance &from) {
  const spec::Strategy &st = plan.strategy();
  cost::StrategyChoice choice = search::choiceFromPlan(plan);
  cost::WorkloadResult w = cost::fromStrategy(model, cluster, plan.training(), choice);
  if (!w.ok())
    throw EmitError(fmt::format("{}: the plan does not fit model {} on cluster {}: {}", from.file,
                                model.name(), cluster.name(), w.error),
                    "emit with the model and cluster the plan was made for (--model, --cluster)");
  std::vector<cost::ComputeModel> computes = cost::computeModelsFor(cluster, plan.training());
  cost::Estimate e = cost::estimate(w.workload, computes);
  std::optional<search::PipelinePricing> priced = search::pricePipeline(w.workload, e, computes);
  if (!priced)
    throw EmitError(fmt::format("{}: {} cannot be built for pp={} with {} micro-batches and vpp={}",
                                from.file, detail::scheduleName(st.schedule()), choice.pp,
                                w.workload.microBatches(), choice.vpp),
                    st.schedule() == spec::DUALPIPE
                        ? "dualpipe needs an even pp and an even number of at least 2 x pp "
                          "micro-batches"
                        : "interleaving needs the micro-batches to be a multiple of pp");
  sched::Schedule schedule = search::buildSchedule(*priced);
  sched::addCommunication(schedule);
  std::optional<sched::Timeline> timeline = sched::simulate(schedule, priced->costs);
  if (!timeline)
    throw EmitError(fmt::format("{}: the generated schedule deadlocks", from.file),
                    "report this plan: every generator's schedules are verified");

  nlohmann::ordered_json out;
  std::string head = detail::header("", "schedule", plan, from);
  out["_comment"] = head.substr(0, head.size() - 1);
  nlohmann::ordered_json tables = sched::scheduleJson(priced->skip ? "skip" : sched::kindName(priced->kind), schedule, *timeline);
  for (auto &[key, value] : tables.items())
    out[key] = std::move(value);
  out["time_unit"] = "s";
  // Stage s runs transformer layers [first_layer, first_layer + num_layers) on
  // pipeline rank stage_ranks[s]; the embedding is on stage 0, the head on the last.
  // DualPipe's stage p + j runs the layers of stage j again (copy_of: j), fed
  // from the other end of the pipeline.
  // The schedule's pipeline ranks are positions along the pipeline: when the
  // plan runs its stages on the mesh's pp coordinates in another order
  // (choice.stageOrder: position -> coordinate), a global rank's pipeline rank
  // is the position its coordinate holds.
  nlohmann::ordered_json stages = nlohmann::ordered_json::array();
  for (const spec::Stage &stage : plan.stages())
    stages.push_back({{"stage", stage.index()},
                      {"first_layer", stage.first_layer()},
                      {"num_layers", stage.num_layers()}});
  if (st.schedule() == spec::DUALPIPE)
    for (const spec::Stage &stage : plan.stages())
      stages.push_back({{"stage", int64_t(plan.stages_size()) + stage.index()},
                        {"first_layer", stage.first_layer()},
                        {"num_layers", stage.num_layers()},
                        {"copy_of", stage.index()}});
  out["layers"] = std::move(stages);
  RankMap map = rankMap(plan);
  std::vector<int64_t> pipelineRank;
  std::vector<int64_t> positionOf(choice.pp);
  for (int64_t p = 0; p < choice.pp; ++p)
    positionOf[choice.stageOrder.empty() ? p : choice.stageOrder[p]] = p;
  for (const auto &coords : map.coords) {
    auto pp = coords.find("pp");
    pipelineRank.push_back(pp == coords.end() ? 0 : positionOf[pp->second]);
  }
  // Each pipeline's global ranks in pipeline-rank order: what an executor
  // needs to know where its stages' neighbours are.
  std::vector<std::vector<int64_t>> pipelines = map.groups["pp"];
  for (std::vector<int64_t> &pipeline : pipelines)
    std::stable_sort(pipeline.begin(), pipeline.end(),
                     [&](int64_t a, int64_t b) { return pipelineRank[a] < pipelineRank[b]; });
  out["pipeline_rank_of_global_rank"] = std::move(pipelineRank);
  out["pp_groups"] = std::move(pipelines);
  return out.dump(1) + "\n";
}
