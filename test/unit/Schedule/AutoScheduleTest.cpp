//===- AutoScheduleTest.cpp - zb-auto against the handcrafted schedules ---===//
//
// The automatic scheduler must never lose to ZB-H1 when given ZB-H1's
// memory (p microbatches) and never to ZB-H2 when given 2p (issue #6), on
// uniform costs and on uneven ones shaped like a real model: the last stage
// carries the LM head and loss, the first the embedding, and W is cheaper
// than B because B also holds the attention core's backward, which has no
// weights (the split of lib/CostModel/Compute.cpp).
//
//===----------------------------------------------------------------------===//

#include "loom/Schedule/Generators.h"

#include "ScheduleTesting.h"

using namespace loom::sched;
using namespace loom::sched::testing;

namespace {

Costs uniformCosts(int p, int m) { return Costs::uniform(linearLayout(p, m), 1, 1, 1); }

/// Per-stage costs of a GPT-like model: transformer layers cost F=1,
/// B=1.3, W=0.8; the first stage adds an embedding lookup, the last the
/// vocabulary projection and loss; p2p is 5% of F.
Costs modelCosts(int p, int m) {
  Costs c = Costs::uniform(linearLayout(p, m), 1.0, 1.3, 0.8, 0.05);
  c.forward[0] += 0.05;
  c.backward[0] += 0.05;
  c.forward[p - 1] += 0.45;
  c.backward[p - 1] += 0.45;
  c.weight[p - 1] += 0.45;
  return c;
}

struct Case {
  int p, m;
  bool realistic;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (int p : {2, 4, 8})
    for (int m : {p, 2 * p, 3 * p + 1, 6 * p})
      for (bool realistic : {false, true})
        out.push_back({p, m, realistic});
  return out;
}

TEST(AutoSchedule, NeverWorseThanH1AtOneFOneBMemory) {
  for (Case k : cases()) {
    Costs c = k.realistic ? modelCosts(k.p, k.m) : uniformCosts(k.p, k.m);
    Schedule autoSched = zeroBubbleAuto(linearLayout(k.p, k.m), c, k.p);
    SCOPED_TRACE("p=" + std::to_string(k.p) + " m=" + std::to_string(k.m) +
                 (k.realistic ? " model costs" : " uniform"));
    ASSERT_EQ(diagnostics(autoSched, {.memoryLimit = double(k.p)}), "");
    Timeline a = run(autoSched, c), h1 = run(zeroBubbleH1(k.p, k.m), c);
    EXPECT_LE(a.makespan, h1.makespan + 1e-9);
    EXPECT_LT(a.makespan, run(oneFOneB(k.p, k.m), c).makespan);
  }
}

TEST(AutoSchedule, NeverWorseThanH2WithTwiceTheMemory) {
  for (Case k : cases()) {
    Costs c = k.realistic ? modelCosts(k.p, k.m) : uniformCosts(k.p, k.m);
    Schedule autoSched = zeroBubbleAuto(linearLayout(k.p, k.m), c, 2 * k.p);
    SCOPED_TRACE("p=" + std::to_string(k.p) + " m=" + std::to_string(k.m) +
                 (k.realistic ? " model costs" : " uniform"));
    ASSERT_EQ(diagnostics(autoSched, {.memoryLimit = 2.0 * k.p}), "");
    Timeline a = run(autoSched, c), h2 = run(zeroBubbleH2(k.p, k.m), c);
    EXPECT_LE(a.makespan, h2.makespan + 1e-9);
    if (!k.realistic && k.m >= 2 * k.p)
      EXPECT_NEAR(a.maxSpanBubble(), 0.0, 1e-9); // ZB-H2's parallelogram
  }
}

TEST(AutoSchedule, MoreMemoryNeverHurtsAndTheLimitHolds) {
  const int p = 4, m = 16;
  Costs c = modelCosts(p, m);
  double previous = 1e30;
  for (double limit : {1.0, 2.0, 3.0, 4.0, 6.0, 8.0}) {
    Schedule s = zeroBubbleAuto(linearLayout(p, m), c, limit);
    SCOPED_TRACE("limit " + std::to_string(limit));
    ASSERT_EQ(diagnostics(s, {.memoryLimit = limit}), "");
    Timeline t = run(s, c);
    EXPECT_LE(peak(t), limit);
    EXPECT_LE(t.makespan, previous + 1e-9);
    previous = t.makespan;
  }
}

TEST(AutoSchedule, ListSchedulerWithoutSplitIsOneFOneBLike) {
  // Fused backward and 1F1B's memory: the greedy finds 1F1B's makespan.
  const int p = 4, m = 12;
  Costs c = uniformCosts(p, m);
  ListPolicy policy;
  policy.memoryLimit = p;
  policy.splitBackward = false;
  Schedule s = listSchedule(linearLayout(p, m), c, policy);
  ASSERT_EQ(diagnostics(s, {.memoryLimit = double(p)}), "");
  for (const auto &prog : s.programs)
    for (const Action &a : prog)
      EXPECT_NE(a.op, Op::W);
  EXPECT_DOUBLE_EQ(run(s, c).makespan, run(oneFOneB(p, m), c).makespan);
}

} // namespace
