//===- SimulatedPipeline.cpp - the schedule simulator for finalists -------===//

#include "loom/Search/SimulatedPipeline.h"

#include "loom/Schedule/Simulator.h"

#include <algorithm>
#include <limits>

using namespace loom;
using namespace loom::search;

std::optional<PipelinePricing> loom::search::pricePipeline(const cost::Workload &w,
                                                          const cost::Estimate &e) {
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
  out.shape = {int32_t(w.pp), int32_t(w.microBatches()), int32_t(w.pp < 2 ? 1 : w.vpp)};
  if (!sched::checkShape(kind, out.shape).empty())
    return std::nullopt;
  sched::Schedule layout = sched::layoutFor(kind, out.shape);

  // Per stage (a chunk of a rank under interleaving): the rank's per
  // micro-batch times split over its chunks; exposed tensor/expert
  // communication halves into forward and backward, context-parallel exchange
  // and recomputation belong to the backward. Transfers move to the links.
  sched::Costs &costs = out.costs;
  costs.numRanks = int32_t(w.pp);
  size_t stages = layout.stageRank.size();
  costs.forward.resize(stages);
  costs.backward.resize(stages);
  costs.weight.resize(stages);
  double chunks = double(out.shape.virtualStages);
  for (size_t s = 0; s < stages; ++s) {
    const cost::RankTime &t = e.time[layout.stageRank[s]];
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
  return out;
}

std::optional<SimulatedPipeline> loom::search::simulatePipeline(const cost::Workload &w,
                                                                const cost::Estimate &e) {
  if (w.pp < 2)
    return std::nullopt;
  std::optional<PipelinePricing> priced = pricePipeline(w, e);
  if (!priced)
    return std::nullopt;
  sched::Schedule schedule = sched::generate(priced->kind, priced->shape, priced->costs,
                                             std::numeric_limits<double>::infinity(),
                                             priced->rankLimits);
  std::optional<sched::Timeline> timeline = sched::simulate(schedule, priced->costs);
  if (!timeline)
    return std::nullopt;
  SimulatedPipeline out;
  out.makespan = timeline->makespan;
  out.maxBubbleRatio = *std::max_element(timeline->bubbleRatio.begin(), timeline->bubbleRatio.end());
  out.schedule = sched::kindName(priced->kind);
  out.peakInflight = timeline->peakActivations;
  return out;
}
