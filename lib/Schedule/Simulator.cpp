//===- Simulator.cpp - discrete-event timeline of a schedule --------------===//
//
// The dependency replay (Graph.h) visits actions in an order where every
// producer precedes its consumers, so each action's start time is final the
// moment it is visited: max(end of the rank's previous action, each
// producer's end plus the link time when the data crosses ranks). Each action
// remembers which of those set its start; walking that back from the last
// action to end gives the critical path.
//
//===----------------------------------------------------------------------===//

#include "loom/Schedule/Simulator.h"

#include "Graph.h"

#include <algorithm>

namespace loom::sched {

namespace {
double maxOf(const std::vector<double> &v) {
  return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
}
} // namespace

double Timeline::maxBubble() const { return maxOf(bubble); }
double Timeline::maxSpanBubble() const { return maxOf(spanBubble); }

std::optional<Timeline> simulate(const Schedule &s, const Costs &costs, std::string *error) {
  detail::Graph g(s);
  const int32_t n = s.numRanks;
  Timeline t;
  t.start.resize(n);
  t.end.resize(n);
  std::vector<std::vector<ActionRef>> via(n);
  for (int32_t r = 0; r < n; ++r) {
    t.start[r].assign(s.programs[r].size(), 0.0);
    t.end[r].assign(s.programs[r].size(), 0.0);
    via[r].assign(s.programs[r].size(), ActionRef{});
  }
  t.busy.assign(n, 0.0);
  std::vector<double> clock(n, 0.0);
  std::vector<ActionRef> last(n); // each rank's previous action
  std::vector<double> firstStart(n, -1.0), lastEnd(n, 0.0), busyBeforeOptimizer(n, 0.0);
  // The barrier releases every rank at once; its start is the latest arrival.
  double barrierStart = -1;
  ActionRef barrierVia;
  std::vector<detail::Stall> stalls = detail::replay(g, [&](int32_t r, int32_t i,
                                                             const auto &deps, int nd) {
    const Action &a = s.programs[r][i];
    double begin = clock[r];
    ActionRef from = last[r];
    if (a.op == Op::Optimizer) {
      if (barrierStart < 0)
        for (int32_t q = 0; q < n; ++q)
          if (clock[q] >= barrierStart) {
            barrierStart = clock[q];
            barrierVia = last[q];
          }
      begin = barrierStart;
      from = barrierVia;
    } else {
      for (int k = 0; k < nd; ++k) {
        detail::Loc p = g.located(deps[k].key);
        double ready = t.end[p.rank][p.index];
        if (deps[k].remote)
          ready += costs.link(p.rank, r);
        if (ready > begin) {
          begin = ready;
          from = {p.rank, p.index};
        }
      }
    }
    double d = costs.seconds(a);
    t.start[r][i] = begin;
    t.end[r][i] = begin + d;
    via[r][i] = from;
    clock[r] = begin + d;
    last[r] = {r, i};
    if (!isCompute(a.op))
      return;
    t.busy[r] += d;
    if (a.op == Op::Optimizer)
      return;
    busyBeforeOptimizer[r] += d;
    if (firstStart[r] < 0)
      firstStart[r] = begin;
    lastEnd[r] = begin + d;
  });
  if (!stalls.empty()) {
    if (error)
      *error = "rank " + std::to_string(stalls.front().rank) + " stalls at " +
               s.programs[stalls.front().rank][stalls.front().index].str();
    return std::nullopt;
  }

  ActionRef tail;
  for (int32_t r = 0; r < n; ++r) {
    if (!t.end[r].empty() && t.end[r].back() >= t.makespan) {
      t.makespan = t.end[r].back();
      tail = {r, static_cast<int32_t>(t.end[r].size()) - 1};
    }
    if (firstStart[r] >= 0)
      t.span = std::max(t.span, lastEnd[r] - firstStart[r]);
  }
  for (ActionRef at = tail; at.rank >= 0; at = via[at.rank][at.index])
    t.criticalPath.push_back(at);
  std::reverse(t.criticalPath.begin(), t.criticalPath.end());

  for (int32_t r = 0; r < n; ++r) {
    t.bubble.push_back(t.makespan - t.busy[r]);
    t.bubbleRatio.push_back(t.makespan > 0 ? t.bubble.back() / t.makespan : 0.0);
    t.spanBubble.push_back(t.span - busyBeforeOptimizer[r]);
    std::vector<double> held = inFlightProfile(s, r, s.activationUnits);
    t.peakActivations.push_back(held.empty() ? 0.0 : *std::max_element(held.begin(), held.end()));
    if (!costs.activationBytes.empty()) {
      held = inFlightProfile(s, r, costs.activationBytes);
      t.peakActivationBytes.push_back(held.empty() ? 0.0
                                                   : *std::max_element(held.begin(), held.end()));
    }
  }
  return t;
}

} // namespace loom::sched
