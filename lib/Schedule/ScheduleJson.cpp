//===- ScheduleJson.cpp - schedules as per-rank action tables -------------===//

#include "loom/Schedule/ScheduleJson.h"

#include <algorithm>

using namespace loom;
using namespace loom::sched;

const char *loom::sched::irOpName(Op op) {
  switch (op) {
  case Op::F:
    return "f";
  case Op::B:
    return "b";
  case Op::W:
    return "w";
  case Op::BW:
    return "bw";
  case Op::SendAct:
    return "send_act";
  case Op::RecvAct:
    return "recv_act";
  case Op::SendGrad:
    return "send_grad";
  case Op::RecvGrad:
    return "recv_grad";
  case Op::Optimizer:
    return "optimizer";
  }
  return "?";
}

namespace {
nlohmann::ordered_json actionTables(const Schedule &s, const Timeline &t) {
  nlohmann::ordered_json ranks = nlohmann::ordered_json::array();
  auto orNull = [](int32_t v) { return v < 0 ? nlohmann::ordered_json() : nlohmann::ordered_json(v); };
  for (int32_t r = 0; r < s.numRanks; ++r) {
    nlohmann::ordered_json actions = nlohmann::ordered_json::array();
    for (size_t i = 0; i < s.programs[r].size(); ++i) {
      const Action &a = s.programs[r][i];
      actions.push_back({{"op", irOpName(a.op)},
                         {"microbatch", orNull(a.microBatch)},
                         {"stage", orNull(a.stage)},
                         {"peer", isCompute(a.op) ? nlohmann::ordered_json() : orNull(a.peerStage)},
                         {"start", t.start[r][i]},
                         {"end", t.end[r][i]}});
    }
    ranks.push_back({{"rank", r},
                     {"busy", t.busy[r]},
                     {"bubble", t.bubble[r]},
                     {"bubble_ratio", t.bubbleRatio[r]},
                     {"peak_in_flight", t.peakActivations[r]},
                     {"actions", std::move(actions)}});
  }
  return ranks;
}
} // namespace

nlohmann::ordered_json loom::sched::scheduleJson(const std::string &kind, const Schedule &s,
                                                 const Timeline &t, double memLimit) {
  nlohmann::ordered_json out{
      {"kind", kind},
      {"num_ranks", s.numRanks},
      {"num_stages", s.numStages()},
      {"num_microbatches", s.numMicroBatches()},
      {"stage_ranks", s.stageRank},
      {"activation_units", s.activationUnits},
      {"paths", s.paths},
      {"makespan", t.makespan},
      {"span", t.span},
      {"max_bubble_ratio", *std::max_element(t.bubbleRatio.begin(), t.bubbleRatio.end())},
      {"ranks", actionTables(s, t)}};
  if (memLimit > 0)
    out["mem_limit"] = memLimit;
  return out;
}
