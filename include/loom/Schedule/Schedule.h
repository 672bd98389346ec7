//===- Schedule.h - pipeline schedules as per-rank action lists -*- C++ -*-===//
//
// The data model every schedule generator fills and the verifier, simulator
// and (later) the sched dialect read.
//
// A pipeline has *stages* (model chunks) hosted on *ranks*: stageRank[s] is the
// rank that runs stage s. Interleaved 1F1B puts v stages on each rank, ZB-V
// two in a V, DualPipe one per direction. A microbatch's *path* is the
// sequence of stages its forward pass visits; the backward pass visits them in
// reverse. Paths are usually 0..S-1 but SkipPipe lets a microbatch skip
// stages or visit them in another order, and DualPipe sends half of the
// microbatches through the stages of its reverse direction.
//
// A rank's *program* is its ordered list of actions. Data moving between
// stages on different ranks is either implicit (an edge of the path, costed
// by the simulator from the link between the two ranks) or listed explicitly
// as send/recv actions, which addCommunication() inserts for executors that
// need every p2p operation spelled out.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SCHEDULE_SCHEDULE_H
#define LOOM_SCHEDULE_SCHEDULE_H

#include <cstdint>
#include <string>
#include <vector>

namespace loom::sched {

enum class Op : uint8_t {
  F,         ///< forward of (microBatch, stage)
  B,         ///< input gradient (zero-bubble split of the backward)
  W,         ///< weight gradient (zero-bubble split of the backward)
  BW,        ///< whole backward, where the schedule does not split it
  SendAct,   ///< send F's output of `stage` to `peerStage`
  RecvAct,   ///< receive the input of `stage`'s F from `peerStage`
  SendGrad,  ///< send B's input gradient of `stage` to `peerStage`
  RecvGrad,  ///< receive the output gradient of `stage` from `peerStage`
  Optimizer, ///< optimizer step; a barrier over all ranks (gradient-norm all-reduce)
};

const char *opName(Op op);
bool isCompute(Op op);

struct Action {
  Op op = Op::F;
  int32_t microBatch = -1; ///< -1 for Optimizer
  int32_t stage = -1;      ///< the stage this rank runs; -1 for Optimizer
  int32_t peerStage = -1;  ///< send/recv only: the stage on the other end

  bool operator==(const Action &) const = default;
  /// "F(mb 3, stage 2)", "SendAct(mb 3, stage 2 -> 3)", "Optimizer".
  std::string str() const;
};

struct Schedule {
  std::string name;
  int32_t numRanks = 0;
  std::vector<int32_t> stageRank;            ///< stage -> rank
  std::vector<double> activationUnits;       ///< per stage: share of a rank's microbatch activations
  std::vector<std::vector<int32_t>> paths;   ///< microbatch -> stages in forward order
  std::vector<std::vector<Action>> programs; ///< rank -> actions in execution order

  int32_t numStages() const { return static_cast<int32_t>(stageRank.size()); }
  int32_t numMicroBatches() const { return static_cast<int32_t>(paths.size()); }
  /// True when the schedule lists its p2p operations as actions.
  bool hasExplicitCommunication() const;
};

/// Layouts: stages, ranks and paths without programs, for generators to fill.
///
/// Stage s on rank s, every path 0..p-1.
Schedule linearLayout(int32_t ranks, int32_t microBatches);
/// Megatron's interleaving: chunk c of rank r is stage c*p + r; each stage
/// holds 1/v of the rank's layers, hence 1/v activation units.
Schedule interleavedLayout(int32_t ranks, int32_t virtualStages, int32_t microBatches);
/// ZB-V: stage s < p on rank s, stage s >= p on rank 2p-1-s, so a rank holds
/// the first and the last chunk of the V (and the loss sits on rank 0).
Schedule vShapeLayout(int32_t ranks, int32_t microBatches);
/// DualPipe: every rank keeps two copies of its model stage. Microbatches
/// [0, m/2) take stages 0..p-1 on ranks 0..p-1; microbatches [m/2, m) take
/// stages p..2p-1 on ranks p-1..0 (the same layers, fed from the other end).
Schedule bidirectionalLayout(int32_t ranks, int32_t microBatches);

/// Per-stage costs in seconds and the p2p time between every pair of ranks.
struct Costs {
  std::vector<double> forward, backward, weight; ///< per stage; BW costs backward + weight
  std::vector<double> p2p;                       ///< numRanks x numRanks, row = sender
  int32_t numRanks = 0;
  double optimizer = 0;
  std::vector<double> activationBytes; ///< per stage and microbatch; empty when unknown

  double link(int32_t fromRank, int32_t toRank) const {
    return fromRank == toRank ? 0.0 : p2p[static_cast<size_t>(fromRank) * numRanks + toRank];
  }
  void setLink(int32_t fromRank, int32_t toRank, double seconds) {
    p2p[static_cast<size_t>(fromRank) * numRanks + toRank] = seconds;
  }
  double seconds(const Action &a) const;

  /// The same F/B/W on every stage and the same p2p time on every link.
  static Costs uniform(const Schedule &layout, double f, double b, double w, double comm = 0);
};

/// Inserts explicit send/recv actions for every path edge between ranks: a
/// send right after its producer (F for activations, B/BW for gradients) and
/// the matching recv right before its consumer. Sends are asynchronous
/// (isend), recvs block. Idempotent on schedules that already have them.
void addCommunication(Schedule &schedule);

/// Activation units held on `rank` after each of its actions: F allocates the
/// stage's share, W or BW frees it (B keeps what W still needs). `perStage`
/// weighs each stage (activationUnits, or bytes).
std::vector<double> inFlightProfile(const Schedule &schedule, int32_t rank,
                                    const std::vector<double> &perStage);

} // namespace loom::sched

#endif // LOOM_SCHEDULE_SCHEDULE_H
