//===- Estimate.cpp - `loom estimate` -------------------------------------===//
//
// Memory per state per pipeline stage and a step-time breakdown for one
// strategy. Exit codes: 0 fits, 3 does not fit (the tables are still printed),
// 1 bad input, 2 bad usage.
//
//===----------------------------------------------------------------------===//

#include "Driver.h"

#include "loom/CostModel/Estimate.h"
#include "loom/CostModel/FromStrategy.h"
#include "loom/Search/PlanJson.h"
#include "loom/Search/SimulatedPipeline.h"
#include "loom/Spec/Spec.h"
#include "loom/Support/Table.h"

#include <fmt/format.h>

using namespace loom;
using namespace loom::cli;

namespace {
struct EstimateCliOptions {
  SpecArgs spec;
  std::string calibration, schedule = "auto", recompute = "none", order = "pp-outer", plan;
  int64_t planIndex = 0;
  /// Strategy options given on the command line (refused with --plan).
  std::vector<std::string> strategyGiven;
  cost::StrategyChoice choice;
  bool noFlash = false, noOverlap = false, noTpOverlap = false, noGradFusion = false,
       json = false, analytic = false;
  double headroom = 0.05;
};

/// GiB columns of the estimate tables: two decimals.
std::string gib(double bytes) { return loom::gib(bytes, 2); }
std::string secs(double s) { return fmt::format("{:.4f}", s); }

void runEstimateOf(const EstimateCliOptions &o, const spec::Model &model,
                   const spec::Cluster &cluster, const cost::StrategyChoice &choice,
                   const spec::Training &training);

/// --plan: the plan's own strategy (stages, their ranks, recomputed ranks and
/// in-flight limits included) and training, priced as `loom plan` priced it.
cost::StrategyChoice choiceOfPlan(const EstimateCliOptions &o, spec::Training &training) {
  if (!o.strategyGiven.empty())
    throw UserError(fmt::format("--plan gives the strategy and training; {} would change them",
                                o.strategyGiven.front()),
                    "leave the strategy options out, or estimate without --plan", 2);
  spec::Plan plan = readPlanFile(o.plan, o.planIndex);
  training = plan.training();
  cost::StrategyChoice choice = search::choiceFromPlan(plan);
  choice.flashAttention = !o.noFlash;
  choice.syncTpBackward = o.choice.syncTpBackward;
  return choice;
}

void runEstimate(const EstimateCliOptions &o) {
  auto [model, cluster, training] =
      loadSpecInputs(o.spec);
  if (!o.plan.empty())
    return runEstimateOf(o, model, cluster, choiceOfPlan(o, training), training);

  cost::StrategyChoice choice = o.choice;
  if (!cost::parseRecompute(o.recompute, choice.recompute))
    throw UserError("--recompute must be none, selective or full");
  search::parseRankOrder(o.order, choice.order); // CLI11 checked the word
  choice.flashAttention = !o.noFlash;
  choice.tpCommOverlap = !o.noTpOverlap;
  choice.fusedGradAccumulation = !o.noGradFusion;
  static const std::pair<const char *, cost::Schedule> schedules[] = {
      {"1f1b", cost::Schedule::OneFOneB},     {"interleaved", cost::Schedule::Interleaved},
      {"gpipe", cost::Schedule::GPipe},       {"zb-h1", cost::Schedule::ZeroBubbleH1},
      {"zb-h2", cost::Schedule::ZeroBubbleH2}, {"zb-auto", cost::Schedule::ZeroBubbleAuto},
      {"zb-v", cost::Schedule::ZeroBubbleV}, {"dualpipe", cost::Schedule::DualPipe}};
  for (auto &[name, kind] : schedules)
    if (o.schedule == name)
      choice.schedule = kind;
  if (o.schedule == "zb-v" && choice.vpp == 1)
    choice.vpp = 2; // its V: two chunks per rank
  if (o.schedule == "interleaved" && choice.vpp == 1)
    throw UserError("--schedule interleaved needs --vpp > 1",
                    "give the virtual stages per pipeline rank, e.g. --vpp 2");

  runEstimateOf(o, model, cluster, choice, training);
}

void runEstimateOf(const EstimateCliOptions &o, const spec::Model &model,
                   const spec::Cluster &cluster, const cost::StrategyChoice &choice,
                   const spec::Training &training) {
  cost::WorkloadResult built = cost::fromStrategy(model, cluster, training, choice);
  if (!built.ok())
    throw UserError(built.error, built.hint.empty()
                                     ? "degrees must divide the model and multiply to the GPU count"
                                     : built.hint);
  const cost::Workload &w = built.workload;

  std::vector<cost::ComputeModel> computes = cost::computeModelsFor(cluster, training);
  if (!o.calibration.empty()) {
    if (computes.size() > 1)
      throw UserError(fmt::format("--calibration measures one GPU type, but cluster '{}' has {}",
                                  cluster.name(), computes.size()),
                      "estimate without --calibration on a mixed cluster");
    std::string err = computes[0].loadCalibrationCsv(o.calibration);
    if (!err.empty())
      throw UserError(err, "the CSV needs a header m,n,k,seconds and one GEMM per line");
  }
  cost::EstimateOptions options;
  options.memory.headroom = o.headroom;
  options.overlapGradReduce = options.overlapParamGather = !o.noOverlap;
  cost::Estimate e = cost::estimate(w, computes, options);
  // The pipeline term from the schedule simulator, as `loom plan` prices its
  // finalists; --analytic keeps the closed form of the schedule family.
  std::optional<search::SimulatedPipeline> sim;
  if (!o.analytic)
    sim = search::simulateEstimate(e, w, computes);

  if (o.json) {
    writeOutput("", search::estimateJson(model, cluster, choice, w, e, sim.has_value()).dump(2) +
                        "\n");
    exitStatus = e.fits ? 0 : 3;
    return;
  }

  std::string text = fmt::format("{} on {}\n{}\n{} micro-batches per step\n\n", model.name(),
                                 cluster.name(), search::estimateStrategy(choice, w),
                                 e.microBatches);
  // On a mixed cluster, which GPU type runs each stage.
  spec::NodeTypes types = spec::nodeTypes(cluster);
  auto stageGpu = [&](size_t r) -> std::string {
    if (w.stageDevice.empty())
      return "";
    return " (" + types.gpus[w.stageDevice[r]]->name() + ")";
  };
  std::vector<std::string> header{"memory per GPU (GiB)"};
  for (size_t r = 0; r < e.memory.size(); ++r)
    header.push_back(">stage " + std::to_string(r) + stageGpu(r));
  Table mem(header);
  auto memRow = [&](const char *name, auto get) {
    std::vector<std::string> row{name};
    for (const cost::MemoryBreakdown &m : e.memory)
      row.push_back(get(m));
    mem.addRow(row);
  };
  memRow("parameters", [](auto &m) { return gib(m.params); });
  memRow("gradients", [](auto &m) { return gib(m.grads); });
  memRow("optimizer state", [](auto &m) { return gib(m.optim); });
  if (w.zero == 3)
    memRow("gathered parameters", [](auto &m) { return gib(m.gatheredParams); });
  memRow("activations", [](auto &m) { return gib(m.activations); });
  // Interleaving and ZB-V hold chunks of a rank's layers, not whole micro-batches.
  bool chunked = w.schedule == cost::Schedule::Interleaved ||
                 w.schedule == cost::Schedule::ZeroBubbleV;
  memRow(chunked ? "  chunks in flight" : "  micro-batches in flight",
         [](auto &m) { return std::to_string(m.inflight); });
  memRow("communication buffers", [](auto &m) { return gib(m.commBuffers); });
  memRow("context, NCCL, fragmentation", [](auto &m) { return gib(m.allowances); });
  memRow("total", [](auto &m) { return gib(m.total()); });
  text += mem.render();
  text += fmt::format("usable: {} GiB of {} GiB ({:.0f}% headroom) -> {}\n\n",
                      gib(e.usableBytes), gib(e.capacityBytes), o.headroom * 100,
                      e.fits ? "fits" : "DOES NOT FIT");

  Table time({"time per micro-batch (s)", ">forward", ">input grad", ">weight grad",
              ">recompute", ">tp comm", ">cp comm", ">ep comm", ">p2p"});
  for (size_t r = 0; r < e.time.size(); ++r) {
    const cost::RankTime &t = e.time[r];
    time.addRow({"stage " + std::to_string(r) + stageGpu(r), secs(t.f), secs(t.b), secs(t.w),
                 secs(t.recompute), secs(t.tpComm), secs(t.cpComm), secs(t.epComm),
                 secs(t.p2p)});
  }
  text += time.render() + "\n";
  Table step({"step", ">seconds", ">share"});
  auto share = [&](double s) { return fmt::format("{:.1f}%", 100 * s / e.stepTime); };
  step.addRow({"pipeline (micro-batches)", secs(e.pipeline - e.bubble), share(e.pipeline - e.bubble)});
  step.addRow({"pipeline bubble", secs(e.bubble), share(e.bubble)});
  step.addRow({"data-parallel comm (exposed)", secs(e.dpExposed), share(e.dpExposed)});
  step.addRow({"optimizer step", secs(e.optimizer), share(e.optimizer)});
  step.addRow({"total", secs(e.stepTime), "100.0%"});
  text += step.render();
  if (sim)
    text += fmt::format("pipeline time from the schedule simulator ({}; --analytic for the "
                        "closed form)\n",
                        sim->schedule);
  else if (w.pp > 1 && o.analytic)
    text += "pipeline time from the schedule family's closed form\n";
  else if (std::string large = search::simulationTooLarge(w); w.pp > 1)
    text += fmt::format("pipeline time from the schedule family's closed form ({})\n",
                        large.empty() ? "this shape cannot be simulated" : large);
  text += fmt::format("\n{:.0f} tokens/s, {:.1f} TFLOP/s per GPU (recomputation included), "
                      "MFU {:.1f}%\n",
                      e.tokensPerSecond, e.tflopsPerGpu, 100 * e.mfu);
  if (w.multiDc)
    text += fmt::format("{} GiB cross the datacenter links per step (all GPUs)\n",
                        loom::gib(e.crossDcBytes, 1));
  writeOutput("", text);
  if (!e.fits) {
    // What is left to try: higher ZeRO stages, recomputation beyond this one
    // (selective drops nothing that flash attention keeps), more model
    // parallelism.
    std::vector<std::string> tries;
    if (w.zero < 3) {
      std::string stages;
      for (int64_t z = w.zero + 1; z <= 3; ++z)
        stages += fmt::format("{}{}", stages.empty() ? "" : "/", z);
      tries.push_back("--zero " + stages);
    }
    if (w.recompute == cost::Recompute::None && !choice.flashAttention)
      tries.push_back("--recompute selective or full");
    else if (w.recompute != cost::Recompute::Full)
      tries.push_back("--recompute full");
    tries.push_back("larger --tp/--pp");
    std::string hint = "try ";
    for (size_t i = 0; i < tries.size(); ++i)
      hint += (i == 0 ? "" : i + 1 == tries.size() ? " or " : ", ") + tries[i];
    throw UserError(fmt::format("does not fit: stage {} needs {} GiB, {} GiB usable",
                                e.peakRank, gib(e.peakMemoryBytes), gib(e.usableBytes)),
                    hint, 3);
  }
}
} // namespace

void loom::cli::addEstimateCommand(CLI::App &app) {
  auto o = std::make_shared<EstimateCliOptions>();
  auto *cmd = app.add_subcommand(
      "estimate",
      "Estimate memory per GPU (by state, per pipeline stage) and step time of one\n"
      "strategy. Exit code 3 when the plan does not fit in GPU memory.");
  addSpecOptions(cmd, o->spec);
  addDegreeOption(cmd, "--dp", o->choice.dp, "data-parallel size (default: what the GPUs leave)");
  addDegreeOption(cmd, "--tp", o->choice.tp, "tensor-parallel size");
  addDegreeOption(cmd, "--pp", o->choice.pp, "pipeline-parallel size");
  addDegreeOption(cmd, "--vpp", o->choice.vpp,
                  "virtual stages per pipeline rank (interleaved schedule)");
  addDegreeOption(cmd, "--ep", o->choice.ep, "expert-parallel size (divides dp)");
  addDegreeOption(cmd, "--cp", o->choice.cp, "context-parallel size");
  addDegreeOption(cmd, "--mbs", o->choice.microBatch, "micro-batch size");
  cmd->add_option("--zero", o->choice.zero, "ZeRO stage 0-3")->check(CLI::Range(0, 3));
  cmd->add_option("--recompute", o->recompute, "none, selective or full")
      ->check(CLI::IsMember({"none", "selective", "full"}));
  cmd->add_option("--schedule", o->schedule,
                  "1f1b, interleaved, gpipe, zb-h1, zb-h2, zb-auto, zb-v (two chunks per rank "
                  "in a V: vpp=2) or dualpipe (DeepSeek-V3's two directions: even pp)")
      ->check(CLI::IsMember({"auto", "1f1b", "interleaved", "gpipe", "zb-h1", "zb-h2", "zb-auto",
                             "zb-v", "dualpipe"}));
  cmd->add_option("--inflight-limit", o->choice.inflightLimit,
                  "zb-auto: micro-batches each pipeline rank may hold, one per rank\n"
                  "(e.g. 7,5,3,1; default 1F1B's p - r); memory is priced at these")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--sp", o->choice.sequenceParallel, "sequence parallelism along tp");
  cmd->add_flag("--offload-optimizer", o->choice.offloadOptimizer,
                "ZeRO-Offload: fp32 master weights and moments in host memory, the\n"
                "optimizer step on the CPU (host link and memory figures from the GPU catalog)");
  cmd->add_flag("--no-tp-overlap", o->noTpOverlap,
                "sequence-parallel tp communication runs exposed (without Transformer\n"
                "Engine's --tp-comm-overlap, which loom otherwise assumes with --sp)");
  addOrderOption(cmd, o->order, "the rank order:");
  cmd->add_flag("--no-flash", o->noFlash, "attention keeps its s x s scores (no flash attention)");
  cmd->add_flag("--no-overlap", o->noOverlap,
                "data-parallel reduction after the pipeline drains, not under backward, and\n"
                "ZeRO-1/2's parameter gather after the optimizer step, not under the next forward");
  addNoGradFusionFlag(cmd, o->noGradFusion);
  addSyncTpBackwardFlag(cmd, o->choice.syncTpBackward);
  cmd->add_option("--headroom", o->headroom, "share of GPU memory to leave free")
      ->check(CLI::Range(0.0, 0.9));
  cmd->add_option("--calibration", o->calibration, "CSV of measured GEMMs: m,n,k,seconds");
  cmd->add_flag("--analytic", o->analytic,
                "price the pipeline with the schedule family's closed form instead of "
                "simulating its schedule");
  cmd->add_option("--plan", o->plan,
                  "estimate a plan `loom plan --json` wrote, as it was priced there: its degrees,\n"
                  "schedule, stage split and training (no strategy options then)");
  cmd->add_option("--plan-index", o->planIndex, "which plan of the file (default 0, the best)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", o->json, "machine-readable output");
  cmd->callback([o, cmd] {
    o->strategyGiven.clear();
    for (const char *name :
         {"--dp", "--tp", "--pp", "--vpp", "--ep", "--cp", "--mbs", "--zero", "--recompute",
          "--schedule", "--inflight-limit", "--sp", "--offload-optimizer", "--no-tp-overlap",
          "--order", "--no-grad-accumulation-fusion", "--seq", "--global-batch",
          "--grad-reduce-in-bf16", "--training"})
      if (cmd->count(name) > 0)
        o->strategyGiven.push_back(name);
    runEstimate(*o);
  });
}
