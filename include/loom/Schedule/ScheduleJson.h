//===- ScheduleJson.h - schedules as per-rank action tables -----*- C++ -*-===//
//
// The JSON `loom schedule --json` prints and the Python module returns: the
// schedule's shape, its simulated makespan and bubbles, and per rank the
// ordered actions (f, b, w, bw, send_act, recv_act, send_grad, recv_grad,
// optimizer) with microbatch, stage, peer stage and simulated times: what an
// executor runs.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SCHEDULE_SCHEDULEJSON_H
#define LOOM_SCHEDULE_SCHEDULEJSON_H

#include "loom/Schedule/Schedule.h"
#include "loom/Schedule/Simulator.h"

#include <nlohmann/json.hpp>

namespace loom::sched {

/// The sched dialect's name of `op` ("f", "send_act", ...).
const char *irOpName(Op op);

/// `kind` names the generator; memLimit > 0 is recorded as mem_limit.
nlohmann::ordered_json scheduleJson(const std::string &kind, const Schedule &schedule,
                                    const Timeline &timeline, double memLimit = 0);

} // namespace loom::sched

#endif // LOOM_SCHEDULE_SCHEDULEJSON_H
