//===- Frameworks.cpp - Megatron-LM arguments and DeepSpeed configs -------===//
//
// Option and key names are those the projects define: Megatron-LM's
// megatron/training/arguments.py (and the config dataclasses it turns into
// flags), DeepSpeed's JSON config reference. test/unit/Emit holds the names.
// A plan a framework cannot express is refused, naming what it lacks.
//
//===----------------------------------------------------------------------===//

#include "EmitInternal.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <functional>
#include <optional>

using namespace loom;
using namespace loom::emit;

std::string loom::emit::detail::header(const char *comment, const char *target,
                                       const spec::Plan &plan, const Provenance &from) {
  const spec::Strategy &s = plan.strategy();
  return fmt::format(
      "{0}loom emit --target {1}: plan {2} of {3}\n"
      "{0}model {4}, cluster {5}; plan by loom {6}, emitted by loom {7}\n"
      "{0}dp={8} tp={9} pp={10} vpp={11} ep={12} cp={13} zero={14} micro_batch={15} "
      "schedule={16}\n",
      comment, target, from.index, from.file, plan.model(), plan.cluster(),
      plan.loom_version().empty() ? "?" : plan.loom_version(), loomVersion(), s.dp(), s.tp(),
      s.pp(), std::max(1u, s.vpp()), std::max(1u, s.ep()), std::max(1u, s.cp()), s.zero(),
      s.micro_batch(), scheduleName(s.schedule()));
}

std::string loom::emit::detail::scheduleName(spec::ScheduleKind kind) {
  if (kind == spec::ONE_F_ONE_B || kind == spec::SCHEDULE_UNSPECIFIED)
    return "1f1b";
  // The enum's other names spell `loom plan`'s: ZB_H1 is zb-h1.
  std::string name = spec::ScheduleKind_Name(kind);
  for (char &c : name)
    c = c == '_' ? '-' : char(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

int64_t loom::emit::detail::gradientAccumulation(const spec::Plan &plan) {
  const spec::Strategy &s = plan.strategy();
  uint64_t perStep = uint64_t(s.dp()) * s.micro_batch();
  if (plan.training().global_batch() % perStep != 0)
    throw EmitError(fmt::format("global batch {} is not a multiple of dp {} x micro batch {}",
                                plan.training().global_batch(), s.dp(), s.micro_batch()),
                    "the plan was edited by hand: write it again with `loom plan --json`");
  return int64_t(plan.training().global_batch() / perStep);
}

namespace {
/// Megatron-LM and DeepSpeed run stage s on pipeline rank s (mod pp): a plan
/// that placed its stages on the ranks in another order (mixed GPU types, or
/// ZB-V's V) cannot be written for them.
void requireStagesInRankOrder(const spec::Plan &plan, const char *framework, const char *word) {
  const spec::Strategy &s = plan.strategy();
  if (s.schedule() == spec::ZB_V && s.pp() > 1)
    throw EmitError(fmt::format("{} runs stage s on pipeline rank s mod pp; this plan's ZB-V "
                                "runs stage {} on pipeline rank 0 (its stages fold into a V)",
                                framework, 2 * s.pp() - 1),
                    fmt::format("plan with `loom plan ... --for {}`, or use --target schedule "
                                "with loom.torch", word));
  for (const spec::Stage &stage : plan.stages())
    if (stage.has_pp_rank() && stage.pp_rank() != stage.index())
      throw EmitError(fmt::format("{} runs stage s on pipeline rank s; this plan runs stage {} "
                                  "on pipeline rank {} (its GPU types in another order)",
                                  framework, stage.index(), stage.pp_rank()),
                      "use --target schedule with loom.torch, which follows the plan's order");
}

/// --decoder-first/last-pipeline-num-layers for uneven stages (one per rank),
/// or nothing.
std::string unevenStages(const spec::Plan &plan, uint32_t pp) {
  std::vector<uint32_t> perRank(pp, 0);
  for (const spec::Stage &stage : plan.stages())
    perRank[stage.index() % pp] += stage.num_layers();
  bool even = std::all_of(perRank.begin(), perRank.end(),
                          [&](uint32_t n) { return n == perRank.front(); });
  if (even)
    return {};
  std::string sizes;
  for (uint32_t n : perRank)
    sizes += fmt::format("{}{}", sizes.empty() ? "" : ",", n);
  // Megatron-LM sets the first and last stage and splits the rest evenly.
  if (pp == 2)
    return fmt::format("--decoder-first-pipeline-num-layers {}\n", perRank[0]);
  uint32_t middle = perRank[1];
  for (uint32_t r = 1; r + 1 < pp; ++r)
    if (perRank[r] != middle)
      throw EmitError(fmt::format("Megatron-LM cannot express pipeline stages of {} layers: "
                                  "only the first and last may differ from the rest",
                                  sizes),
                      "plan with `loom plan ... --for megatron` (equal middle stages), or run "
                      "this plan with loom.torch");
  std::string out;
  if (perRank.front() != middle)
    out += fmt::format("--decoder-first-pipeline-num-layers {}\n", perRank.front());
  if (perRank.back() != middle)
    out += fmt::format("--decoder-last-pipeline-num-layers {}\n", perRank.back());
  return out;
}

uint32_t layerCount(const spec::Plan &plan) {
  uint32_t layers = 0;
  for (const spec::Stage &stage : plan.stages())
    layers += stage.num_layers();
  return layers;
}
} // namespace

std::string loom::emit::emitMegatron(const spec::Plan &plan, const Provenance &from) {
  const spec::Strategy &s = plan.strategy();
  requireStagesInRankOrder(plan, "Megatron-LM", "megatron");
  if (s.zero() >= 2)
    throw EmitError(fmt::format("Megatron-LM's distributed optimizer is ZeRO-1: it keeps whole "
                                "gradients{} on every rank, which this zero={} plan's memory "
                                "does not",
                                s.zero() >= 3 ? " and parameters" : "", s.zero()),
                    "plan with `loom plan ... --for megatron` (or --zero 1)");
  uint32_t vpp = std::max(1u, s.vpp()), layers = layerCount(plan);
  std::string out = detail::header("# ", "megatron", plan, from);
  out += "# one option per line; pass them with $(grep -v '^#' THIS_FILE)\n";
  out += fmt::format("--num-layers {}\n", layers);
  out += fmt::format("--tensor-model-parallel-size {}\n", s.tp());
  out += fmt::format("--pipeline-model-parallel-size {}\n", s.pp());
  if (vpp == 1)
    out += unevenStages(plan, s.pp());
  if (vpp > 1) {
    // Equal virtual stages, or equal but for one layer fewer in the first
    // (the embedding counted as a layer) and the last (the loss), as
    // get_num_layers_to_build (megatron/core/transformer/transformer_block.py)
    // builds them with --account-for-{embedding,loss}-in-pipeline-split.
    std::string sizes;
    std::vector<uint32_t> counts;
    for (const spec::Stage &stage : plan.stages()) {
      sizes += fmt::format("{}{}", sizes.empty() ? "" : ",", stage.num_layers());
      counts.push_back(stage.num_layers());
    }
    // Which of the embedding and the loss count as a layer, and the layers of
    // a full virtual stage then.
    uint32_t stages = s.pp() * vpp;
    std::optional<std::pair<bool, bool>> counted;
    uint32_t each = 0;
    if (std::adjacent_find(counts.begin(), counts.end(), std::not_equal_to<>()) == counts.end() &&
        layers % stages == 0) {
      counted = {false, false};
      each = layers / stages;
    }
    for (auto [embedding, loss] :
         {std::pair{false, true}, std::pair{true, false}, std::pair{true, true}}) {
      uint32_t slots = layers + embedding + loss;
      if (counted || counts.size() != stages || slots % stages != 0 || slots / stages < 2)
        continue;
      std::vector<uint32_t> expected(stages, slots / stages);
      expected.front() -= embedding;
      expected.back() -= loss;
      if (counts == expected) {
        counted = {embedding, loss};
        each = slots / stages;
      }
    }
    if (!counted)
      throw EmitError(fmt::format("Megatron-LM needs equal virtual stages (the first and last "
                                  "may hold one layer fewer), the plan has {} layers per stage "
                                  "(pp={} x vpp={})",
                                  sizes, s.pp(), vpp),
                      "plan with `loom plan ... --for megatron` (equal virtual stages)");
    if (counted->first)
      out += "--account-for-embedding-in-pipeline-split\n";
    if (counted->second)
      out += "--account-for-loss-in-pipeline-split\n";
    out += fmt::format("--num-layers-per-virtual-pipeline-stage {}\n", each);
  }
  if (s.ep() > 1)
    out += fmt::format("--expert-model-parallel-size {}\n", s.ep());
  if (s.cp() > 1)
    out += fmt::format("--context-parallel-size {}\n", s.cp());
  if (s.sequence_parallel())
    out += "--sequence-parallel\n";
  if (s.tp_comm_overlap())
    out += "--tp-comm-overlap\n";
  if (s.recompute() == spec::RECOMPUTE_FULL) {
    out += "--recompute-granularity full\n--recompute-method uniform\n--recompute-num-layers 1\n";
    if (s.recompute_ranks() > 0 && s.recompute_ranks() < s.pp())
      out += fmt::format("# recompute on pipeline ranks [0, {}) only: Megatron-LM recomputes "
                         "on every rank\n", s.recompute_ranks());
  } else if (s.recompute() == spec::RECOMPUTE_SELECTIVE) {
    out += "--recompute-granularity selective\n";
  }
  // The distributed optimizer shards the optimizer states over dp and keeps
  // whole gradient buffers and parameters on every rank: ZeRO-1 (Megatron-LM's
  // docs/source/api-guide/dist_optimizer.md), with its parameter all-gather
  // under the next forward, as loom prices it.
  if (s.zero() >= 1)
    out += "--use-distributed-optimizer\n--overlap-param-gather\n";
  if (s.offload_optimizer())
    out += "--optimizer-cpu-offload\n";
  if (s.unfused_grad_accumulation())
    out += "--no-gradient-accumulation-fusion\n";
  out += "--overlap-grad-reduce\n";
  out += fmt::format("--micro-batch-size {}\n", s.micro_batch());
  out += fmt::format("--global-batch-size {}\n", plan.training().global_batch());
  out += fmt::format("--seq-length {}\n", plan.training().seq_len());
  switch (plan.training().precision()) {
  case spec::FP16_MIXED:
    out += "--fp16\n";
    break;
  case spec::FP32_FULL:
    break;
  case spec::FP8_MIXED:
    out += "--bf16\n--fp8-format hybrid\n";
    break;
  default:
    out += "--bf16\n";
  }
  if (plan.training().grad_reduce_in_bf16())
    out += "--grad-reduce-in-bf16\n";
  std::string schedule = detail::scheduleName(s.schedule());
  if (schedule.rfind("zb", 0) == 0 || schedule == "dualpipe" || schedule == "skip")
    out += fmt::format("# schedule {}: not in Megatron-LM; use loom.torch or the "
                       "zero-bubble fork\n", schedule);
  else if (schedule == "gpipe")
    out += "# schedule gpipe: Megatron-LM runs 1F1B (the same bubble, less memory)\n";
  if (s.rank_order() == "dp-outer")
    out += "# rank order dp-outer: Megatron-LM lays ranks out tp-cp-ep-dp-pp (pp-outer), "
           "so its groups differ from this plan's mesh\n";
  return out;
}

std::string loom::emit::emitDeepSpeed(const spec::Plan &plan, const Provenance &from) {
  const spec::Strategy &s = plan.strategy();
  requireStagesInRankOrder(plan, "DeepSpeed's pipeline engine", "deepspeed");
  if (s.cp() > 1)
    throw EmitError(fmt::format("DeepSpeed cannot express context parallelism (cp={})", s.cp()),
                    "plan with `loom plan ... --for deepspeed`, or use --target megatron");
  if (s.pp() > 1 && s.zero() >= 2)
    throw EmitError(fmt::format("DeepSpeed's pipeline engine does not run ZeRO stage {} "
                                "(pp={}); it takes ZeRO 0 or 1", s.zero(), s.pp()),
                    "plan with `loom plan ... --for deepspeed` (or --zero 1)");
  if (std::max(1u, s.vpp()) > 1)
    throw EmitError(fmt::format("DeepSpeed's pipeline engine has no virtual stages (vpp={})",
                                s.vpp()),
                    "plan with `loom plan ... --for deepspeed` (or --vpp 1), or use --target "
                    "megatron");
  for (const spec::Stage &stage : plan.stages())
    if (stage.num_layers() != plan.stages(0).num_layers())
      throw EmitError(fmt::format("DeepSpeed's pipeline engine partitions the layers itself; "
                                  "this plan's stages hold {} and {} layers",
                                  plan.stages(0).num_layers(), stage.num_layers()),
                      "plan with `loom plan ... --for deepspeed` (equal stages)");
  nlohmann::ordered_json out;
  std::string head = detail::header("", "deepspeed", plan, from);
  out["_comment"] = head.substr(0, head.size() - 1); // DeepSpeed ignores unknown top-level keys
  out["train_batch_size"] = plan.training().global_batch();
  out["train_micro_batch_size_per_gpu"] = s.micro_batch();
  out["gradient_accumulation_steps"] = detail::gradientAccumulation(plan);
  nlohmann::ordered_json zero;
  zero["stage"] = s.zero();
  zero["overlap_comm"] = true;
  zero["contiguous_gradients"] = true;
  zero["reduce_scatter"] = true;
  zero["reduce_bucket_size"] = 500000000;
  zero["allgather_bucket_size"] = 500000000;
  if (s.offload_optimizer())
    zero["offload_optimizer"] = {{"device", "cpu"}, {"pin_memory", true}};
  out["zero_optimization"] = zero;
  spec::Precision precision = plan.training().precision();
  out["bf16"] = {{"enabled", precision != spec::FP16_MIXED && precision != spec::FP32_FULL}};
  out["fp16"] = {{"enabled", precision == spec::FP16_MIXED}};
  if (plan.training().grad_reduce_in_bf16()) // DeepSpeed PR #4713
    out["data_types"] = {{"grad_accum_dtype", "bf16"}};
  if (s.recompute() != spec::RECOMPUTE_NONE)
    out["activation_checkpointing"] = {{"partition_activations", s.tp() > 1},
                                       {"contiguous_memory_optimization", false},
                                       {"cpu_checkpointing", false}};
  if (s.pp() > 1)
    out["pipeline"] = {{"stages", s.pp()},
                       {"partition", "parameters"},
                       {"activation_checkpoint_interval",
                        s.recompute() == spec::RECOMPUTE_FULL ? 1 : 0}};
  return out.dump(2) + "\n";
}
