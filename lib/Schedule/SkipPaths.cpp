//===- SkipPaths.cpp - SkipPipe path selection and scheduling -------------===//
//
// SkipPipe searches paths with conflict-based search over A* routes
// (gensyn-ai/skippipe, schedulers/CBS.py). This is a smaller search in the
// same spirit, built from three facts about the iteration time:
//   * the busiest stage bounds it from below (its visits times F+B+W);
//   * each path's traversal (its compute plus both directions of every link
//     it crosses) adds to the fill and drain, and slow links make it long;
//   * which microbatches enter first matters: long paths started last
//     stretch the drain.
// Candidate paths are all paths the rules allow (up to a cap, keeping the
// shortest traversals); a greedy assigns a path to each microbatch,
// trading the busiest stage's load against traversal time with a weight,
// while forcing the stages that still lack their share. Several weights and
// two injection orders are list-scheduled and simulated; the fastest wins,
// and the full path for everyone is always among the contenders.
//
//===----------------------------------------------------------------------===//

#include "loom/Schedule/SkipPaths.h"
#include "loom/Schedule/Generators.h"
#include "loom/Schedule/Simulator.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <set>

namespace loom::sched {

std::string setPathRule(std::string_view key, std::string_view value, PathRules &rules,
                        bool &known) {
  known = key == "max-skip" || key == "min-share" || key == "max-swaps";
  if (!known)
    return "unknown key '" + std::string(key) + "'";
  std::string text(value);
  char *end = nullptr;
  if (key == "max-swaps") {
    long swaps = text.empty() ? -1 : std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || swaps < 0 || swaps >= 1000)
      return "max-swaps must be a whole number >= 0, got '" + text + "'";
    rules.maxSwaps = int32_t(swaps);
    return "";
  }
  double share = text.empty() ? -1 : std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(share >= 0 && share <= 1))
    return std::string(key) + " must be a share in [0, 1], got '" + text + "'";
  (key == "max-skip" ? rules.maxSkipFraction : rules.minStageShare) = share;
  return "";
}

namespace {

using Path = std::vector<int32_t>;
// Enumeration stops here; the kept candidates are the shortest traversals.
constexpr size_t kEnumerated = 20000, kKept = 256;

struct Candidate {
  Path path;
  double traversal;
};

double work(const Costs &c, int32_t stage) {
  return c.forward[stage] + c.backward[stage] + c.weight[stage];
}

double traversal(const Costs &c, const Path &path) {
  double t = 0;
  for (size_t i = 0; i < path.size(); ++i) {
    t += work(c, path[i]);
    if (i + 1 < path.size())
      t += c.link(path[i], path[i + 1]) + c.link(path[i + 1], path[i]);
  }
  return t;
}

/// Orders of `kept` with at most `swaps` pairs inverted, found by adjacent
/// swaps that each add one inversion.
void orderings(const Path &kept, int32_t swaps, std::set<Path> &out) {
  std::vector<Path> frontier{kept};
  out.insert(kept);
  for (int32_t depth = 0; depth < swaps && out.size() < kEnumerated; ++depth) {
    std::vector<Path> next;
    for (const Path &p : frontier)
      for (size_t i = 0; i + 1 < p.size(); ++i) {
        if (p[i] > p[i + 1])
          continue;
        Path q = p;
        std::swap(q[i], q[i + 1]);
        if (out.insert(q).second)
          next.push_back(std::move(q));
      }
    frontier = std::move(next);
  }
}

std::vector<Candidate> candidates(const Costs &c, int32_t stages, const PathRules &rules) {
  const int32_t middle = std::max(stages - 2, 0);
  const int32_t maxSkip =
      static_cast<int32_t>(std::floor(rules.maxSkipFraction * middle + 1e-9));
  std::set<Path> found;
  // Skip sets by size, smallest first, until the cap.
  for (int32_t skip = 0; skip <= maxSkip && found.size() < kEnumerated; ++skip) {
    std::vector<bool> pick(middle, false);
    std::fill(pick.begin(), pick.begin() + skip, true);
    do {
      Path kept;
      for (int32_t i = 0; i < middle; ++i)
        if (!pick[i])
          kept.push_back(i + 1);
      std::set<Path> orders;
      orderings(kept, rules.maxSwaps, orders);
      for (const Path &o : orders) {
        Path full{0};
        full.insert(full.end(), o.begin(), o.end());
        if (stages > 1)
          full.push_back(stages - 1);
        found.insert(std::move(full));
      }
    } while (found.size() < kEnumerated && std::prev_permutation(pick.begin(), pick.end()));
  }
  std::vector<Candidate> out;
  for (const Path &p : found)
    out.push_back({p, traversal(c, p)});
  std::sort(out.begin(), out.end(),
            [](const Candidate &a, const Candidate &b) { return a.traversal < b.traversal; });
  if (out.size() > kKept) {
    // Keep the full path: it alone covers every stage.
    Path full(stages);
    std::iota(full.begin(), full.end(), 0);
    auto it = std::find_if(out.begin(), out.end(), [&](const Candidate &x) { return x.path == full; });
    Candidate keep = *it;
    out.resize(kKept);
    if (std::none_of(out.begin(), out.end(), [&](const Candidate &x) { return x.path == full; }))
      out.back() = keep;
  }
  return out;
}

/// Greedy assignment: microbatch by microbatch, the candidate minimising the
/// busiest stage's work after it plus `weight` times its traversal, among
/// those that visit every stage still short of its share with no spare
/// microbatches left.
std::vector<Path> assign(const Costs &c, const std::vector<Candidate> &cands, int32_t stages,
                         int32_t m, double share, double weight) {
  std::vector<int32_t> load(stages, 0);
  const int32_t need = static_cast<int32_t>(std::ceil(share * m - 1e-9));
  std::vector<Path> out;
  std::vector<bool> onPath(stages);
  for (int32_t mb = 0; mb < m; ++mb) {
    const int32_t left = m - mb;
    const Candidate *best = nullptr;
    double bestScore = std::numeric_limits<double>::infinity();
    for (const Candidate &cand : cands) {
      std::fill(onPath.begin(), onPath.end(), false);
      for (int32_t s : cand.path)
        onPath[s] = true;
      bool ok = true;
      double busiest = 0;
      for (int32_t s = 0; s < stages && ok; ++s) {
        ok = onPath[s] || need - load[s] < left;
        busiest = std::max(busiest, (load[s] + onPath[s]) * work(c, s));
      }
      double score = busiest + weight * cand.traversal;
      if (ok && score < bestScore - 1e-12) {
        bestScore = score;
        best = &cand;
      }
    }
    for (int32_t s : best->path)
      ++load[s];
    out.push_back(best->path);
  }
  return out;
}

Schedule scheduled(const Costs &c, const SkipOptions &opts, std::vector<Path> paths) {
  Schedule layout = linearLayout(opts.ranks, opts.microBatches);
  layout.paths = std::move(paths);
  ListPolicy policy;
  policy.memoryLimit = opts.memoryLimit;
  policy.splitBackward = opts.splitBackward;
  Schedule s = listSchedule(std::move(layout), c, policy);
  s.name = "skip";
  return s;
}

} // namespace

std::vector<std::vector<int32_t>> choosePaths(const Costs &costs, const SkipOptions &opts) {
  const int32_t stages = opts.ranks, m = opts.microBatches;
  std::vector<Candidate> cands = candidates(costs, stages, opts.rules);
  std::vector<std::vector<Path>> contenders;
  contenders.push_back(std::vector<Path>(m, linearLayout(stages, 1).paths.front()));
  for (double weight : {0.0, 0.05, 0.25, 1.0}) {
    std::vector<Path> paths = assign(costs, cands, stages, m, opts.rules.minStageShare, weight);
    contenders.push_back(paths);
    // Longest traversals first, so that they are not what the drain waits on.
    std::stable_sort(paths.begin(), paths.end(), [&](const Path &a, const Path &b) {
      return traversal(costs, a) > traversal(costs, b);
    });
    contenders.push_back(std::move(paths));
  }
  std::vector<Path> best;
  double bestTime = std::numeric_limits<double>::infinity();
  for (std::vector<Path> &paths : contenders) {
    std::optional<Timeline> t = simulate(scheduled(costs, opts, paths), costs);
    if (t && t->makespan < bestTime - 1e-12) {
      bestTime = t->makespan;
      best = std::move(paths);
    }
  }
  return best;
}

Schedule skipPipe(const Costs &costs, const SkipOptions &opts) {
  return scheduled(costs, opts, choosePaths(costs, opts));
}

} // namespace loom::sched
