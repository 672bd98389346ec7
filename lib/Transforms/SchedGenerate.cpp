//===- SchedGenerate.cpp - sched-generate ---------------------------------===//
//
// Turns a request (kind, shape, costs, memory limit, SkipPipe rules) into a
// schedule from lib/Schedule's generators, checks it against the limit and
// rules it was asked to keep, and appends it to the module as sched IR.
// Every generated schedule is verified here, not only when the IR is: a
// fixed ordering such as 1F1B simply needs more memory than a tight limit
// allows, and the user should hear that as a refusal of the request.
//
//===----------------------------------------------------------------------===//

#include "loom/Schedule/Generators.h"
#include "loom/Schedule/SkipPaths.h"
#include "loom/Transforms/SchedPasses.h"
#include "sched/Sched.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace loom {
#define GEN_PASS_DEF_SCHEDGENERATE
#include "loom/Transforms/SchedPasses.h.inc"
} // namespace loom

using namespace mlir;
using namespace loom;
using namespace loom::sched;

namespace {

// Sizes well past any real pipeline, small enough for int32 indices.
constexpr int64_t kMaxStages = 4096, kMaxMicrobatches = 1 << 20;

struct SkipRequest {
  PathRules rules{.maxSkipFraction = 0.25, .maxSwaps = 0, .minStageShare = 0.5};
  std::vector<std::pair<int32_t, double>> slowRanks; ///< rank, seconds per hop
};

bool toNumber(StringRef text, double &out) {
  return !text.empty() && !text.trim().getAsDouble(out) && std::isfinite(out);
}

/// "max-skip=0.25,max-swaps=1,min-share=0.5,slow=2:2.0" -> rules and slow
/// links; "" or the reason it cannot be read.
std::string parseSkip(StringRef text, int64_t ranks, SkipRequest &out) {
  SmallVector<StringRef> items;
  text.split(items, ',', -1, /*KeepEmpty=*/false);
  for (StringRef item : items) {
    auto [key, value] = item.trim().split('=');
    double number = 0;
    if (key == "slow") {
      auto [rank, seconds] = value.split(':');
      int64_t r = -1;
      if (rank.getAsInteger(10, r) || r < 0 || r >= ranks || !toNumber(seconds, number) ||
          number < 0)
        return "skip: slow=R:T needs a rank below " + std::to_string(ranks) +
               " and a link time >= 0, got '" + item.str() + "'";
      out.slowRanks.emplace_back(static_cast<int32_t>(r), number);
      continue;
    }
    bool known = false;
    std::string why = setPathRule(key, value.trim(), out.rules, known);
    if (!known)
      return "skip: unknown key '" + key.str() +
             "'; keys are max-skip, max-swaps, min-share and slow";
    if (!why.empty())
      return "skip: " + why;
  }
  return "";
}

std::string kindList() {
  std::string names;
  for (Kind k : {Kind::GPipe, Kind::OneFOneB, Kind::Interleaved, Kind::ZBH1, Kind::ZBH2,
                 Kind::ZBV, Kind::ZBAuto, Kind::DualPipe})
    names += std::string(names.empty() ? "" : ", ") + kindName(k);
  return names;
}

} // namespace

std::optional<std::array<double, 4>> loom::parseCosts(ArrayRef<double> costs,
                                                      std::string &error) {
  if (costs.empty())
    return std::array<double, 4>{1, 1, 1, 0};
  if (costs.size() != 4) {
    error = "costs must be 4 numbers F,B,W,comm, got " + std::to_string(costs.size());
    return std::nullopt;
  }
  auto [f, b, w, comm] = std::array<double, 4>{costs[0], costs[1], costs[2], costs[3]};
  if (!(f > 0 && b > 0 && w > 0 && comm >= 0) ||
      !std::all_of(costs.begin(), costs.end(), [](double v) { return std::isfinite(v); })) {
    error = "costs need F, B and W > 0 and comm >= 0";
    return std::nullopt;
  }
  return std::array<double, 4>{f, b, w, comm};
}

Costs loom::stageCosts(const Schedule &layout, const std::array<double, 4> &costs) {
  auto [f, b, w, comm] = costs;
  Costs out = Costs::uniform(layout, f, b, w, comm);
  for (size_t s = 0; s < layout.activationUnits.size(); ++s) {
    out.forward[s] *= layout.activationUnits[s];
    out.backward[s] *= layout.activationUnits[s];
    out.weight[s] *= layout.activationUnits[s];
  }
  return out;
}

std::optional<GeneratedSchedule> loom::generateSchedule(const ScheduleRequest &req,
                                                        std::string &error) {
  auto refuse = [&](std::string why) -> std::optional<GeneratedSchedule> {
    error = std::move(why);
    return std::nullopt;
  };
  std::optional<Kind> kind = kindFromName(req.kind);
  if (!kind)
    return refuse("unknown kind '" + req.kind + "'; kinds: " + kindList());
  if (req.stages < 1 || req.stages > kMaxStages || req.microbatches < 1 ||
      req.microbatches > kMaxMicrobatches || req.vpp < 1 || req.vpp > kMaxStages)
    return refuse("stages must be in [1, " + std::to_string(kMaxStages) + "], microbatches in [1, " +
                  std::to_string(kMaxMicrobatches) + "] and vpp >= 1");
  Shape shape{static_cast<int32_t>(req.stages), static_cast<int32_t>(req.microbatches),
              static_cast<int32_t>(req.vpp)};
  if (std::string why = checkShape(*kind, shape); !why.empty())
    return refuse(why);
  // Past these sizes a schedule takes gigabytes (1F1B on 4,096 ranks by 2^20
  // micro-batches held 15 GB after 20 s) or, list-scheduled (zb-auto and skip
  // paths), minutes (zb-auto on 64 ranks by 4,096 micro-batches: over one).
  constexpr int64_t kMaxStagePasses = int64_t(1) << 20, kMaxListedCells = int64_t(1) << 16;
  if (int64_t passes = req.stages * req.vpp * req.microbatches; passes > kMaxStagePasses)
    return refuse("stages x vpp x microbatches = " + std::to_string(passes) +
                  " stage passes; loom builds at most " + std::to_string(kMaxStagePasses));
  if ((*kind == Kind::ZBAuto || !req.skip.empty()) &&
      req.stages * req.microbatches > kMaxListedCells)
    return refuse("stages x microbatches = " + std::to_string(req.stages * req.microbatches) +
                  " cells to list-schedule (" + (req.skip.empty() ? "zb-auto" : "skip paths") +
                  "); loom list-schedules at most " + std::to_string(kMaxListedCells));
  std::optional<std::array<double, 4>> costs = parseCosts(req.costs, error);
  if (!costs)
    return std::nullopt;
  if (!(req.memLimit >= 0) || std::isinf(req.memLimit))
    return refuse("mem-limit must be >= 0 activation units (0: no limit)");

  GeneratedSchedule out;
  out.options.memoryLimit =
      req.memLimit > 0 ? req.memLimit : std::numeric_limits<double>::infinity();
  std::string name = req.kind;
  if (!req.skip.empty()) {
    if (*kind != Kind::OneFOneB && *kind != Kind::ZBAuto)
      return refuse("skip paths are list-scheduled: use kind 1f1b (whole backward) or zb-auto "
                    "(split backward)");
    SkipRequest skip;
    if (std::string why = parseSkip(req.skip, req.stages, skip); !why.empty())
      return refuse(why);
    out.costs = stageCosts(linearLayout(shape.ranks, shape.microBatches), *costs);
    for (auto [slow, seconds] : skip.slowRanks)
      for (int32_t r = 0; r < shape.ranks; ++r)
        if (r != slow) {
          out.costs.setLink(r, slow, seconds);
          out.costs.setLink(slow, r, seconds);
        }
    if (!skip.slowRanks.empty())
      out.links = out.costs.p2p;
    SkipOptions opts{shape.ranks, shape.microBatches, skip.rules, out.options.memoryLimit,
                     /*splitBackward=*/*kind == Kind::ZBAuto};
    out.schedule = skipPipe(out.costs, opts);
    out.options.pathRules = skip.rules;
    name = "skip";
  } else {
    out.costs = stageCosts(layoutFor(*kind, shape), *costs);
    out.schedule = generate(*kind, shape, out.costs, out.options.memoryLimit);
  }
  if (req.p2p)
    addCommunication(out.schedule);
  std::vector<sched::Diagnostic> problems = verify(out.schedule, out.options);
  if (!problems.empty())
    return refuse("the " + name + " schedule fails its checks: " + problems.front().str());
  std::replace(name.begin(), name.end(), '-', '_');
  out.symbol = name;
  return out;
}

namespace {
struct SchedGeneratePass : loom::impl::SchedGenerateBase<SchedGeneratePass> {
  using SchedGenerateBase::SchedGenerateBase;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    ScheduleRequest req{kind,
                        stages,
                        microbatches,
                        vpp,
                        std::vector<double>(costs.begin(), costs.end()),
                        memLimit,
                        skip,
                        p2p};
    std::string error;
    std::optional<GeneratedSchedule> built = generateSchedule(req, error);
    if (!built) {
      module.emitError("sched-generate: ") << error;
      return signalPassFailure();
    }
    OpBuilder b = OpBuilder::atBlockEnd(module.getBody());
    buildSchedule(b, module.getLoc(), built->symbol, built->schedule, built->options,
                  built->links);
  }
};
} // namespace
