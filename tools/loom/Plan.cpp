//===- Plan.cpp - `loom plan` ---------------------------------------------===//
//
// Searches parallel strategies for a model on a cluster and prints the fastest
// that fit. Exit codes: 0 a plan fits, 3 none fits (the closest is printed with
// what would make it fit), 1 bad input, 2 bad usage.
//
//===----------------------------------------------------------------------===//

#include "Driver.h"

#include "loom/Search/PlanJson.h"
#include "loom/Search/Planner.h"
#include "loom/Schedule/SkipPaths.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "loom/Support/Table.h"
#include "loom/Transforms/ApplyCandidate.h"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

using namespace loom;
using namespace loom::cli;

namespace {
struct PlanCliOptions {
  SpecArgs spec;
  int64_t top = 5;
  bool json = false, explain = false, emitMlir = false, noFlash = false, noSp = false,
       noGradFusion = false, noTpOverlap = false, offload = false, noZeroBubble = false,
       syncTpBackward = false;
  std::string output, recompute, order, skip, framework;
  double headroom = 0.05;
  int64_t zero = -1;
  search::Constraints fixed;
};

/// GiB columns of the plan table: one decimal.
std::string gib(double bytes) { return loom::gib(bytes, 1); }


/// The logical axes of `choice` that have a piece on physical level `level`
/// ("dp+pp"), or "-" when none does.
/// The axes of `choice` whose groups leave a datacenter, "-" for none.
std::string axesAcrossDcs(const spec::Model &model, const spec::Cluster &cluster,
                          const spec::Training &training, const cost::StrategyChoice &choice) {
  cost::WorkloadResult w = cost::fromStrategy(model, cluster, training, choice);
  std::vector<cost::LinkLevel> links = cost::linkLevels(cluster);
  std::string out;
  for (const search::LogicalAxis &axis : w.workload.mesh)
    if (cost::crossesDatacenters(links, w.workload.mesh, axis.name))
      out += (out.empty() ? "" : "+") + axis.name;
  return out.empty() ? "-" : out;
}

/// Where a plan's model-parallel axes leave the fast links, in words:
/// "tp=16 spans 2 nodes (the NVLink domain is 8 GPUs)".
std::vector<std::string> placementNotes(const spec::Model &model, const spec::Cluster &cluster,
                                        const spec::Training &training,
                                        const cost::StrategyChoice &choice) {
  std::vector<spec::ClusterLevel> levels = spec::clusterLevels(cluster);
  std::vector<cost::LinkLevel> links = cost::linkLevels(cluster);
  cost::WorkloadResult w = cost::fromStrategy(model, cluster, training, choice);
  std::vector<std::string> notes;
  if (!w.ok() || levels.empty())
    return notes;
  for (const search::LogicalAxis &axis : w.workload.mesh) {
    bool inner = axis.name == "tp" || axis.name == "cp" || axis.name == "ep";
    for (const search::Piece &p : axis.pieces) {
      if (inner && p.physical == "node")
        notes.push_back(fmt::format("{}={} spans {} nodes (the NVLink domain is {} GPUs)",
                                    axis.name, axis.size(), p.size, levels.back().size));
      if (p.physical == "dc" && cost::crossesDatacenters(links, w.workload.mesh, axis.name))
        notes.push_back(fmt::format("{} crosses the datacenter link", axis.name));
    }
  }
  return notes;
}

/// The fewest and most layers a stage of `choice` holds.
std::pair<int64_t, int64_t> stageRange(const cost::StrategyChoice &choice, int64_t layers) {
  if (choice.stageLayers.empty()) {
    int64_t stages = choice.pp * choice.vpp;
    return {layers / stages, (layers + stages - 1) / stages};
  }
  auto [lo, hi] = std::minmax_element(choice.stageLayers.begin(), choice.stageLayers.end());
  return {*lo, *hi};
}

/// When an alternative with plan 1's stage count gives its busiest stage more
/// layers (a tighter memory budget moves layers off the heavy ranks), the
/// split is why its compute grew: "; its stages hold 1 to 3 layers (plan 1's
/// 1 to 2)". Empty otherwise.
std::string splitNote(const cost::StrategyChoice &alt, const cost::StrategyChoice &best,
                      int64_t layers) {
  if (alt.pp != best.pp || alt.vpp != best.vpp || alt.pp == 1)
    return "";
  auto [altLo, altHi] = stageRange(alt, layers);
  auto [bestLo, bestHi] = stageRange(best, layers);
  if (altHi <= bestHi)
    return "";
  return fmt::format("; its stages hold {} to {} layers (plan 1's {} to {})", altLo, altHi,
                     bestLo, bestHi);
}

/// One-step changes to plan 1 and why each loses: (change, verdict).
std::vector<std::pair<std::string, std::string>>
explain(const spec::Model &model, const spec::Cluster &cluster, const spec::Training &training,
        const search::Candidate &best, const search::PlannerOptions &planner) {
  std::vector<std::pair<std::string, std::string>> lines;
  std::vector<cost::ComputeModel> computes = cost::computeModelsFor(cluster, training);
  std::vector<search::Neighbour> alts =
      search::neighbours(best, cluster, planner.fixed.sequenceParallel);

  // What an alternative changes about where axes run, unlike plan 1.
  std::vector<std::string> bestNotes = placementNotes(model, cluster, training, best.choice);
  auto news = [&](const cost::StrategyChoice &choice) {
    std::string out;
    for (const std::string &note : placementNotes(model, cluster, training, choice))
      if (std::find(bestNotes.begin(), bestNotes.end(), note) == bestNotes.end())
        out += note + "; ";
    return out;
  };
  int64_t layers = spec::numLayers(model);
  // Priced as plan 1 was: stages balanced, a simulated pipeline when plan 1's
  // is, tried with zb-auto, ZB-V and skip paths as the planner's first finalists are.
  search::PlannerOptions asBest = planner;
  asBest.simulateFinalists = best.simulated;
  for (const search::Neighbour &alt : alts) {
    std::string error;
    search::Candidate c = search::priceAsFinalist(model, cluster, training, alt.choice, computes,
                                                  asBest, &error);
    std::string verdict;
    if (!error.empty())
      verdict = "cannot: " + error;
    else if (!c.estimate.fits)
      verdict = fmt::format("does not fit: {} GiB > {} GiB usable", gib(c.estimate.peakMemoryBytes),
                            gib(c.estimate.usableBytes));
    else {
      double delta = c.estimate.stepTime / best.estimate.stepTime - 1;
      if (delta < -0.001 && !search::searches(planner, c.choice, model, cluster))
        verdict = fmt::format("{:+.1f}% step time, outside the searched space", 100 * delta);
      else if (delta < -0.001)
        verdict = fmt::format("{:+.1f}% step time: the search ranks by the analytic estimate "
                              "and refines only its first plan's neighbours, {} rounds",
                              100 * delta, search::kPolishRounds);
      else if (delta <= 0)
        verdict = fmt::format("{:+.1f}% step time: as fast (ties go to less memory, then "
                              "the simpler plan)",
                              100 * delta);
      else
        verdict = fmt::format("{}{:+.1f}% step time, {}{}", news(alt.choice), 100 * delta,
                              search::whySlower(best.estimate, c.estimate),
                              splitNote(c.choice, best.choice, layers));
    }
    lines.emplace_back(alt.change, verdict);
  }
  return lines;
}

/// The planner's InputProblem as an error line: "--ep 2: <message>".
UserError inputError(const search::InputProblem &problem) {
  std::string options;
  for (const auto &[name, value] : problem.options)
    options += fmt::format("{}--{} {}", options.empty() ? "" : " ", name, value);
  return UserError(options.empty() ? problem.message : options + ": " + problem.message,
                   problem.hint, problem.usage ? 2 : 1);
}

/// The table's heading: what was planned, and how much was searched.
std::string searchedLine(const spec::Model &model, const spec::Cluster &cluster,
                         const spec::Training &training, const search::PlanResult &r) {
  return fmt::format(
      "{} on {} ({} GPUs), global batch {} x {} tokens\n"
      "searched {} strategies in {:.0f} ms ({} rejected by the model or cluster)\n\n",
      model.name(), cluster.name(), spec::clusterSize(cluster).gpus, training.global_batch(),
      training.seq_len(), r.evaluated, r.seconds * 1e3, r.rejected);
}

void runPlan(const PlanCliOptions &o) {
  auto [model, cluster, training] =
      loadSpecInputs(o.spec);
  search::PlannerOptions options;
  options.topK = o.top;
  options.estimate.memory.headroom = o.headroom;
  options.fixed = o.fixed;
  options.fixed.sequenceParallel = !o.noSp;
  options.flashAttention = !o.noFlash;
  options.tpCommOverlap = !o.noTpOverlap;
  options.fusedGradAccumulation = !o.noGradFusion;
  options.syncTpBackward = o.syncTpBackward;
  options.zeroBubble = !o.noZeroBubble;
  options.offloadOptimizer = o.offload;
  if (!o.skip.empty()) {
    // "max-skip=0.25,max-swaps=1,min-share=0.5": SkipPipe's rules.
    sched::PathRules rules{.maxSkipFraction = 0.25, .maxSwaps = 0, .minStageShare = 0.5};
    llvm::SmallVector<llvm::StringRef> items;
    llvm::StringRef(o.skip).split(items, ',', -1, /*KeepEmpty=*/false);
    for (llvm::StringRef item : items) {
      auto [key, value] = item.trim().split('=');
      bool known = false;
      std::string why = sched::setPathRule(key, value.trim(), rules, known);
      if (!why.empty())
        throw UserError("--skip: " + why + (known ? "" : "; keys are max-skip, max-swaps and "
                                                         "min-share"),
                        "e.g. --skip max-skip=0.25,min-share=0.5");
    }
    options.skip = cost::SkipRules{rules.maxSkipFraction, rules.maxSwaps, rules.minStageShare};
  }
  if (o.zero >= 0)
    options.fixed.zero = o.zero;
  if (!o.recompute.empty()) {
    cost::Recompute rc;
    cost::parseRecompute(o.recompute, rc); // CLI11 checked the word
    options.fixed.recompute = rc;
  }
  if (!o.order.empty()) {
    search::RankOrder order;
    search::parseRankOrder(o.order, order);
    options.fixed.order = order;
  }
  if (!o.framework.empty()) {
    search::Framework framework = search::Framework::Any;
    search::parseFramework(o.framework, framework); // CLI11 checked the word
    std::string why = search::restrictToFramework(framework, options);
    if (!why.empty())
      throw UserError("--for " + o.framework + ": " + why,
                      "drop the contradicting option, or plan without --for and run the plan "
                      "with loom.torch",
                      2);
  }
  // Inputs no strategy can take, said before searching.
  if (auto problem = search::checkInputs(model, cluster, options))
    throw inputError(*problem);
  search::PlanResult r = search::plan(model, cluster, training, options);

  // Inputs that no priced strategy could take (fixed degrees no strategy has,
  // say) are errors in every output form; "nothing fits" is a result.
  if (!r.anyFits)
    if (auto problem = search::nothingPriced(model, cluster, training, r, options)) {
      if (!o.json && !o.emitMlir)
        writeOutput("", searchedLine(model, cluster, training, r));
      throw inputError(*problem);
    }

  if (o.emitMlir) {
    if (!r.anyFits)
      throw UserError("no strategy fits, so there is no placement to print",
                      "run without --emit-mlir to see the closest plan", 3);
    PlaceApplyStrategyOptions apply = applyOptionsFor(r.best.front());
    PlacedModule placed = lowerAndPlace({model, cluster, training}, &apply, /*estimate=*/true);
    writeOutput(o.output, printModule(*placed.module));
    return;
  }

  if (o.json) {
    nlohmann::json out = search::planResultJson(model, cluster, training, r);
    if (o.explain && r.anyFits) {
      nlohmann::json why = nlohmann::json::array();
      for (auto &[change, verdict] : explain(model, cluster, training, r.best.front(), options))
        why.push_back({{"change", change}, {"verdict", verdict}});
      out["explain"] = why;
    }
    writeOutput("", out.dump(2) + "\n");
    exitStatus = r.anyFits ? 0 : 3;
    return;
  }

  std::string text = searchedLine(model, cluster, training, r);
  if (!r.anyFits) {
    writeOutput("", text);
    const cost::Estimate &e = r.closest.estimate;
    // Every ZeRO stage and recomputation was tried; say what else would do it.
    std::vector<std::string> fixes;
    for (const search::FitFix &fix : r.closestFixes)
      fixes.push_back(search::describeFix(fix, r.closest, "--offload-optimizer"));
    std::string hint = "ZeRO 0-3 and recomputation were all tried; ";
    if (fixes.empty())
      hint += "more GPUs, GPUs with more memory, a shorter sequence or a smaller global batch";
    else
      hint += "the closest plan fits with " + fixes.front() +
              (fixes.size() > 1 ? " or with " + fixes.back() : std::string());
    throw UserError(
        fmt::format("no strategy fits: the closest ({}) needs {} GiB per GPU, {} GiB usable",
                    search::describe(r.closest), gib(e.peakMemoryBytes), gib(e.usableBytes)),
        hint, 3);
  }
  bool multiDc = spec::clusterLevels(cluster).size() > 2;
  std::vector<std::string> header{">#",   ">dp",      ">tp",   ">pp",       ">vpp",
                                  ">ep",  ">cp",      ">zero", "recompute", ">mbs",
                                  "schedule", ">step s", ">tokens/s", ">TFLOP/s", ">MFU",
                                  ">peak GiB", ">free GiB"};
  if (multiDc) {
    header.push_back("across DCs");
    header.push_back(">DC GiB/step");
  }
  Table table(header);
  for (size_t i = 0; i < r.best.size(); ++i) {
    const search::Candidate &c = r.best[i];
    const cost::Estimate &e = c.estimate;
    const cost::StrategyChoice &s = c.choice;
    std::vector<std::string> row{
        std::to_string(i + 1), std::to_string(c.dp), std::to_string(s.tp),
        std::to_string(s.pp), std::to_string(s.vpp), std::to_string(s.ep),
        std::to_string(s.cp), std::to_string(s.zero) + (s.offloadOptimizer ? "+offload" : ""),
        std::string(cost::recomputeName(s.recompute)) +
            (s.recomputeRanks > 0 ? fmt::format(" 0-{}", s.recomputeRanks - 1) : ""),
        std::to_string(s.microBatch),
        s.pp == 1 ? "-" : cost::scheduleName(cost::effectiveSchedule(s)),
        fmt::format("{:.3f}{}", e.stepTime, c.simulated ? "*" : ""),
        fmt::format("{:.0f}", e.tokensPerSecond), fmt::format("{:.0f}", e.tflopsPerGpu),
        fmt::format("{:.1f}%", 100 * e.mfu), gib(e.peakMemoryBytes),
        gib(e.usableBytes - e.peakMemoryBytes)};
    if (multiDc) {
      row.push_back(axesAcrossDcs(model, cluster, training, s));
      row.push_back(gib(e.crossDcBytes));
    }
    table.addRow(row);
  }
  text += table.render();
  if (std::any_of(r.best.begin(), r.best.end(), [](auto &c) { return c.simulated; }))
    text += "* pipeline time from the schedule simulator (docs/schedules.md)\n";
  if (r.zeroTwins > 0)
    text += fmt::format("left out: {} plan{} that differ{} from a row above only in ZeRO stage "
                        "and {} neither faster nor leaner (--zero N lists stage N's)\n",
                        r.zeroTwins, r.zeroTwins > 1 ? "s" : "", r.zeroTwins > 1 ? "" : "s",
                        r.zeroTwins > 1 ? "are" : "is");
  if (std::any_of(r.best.begin(), r.best.end(),
                  [](auto &c) { return c.choice.schedule == cost::Schedule::Skip; }))
    text += "skip: SkipPipe paths; micro-batches skip middle stages, so a step trains each "
            "layer on fewer tokens (TFLOP/s and MFU count only the stages visited)\n";
  const cost::StrategyChoice &first = r.best.front().choice;
  if (!first.stageLayers.empty()) {
    text += "\nplan 1 splits the layers unevenly over its stages:";
    // The plan's stages (first.stageLayers, in order); on a mixed cluster each
    // run of stages on one GPU type is named.
    spec::Plan plan = search::toPlan(model, cluster, training, r.best.front());
    const auto &stages = plan.stages();
    for (int i = 0; i < stages.size(); ++i) {
      text += fmt::format(" {}", stages[i].num_layers());
      bool last = i + 1 == stages.size();
      if (stages[i].has_gpu() && (last || stages[i + 1].gpu() != stages[i].gpu()))
        text += fmt::format(" on {}{}", stages[i].gpu(), last ? "" : ",");
    }
    if (!first.stageOrder.empty()) {
      text += " (on pp ranks";
      for (int64_t rank : first.stageOrder)
        text += fmt::format(" {}", rank);
      text += ")";
    }
    text += "\n";
  }
  if (o.explain) {
    text += "\nwhy not (changing one thing in plan 1, dp taking what is left):\n";
    for (auto &[change, verdict] : explain(model, cluster, training, r.best.front(), options))
      text += fmt::format("  {:<22} {}\n", change, verdict);
  }
  writeOutput("", text);
}
} // namespace

void loom::cli::addPlanCommand(CLI::App &app) {
  auto o = std::make_shared<PlanCliOptions>();
  auto *cmd = app.add_subcommand(
      "plan",
      "Search data, tensor, pipeline (with interleaving), expert and context\n"
      "parallelism, ZeRO stage, recomputation and micro-batch size for a model on a\n"
      "cluster; print the fastest plans that fit. Exit code 3 when none fits.");
  addSpecOptions(cmd, o->spec);
  cmd->add_option("--top", o->top, "how many plans to show")->check(CLI::Range(int64_t(1), search::kMaxTopK));
  cmd->add_option("--headroom", o->headroom, "share of GPU memory to leave free")
      ->check(CLI::Range(0.0, 0.9));
  // Fixing degrees narrows the search (e.g. to compare with a hand-tuned plan).
  addDegreeOption(cmd, "--dp", o->fixed.dp, "fix the data-parallel size");
  addDegreeOption(cmd, "--tp", o->fixed.tp, "fix the tensor-parallel size");
  addDegreeOption(cmd, "--pp", o->fixed.pp, "fix the pipeline-parallel size");
  addDegreeOption(cmd, "--vpp", o->fixed.vpp, "fix the virtual stages per pipeline rank");
  addDegreeOption(cmd, "--ep", o->fixed.ep, "fix the expert-parallel size");
  addDegreeOption(cmd, "--cp", o->fixed.cp, "fix the context-parallel size");
  addDegreeOption(cmd, "--mbs", o->fixed.microBatch, "fix the micro-batch size");
  cmd->add_option("--zero", o->zero, "fix the ZeRO stage")->check(CLI::Range(0, 3));
  cmd->add_option("--recompute", o->recompute, "fix recomputation: none, selective or full")
      ->check(CLI::IsMember({"none", "selective", "full"}));
  addOrderOption(cmd, o->order, "fix");
  cmd->add_flag("--no-sp", o->noSp, "tensor parallelism without sequence parallelism");
  cmd->add_flag("--offload-optimizer", o->offload,
                "also try ZeRO-Offload: optimizer state in host memory, the step on the CPU");
  cmd->add_flag("--no-tp-overlap", o->noTpOverlap,
                "tensor-parallel communication runs exposed (no Transformer Engine\n"
                "--tp-comm-overlap)");
  cmd->add_flag("--no-flash", o->noFlash,
                "attention keeps its s x s scores (no FlashAttention); selective\n"
                "recomputation is then searched too");
  addNoGradFusionFlag(cmd, o->noGradFusion);
  addSyncTpBackwardFlag(cmd, o->syncTpBackward);
  cmd->add_option("--skip", o->skip,
                  "also try SkipPipe paths on the top plans: a micro-batch may skip middle\n"
                  "stages (it then trains fewer layers) or visit them reordered, under\n"
                  "max-skip=F (share of middle stages a path may skip, default 0.25),\n"
                  "max-swaps=N (stage pairs a path may invert, default 0) and min-share=G\n"
                  "(share of micro-batches every stage must see, default 0.5)");
  cmd->add_flag("--no-zero-bubble", o->noZeroBubble,
                "only the schedules Megatron-LM and DeepSpeed run: 1F1B and interleaved\n"
                "(no ZB-H1, ZB-H2, zb-auto, ZB-V or DualPipe)");
  cmd->add_option("--for", o->framework,
                  "only plans this framework launches as they are priced, for `loom emit`:\n"
                  "megatron (Megatron-LM: ZeRO 0-1, i.e. its distributed optimizer; 1F1B and\n"
                  "interleaved; equal stages but the first and last) or deepspeed (ZeRO 0-1\n"
                  "with a pipeline; 1F1B on equal stages; no interleaving or context parallelism)")
      ->check(CLI::IsMember({"megatron", "deepspeed"}));
  cmd->add_flag("--explain", o->explain,
                "say why one-step changes to the best plan lose (with --json: an \"explain\"\n"
                "list of {change, verdict})");
  cmd->add_flag("--json", o->json, "machine-readable output");
  cmd->add_flag("--emit-mlir", o->emitMlir,
                "print the best plan as place IR (placed, strategy read back, estimated)");
  cmd->add_option("-o,--output", o->output, "write --emit-mlir output to this file (atomically)");
  cmd->callback([o] { runPlan(*o); });
}
