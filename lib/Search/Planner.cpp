//===- Planner.cpp - enumerate, price and rank parallel strategies --------===//

#include "loom/Search/Planner.h"

#include "loom/Search/SimulatedPipeline.h"
#include "loom/Search/StageBalance.h"

#include <algorithm>
#include <fmt/format.h>
#include <cctype>
#include <chrono>
#include <functional>
#include <limits>
#include <tuple>

using namespace loom;
using namespace loom::search;

namespace {

std::vector<int64_t> divisors(int64_t n) {
  std::vector<int64_t> out;
  for (int64_t d = 1; d * d <= n; ++d)
    if (n % d == 0) {
      out.push_back(d);
      if (d != n / d)
        out.push_back(n / d);
    }
  std::sort(out.begin(), out.end());
  return out;
}

/// A number of virtual stages per pipeline rank and its layer split (empty:
/// even).
struct VirtualSplit {
  int64_t vpp;
  std::vector<int64_t> split;
};

/// The interleavings searched for `layers` on `pp` ranks: every vpp whose
/// pp x vpp stages split the layers evenly or, when none does and uneven
/// stages are allowed, those that do once the loss (and the embedding) count
/// as a layer each: the last virtual stage (and the first) then hold one
/// layer fewer, as Megatron-LM's --account-for-loss-in-pipeline-split (and
/// --account-for-embedding-in-pipeline-split) build them
/// (get_num_layers_to_build, megatron/core/transformer/transformer_block.py).
/// Llama 3 405B's 126 layers on 16 ranks split so (Llama 3 report, 3.3.2).
std::vector<VirtualSplit> virtualSplits(int64_t layers, int64_t pp, int64_t maxVirtualStages,
                                        bool uneven) {
  std::vector<VirtualSplit> out{{1, {}}};
  for (int64_t v = 2; pp > 1 && v <= maxVirtualStages; ++v)
    if (layers % (pp * v) == 0)
      out.push_back({v, {}});
  bool evenOnes = out.size() > 1;
  for (int64_t v = 2; uneven && !evenOnes && pp > 1 && v <= maxVirtualStages; ++v) {
    int64_t stages = pp * v;
    for (int64_t extra : {1, 2}) {
      int64_t each = (layers + extra) / stages;
      if ((layers + extra) % stages != 0 || each < 2)
        continue;
      std::vector<int64_t> split(size_t(stages), each);
      split.back() -= 1;
      if (extra == 2)
        split.front() -= 1;
      out.push_back({v, std::move(split)});
      break;
    }
  }
  return out;
}

/// The kind of a rejection: its words before the first number or '('.
std::string reasonOf(const std::string &error) {
  std::string out;
  for (char c : error) {
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '(' || c == '=')
      break;
    out += c;
  }
  while (!out.empty() && out.back() == ' ')
    out.pop_back();
  return out;
}

/// Faster first; at equal speed, less memory, then the simpler plan (lower
/// ZeRO stage, less recomputation, fewer model-parallel ranks).
bool faster(const Candidate &a, const Candidate &b) {
  auto key = [](const Candidate &c) {
    const cost::StrategyChoice &s = c.choice;
    return std::make_tuple(c.estimate.stepTime, c.estimate.peakMemoryBytes, s.zero,
                           int(s.recompute), s.tp * s.pp * s.cp * s.ep, s.vpp);
  };
  return key(a) < key(b);
}

/// A tuple's degrees and options but its ZeRO stage, whatever the schedule
/// (and the layer split balanced for it).
auto degreesOf(const cost::StrategyChoice &c) {
  return std::tie(c.dp, c.tp, c.pp, c.vpp, c.ep, c.cp, c.recompute, c.recomputeRanks,
                  c.microBatch, c.offloadOptimizer, c.order);
}

/// The same degrees and options, ZeRO stage included.
bool sameTuple(const cost::StrategyChoice &x, const cost::StrategyChoice &y) {
  return x.zero == y.zero && degreesOf(x) == degreesOf(y);
}

/// DualPipe runs this pipeline (an even pp, an even number of micro-batches, at
/// least 2pp) and it is small enough to list-schedule.
bool dualPipeRuns(int64_t pp, int64_t microBatches) {
  return pp >= 2 && pp % 2 == 0 && microBatches % 2 == 0 && microBatches >= 2 * pp &&
         pp * microBatches <= kAutoScheduleCells;
}

} // namespace

bool Constraints::admits(const cost::StrategyChoice &c) const {
  auto ok = [](int64_t want, int64_t have) { return want == 0 || want == have; };
  return ok(dp, c.dp) && ok(tp, c.tp) && ok(pp, c.pp) && ok(vpp, c.vpp) && ok(ep, c.ep) &&
         ok(cp, c.cp) && ok(microBatch, c.microBatch) && (!zero || *zero == c.zero) &&
         (!recompute || *recompute == c.recompute) && (!order || *order == c.order) &&
         c.zero <= maxZero && (c.pp < 2 || c.zero <= maxZeroWithPipeline);
}

bool loom::search::parseFramework(const std::string &word, Framework &out) {
  if (word == "megatron")
    out = Framework::Megatron;
  else if (word == "deepspeed")
    out = Framework::DeepSpeed;
  else
    return false;
  return true;
}

std::string loom::search::restrictToFramework(Framework framework, PlannerOptions &options) {
  if (framework == Framework::Any)
    return "";
  const char *name = framework == Framework::Megatron ? "Megatron-LM" : "DeepSpeed";
  Constraints &fixed = options.fixed;
  if (options.skip)
    return fmt::format("{} does not run SkipPipe's skip paths", name);
  if (fixed.zero && *fixed.zero > 1 && (framework == Framework::Megatron || fixed.pp > 1))
    return fmt::format("{} runs ZeRO 0 or 1{}, not zero={}", name,
                       framework == Framework::DeepSpeed ? " with a pipeline" : "", *fixed.zero);
  if (fixed.order && *fixed.order != RankOrder::PipelineOuter)
    return fmt::format("{} lays its ranks out with the pipeline outermost (pp-outer)", name);
  fixed.order = RankOrder::PipelineOuter;
  options.zeroBubble = false;
  options.balanceStages = false;
  options.partialRecompute = false;
  if (framework == Framework::Megatron) {
    // Equal stages but the first and last, whose layers are chosen by cost (and
    // virtual stages count the embedding and loss as layers), as Megatron-LM
    // runs them.
    options.firstLastStages = true;
    fixed.maxZero = 1;
    return "";
  }
  options.unevenStages = false;
  fixed.maxZeroWithPipeline = 1;
  if (fixed.cp > 1)
    return fmt::format("DeepSpeed has no context parallelism, not cp={}", fixed.cp);
  if (fixed.vpp > 1)
    return fmt::format("DeepSpeed's pipeline engine does not interleave, not vpp={}", fixed.vpp);
  fixed.cp = 1;
  options.maxVirtualStages = 1;
  return "";
}

/// How the search splits layers over stages under `options`.
static StageSplit splitOf(const PlannerOptions &options) {
  return options.balanceStages     ? StageSplit::Balanced
         : options.firstLastStages ? StageSplit::FirstLast
                                   : StageSplit::Even;
}

Candidate loom::search::priceChoice(const spec::Model &model, const spec::Cluster &cluster,
                                    const spec::Training &training,
                                    const cost::StrategyChoice &choice,
                                    std::span<const cost::ComputeModel> computes,
                                    const cost::EstimateOptions &options, std::string *error,
                                    StageSplit split, double mustBeat) {
  Candidate c;
  c.choice = choice;
  int64_t layers = spec::numLayers(model);
  if (split == StageSplit::FirstLast && choice.pp > 1 && choice.vpp == 1 &&
      choice.stageLayers.empty() && layers % choice.pp != 0) {
    // To start from: equal middle stages of m layers, as many as the layers
    // allow, the rest on the first and last (the first takes the odd one: the
    // last holds the head). Balancing below prices the other such splits.
    for (int64_t m = (layers + choice.pp - 1) / choice.pp; m >= 1; --m) {
      int64_t rest = layers - (choice.pp - 2) * m;
      if (rest < 2)
        continue;
      c.choice.stageLayers.assign(size_t(choice.pp), m);
      c.choice.stageLayers.front() = (rest + 1) / 2;
      c.choice.stageLayers.back() = rest / 2;
      break;
    }
  }
  cost::WorkloadResult w = cost::fromStrategy(model, cluster, training, c.choice);
  if (!w.ok()) {
    if (error)
      *error = w.error;
    return c;
  }
  c.dp = w.workload.dp;
  c.estimate = cost::estimate(w.workload, computes, options);
  if (split == StageSplit::Even || choice.pp < 2 || choice.vpp != 1 ||
      !choice.stageLayers.empty())
    return c;
  // Bound: a perfect split makes every rank the mean; that saves at most the
  // slowest rank's excess on each micro-batch and each fill step.
  const cost::Estimate &e = c.estimate;
  double slowest = 0, mean = 0;
  for (const cost::RankTime &t : e.time) {
    slowest = std::max(slowest, t.total());
    mean += t.total() / double(e.time.size());
  }
  double gain = double(e.microBatches + choice.pp - 1) * (slowest - mean);
  if (e.stepTime - gain >= mustBeat)
    return c;
  StageBalance balance = balanceStages(w.workload, computes, c.estimate, options,
                                       split == StageSplit::Reordered ? StageShapes::Reordered
                                       : split == StageSplit::FirstLast ? StageShapes::FirstLast
                                                                        : StageShapes::Any);
  if (!balance.changed || balance.stageLayers == c.choice.stageLayers)
    return c;
  Candidate balanced = c;
  balanced.choice.stageLayers = balance.stageLayers;
  balanced.choice.stageOrder = balance.stageOrder;
  cost::WorkloadResult wb = cost::fromStrategy(model, cluster, training, balanced.choice);
  if (!wb.ok())
    return c;
  balanced.estimate = cost::estimate(wb.workload, computes, options);
  bool better = balanced.estimate.fits != c.estimate.fits
                    ? balanced.estimate.fits
                    : balanced.estimate.stepTime < c.estimate.stepTime;
  return better ? balanced : c;
}

namespace {

/// `choice` priced by the cost model with its pipeline simulated; empty when
/// it does not fit, its schedule cannot be built for the shape, or it cannot
/// beat `mustBeat` seconds per step: every micro-batch passes every rank once,
/// so no schedule runs faster than the busiest rank's compute (sends run
/// beside it), and that bound is checked before generating one.
std::optional<Candidate> simulateChoice(const spec::Model &model, const spec::Cluster &cluster,
                                        const spec::Training &training, const Candidate &base,
                                        const cost::StrategyChoice &choice,
                                        std::span<const cost::ComputeModel> computes,
                                        const cost::EstimateOptions &options,
                                        double mustBeat = std::numeric_limits<double>::infinity()) {
  Candidate c = base;
  c.choice = choice;
  cost::WorkloadResult w = cost::fromStrategy(model, cluster, training, c.choice);
  if (!w.ok())
    return std::nullopt;
  cost::Estimate e = cost::estimate(w.workload, computes, options);
  if (!e.fits)
    return std::nullopt;
  double busiest = 0;
  for (const cost::RankTime &t : e.time)
    busiest = std::max(busiest, t.total() - t.p2p);
  if (double(e.microBatches) * busiest + e.dpExposed + e.optimizer >= mustBeat)
    return std::nullopt;
  if (!simulateEstimate(e, w.workload, computes))
    return std::nullopt;
  c.estimate = e;
  c.simulated = true;
  return c;
}

/// What a simulated alternative to `best` must beat: its step time once it is
/// simulated itself (before, any simulated price replaces the analytic one).
double toBeat(const Candidate &best) {
  return best.simulated ? best.estimate.stepTime : std::numeric_limits<double>::infinity();
}

/// Keeps the faster of `best` and `c` (a simulated one over an analytic one).
void keepFaster(Candidate &best, std::optional<Candidate> c) {
  if (c && (!best.simulated || c->estimate.stepTime < best.estimate.stepTime))
    best = std::move(*c);
}

} // namespace

Candidate loom::search::simulateCandidate(const spec::Model &model,
                                          const spec::Cluster &cluster,
                                          const spec::Training &training,
                                          const Candidate &candidate,
                                          std::span<const cost::ComputeModel> computes,
                                          const cost::EstimateOptions &options,
                                          bool zeroBubble, double mustBeat) {
  if (candidate.choice.pp < 2)
    return candidate;
  Candidate best = candidate;
  if (!zeroBubble || candidate.choice.vpp > 1 ||
      candidate.choice.schedule == cost::Schedule::ZeroBubbleAuto ||
      candidate.choice.schedule == cost::Schedule::Skip) {
    keepFaster(best, simulateChoice(model, cluster, training, candidate, candidate.choice,
                                    computes, options, mustBeat));
    return best;
  }
  cost::StrategyChoice c = candidate.choice;
  // A tuple that ranked by its analytic DualPipe estimate is simulated with it too.
  bool dualPipe = c.schedule == cost::Schedule::DualPipe;
  for (cost::Schedule schedule : {cost::Schedule::OneFOneB, cost::Schedule::ZeroBubbleH1,
                                  cost::Schedule::ZeroBubbleH2, cost::Schedule::DualPipe}) {
    if (schedule == cost::Schedule::DualPipe && !dualPipe)
      continue;
    c.schedule = schedule;
    keepFaster(best,
               simulateChoice(model, cluster, training, candidate, c, computes, options, mustBeat));
  }
  return best;
}

Candidate loom::search::tryAutoSchedule(const spec::Model &model, const spec::Cluster &cluster,
                                        const spec::Training &training,
                                        const Candidate &candidate,
                                        std::span<const cost::ComputeModel> computes,
                                        const cost::EstimateOptions &options) {
  cost::StrategyChoice c = candidate.choice;
  if (c.pp < 2 || c.vpp > 1 || c.schedule == cost::Schedule::ZeroBubbleAuto)
    return candidate;
  c.schedule = cost::Schedule::ZeroBubbleAuto;
  c.inflightLimit.clear();
  cost::WorkloadResult w = cost::fromStrategy(model, cluster, training, c);
  if (!w.ok() || c.pp * w.workload.microBatches() > kAutoScheduleCells)
    return candidate;
  // Each rank may hold ZB-H1's p micro-batches; then as many as its memory
  // has room for, up to ZB-H2's 2p - 1.
  Candidate best = candidate;
  keepFaster(best, simulateChoice(model, cluster, training, candidate, c, computes, options,
                                  toBeat(best)));
  std::vector<int64_t> roomy(static_cast<size_t>(c.pp));
  bool more = false;
  for (int64_t r = 0; r < c.pp; ++r) {
    int64_t room = cost::inflightCapacity(w.workload, r, options.memory);
    roomy[size_t(r)] = std::max(c.pp, std::min(room, 2 * c.pp - 1));
    more |= roomy[size_t(r)] > c.pp;
  }
  if (more) {
    c.inflightLimit = std::move(roomy);
    keepFaster(best, simulateChoice(model, cluster, training, candidate, c, computes, options,
                                    toBeat(best)));
  }
  return best;
}

Candidate loom::search::tryVShape(const spec::Model &model, const spec::Cluster &cluster,
                                  const spec::Training &training, const Candidate &candidate,
                                  std::span<const cost::ComputeModel> computes,
                                  const cost::EstimateOptions &options) {
  cost::StrategyChoice c = candidate.choice;
  if (c.pp < 2 || c.vpp > 1)
    return candidate;
  // Two even chunks per rank, folded into a V; the schedule's own memory.
  c.schedule = cost::Schedule::ZeroBubbleV;
  c.vpp = 2;
  c.stageLayers.clear();
  c.stageOrder.clear();
  c.inflightLimit.clear();
  if (c.pp * candidate.estimate.microBatches > kAutoScheduleCells)
    return candidate;
  Candidate best = candidate;
  keepFaster(best, simulateChoice(model, cluster, training, candidate, c, computes, options,
                                  toBeat(best)));
  return best;
}

Candidate loom::search::tryDualPipe(const spec::Model &model, const spec::Cluster &cluster,
                                    const spec::Training &training, const Candidate &candidate,
                                    std::span<const cost::ComputeModel> computes,
                                    const cost::EstimateOptions &options) {
  cost::StrategyChoice c = candidate.choice;
  if (!dualPipeRuns(c.pp, candidate.estimate.microBatches))
    return candidate;
  // An interleaved candidate's pipeline too: DualPipe's two chunks per rank
  // are its own.
  if (c.vpp > 1) {
    c.vpp = 1;
    c.stageLayers.clear();
    c.stageOrder.clear();
  }
  c.schedule = cost::Schedule::DualPipe;
  c.inflightLimit.clear();
  Candidate best = candidate;
  keepFaster(best, simulateChoice(model, cluster, training, candidate, c, computes, options,
                                  toBeat(best)));
  return best;
}

Candidate loom::search::trySkipPaths(const spec::Model &model, const spec::Cluster &cluster,
                                     const spec::Training &training, const Candidate &candidate,
                                     std::span<const cost::ComputeModel> computes,
                                     const cost::EstimateOptions &options,
                                     const cost::SkipRules &rules) {
  cost::StrategyChoice c = candidate.choice;
  if (c.pp < 3 || c.vpp > 1)
    return candidate;
  // Under the memory the candidate's schedule holds: zb-auto's least
  // per-rank limit, else ZB-H1's p.
  if (c.schedule != cost::Schedule::ZeroBubbleAuto || c.inflightLimit.empty())
    c.inflightLimit.assign(size_t(c.pp), c.pp);
  int64_t least = *std::min_element(c.inflightLimit.begin(), c.inflightLimit.end());
  c.inflightLimit.assign(size_t(c.pp), least);
  c.schedule = cost::Schedule::Skip;
  c.skip = rules;
  cost::WorkloadResult w = cost::fromStrategy(model, cluster, training, c);
  if (!w.ok() || c.pp * w.workload.microBatches() > kAutoScheduleCells)
    return candidate;
  Candidate best = candidate;
  keepFaster(best, simulateChoice(model, cluster, training, candidate, c, computes, options));
  return best;
}

Candidate loom::search::tryListSchedules(const spec::Model &model, const spec::Cluster &cluster,
                                         const spec::Training &training,
                                         const Candidate &candidate,
                                         std::span<const cost::ComputeModel> computes,
                                         const PlannerOptions &options) {
  Candidate c = candidate;
  if (options.zeroBubble) {
    c = tryAutoSchedule(model, cluster, training, c, computes, options.estimate);
    if (options.fixed.vpp == 0 || options.fixed.vpp == 2) // ZB-V runs vpp=2
      c = tryVShape(model, cluster, training, c, computes, options.estimate);
    if (options.fixed.vpp <= 1)
      c = tryDualPipe(model, cluster, training, c, computes, options.estimate);
  }
  if (options.skip)
    c = trySkipPaths(model, cluster, training, c, computes, options.estimate, *options.skip);
  return c;
}

std::vector<Neighbour> loom::search::neighbours(const Candidate &best,
                                               const spec::Cluster &cluster,
                                               bool sequenceParallel) {
  std::vector<Neighbour> out;
  auto with = [&](std::string change, auto edit) {
    cost::StrategyChoice c = best.choice;
    edit(c);
    c.dp = 0; // what the GPUs leave
    // Balanced afresh; an interleaved split is the pp x vpp shape's own.
    if (c.vpp == 1 || c.pp != best.choice.pp || c.vpp != best.choice.vpp)
      c.stageLayers.clear();
    c.stageOrder.clear();
    // The schedule is chosen afresh when the plan's was simulated; zb-auto's
    // and skip's limits were sized for the plan's memory.
    if (best.simulated) {
      if (c.schedule == cost::Schedule::ZeroBubbleV && c.vpp == 2)
        c.vpp = 1; // ZB-V's V, not interleaving: tried afresh
      c.schedule = cost::Schedule::OneFOneB;
    }
    c.inflightLimit.clear();
    if (c.recompute != best.choice.recompute || c.pp != best.choice.pp)
      c.recomputeRanks = 0;
    c.sequenceParallel = c.tp > 1 && sequenceParallel;
    if (c.vpp > 1 && c.pp == 1)
      c.vpp = 1;
    out.push_back({std::move(change), c});
  };
  const cost::StrategyChoice &s = best.choice;
  with(fmt::format("tp={}", s.tp * 2), [](auto &c) { c.tp *= 2; });
  if (s.tp > 1)
    with(fmt::format("tp={}", s.tp / 2), [](auto &c) { c.tp /= 2; });
  with(fmt::format("pp={}", s.pp * 2), [](auto &c) { c.pp *= 2; c.vpp = 1; });
  if (s.pp > 1)
    with(fmt::format("pp={}", s.pp / 2), [](auto &c) { c.pp /= 2; c.vpp = 1; });
  for (int64_t z = 0; z <= 3; ++z)
    if (z != s.zero)
      with(fmt::format("zero={}", z), [z](auto &c) { c.zero = z; });
  // Selective recomputation is not offered: with flash attention it equals none.
  for (cost::Recompute rc : {cost::Recompute::None, cost::Recompute::Full})
    if (rc != s.recompute)
      with(fmt::format("recompute={}", cost::recomputeName(rc)),
           [rc](auto &c) { c.recompute = rc; });
  with(fmt::format("micro-batch {}", s.microBatch * 2), [](auto &c) { c.microBatch *= 2; });
  if (s.microBatch > 1)
    with(fmt::format("micro-batch {}", s.microBatch / 2), [](auto &c) { c.microBatch /= 2; });
  if (spec::clusterLevels(cluster).size() > 2 && s.pp > 1) {
    RankOrder flip = s.order == RankOrder::DataOuter ? RankOrder::PipelineOuter
                                                      : RankOrder::DataOuter;
    with(fmt::format("order={}", rankOrderName(flip)), [flip](auto &c) { c.order = flip; });
  }
  return out;
}

bool loom::search::searches(const PlannerOptions &options, const cost::StrategyChoice &s,
                            const spec::Model &model, const spec::Cluster &cluster) {
  const Constraints &fixed = options.fixed;
  std::vector<spec::ClusterLevel> levels = spec::clusterLevels(cluster);
  int64_t gpusPerNode = levels.empty() ? int64_t(spec::clusterSize(cluster).gpus)
                                       : levels.back().size;
  int64_t layers = spec::numLayers(model);
  cost::StrategyChoice resolved = s;
  if (resolved.dp == 0 && s.tp * s.pp * s.cp > 0) // what the GPUs leave
    resolved.dp = int64_t(spec::clusterSize(cluster).gpus) / (s.tp * s.pp * s.cp);
  auto listed = [](const auto &list, const auto &value) {
    return std::find(list.begin(), list.end(), value) != list.end();
  };
  bool tp = fixed.tp ? s.tp == fixed.tp : s.tp <= 2 * gpusPerNode;
  bool cp = fixed.cp ? s.cp == fixed.cp : s.cp <= 8;
  bool mbs = fixed.microBatch ? s.microBatch == fixed.microBatch
                              : listed(options.microBatches, s.microBatch);
  bool rc = fixed.recompute ? s.recompute == *fixed.recompute
                            : listed(options.recomputes, s.recompute);
  bool interleavedOnTwo = cost::effectiveSchedule(s) == cost::Schedule::Interleaved && s.pp == 2;
  bool vpp = (fixed.vpp ? s.vpp == fixed.vpp : s.vpp <= options.maxVirtualStages) &&
             (options.interleaveTwoRanks || !interleavedOnTwo);
  return tp && cp && mbs && rc && vpp && s.pp <= layers &&
         (options.unevenStages || layers % s.pp == 0) && fixed.admits(resolved) &&
         (s.offloadOptimizer ? options.offloadOptimizer : true);
}

Candidate loom::search::priceAsFinalist(const spec::Model &model, const spec::Cluster &cluster,
                                        const spec::Training &training,
                                        const cost::StrategyChoice &choice,
                                        std::span<const cost::ComputeModel> computes,
                                        const PlannerOptions &options, std::string *error,
                                        double mustBeat) {
  std::string why;
  Candidate c = priceChoice(model, cluster, training, choice, computes, options.estimate, &why,
                            splitOf(options));
  if (error)
    *error = why;
  if (why.empty())
    c.choice.dp = c.dp;
  if (!why.empty() || !c.estimate.fits || !options.simulateFinalists ||
      c.estimate.stepTime - c.estimate.bubble >= mustBeat)
    return c;
  c = simulateCandidate(model, cluster, training, c, computes, options.estimate,
                        options.zeroBubble, mustBeat);
  if (c.choice.pp > 1 && !c.simulated) // no schedule of this layout can beat mustBeat
    return c;
  return tryListSchedules(model, cluster, training, c, computes, options);
}

std::string loom::search::describe(const Candidate &c) {
  const cost::StrategyChoice &s = c.choice;
  std::string recompute = cost::recomputeName(s.recompute);
  if (s.recomputeRanks > 0)
    recompute += fmt::format("(ranks 0-{})", s.recomputeRanks - 1);
  return fmt::format("dp={} tp={} pp={} vpp={} ep={} cp={} zero={} recompute={} mbs={} order={}{}",
                     c.dp, s.tp, s.pp, s.vpp, s.ep, s.cp, s.zero, recompute, s.microBatch,
                     rankOrderName(s.order), s.offloadOptimizer ? " offload-optimizer" : "");
}

std::string loom::search::whySlower(const cost::Estimate &best, const cost::Estimate &other) {
  auto slowest = [](const cost::Estimate &e) {
    const cost::RankTime *t = &e.time[0];
    for (const cost::RankTime &r : e.time)
      if (r.total() > t->total())
        t = &r;
    return *t;
  };
  cost::RankTime a = slowest(best), b = slowest(other);
  double m = double(other.microBatches), mb = double(best.microBatches);
  std::pair<double, const char *> parts[] = {
      {m * (b.f + b.b + b.w) - mb * (a.f + a.b + a.w), "compute"},
      {m * b.recompute - mb * a.recompute, "recomputation"},
      {m * b.tpComm - mb * a.tpComm, "tensor-parallel communication"},
      {m * b.cpComm - mb * a.cpComm, "context-parallel communication"},
      {m * b.epComm - mb * a.epComm, "expert all-to-all"},
      {m * b.p2p - mb * a.p2p, "pipeline sends"},
      {other.bubble - best.bubble, "pipeline bubble"},
      {other.dpExposed - best.dpExposed, "data-parallel communication"},
      {other.optimizer - best.optimizer, "optimizer step"}};
  auto top = std::max_element(std::begin(parts), std::end(parts),
                              [](auto &x, auto &y) { return x.first < y.first; });
  return fmt::format("mostly {} (+{:.3f} s)", top->second, top->first);
}

/// The plan's schedule kinds the cost model prices, both ways.
static constexpr std::pair<spec::ScheduleKind, cost::Schedule> kScheduleKinds[] = {
    {spec::GPIPE, cost::Schedule::GPipe},          {spec::ONE_F_ONE_B, cost::Schedule::OneFOneB},
    {spec::INTERLEAVED, cost::Schedule::Interleaved}, {spec::ZB_H1, cost::Schedule::ZeroBubbleH1},
    {spec::ZB_H2, cost::Schedule::ZeroBubbleH2},   {spec::ZB_AUTO, cost::Schedule::ZeroBubbleAuto},
    {spec::SKIP, cost::Schedule::Skip},           {spec::ZB_V, cost::Schedule::ZeroBubbleV},
    {spec::DUALPIPE, cost::Schedule::DualPipe}};

spec::Plan loom::search::toPlan(const spec::Model &model, const spec::Cluster &cluster,
                               const spec::Training &training, const Candidate &c) {
  spec::Plan plan;
  plan.set_loom_version("0.1.0");
  plan.set_model(model.name());
  plan.set_cluster(cluster.name());
  *plan.mutable_training() = training;
  plan.mutable_training()->set_micro_batch(uint32_t(c.choice.microBatch));
  const cost::StrategyChoice &s = c.choice;
  spec::Strategy *st = plan.mutable_strategy();
  st->set_dp(uint32_t(c.dp));
  st->set_tp(uint32_t(s.tp));
  st->set_pp(uint32_t(s.pp));
  st->set_vpp(uint32_t(s.vpp));
  st->set_ep(uint32_t(s.ep));
  st->set_cp(uint32_t(s.cp));
  st->set_zero(uint32_t(s.zero));
  st->set_recompute(s.recompute == cost::Recompute::Full        ? spec::RECOMPUTE_FULL
                    : s.recompute == cost::Recompute::Selective ? spec::RECOMPUTE_SELECTIVE
                                                                : spec::RECOMPUTE_NONE);
  st->set_micro_batch(uint32_t(s.microBatch));
  st->set_sequence_parallel(s.sequenceParallel);
  st->set_tp_comm_overlap(s.tpCommOverlap && s.sequenceParallel);
  st->set_offload_optimizer(s.offloadOptimizer);
  st->set_unfused_grad_accumulation(!s.fusedGradAccumulation);
  st->set_recompute_ranks(uint32_t(s.recomputeRanks));
  for (auto [kind, schedule] : kScheduleKinds)
    if (schedule == cost::effectiveSchedule(s))
      st->set_schedule(kind);
  for (int64_t n : s.inflightLimit)
    st->add_inflight_limit(uint32_t(n));
  if (s.schedule == cost::Schedule::Skip) {
    st->mutable_skip()->set_max_skip_fraction(s.skip.maxSkipFraction);
    st->mutable_skip()->set_max_swaps(uint32_t(s.skip.maxSwaps));
    st->mutable_skip()->set_min_stage_share(s.skip.minStageShare);
  }
  st->set_rank_order(rankOrderName(s.order));

  cost::WorkloadResult w = cost::fromStrategy(model, cluster, training, s);
  for (const LogicalAxis &axis : w.workload.mesh) {
    spec::LogicalAxis *out = plan.add_mesh();
    out->set_name(axis.name);
    for (const Piece &p : axis.pieces) {
      spec::AxisPiece *piece = out->add_pieces();
      piece->set_physical(p.physical);
      piece->set_size(uint32_t(p.size));
    }
  }
  std::vector<spec::ClusterLevel> levels = spec::clusterLevels(cluster);
  if (!levels.empty())
    for (int32_t dc : levels.front().cellDc)
      plan.add_cell_dc(dc);
  spec::NodeTypes types; // read when a stage names its GPU
  std::map<int64_t, std::pair<int64_t, int64_t>> stages; // stage -> first, count
  for (const cost::Part &part : w.workload.parts)
    if (part.kind == cost::PartKind::Attention) {
      auto [it, fresh] = stages.try_emplace(part.stage, part.firstLayer, 0);
      it->second.first = std::min(it->second.first, part.firstLayer);
      it->second.second += part.count;
    }
  for (auto &[index, range] : stages) {
    spec::Stage *stage = plan.add_stages();
    stage->set_index(uint32_t(index));
    stage->set_first_layer(uint32_t(range.first));
    stage->set_num_layers(uint32_t(range.second));
    if (!c.choice.stageOrder.empty())
      stage->set_pp_rank(uint32_t(c.choice.stageOrder[index]));
    if (!w.workload.stageDevice.empty()) {
      if (types.gpus.empty())
        types = spec::nodeTypes(cluster);
      int device = w.workload.stageDevice[size_t(w.workload.rankOf(index))];
      stage->set_gpu(types.gpus[size_t(device)]->name());
    }
  }

  const cost::Estimate &e = c.estimate;
  spec::Estimate *est = plan.mutable_estimate();
  est->set_step_time_s(e.stepTime);
  est->set_tokens_per_s(e.tokensPerSecond);
  est->set_tflops_per_gpu(e.tflopsPerGpu);
  est->set_mfu(e.mfu);
  est->set_peak_memory_bytes(uint64_t(e.peakMemoryBytes));
  est->set_usable_memory_bytes(uint64_t(e.usableBytes));
  est->set_fits(e.fits);
  est->set_cross_dc_bytes(e.crossDcBytes);
  for (const cost::MemoryBreakdown &m : e.memory)
    est->add_stage_memory_bytes(uint64_t(m.total()));
  return plan;
}

cost::StrategyChoice loom::search::choiceFromPlan(const spec::Plan &plan) {
  const spec::Strategy &st = plan.strategy();
  cost::StrategyChoice c;
  c.dp = st.dp();
  c.tp = std::max(1u, st.tp());
  c.pp = std::max(1u, st.pp());
  c.vpp = std::max(1u, st.vpp());
  c.ep = std::max(1u, st.ep());
  c.cp = std::max(1u, st.cp());
  c.zero = st.zero();
  c.recompute = st.recompute() == spec::RECOMPUTE_FULL        ? cost::Recompute::Full
                : st.recompute() == spec::RECOMPUTE_SELECTIVE ? cost::Recompute::Selective
                                                              : cost::Recompute::None;
  c.recomputeRanks = st.recompute_ranks();
  c.microBatch = std::max(1u, st.micro_batch() ? st.micro_batch() : plan.training().micro_batch());
  c.sequenceParallel = st.sequence_parallel();
  c.tpCommOverlap = st.tp_comm_overlap();
  c.offloadOptimizer = st.offload_optimizer();
  c.fusedGradAccumulation = !st.unfused_grad_accumulation();
  c.schedule = cost::Schedule::OneFOneB;
  for (auto [kind, schedule] : kScheduleKinds)
    if (kind == st.schedule())
      c.schedule = schedule;
  if (c.schedule == cost::Schedule::ZeroBubbleAuto || c.schedule == cost::Schedule::Skip)
    c.inflightLimit.assign(st.inflight_limit().begin(), st.inflight_limit().end());
  if (c.schedule == cost::Schedule::Skip)
    c.skip = {st.skip().max_skip_fraction(), int64_t(st.skip().max_swaps()),
              st.skip().min_stage_share()};
  if (!st.rank_order().empty())
    parseRankOrder(st.rank_order(), c.order);
  // Uneven stages (one per rank, or pp x vpp interleaved) are kept; even ones
  // are the default split.
  if (plan.stages_size() == int(c.pp * c.vpp)) {
    std::vector<int64_t> layers;
    for (const spec::Stage &stage : plan.stages())
      layers.push_back(stage.num_layers());
    if (std::adjacent_find(layers.begin(), layers.end(), std::not_equal_to<>()) != layers.end())
      c.stageLayers = std::move(layers);
  }
  if (c.vpp == 1 && plan.stages_size() == int(c.pp)) {
    // Stages on the ranks in another order (validated by the plan reader).
    std::vector<int64_t> order;
    for (const spec::Stage &stage : plan.stages())
      order.push_back(stage.has_pp_rank() ? int64_t(stage.pp_rank()) : int64_t(stage.index()));
    for (int64_t s = 0; s < c.pp; ++s)
      if (order[s] != s) {
        c.stageOrder = std::move(order);
        break;
      }
  }
  return c;
}

/// What would make `closest` fit (PlanResult::closestFixes).
static std::vector<FitFix> fitFixes(const spec::Model &model, const spec::Cluster &cluster,
                                    const spec::Training &training, const Candidate &closest,
                                    std::span<const cost::ComputeModel> computes,
                                    const PlannerOptions &options) {
  std::vector<FitFix> fixes;
  int64_t gpus = int64_t(spec::clusterSize(cluster).gpus);
  if (!options.offloadOptimizer) {
    cost::StrategyChoice offloaded = closest.choice;
    offloaded.offloadOptimizer = true;
    Candidate c = priceChoice(model, cluster, training, offloaded, computes, options.estimate,
                              nullptr);
    if (c.estimate.fits)
      fixes.push_back({true, 1, gpus, closest.choice.zero, c.estimate.peakMemoryBytes});
  }
  for (int64_t times = 2; times <= 64; times *= 2) {
    spec::Cluster wider = cluster;
    for (spec::Datacenter &dc : *wider.mutable_datacenters())
      for (spec::NodeGroup &group : *dc.mutable_node_groups())
        group.set_count(group.count() * uint32_t(times));
    for (int64_t zero : {closest.choice.zero, int64_t(3)}) {
      cost::StrategyChoice choice = closest.choice;
      choice.dp = 0; // what the GPUs leave
      choice.zero = zero;
      std::string error;
      Candidate c = priceChoice(model, wider, training, choice, computes, options.estimate,
                                &error);
      if (error.empty() && c.estimate.fits) {
        fixes.push_back({false, times, gpus * times, zero, c.estimate.peakMemoryBytes});
        return fixes;
      }
    }
  }
  return fixes;
}

PlanResult loom::search::plan(const spec::Model &model, const spec::Cluster &cluster,
                              const spec::Training &training, const PlannerOptions &options) {
  auto start = std::chrono::steady_clock::now();
  PlanResult result;
  std::vector<cost::ComputeModel> computes = cost::computeModelsFor(cluster, training);
  spec::ClusterSize size = spec::clusterSize(cluster);
  std::vector<spec::ClusterLevel> levels = spec::clusterLevels(cluster);
  int64_t gpus = int64_t(size.gpus);
  int64_t gpusPerNode = levels.empty() ? gpus : levels.back().size;
  int64_t layers = spec::numLayers(model);
  bool multiDc = levels.size() > 2; // a "dc" level above node and gpu
  int64_t experts = 0;
  for (const spec::Block &b : model.blocks())
    if (b.has_moe())
      experts = b.moe().experts();

  // Mixed GPU types: a few more finalists than asked for, since Z3's stage
  // reordering (below) may lift one past those ranked above it.
  bool mixed = computes.size() > 1 && options.balanceStages;
  int64_t finalists = std::max(options.topK, kMinFinalists);
  int64_t keep = mixed || options.simulateFinalists ? finalists + 5 : options.topK;
  // Prices `choice` and ranks it; returns its estimate when the model and
  // cluster can take it.
  // Zero-bubble schedules rank in a pool of their own: their analytic bubble
  // is the steady-state one, optimistic when there are few micro-batches per
  // stage, so they must not crowd out the plans 1F1B ranks first. Both
  // pools' finalists are simulated with every schedule.
  std::vector<Candidate> zeroBubblePool;
  auto consider = [&](const cost::StrategyChoice &choice,
                      std::vector<Candidate> &pool) -> std::optional<cost::Estimate> {
    if (!options.fixed.admits(choice))
      return std::nullopt;
    std::string error;
    // Balancing can only matter if it might enter the top k.
    double mustBeat = int64_t(pool.size()) < keep ? std::numeric_limits<double>::infinity()
                                                  : pool.back().estimate.stepTime;
    Candidate c = priceChoice(model, cluster, training, choice, computes, options.estimate,
                              &error,
                              splitOf(options),
                              mustBeat);
    if (!error.empty()) {
      ++result.rejected;
      ++result.rejections[reasonOf(error)];
      return std::nullopt;
    }
    ++result.evaluated;
    if (!c.estimate.fits) {
      if (!result.anyFits && (result.closest.estimate.peakMemoryBytes == 0 ||
                              c.estimate.peakMemoryBytes < result.closest.estimate.peakMemoryBytes))
        result.closest = c;
      return c.estimate;
    }
    result.anyFits = true;
    // One entry per tuple: its schedules are ranked by their best (the
    // finalists then simulate every schedule of theirs anyway).
    auto twin = std::find_if(pool.begin(), pool.end(),
                             [&](const Candidate &b) { return sameTuple(b.choice, c.choice); });
    if (twin != pool.end()) {
      if (!faster(c, *twin))
        return c.estimate;
      pool.erase(twin);
    }
    auto at = std::lower_bound(pool.begin(), pool.end(), c, faster);
    if (at - pool.begin() < keep) {
      pool.insert(at, c);
      if (int64_t(pool.size()) > keep)
        pool.pop_back();
    }
    return c.estimate;
  };

  // The schedule families: 1F1B (interleaved when vpp > 1) and, for plain
  // pipelines, the zero-bubble ones, priced analytically here (the finalists
  // are simulated below). Returns the 1F1B estimate.
  auto considerSchedules = [&](cost::StrategyChoice choice) {
    choice.schedule = cost::Schedule::OneFOneB;
    std::optional<cost::Estimate> e = consider(choice, result.best);
    // Bound: a zero-bubble schedule can at most remove 1F1B's bubble, and
    // needs at least 1F1B's memory.
    if (!options.zeroBubble || !options.simulateFinalists || choice.pp < 2 || choice.vpp > 1 ||
        !e || !e->fits ||
        (int64_t(zeroBubblePool.size()) >= keep &&
         e->stepTime - e->bubble >= zeroBubblePool.back().estimate.stepTime))
      return e;
    for (cost::Schedule zb : {cost::Schedule::ZeroBubbleH1, cost::Schedule::ZeroBubbleH2}) {
      choice.schedule = zb;
      consider(choice, zeroBubblePool);
    }
    // DualPipe also hides expert all-to-alls, so an MoE pipeline that no
    // other schedule ranks may still lead with it.
    if (choice.ep > 1 && dualPipeRuns(choice.pp, e->microBatches)) {
      choice.schedule = cost::Schedule::DualPipe;
      consider(choice, zeroBubblePool);
    }
    return e;
  };

  // A degree the user fixes replaces the search's own bounds on it.
  const Constraints &fixed = options.fixed;
  std::vector<int64_t> microBatches = options.microBatches;
  if (fixed.microBatch)
    microBatches = {fixed.microBatch};
  int64_t maxVirtualStages = std::max(options.maxVirtualStages, fixed.vpp);
  for (int64_t tp : divisors(gpus)) {
    if (fixed.tp ? tp != fixed.tp : tp > 2 * gpusPerNode)
      continue;
    for (int64_t cp : divisors(gpus / tp)) {
      if (fixed.cp ? cp != fixed.cp : cp > 8)
        continue;
      for (int64_t pp : divisors(gpus / (tp * cp))) {
        if (pp > layers)
          break;
        if ((fixed.pp && pp != fixed.pp) || (!options.unevenStages && layers % pp != 0))
          continue;
        int64_t dp = gpus / (tp * cp * pp);
        std::vector<int64_t> eps{1};
        if (experts > 0) {
          eps.clear();
          for (int64_t ep : divisors(dp))
            if (experts % ep == 0)
              eps.push_back(ep);
        }
        int64_t maxVpp = pp == 2 && !options.interleaveTwoRanks ? 1 : maxVirtualStages;
        std::vector<VirtualSplit> vpps = virtualSplits(layers, pp, maxVpp, options.unevenStages);
        for (int64_t ep : eps)
          for (const auto &[vpp, split] : vpps)
            for (int64_t mbs : microBatches) {
              if (int64_t(training.global_batch()) % (dp * mbs) != 0)
                continue;
              for (int64_t zero = 0; zero <= fixed.maxZero; ++zero) {
                std::optional<cost::Estimate> noRecompute; // this tuple, nothing recomputed
                for (cost::Recompute rc : options.recomputes) {
                  // Flash attention already rebuilds the attention core:
                  // selective recomputation would be the same plan as none
                  // (searched only when asked for).
                  if (rc == cost::Recompute::Selective && options.flashAttention &&
                      fixed.recompute != rc)
                    continue;
                  cost::StrategyChoice choice;
                  choice.dp = dp;
                  choice.tp = tp;
                  choice.pp = pp;
                  choice.vpp = vpp;
                  choice.stageLayers = split;
                  choice.ep = ep;
                  choice.cp = cp;
                  choice.zero = zero;
                  choice.recompute = rc;
                  choice.microBatch = mbs;
                  choice.sequenceParallel = tp > 1 && fixed.sequenceParallel;
                  choice.flashAttention = options.flashAttention;
                  choice.tpCommOverlap = options.tpCommOverlap;
                  choice.fusedGradAccumulation = options.fusedGradAccumulation;
                  choice.syncTpBackward = options.syncTpBackward;
                  for (bool offload : {false, true}) {
                    if (offload && !options.offloadOptimizer)
                      continue;
                    choice.offloadOptimizer = offload;
                    choice.order = RankOrder::PipelineOuter;
                    std::optional<cost::Estimate> e = considerSchedules(choice);
                    if (rc == cost::Recompute::None && !offload)
                      noRecompute = e;
                    // Across datacenters: data parallelism outside the
                    // pipeline too (whole pipeline replicas per datacenter).
                    if (multiDc && pp > 1 && dp / ep > 1) {
                      choice.order = RankOrder::DataOuter;
                      considerSchedules(choice);
                    }
                  }
                  if (!options.partialRecompute)
                    continue;
                  // Full recomputation only where memory needs it: the first
                  // ranks hold the most micro-batches in flight, so recompute
                  // on ranks [0, k) where k is the first from which every
                  // rank fits without (one GPU type: one capacity).
                  if (rc == cost::Recompute::Full && pp > 1 && computes.size() == 1 &&
                      !noRecompute) { // not searched itself (fixed away): priced for this
                    cost::StrategyChoice none = choice;
                    none.recompute = cost::Recompute::None;
                    none.offloadOptimizer = false;
                    none.order = RankOrder::PipelineOuter;
                    std::string error;
                    Candidate c = priceChoice(model, cluster, training, none, computes,
                                              options.estimate, &error, StageSplit::Even);
                    if (error.empty())
                      noRecompute = c.estimate;
                  }
                  if (rc == cost::Recompute::Full && pp > 1 && computes.size() == 1 &&
                      noRecompute && !noRecompute->fits) {
                    int64_t k = pp;
                    while (k > 0 && noRecompute->memory[k - 1].total() <= noRecompute->usableBytes)
                      --k;
                    if (k > 0 && k < pp) {
                      choice.recomputeRanks = k;
                      choice.offloadOptimizer = false;
                      choice.order = RankOrder::PipelineOuter;
                      consider(choice, result.best);
                    }
                  }
                }
              }
            }
      }
    }
  }
  for (Candidate &z : zeroBubblePool)
    if (std::none_of(result.best.begin(), result.best.end(),
                     [&](const Candidate &b) { return sameTuple(b.choice, z.choice); }))
      result.best.push_back(std::move(z));
  // Mixed GPU types: Z3 may also choose which pp rank (which GPUs) runs each
  // stage. It is exact but slower than the DP, so only the finalists get it.
  if (mixed)
    for (Candidate &c : result.best) {
      if (c.choice.pp < 2 || c.choice.vpp != 1)
        continue;
      cost::StrategyChoice even = c.choice;
      even.stageLayers.clear();
      even.stageOrder.clear();
      Candidate z = priceChoice(model, cluster, training, even, computes, options.estimate,
                                nullptr, StageSplit::Reordered);
      if (z.estimate.fits && z.estimate.stepTime < c.estimate.stepTime)
        c = z;
    }
  // The finalists' pipelines, simulated; zero-bubble schedules tried. The
  // automatic scheduler and ZB-V cost more (several list schedules, each
  // simulated), so only the first finalists get them.
  if (options.simulateFinalists) {
    for (Candidate &c : result.best)
      c = simulateCandidate(model, cluster, training, c, computes, options.estimate,
                            options.zeroBubble);
    std::sort(result.best.begin(), result.best.end(), faster);
    for (int64_t i = 0; i < std::min<int64_t>(finalists, int64_t(result.best.size())); ++i) {
      Candidate &c = result.best[size_t(i)];
      c = tryListSchedules(model, cluster, training, c, computes, options);
    }
    // Two finalists can arrive at one plan (an interleaved and a plain
    // pipeline of the same degrees both taking DualPipe): keep it once.
    std::vector<Candidate> distinct;
    for (Candidate &c : result.best)
      if (std::none_of(distinct.begin(), distinct.end(), [&](const Candidate &d) {
            return sameTuple(d.choice, c.choice) && d.choice.schedule == c.choice.schedule &&
                   d.choice.stageLayers == c.choice.stageLayers &&
                   d.choice.stageOrder == c.choice.stageOrder &&
                   d.choice.inflightLimit == c.choice.inflightLimit;
          }))
        distinct.push_back(std::move(c));
    result.best = std::move(distinct);
  }
  std::sort(result.best.begin(), result.best.end(), faster);
  // The search ranks by the analytic estimate and simulates only its
  // finalists, so a one-step change to the first plan can beat it once
  // simulated. Such neighbours that lie in the searched space join the
  // ranking, and the first plan's neighbours are tried again while it changes.
  if (options.simulateFinalists && !result.best.empty()) {
    for (int round = 0; round < kPolishRounds; ++round) {
      const Candidate first = result.best.front();
      bool improved = false;
      for (const Neighbour &n : neighbours(first, cluster, fixed.sequenceParallel)) {
        if (!searches(options, n.choice, model, cluster))
          continue;
        std::string error;
        Candidate c = priceAsFinalist(model, cluster, training, n.choice, computes, options,
                                      &error, first.estimate.stepTime);
        // Unsimulated pipelines are those no schedule brings under plan 1.
        if (!error.empty() || !c.estimate.fits || (c.choice.pp > 1 && !c.simulated))
          continue;
        ++result.evaluated;
        if (!faster(c, first) ||
            std::any_of(result.best.begin(), result.best.end(),
                        [&](const Candidate &b) { return sameTuple(b.choice, c.choice); }))
          continue;
        result.best.push_back(std::move(c));
        improved = true;
      }
      std::sort(result.best.begin(), result.best.end(), faster);
      if (!improved)
        break;
    }
  }
  // A plan that differs from one ranked above it only in its ZeRO stage, and
  // needs no less memory, offers nothing that plan does not: it is left out
  // (counted), so that the list shows different plans.
  std::vector<Candidate> shown;
  for (Candidate &c : result.best) {
    auto above = [&](const Candidate &d) {
      return degreesOf(d.choice) == degreesOf(c.choice) && d.choice.schedule == c.choice.schedule &&
             d.estimate.peakMemoryBytes <= c.estimate.peakMemoryBytes;
    };
    if (std::any_of(shown.begin(), shown.end(), above))
      result.zeroTwins += int64_t(shown.size()) < options.topK; // one the list would show
    else
      shown.push_back(std::move(c));
  }
  result.best = std::move(shown);
  if (int64_t(result.best.size()) > options.topK)
    result.best.resize(options.topK);
  if (!result.anyFits && result.evaluated > 0)
    result.closestFixes = fitFixes(model, cluster, training, result.closest, computes, options);
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}
