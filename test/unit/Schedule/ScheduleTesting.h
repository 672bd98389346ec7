//===- ScheduleTesting.h - helpers shared by the schedule tests -*- C++ -*-===//
#ifndef LOOM_TEST_UNIT_SCHEDULE_SCHEDULETESTING_H
#define LOOM_TEST_UNIT_SCHEDULE_SCHEDULETESTING_H

#include "loom/Schedule/Simulator.h"
#include "loom/Schedule/Verifier.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace loom::sched::testing {

/// All diagnostics of verify(), one per line, for failure messages.
inline std::string diagnostics(const Schedule &s, const VerifyOptions &o = {}) {
  std::string out;
  for (const Diagnostic &d : verify(s, o))
    out += d.str() + "\n";
  return out;
}

/// Simulates a schedule the test expects to be valid.
inline Timeline run(const Schedule &s, const Costs &c) {
  std::string error;
  std::optional<Timeline> t = simulate(s, c, &error);
  EXPECT_TRUE(t.has_value()) << s.name << ": " << error;
  return t ? *t : Timeline{};
}

inline double peak(const Timeline &t) {
  return *std::max_element(t.peakActivations.begin(), t.peakActivations.end());
}

} // namespace loom::sched::testing

#endif // LOOM_TEST_UNIT_SCHEDULE_SCHEDULETESTING_H
