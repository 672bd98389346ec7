//===- PlanJson.cpp - planner results as JSON -----------------------------===//

#include "loom/Search/PlanJson.h"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

using namespace loom;
using namespace loom::search;

nlohmann::json loom::search::planJson(const spec::Model &model, const spec::Cluster &cluster,
                                      const spec::Training &training,
                                      const Candidate &candidate) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  options.always_print_enums_as_ints = false;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(toPlan(model, cluster, training, candidate),
                                                    &json, options);
  return nlohmann::json::parse(json);
}

nlohmann::json loom::search::planResultJson(const spec::Model &model,
                                            const spec::Cluster &cluster,
                                            const spec::Training &training,
                                            const PlanResult &r) {
  nlohmann::json plans = nlohmann::json::array();
  for (const Candidate &c : r.best)
    plans.push_back(planJson(model, cluster, training, c));
  nlohmann::json out{{"model", model.name()},        {"cluster", cluster.name()},
                     {"evaluated", r.evaluated},     {"rejected", r.rejected},
                     {"search_seconds", r.seconds},  {"fits", r.anyFits},
                     {"zero_variants_left_out", r.zeroTwins}, {"plans", plans}};
  if (!r.anyFits && r.evaluated > 0) {
    out["closest"] = planJson(model, cluster, training, r.closest);
    nlohmann::json fixes = nlohmann::json::array();
    for (const FitFix &fix : r.closestFixes)
      fixes.push_back({{"offload_optimizer", fix.offloadOptimizer},
                       {"nodes_times", fix.nodesTimes},
                       {"gpus", fix.gpus},
                       {"zero", fix.zero},
                       {"peak_memory_bytes", uint64_t(fix.peakMemoryBytes)}});
    out["closest_fits_with"] = fixes;
  }
  return out;
}

std::string loom::search::estimateStrategy(const cost::StrategyChoice &choice,
                                           const cost::Workload &w) {
  return fmt::format("dp={} tp={} pp={} vpp={} ep={} cp={} zero={} recompute={} mbs={} sp={} "
                     "schedule={} order={}",
                     w.dp, w.tp, w.pp, w.vpp, w.ep, w.cp, w.zero,
                     cost::recomputeName(w.recompute), w.microBatch,
                     choice.sequenceParallel ? "on" : "off", cost::scheduleName(w.schedule),
                     rankOrderName(choice.order));
}

/// Whole bytes, as a plan's Estimate records them (the model's byte counts
/// carry fractions from per-rank shares).
static uint64_t bytes(double b) { return uint64_t(b); }

static nlohmann::json memoryJson(const cost::MemoryBreakdown &m) {
  return {{"params_bytes", bytes(m.params)},
          {"grads_bytes", bytes(m.grads)},
          {"optim_bytes", bytes(m.optim)},
          {"gathered_params_bytes", bytes(m.gatheredParams)},
          {"activation_bytes", bytes(m.activations)},
          {"inflight_microbatches", m.inflight},
          {"comm_buffer_bytes", bytes(m.commBuffers)},
          {"allowance_bytes", bytes(m.allowances)},
          {"total_bytes", bytes(m.total())}};
}

nlohmann::json loom::search::estimateJson(const spec::Model &model, const spec::Cluster &cluster,
                                          const cost::StrategyChoice &choice,
                                          const cost::Workload &w, const cost::Estimate &e,
                                          bool simulated) {
  nlohmann::json out{{"model", model.name()},
                     {"cluster", cluster.name()},
                     {"strategy", estimateStrategy(choice, w)},
                     {"step_time_s", e.stepTime},
                     {"tokens_per_s", e.tokensPerSecond},
                     {"tflops_per_gpu", e.tflopsPerGpu},
                     {"mfu", e.mfu},
                     {"peak_memory_bytes", bytes(e.peakMemoryBytes)},
                     {"peak_memory_stage", e.peakRank},
                     {"usable_memory_bytes", bytes(e.usableBytes)},
                     {"fits", e.fits},
                     {"microbatches", e.microBatches},
                     {"pipeline_s", e.pipeline},
                     {"pipeline_model", simulated ? "simulated" : w.pp > 1 ? "analytic" : "none"},
                     {"bubble_s", e.bubble},
                     {"dp_exposed_s", e.dpExposed},
                     {"optimizer_s", e.optimizer},
                     {"cross_dc_bytes", e.crossDcBytes}};
  nlohmann::json stages = nlohmann::json::array();
  for (size_t r = 0; r < e.memory.size(); ++r) {
    nlohmann::json s = memoryJson(e.memory[r]);
    const cost::RankTime &t = e.time[r];
    s["stage"] = r;
    s["microbatch_s"] = {{"f", t.f},          {"b", t.b},           {"w", t.w},
                         {"recompute", t.recompute}, {"tp_comm", t.tpComm},
                         {"cp_comm", t.cpComm}, {"ep_comm", t.epComm}, {"p2p", t.p2p}};
    s["dp_comm_s"] = t.dpComm;
    stages.push_back(s);
  }
  out["stages"] = stages;
  return out;
}
