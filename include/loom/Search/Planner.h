//===- Planner.h - enumerate, price and rank parallel strategies -*- C++ -*-===//
//
// The first planner: an exhaustive walk over strategy tuples — tp, pp, vpp, ep,
// cp (dp takes what the GPUs leave), ZeRO stage, recomputation, micro-batch
// size, sequence parallelism and, on clusters spanning datacenters, whether
// pipeline or data parallelism crosses the datacenter links — each priced by
// the cost model's fast path (cost::fromStrategy + cost::estimate). It states
// what it does not search: tp, cp and ep are always the innermost axes (in
// that order), one datacenter's rank order is Megatron-LM's (dp inside pp),
// tensor parallelism is at most two NVLink domains, context parallelism at most 8,
// sequence parallelism is always on with tp > 1 (it only saves memory in the
// cost model), attention is flash attention (so selective recomputation equals
// none and is skipped), and interleaving depth is at most 8.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SEARCH_PLANNER_H
#define LOOM_SEARCH_PLANNER_H

#include "loom/CostModel/Estimate.h"
#include "loom/CostModel/FromStrategy.h"

#include <limits>
#include <map>
#include <span>
#include <optional>
#include <string>
#include <vector>

namespace loom::search {

/// Degrees the user fixes (`loom plan --tp 8 ...`); 0 or unset: searched.
struct Constraints {
  int64_t dp = 0, tp = 0, pp = 0, vpp = 0, ep = 0, cp = 0, microBatch = 0;
  std::optional<int64_t> zero;
  std::optional<cost::Recompute> recompute;
  std::optional<RankOrder> order;
  /// Off: tensor parallelism without sequence parallelism (Megatron-LM before
  /// 2022); on by default whenever tp > 1.
  bool sequenceParallel = true;
  /// The highest ZeRO stage searched, and the highest with a pipeline (pp > 1).
  int64_t maxZero = 3, maxZeroWithPipeline = 3;
  bool admits(const cost::StrategyChoice &choice) const;
};

/// The most plans a search may be asked for (the CLI's --top, the Python
/// module's top).
inline constexpr int64_t kMaxTopK = 100;

struct PlannerOptions {
  int64_t topK = 5;
  Constraints fixed;
  std::vector<int64_t> microBatches = {1, 2, 4, 8};
  int64_t maxVirtualStages = 8;
  /// Interleaving on two pipeline ranks. Megatron-LM refused it from 2021-03
  /// (commit 182841f7df, "greater than 2 with interleaved schedule") until
  /// 2024-05 (3ee489d9ea), which allows it with p2p communication overlap,
  /// now on by default; off to plan for the versions between.
  bool interleaveTwoRanks = true;
  /// Attention keeps no s x s scores (FlashAttention); off for older stacks,
  /// which then need selective recomputation to drop them.
  bool flashAttention = true;
  /// Plans assume Megatron-Core with Transformer Engine: sequence-parallel
  /// tensor communication overlapped with GEMMs (Workload::tpCommOverlap).
  bool tpCommOverlap = true;
  /// Weight-gradient GEMMs accumulate into the gradient buffer
  /// (Workload::fusedGradAccumulation); off for pre-2022 Megatron-LM.
  bool fusedGradAccumulation = true;
  /// The backward's tensor-parallel communication waits for its GEMMs
  /// (Workload::syncTpBackward); on for pre-2021-09 Megatron-LM.
  bool syncTpBackward = false;
  /// Also try ZeRO-Offload (optimizer state in host memory, CPU step).
  bool offloadOptimizer = false;
  /// Recomputation choices searched (selective only counts without flash
  /// attention, or when fixed).
  std::vector<cost::Recompute> recomputes = {cost::Recompute::None, cost::Recompute::Selective,
                                             cost::Recompute::Full};
  cost::EstimateOptions estimate;
  /// Re-split layers over pipeline stages by cost (embedding and head stages
  /// lighter; on mixed clusters, faster GPUs more layers).
  bool balanceStages = true;
  /// pp need not divide the layers (the remainder goes to some stages). Off
  /// for Megatron-LM before 2022, which required layers divisible by pp.
  bool unevenStages = true;
  /// Without balancing, the stages are equal but the first and last, whose
  /// layers are chosen by cost (StageSplit::FirstLast), as Megatron-LM runs them.
  bool firstLastStages = false;
  /// Full recomputation may cover just the first pipeline ranks, where the
  /// most micro-batches are in flight (Megatron-LM's --recompute-num-layers,
  /// 2022); off for all-or-nothing --checkpoint-activations.
  bool partialRecompute = true;
  /// Re-price the finalists' pipelines with the schedule simulator
  /// (SimulatedPipeline.h), trying the zero-bubble schedules (ZB-H1, ZB-H2)
  /// on them too when `zeroBubble`, and zb-auto on the first max(topK, kMinFinalists)
  /// (tryAutoSchedule).
  bool simulateFinalists = true;
  bool zeroBubble = true;
  /// SkipPipe: when set, the first finalists also try skip paths under these rules
  /// (trySkipPaths). Off by default: skipping stages changes what a step
  /// trains, so only the user can allow it.
  std::optional<cost::SkipRules> skip;
};

/// What a framework can launch, so that `loom emit` can write the plan for it.
enum class Framework { Any, Megatron, DeepSpeed };
/// "megatron", "deepspeed" -> Framework; false for other words.
bool parseFramework(const std::string &word, Framework &out);
/// Narrows `options` to what `framework` runs: Megatron-LM and DeepSpeed run
/// 1F1B and interleaving (no zero-bubble families or skip paths), stages on
/// ranks in order (pipeline outermost), and full recomputation on every rank
/// or none. Megatron-LM runs ZeRO 0-1 (its distributed optimizer shards the
/// optimizer states only) and equal stages but for the first and last;
/// DeepSpeed runs equal stages, ZeRO 0-1 with a pipeline, and has no context
/// parallelism or interleaving.
/// Returns a one-line reason when a degree the user fixed contradicts it,
/// else "".
std::string restrictToFramework(Framework framework, PlannerOptions &options);

struct Candidate {
  cost::StrategyChoice choice;
  cost::Estimate estimate;
  int64_t dp = 1;
  /// The pipeline time comes from the schedule simulator (finalists), not
  /// from the analytic formula.
  bool simulated = false;
};

/// A change with which the closest plan of a search where nothing fits would
/// fit: its optimizer in host memory, or every node group `nodesTimes` times
/// as large (wider data parallelism shards ZeRO states further), at the plan's
/// own ZeRO stage or at ZeRO-3.
struct FitFix {
  bool offloadOptimizer = false;
  int64_t nodesTimes = 1;
  int64_t gpus = 0;         // the cluster's GPUs with the change
  int64_t zero = 0;         // the stage it fits at
  double peakMemoryBytes = 0;
};

struct PlanResult {
  std::vector<Candidate> best;      // fitting plans, fastest first (at most topK)
  Candidate closest;                // when none fits: the smallest peak memory
  /// When none fits: what would make `closest` fit, offloading first (when the
  /// search did not try it), then the fewest doublings of the nodes (up to 64
  /// times) at its ZeRO stage or ZeRO-3. Empty when neither would.
  std::vector<FitFix> closestFixes;
  bool anyFits = false;
  int64_t evaluated = 0;            // candidates priced by the cost model
  int64_t rejected = 0;             // tuples the model or cluster cannot take
  std::map<std::string, int64_t> rejections; // reason (its first words) -> count
  /// Plans that `best` would list but leaves out because one ranked above
  /// them differs only in its ZeRO stage and needs no more memory.
  int64_t zeroTwins = 0;
  double seconds = 0;               // wall time of the search
};

PlanResult plan(const spec::Model &model, const spec::Cluster &cluster,
                const spec::Training &training, const PlannerOptions &options = {});

/// Why no strategy can be searched, in the words of the inputs. `options`
/// are the planner options at fault, as (name, value): ("ep", "2"), which
/// `loom plan` writes "--ep 2" and the Python module "ep=2" before the
/// message; none when the model or cluster itself is at fault. `usage` marks
/// options that contradict the inputs (loom plan exits 2) rather than inputs
/// no plan can take (exit 1).
struct InputProblem {
  std::vector<std::pair<std::string, std::string>> options;
  std::string message, hint;
  bool usage = false;
};
/// Inputs no strategy can take, said before searching: nodes of different GPU
/// counts, a fixed ep on a model without experts, data parallelism fixed
/// outermost on one datacenter.
std::optional<InputProblem> checkInputs(const spec::Model &model, const spec::Cluster &cluster,
                                        const PlannerOptions &options);
/// After a search that priced nothing: the fixed degrees no tuple has, or the
/// reason most candidates were rejected for. nullopt when something was priced.
std::optional<InputProblem> nothingPriced(const spec::Model &model, const spec::Cluster &cluster,
                                          const spec::Training &training, const PlanResult &r,
                                          const PlannerOptions &options);

/// `fix` (one of PlanResult::closestFixes for `closest`) in words, with the
/// peak memory it gives: "<offload> (5.4 GiB per GPU)", "twice the nodes, 32
/// GPUs (6.9 GiB per GPU)", "16 times the nodes, 128 GPUs, and ZeRO-3 (...)".
/// `offload` names the optimizer's move as the caller's users know it.
std::string describeFix(const FitFix &fix, const Candidate &closest, std::string_view offload);

/// The plan a candidate describes, in the spec schema (loom.proto's Plan):
/// strategy, the mesh laid onto the cluster, stages and the estimate.
spec::Plan toPlan(const spec::Model &model, const spec::Cluster &cluster,
                  const spec::Training &training, const Candidate &candidate);

/// Re-prices `candidate`'s pipeline with the schedule simulator and, with
/// `zeroBubble` and vpp = 1, also tries ZB-H1 and ZB-H2 (whose memory the
/// cost model checks); returns the fastest that fits. Unchanged without a
/// pipeline, and when no schedule could bring it under `mustBeat` seconds.
Candidate simulateCandidate(const spec::Model &model, const spec::Cluster &cluster,
                            const spec::Training &training, const Candidate &candidate,
                            std::span<const cost::ComputeModel> computes,
                            const cost::EstimateOptions &options, bool zeroBubble,
                            double mustBeat = std::numeric_limits<double>::infinity());
/// The automatic zero-bubble scheduler's pipelines (sched::zeroBubbleAuto)
/// are priced only up to this many ranks x micro-batches (16 x 256): each
/// costs six list schedules, each simulated (about 10 us a cell).
constexpr int64_t kAutoScheduleCells = 4096;
/// Tries zb-auto on `candidate` (vpp = 1, pp > 1, at most kAutoScheduleCells):
/// each rank may hold ZB-H1's p micro-batches, then as many as its memory has
/// room for (cost::inflightCapacity) up to ZB-H2's 2p - 1. Returns the
/// fastest of those and `candidate` (simulated ones first).
Candidate tryAutoSchedule(const spec::Model &model, const spec::Cluster &cluster,
                          const spec::Training &training, const Candidate &candidate,
                          std::span<const cost::ComputeModel> computes,
                          const cost::EstimateOptions &options);
/// Tries ZB-V on `candidate` (vpp = 1, pp > 1, layers divisible by 2pp, at
/// most kAutoScheduleCells): its layers in 2pp even chunks laid out in a V
/// (stage s < pp on rank s, stage s >= pp on rank 2pp - 1 - s), 1F1B's
/// memory, the schedule built by sched::zeroBubbleV and simulated. Returns the
/// faster of that and `candidate`.
Candidate tryVShape(const spec::Model &model, const spec::Cluster &cluster,
                    const spec::Training &training, const Candidate &candidate,
                    std::span<const cost::ComputeModel> computes,
                    const cost::EstimateOptions &options);
/// Tries DualPipe on `candidate`'s pipeline (pp even, an even number of at
/// least 2pp micro-batches, at most kAutoScheduleCells; an interleaved or
/// ZB-V candidate's with vpp = 1): two copies of each
/// rank's stage, half of the micro-batches from each end, p + 1 stage
/// activations, the schedule built by sched::dualPipe and simulated. Returns
/// the faster of that and `candidate`.
Candidate tryDualPipe(const spec::Model &model, const spec::Cluster &cluster,
                      const spec::Training &training, const Candidate &candidate,
                      std::span<const cost::ComputeModel> computes,
                      const cost::EstimateOptions &options);
/// Tries SkipPipe paths on `candidate` (vpp = 1, pp >= 3, at most
/// kAutoScheduleCells) under `rules`: the paths are chosen for the simulated
/// step over the plan's hops (a skip crosses the slowest link it passes) and
/// list-scheduled with p micro-batches in flight per rank. Returns the faster
/// of that and `candidate`; FLOPs and MFU count only the stages visited.
Candidate trySkipPaths(const spec::Model &model, const spec::Cluster &cluster,
                       const spec::Training &training, const Candidate &candidate,
                       std::span<const cost::ComputeModel> computes,
                       const cost::EstimateOptions &options, const cost::SkipRules &rules);
/// What the planner tries on each of its first finalists (max(topK, kMinFinalists)) once they are
/// simulated: with options.zeroBubble, zb-auto (tryAutoSchedule), ZB-V
/// (tryVShape, unless vpp is fixed to another value than ZB-V's 2) and
/// DualPipe (tryDualPipe, unless vpp is fixed above 1); with
/// options.skip, SkipPipe paths (trySkipPaths). Returns the fastest.
Candidate tryListSchedules(const spec::Model &model, const spec::Cluster &cluster,
                           const spec::Training &training, const Candidate &candidate,
                           std::span<const cost::ComputeModel> computes,
                           const PlannerOptions &options);
/// Rounds of one-step changes (neighbours) tried on the first plan after the
/// finalists are simulated; each prices about a dozen as finalists.
constexpr int kPolishRounds = 3;
/// Finalists simulated and given the list-scheduled families (zb-auto, ZB-V,
/// DualPipe) whatever PlannerOptions::topK asks to keep, so that the first
/// plans do not depend on how many are shown: a larger topK only searches
/// deeper.
constexpr int64_t kMinFinalists = 5;

/// A one-step change to a plan: what changes, in words ("tp=16"), and the
/// strategy with it: dp left to what the GPUs leave, the stages to be split
/// afresh and, when the plan was simulated, the schedule chosen afresh.
struct Neighbour {
  std::string change;
  cost::StrategyChoice choice;
};
/// The obvious alternatives to `best`: tp and pp doubled and halved, every
/// other ZeRO stage, recomputation none or full, the micro-batch doubled and
/// halved and, across datacenters, the other rank order. `sequenceParallel`:
/// whether plans with tp > 1 use it.
std::vector<Neighbour> neighbours(const Candidate &best, const spec::Cluster &cluster,
                                  bool sequenceParallel);
/// Whether the search covers `choice` (dp 0: what the GPUs leave): the fixed
/// degrees, tp up to two NVLink domains, cp up to 8, the listed micro-batches
/// and recomputations, pp dividing the layers unless stages may be uneven, and
/// interleaving on two ranks only where the options allow it.
bool searches(const PlannerOptions &options, const cost::StrategyChoice &choice,
              const spec::Model &model, const spec::Cluster &cluster);
/// `choice` priced as the planner prices its finalists: the stages balanced
/// and, with options.simulateFinalists, its pipeline simulated with every
/// schedule the finalists try (simulateCandidate, tryListSchedules) — unless
/// no schedule could bring it under `mustBeat` seconds, when its pipeline
/// stays unsimulated (Candidate::simulated false). The choice comes back with
/// its dp resolved.
Candidate priceAsFinalist(const spec::Model &model, const spec::Cluster &cluster,
                          const spec::Training &training, const cost::StrategyChoice &choice,
                          std::span<const cost::ComputeModel> computes,
                          const PlannerOptions &options, std::string *error,
                          double mustBeat = std::numeric_limits<double>::infinity());
/// "dp=8 tp=8 pp=4 vpp=1 ep=1 cp=1 zero=1 recompute=none mbs=1 order=pp-outer".
/// The strategy a plan states, as the cost model takes it (toPlan's inverse):
/// degrees, ZeRO, recomputation, micro-batch, schedule, rank order, and the
/// plan's stages when they are uneven. The schedule kind the cost model does
/// not price (dualpipe) comes back as 1F1B; zb-auto and skip keep their limits and rules.
cost::StrategyChoice choiceFromPlan(const spec::Plan &plan);

std::string describe(const Candidate &candidate);

/// What dominates the step-time difference between two estimates, in words:
/// "mostly pipeline bubble (+0.412 s)".
std::string whySlower(const cost::Estimate &best, const cost::Estimate &other);

/// How priceChoice splits layers over pipeline stages (pp > 1, vpp = 1).
enum class StageSplit {
  Even,      // as given (evenly, unless the choice lists layer counts)
  FirstLast, // equal middle stages, the first and last sized by cost, as
             // Megatron-LM runs them (--decoder-first/last-pipeline-num-layers)
  Balanced,  // also tries a cost-balanced split (dynamic programming)
  Reordered, // also lets Z3 choose which pp rank runs which stage
};

/// Prices `choice`; with a balancing `split`, the layers are also re-split
/// over the stages by cost (StageBalance) and the better of the two is
/// returned — unless no split could bring the step under `mustBeat` (a bound:
/// balancing cannot gain more than the slowest rank's excess over the mean on
/// every micro-batch and fill step). `computes`: one per GPU type
/// (cost::computeModelsFor).
Candidate priceChoice(const spec::Model &model, const spec::Cluster &cluster,
                      const spec::Training &training, const cost::StrategyChoice &choice,
                      std::span<const cost::ComputeModel> computes,
                      const cost::EstimateOptions &options, std::string *error,
                      StageSplit split = StageSplit::Balanced,
                      double mustBeat = std::numeric_limits<double>::infinity());

} // namespace loom::search

#endif // LOOM_SEARCH_PLANNER_H
