//===- PlanFile.cpp - reading a plan for the emitters ---------------------===//
//
// Plans arrive as `loom plan --json` wrote them: protobuf's JSON mapping of
// loom.proto's Plan, alone or in {"plans": [...]}. Every error names the file
// and the field, because the file may have been edited by hand.
//
//===----------------------------------------------------------------------===//

#include "EmitInternal.h"
#include "loom/Support/Checked.h"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <vector>

using namespace loom;
using namespace loom::emit;

const char *loom::emit::loomVersion() { return LOOM_VERSION; }

namespace {
const char *kHint = "write plans with `loom plan ... --json` and pass that file";

/// A degree the emitters divide by: present and at least 1.
void requirePositive(const std::string &file, const char *field, uint64_t value) {
  if (value == 0)
    throw EmitError(fmt::format("{}: plan field '{}' is missing or 0", file, field), kHint);
}
} // namespace

spec::Plan loom::emit::parsePlan(const std::string &text, const std::string &file,
                                 int64_t index) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error &e) {
    throw EmitError(fmt::format("{}: not JSON (byte {}): {}", file, e.byte,
                                std::string(e.what()).substr(std::string(e.what()).find(':') + 2)),
                    kHint);
  } catch (const nlohmann::json::exception &e) {
    // Well-formed but unreadable, e.g. a number too large for a double
    // (out_of_range.406, which gives no position).
    std::string what = e.what();
    throw EmitError(fmt::format("{}: unreadable JSON: {}", file, what.substr(what.find("] ") + 2)),
                    kHint);
  }
  if (!doc.is_object())
    throw EmitError(fmt::format("{}: expected a JSON object (a plan or `loom plan --json` "
                                "output), found {}", file, doc.type_name()), kHint);
  std::string where = file;
  if (doc.contains("plans")) {
    const nlohmann::json &plans = doc["plans"];
    if (!plans.is_array())
      throw EmitError(fmt::format("{}: field 'plans' is not a list", file), kHint);
    if (plans.empty())
      throw EmitError(fmt::format("{}: 'plans' is empty (no strategy fit)", file),
                      "fix the fit first: `loom plan` without --json says what would fit");
    if (index < 0 || index >= int64_t(plans.size()))
      throw EmitError(fmt::format("{}: --plan-index {} is out of range, the file holds {} "
                                  "plan{}", file, index, plans.size(),
                                  plans.size() == 1 ? "" : "s"),
                      fmt::format("pick 0 to {}", plans.size() - 1));
    doc = plans[index];
    where = fmt::format("{} plans[{}]", file, index);
  } else if (index != 0) {
    throw EmitError(fmt::format("{}: --plan-index {} given, but the file holds a single plan",
                                file, index), "drop --plan-index");
  }

  spec::Plan plan;
  google::protobuf::util::JsonParseOptions options;
  auto status = google::protobuf::util::JsonStringToMessage(doc.dump(), &plan, options);
  if (!status.ok())
    throw EmitError(fmt::format("{}: not a loom plan: {}", where, std::string(status.message())),
                    kHint);

  const spec::Strategy &s = plan.strategy();
  if (!plan.has_strategy())
    throw EmitError(fmt::format("{}: plan field 'strategy' is missing", where), kHint);
  requirePositive(where, "strategy.dp", s.dp());
  requirePositive(where, "strategy.tp", s.tp());
  requirePositive(where, "strategy.pp", s.pp());
  requirePositive(where, "strategy.micro_batch", s.micro_batch());
  requirePositive(where, "training.global_batch", plan.training().global_batch());
  requirePositive(where, "training.seq_len", plan.training().seq_len());
  if (plan.mesh().empty() && s.dp() * s.tp() * s.pp() * std::max(1u, s.cp()) > 1)
    throw EmitError(fmt::format("{}: plan field 'mesh' is missing", where), kHint);
  if (plan.stages().empty())
    throw EmitError(fmt::format("{}: plan field 'stages' is missing", where), kHint);
  // Stages placed on the ranks in another order: one stage per rank, a
  // permutation of 0..pp-1.
  if (std::any_of(plan.stages().begin(), plan.stages().end(),
                  [](const spec::Stage &stage) { return stage.has_pp_rank(); })) {
    std::vector<bool> taken(s.pp(), false);
    for (const spec::Stage &stage : plan.stages()) {
      if (!stage.has_pp_rank())
        throw EmitError(fmt::format("{}: stages[{}] has no pp_rank while other stages do",
                                    where, stage.index()),
                        kHint);
      if (plan.stages_size() != int(s.pp()) || stage.pp_rank() >= s.pp() ||
          taken[stage.pp_rank()])
        throw EmitError(fmt::format("{}: stages[{}].pp_rank = {} is not part of a permutation "
                                    "of the {} pipeline ranks (one stage per rank)",
                                    where, stage.index(), stage.pp_rank(), s.pp()),
                        kHint);
      taken[stage.pp_rank()] = true;
    }
  }
  if (s.inflight_limit_size() > 0) {
    if ((s.schedule() != spec::ZB_AUTO && s.schedule() != spec::SKIP) ||
        s.inflight_limit_size() != int(s.pp()))
      throw EmitError(fmt::format("{}: strategy.inflight_limit has {} entries; it is zb-auto's "
                                  "or skip's, one per pipeline rank (pp={}, schedule {})",
                                  where, s.inflight_limit_size(), s.pp(),
                                  detail::scheduleName(s.schedule())),
                      kHint);
    for (uint32_t n : s.inflight_limit())
      requirePositive(where, "strategy.inflight_limit", n);
  }
  if (s.schedule() == spec::SKIP) {
    const spec::SkipRules &k = s.skip();
    auto share = [](double v) { return v >= 0 && v <= 1; };
    if (!share(k.max_skip_fraction()) || !share(k.min_stage_share()))
      throw EmitError(fmt::format("{}: strategy.skip needs max_skip_fraction and min_stage_share "
                                  "in [0, 1], got {} and {}",
                                  where, k.max_skip_fraction(), k.min_stage_share()),
                      kHint);
  }
  for (const spec::LogicalAxis &axis : plan.mesh())
    for (const spec::AxisPiece &piece : axis.pieces()) {
      if (piece.physical() != "dc" && piece.physical() != "node" && piece.physical() != "gpu")
        throw EmitError(fmt::format("{}: mesh axis '{}' lies on unknown level '{}'", where,
                                    axis.name(), piece.physical()),
                        "mesh pieces lie on dc, node or gpu");
      requirePositive(where, "mesh.pieces.size", piece.size());
    }
  // The mesh lays out exactly the strategy's GPUs (the emitters list every
  // rank), and those are a real cluster's.
  int64_t world = productUpTo({s.dp(), s.tp(), s.pp(), std::max(1u, s.cp())});
  int64_t meshGpus = 1;
  for (const spec::LogicalAxis &axis : plan.mesh())
    for (const spec::AxisPiece &piece : axis.pieces())
      meshGpus = mulUpTo(meshGpus, piece.size());
  constexpr int64_t kMostGpus = int64_t(1) << 24; // the CLI's bound on each degree
  if (world == 0 || world > kMostGpus)
    throw EmitError(fmt::format("{}: strategy dp x tp x pp x cp is {} GPUs; loom emits plans of "
                                "at most {}",
                                where, productText(world), kMostGpus),
                    kHint);
  if (!plan.mesh().empty() && meshGpus != world)
    throw EmitError(fmt::format("{}: the mesh lays out {} GPUs, but strategy dp x tp x pp x cp "
                                "is {}",
                                where, productText(meshGpus), world),
                    kHint);
  return plan;
}
