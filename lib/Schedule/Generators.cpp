//===- Generators.cpp - fixed pipeline orderings and the kind registry ----===//
//
// Sources:
//  [GPipe] Huang et al., "GPipe: Efficient Training of Giant Neural Networks
//          using Pipeline Parallelism", NeurIPS 2019: all forwards, then all
//          backwards (the last microbatch's first, as its activations are the
//          freshest on the last stage).
//  [PD]    Narayanan et al., "PipeDream-Flush" / 1F1B, in "Memory-Efficient
//          Pipeline-Parallel DNN Training", ICML 2021; and Megatron-LM
//          megatron/core/pipeline_parallel/schedules.py,
//          forward_backward_pipelining_without_interleaving: rank r warms up
//          with p-r-1 forwards, then alternates one forward and one backward.
//  [MEG]   Narayanan et al., SC'21 §2.2, and schedules.py,
//          forward_backward_pipelining_with_interleaving: warmup
//          (p-r-1)*2 + (v-1)*p virtual microbatches; virtual microbatch k runs
//          chunk (k mod pv) div p (reversed for backward) of microbatch
//          (k div pv)*p + k mod p.
//  [ZB]    Qi et al., "Zero Bubble (Almost) Pipeline Parallelism", ICLR 2024,
//          §3 (ZB-H1, ZB-H2) and sail-sg/zero-bubble-pipeline-parallelism
//          (zerobubble/scheduler/zb.py draws ZB-H2's warmup as 2(p-r)-1
//          forwards on rank r).
//
//===----------------------------------------------------------------------===//

#include "loom/Schedule/Generators.h"

#include <algorithm>
#include <cassert>

namespace loom::sched {

namespace {

void finish(Schedule &s, std::string name) {
  s.name = std::move(name);
  for (auto &prog : s.programs)
    prog.push_back({Op::Optimizer});
}

void emit(Schedule &s, int32_t rank, Op op, int32_t mb, int32_t stage) {
  s.programs[rank].push_back({op, mb, stage});
}

/// ZB-H1 and ZB-H2 share one shape on rank r: `warmup` forwards, then for
/// each microbatch k its B, the W of microbatch k - `defer`, and the next
/// forward; the deferred Ws close the program. A rank then holds at most
/// warmup + defer microbatches (F allocates, W frees), and the deferred Ws
/// fill the time the later ranks would otherwise idle in the cool-down.
Schedule deferredWeights(int32_t p, int32_t m, std::string name, bool h2) {
  Schedule s = linearLayout(p, m);
  for (int32_t r = 0; r < p; ++r) {
    // ZB-H1 keeps 1F1B's p - r microbatches in flight before the first B and
    // defers r Ws: every rank holds p, as rank 0 of 1F1B does. ZB-H2 warms up
    // until the first B can arrive (2(p-r)-1 forwards when F = B) and defers
    // 2r Ws: 2p-1 in flight everywhere.
    int32_t warmup = std::min(h2 ? 2 * (p - r) - 1 : p - r, m);
    int32_t defer = h2 ? 2 * r : r;
    for (int32_t k = 0; k < warmup; ++k)
      emit(s, r, Op::F, k, r);
    int32_t w = 0;
    for (int32_t k = 0; k < m; ++k) {
      emit(s, r, Op::B, k, r);
      if (k - defer >= 0)
        emit(s, r, Op::W, w++, r);
      if (k + warmup < m)
        emit(s, r, Op::F, k + warmup, r);
    }
    while (w < m)
      emit(s, r, Op::W, w++, r);
  }
  finish(s, std::move(name));
  return s;
}

} // namespace

Schedule gpipe(int32_t p, int32_t m) {
  Schedule s = linearLayout(p, m);
  for (int32_t r = 0; r < p; ++r) {
    for (int32_t k = 0; k < m; ++k)
      emit(s, r, Op::F, k, r);
    for (int32_t k = m - 1; k >= 0; --k)
      emit(s, r, Op::BW, k, r);
  }
  finish(s, "gpipe");
  return s;
}

Schedule oneFOneB(int32_t p, int32_t m) {
  Schedule s = linearLayout(p, m);
  for (int32_t r = 0; r < p; ++r) {
    int32_t warmup = std::min(p - r - 1, m);
    for (int32_t k = 0; k < warmup; ++k)
      emit(s, r, Op::F, k, r);
    for (int32_t k = 0; k < m - warmup; ++k) {
      emit(s, r, Op::F, warmup + k, r);
      emit(s, r, Op::BW, k, r);
    }
    for (int32_t k = m - warmup; k < m; ++k)
      emit(s, r, Op::BW, k, r);
  }
  finish(s, "1f1b");
  return s;
}

Schedule interleaved1F1B(int32_t p, int32_t m, int32_t v) {
  assert(m % p == 0 && "Megatron's interleaving needs microbatches divisible by ranks");
  Schedule s = interleavedLayout(p, v, m);
  const int32_t total = m * v, group = p * v;
  auto place = [&](int32_t r, int32_t k, bool forward) {
    int32_t chunk = (k % group) / p;
    if (!forward)
      chunk = v - 1 - chunk;
    int32_t mb = (k / group) * p + k % p;
    emit(s, r, forward ? Op::F : Op::BW, mb, chunk * p + r);
  };
  for (int32_t r = 0; r < p; ++r) {
    int32_t warmup = std::min((p - r - 1) * 2 + (v - 1) * p, total);
    for (int32_t k = 0; k < warmup; ++k)
      place(r, k, true);
    for (int32_t k = 0; k < total - warmup; ++k) {
      place(r, warmup + k, true);
      place(r, k, false);
    }
    for (int32_t k = total - warmup; k < total; ++k)
      place(r, k, false);
  }
  finish(s, "interleaved");
  return s;
}

Schedule zeroBubbleH1(int32_t p, int32_t m) { return deferredWeights(p, m, "zb-h1", false); }
Schedule zeroBubbleH2(int32_t p, int32_t m) { return deferredWeights(p, m, "zb-h2", true); }

namespace {
constexpr std::pair<Kind, const char *> kKinds[] = {
    {Kind::GPipe, "gpipe"}, {Kind::OneFOneB, "1f1b"}, {Kind::Interleaved, "interleaved"},
    {Kind::ZBH1, "zb-h1"},  {Kind::ZBH2, "zb-h2"},    {Kind::ZBV, "zb-v"},
    {Kind::ZBAuto, "zb-auto"}, {Kind::DualPipe, "dualpipe"}};
} // namespace

const char *kindName(Kind kind) {
  for (const auto &[k, name] : kKinds)
    if (k == kind)
      return name;
  return "?";
}

std::optional<Kind> kindFromName(std::string_view name) {
  for (const auto &[k, n] : kKinds)
    if (name == n)
      return k;
  return std::nullopt;
}

std::string checkShape(Kind kind, const Shape &sh) {
  if (sh.ranks < 1 || sh.microBatches < 1 || sh.virtualStages < 1)
    return "ranks, microbatches and virtual stages must be positive";
  if (kind != Kind::Interleaved && sh.virtualStages != 1)
    return std::string(kindName(kind)) + " has no virtual stages";
  if (kind == Kind::Interleaved && sh.virtualStages < 2)
    return "the interleaved schedule needs vpp >= 2 virtual stages per rank (with vpp 1 it is "
           "1f1b)";
  if (kind == Kind::Interleaved && sh.microBatches % sh.ranks != 0)
    return "interleaved 1F1B needs the microbatches (" + std::to_string(sh.microBatches) +
           ") to be a multiple of the ranks (" + std::to_string(sh.ranks) + ")";
  if (kind == Kind::DualPipe &&
      (sh.ranks % 2 != 0 || sh.microBatches % 2 != 0 || sh.microBatches < 2 * sh.ranks))
    return "dualpipe needs an even number of ranks and an even number of microbatches, at "
           "least twice the ranks";
  return "";
}

Schedule layoutFor(Kind kind, const Shape &sh) {
  switch (kind) {
  case Kind::Interleaved:
    return interleavedLayout(sh.ranks, sh.virtualStages, sh.microBatches);
  case Kind::ZBV:
    return vShapeLayout(sh.ranks, sh.microBatches);
  case Kind::DualPipe:
    return bidirectionalLayout(sh.ranks, sh.microBatches);
  default:
    return linearLayout(sh.ranks, sh.microBatches);
  }
}

Schedule generate(Kind kind, const Shape &sh, const Costs &costs, double memoryLimit,
                  const std::vector<double> &rankLimits) {
  assert(checkShape(kind, sh).empty());
  switch (kind) {
  case Kind::GPipe:
    return gpipe(sh.ranks, sh.microBatches);
  case Kind::OneFOneB:
    return oneFOneB(sh.ranks, sh.microBatches);
  case Kind::Interleaved:
    return interleaved1F1B(sh.ranks, sh.microBatches, sh.virtualStages);
  case Kind::ZBH1:
    return zeroBubbleH1(sh.ranks, sh.microBatches);
  case Kind::ZBH2:
    return zeroBubbleH2(sh.ranks, sh.microBatches);
  case Kind::ZBV:
    return zeroBubbleV(sh.ranks, sh.microBatches, costs);
  case Kind::ZBAuto:
    return zeroBubbleAuto(linearLayout(sh.ranks, sh.microBatches), costs, memoryLimit, rankLimits);
  case Kind::DualPipe:
    return dualPipe(sh.ranks, sh.microBatches);
  }
  return {};
}

} // namespace loom::sched
