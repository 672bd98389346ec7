//===- SimulatedPipeline.cpp - the schedule simulator for finalists -------===//

#include "loom/Search/SimulatedPipeline.h"

#include "loom/Schedule/Simulator.h"
#include "loom/Schedule/SkipPaths.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

using namespace loom;
using namespace loom::search;

std::string loom::search::simulationTooLarge(const cost::Workload &w) {
  int64_t stages = std::max<int64_t>(1, w.pp) * std::max<int64_t>(1, w.vpp);
  int64_t m = w.microBatches();
  if (m <= kMaxSimulatedStagePasses / stages)
    return "";
  return fmt::format("{} micro-batches on {} stages is past the simulator's {} stage passes", m,
                     stages, kMaxSimulatedStagePasses);
}

std::optional<PipelinePricing> loom::search::pricePipeline(
    const cost::Workload &w, const cost::Estimate &e,
    std::span<const cost::ComputeModel> computes) {
  if (!simulationTooLarge(w).empty())
    return std::nullopt;
  PipelinePricing out;
  sched::Kind &kind = out.kind;
  switch (w.schedule) {
  case cost::Schedule::GPipe:
    kind = sched::Kind::GPipe;
    break;
  case cost::Schedule::OneFOneB:
    break;
  case cost::Schedule::Interleaved:
    kind = sched::Kind::Interleaved;
    break;
  case cost::Schedule::ZeroBubbleH1:
    kind = sched::Kind::ZBH1;
    break;
  case cost::Schedule::ZeroBubbleH2:
    kind = sched::Kind::ZBH2;
    break;
  case cost::Schedule::ZeroBubbleV:
    kind = sched::Kind::ZBV;
    break;
  case cost::Schedule::DualPipe:
    kind = sched::Kind::DualPipe;
    break;
  case cost::Schedule::Skip:
    // Paths over the linear layout, list-scheduled as zb-auto is (W split
    // off to fill the bubbles) under ZB-H1's memory (p micro-batches per rank).
    out.skip = sched::SkipOptions{int32_t(w.pp), int32_t(w.microBatches()),
                                  sched::PathRules{w.skip.maxSkipFraction,
                                                   int32_t(w.skip.maxSwaps),
                                                   w.skip.minStageShare},
                                  double(w.inflightLimit.empty()
                                             ? w.pp
                                             : *std::min_element(w.inflightLimit.begin(),
                                                                 w.inflightLimit.end())),
                                  /*splitBackward=*/true};
    break;
  case cost::Schedule::ZeroBubbleAuto:
    kind = sched::Kind::ZBAuto;
    // Rank r may hold its in-flight limit (ZB-H1's p by default).
    for (int64_t r = 0; r < w.pp; ++r)
      out.rankLimits.push_back(
          double(w.inflightLimit.empty() ? w.pp : w.inflightLimit[size_t(r)]));
    break;
  }
  if (w.pp < 2)
    kind = sched::Kind::OneFOneB;
  // Only interleaving counts its chunks as virtual stages; ZB-V's two are
  // implied by its V layout.
  out.shape = {int32_t(w.pp), int32_t(w.microBatches()),
               int32_t(kind == sched::Kind::Interleaved ? w.vpp : 1)};
  if (!sched::checkShape(kind, out.shape).empty())
    return std::nullopt;
  sched::Schedule layout = sched::layoutFor(kind, out.shape);

  // Per stage (a chunk of a rank under interleaving and ZB-V): its times for
  // one micro-batch; exposed tensor/expert communication halves into forward
  // and backward, context-parallel exchange and recomputation belong to the
  // backward. Transfers move to the links.
  sched::Costs &costs = out.costs;
  costs.numRanks = int32_t(w.pp);
  size_t stages = layout.stageRank.size();
  costs.forward.resize(stages);
  costs.backward.resize(stages);
  costs.weight.resize(stages);
  // With several stages per rank, each priced from its own parts (the
  // estimate sums them per rank), so that the schedule sees the embedding and
  // the head where they are.
  // DualPipe's 2p stages are the p chunks twice: stage s >= p runs chunk
  // s - p (from rank p - 1 - s + p), so each is priced from its chunk's parts.
  bool copies = kind == sched::Kind::DualPipe;
  std::vector<cost::RankTime> stageTime;
  if (stages > size_t(w.pp) && !computes.empty()) {
    stageTime.resize(copies ? size_t(w.pp) : stages);
    for (const cost::Part &part : w.parts) {
      size_t type = w.stageDevice.empty() ? 0 : size_t(w.stageDevice[w.rankOf(part.stage)]);
      cost::addPartTime(stageTime[size_t(part.stage)], w, part,
                        computes[type < computes.size() ? type : 0]);
    }
  }
  double chunks = stageTime.empty() ? double(stages) / double(w.pp) : 1.0;
  for (size_t s = 0; s < stages; ++s) {
    const cost::RankTime &t = stageTime.empty() ? e.time[layout.stageRank[s]]
                              : copies          ? stageTime[s % size_t(w.pp)]
                                                : stageTime[s];
    costs.forward[s] = (t.f + t.tpComm / 2 + t.epComm / 2) / chunks;
    costs.backward[s] = (t.b + t.recompute + t.tpComm / 2 + t.cpComm + t.epComm / 2) / chunks;
    costs.weight[s] = t.w / chunks;
  }
  costs.p2p.assign(size_t(w.pp) * size_t(w.pp), 0.0);
  double bytes = cost::pipelineMessageBytes(w);
  for (int64_t r = 0; w.pp > 1 && r < w.pp; ++r) {
    const cost::GroupLevel &link = w.hops[r].link;
    double seconds = (link.bandwidth > 0 ? bytes / link.bandwidth : 0) + link.latency;
    int32_t next = int32_t((r + 1) % w.pp);
    costs.setLink(int32_t(r), next, seconds);
    costs.setLink(next, int32_t(r), seconds);
  }
  // A path that skips stages sends straight past them, over the slowest link
  // between the two positions (the hierarchy level that separates them). Only
  // skip paths use links between positions that are not neighbours.
  for (int32_t i = 0; out.skip && i + 2 < int32_t(w.pp); ++i) {
    double slowest = costs.link(i, i + 1);
    for (int32_t j = i + 2; j < int32_t(w.pp); ++j) {
      slowest = std::max(slowest, costs.link(j - 1, j));
      if (i == 0 && j == int32_t(w.pp) - 1)
        continue; // the wrap-around hop, set above
      costs.setLink(i, j, slowest);
      costs.setLink(j, i, slowest);
    }
  }
  return out;
}

sched::Schedule loom::search::buildSchedule(const PipelinePricing &priced) {
  if (priced.skip)
    return sched::skipPipe(priced.costs, *priced.skip);
  return sched::generate(priced.kind, priced.shape, priced.costs,
                         std::numeric_limits<double>::infinity(), priced.rankLimits);
}

std::optional<SimulatedPipeline> loom::search::simulatePipeline(
    const cost::Workload &w, const cost::Estimate &e,
    std::span<const cost::ComputeModel> computes) {
  if (w.pp < 2)
    return std::nullopt;
  std::optional<PipelinePricing> priced = pricePipeline(w, e, computes);
  if (!priced)
    return std::nullopt;
  sched::Schedule schedule = buildSchedule(*priced);
  std::optional<sched::Timeline> timeline = sched::simulate(schedule, priced->costs);
  if (!timeline)
    return std::nullopt;
  SimulatedPipeline out;
  out.makespan = timeline->makespan;
  out.bubble = *std::min_element(timeline->bubble.begin(), timeline->bubble.end());
  out.maxBubbleRatio = *std::max_element(timeline->bubbleRatio.begin(), timeline->bubbleRatio.end());
  out.schedule = sched::kindName(priced->kind);
  out.peakInflight = timeline->peakActivations;
  if (priced->skip) {
    // Share of the full paths' compute the chosen paths run.
    const sched::Costs &c = priced->costs;
    auto work = [&](int32_t s) { return c.forward[s] + c.backward[s] + c.weight[s]; };
    double full = 0, ran = 0;
    for (int32_t s = 0; s < schedule.numStages(); ++s)
      full += work(s);
    for (const std::vector<int32_t> &path : schedule.paths)
      for (int32_t s : path)
        ran += work(s);
    out.executedShare = full > 0 ? ran / (full * double(schedule.paths.size())) : 1;
    out.schedule = "skip";
  }
  return out;
}

std::optional<SimulatedPipeline> loom::search::simulateEstimate(
    cost::Estimate &e, const cost::Workload &w, std::span<const cost::ComputeModel> computes) {
  std::optional<SimulatedPipeline> sim = simulatePipeline(w, e, computes);
  if (!sim)
    return std::nullopt;
  // Everything per step scales with 1 / step time.
  double step = sim->makespan + e.dpExposed + e.optimizer;
  double scale = e.stepTime / step;
  e.tokensPerSecond *= scale;
  e.tflopsPerGpu *= scale;
  e.mfu *= scale;
  e.stepTime = step;
  e.hardwareFlops *= sim->executedShare; // skipped stages do no work
  e.modelFlops *= sim->executedShare;
  e.tflopsPerGpu *= sim->executedShare;
  e.mfu *= sim->executedShare;
  e.pipeline = sim->makespan;
  // The simulator's own idle time: it runs sends beside compute, where the
  // analytic form charged them to the rank.
  e.bubble = sim->bubble;
  return sim;
}
