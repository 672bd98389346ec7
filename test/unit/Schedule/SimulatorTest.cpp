//===- SimulatorTest.cpp - timelines checked against hand computation -----===//

#include "loom/Schedule/Generators.h"

#include "ScheduleTesting.h"

#include <numeric>

using namespace loom::sched;
using namespace loom::sched::testing;

namespace {

TEST(Simulator, OneMicrobatchWalksEveryLink) {
  // One microbatch through three stages: the forward crosses 0->1->2, the
  // backward 2->1->0, and each hop costs its own link (the 1->2 hop crosses
  // datacenters).
  Schedule s = oneFOneB(3, 1);
  Costs c = Costs::uniform(s, 1, 2, 0.5);
  c.setLink(0, 1, 0.1);
  c.setLink(1, 2, 3.0);
  c.setLink(2, 1, 2.5);
  c.setLink(1, 0, 0.2);
  Timeline t = run(s, c);
  EXPECT_DOUBLE_EQ(t.makespan, 3 * 1.0 + 3 * 2.5 + 0.1 + 3.0 + 2.5 + 0.2);
  EXPECT_DOUBLE_EQ(t.start[2][0], 1.0 + 0.1 + 1.0 + 3.0);
}

TEST(Simulator, TimesAreConsistentPerRank) {
  Schedule s = zeroBubbleH1(4, 8);
  Costs c = Costs::uniform(s, 1.0, 1.5, 0.7, 0.05);
  Timeline t = run(s, c);
  for (int r = 0; r < 4; ++r) {
    double busy = 0;
    for (size_t i = 0; i < s.programs[r].size(); ++i) {
      EXPECT_NEAR(t.end[r][i] - t.start[r][i], c.seconds(s.programs[r][i]), 1e-12);
      if (i > 0)
        EXPECT_GE(t.start[r][i], t.end[r][i - 1] - 1e-12); // one action at a time
      busy += t.end[r][i] - t.start[r][i];
    }
    EXPECT_NEAR(t.busy[r], busy, 1e-9);
    EXPECT_NEAR(t.bubble[r], t.makespan - busy, 1e-9);
    EXPECT_NEAR(t.bubbleRatio[r], t.bubble[r] / t.makespan, 1e-12);
  }
}

TEST(Simulator, CriticalPathIsAChainOfWaits) {
  Schedule s = oneFOneB(4, 6);
  Costs c = Costs::uniform(s, 1.0, 2.0, 0.0, 0.25);
  Timeline t = run(s, c);
  ASSERT_FALSE(t.criticalPath.empty());
  ActionRef first = t.criticalPath.front(), last = t.criticalPath.back();
  EXPECT_EQ(first, (ActionRef{0, 0})); // rank 0's first forward starts it all
  EXPECT_DOUBLE_EQ(t.start[0][0], 0.0);
  EXPECT_DOUBLE_EQ(t.end[last.rank][last.index], t.makespan);
  // Each step starts when its predecessor ends, plus the link when data
  // crosses ranks (the optimizer barrier carries none): no slack anywhere.
  EXPECT_EQ(s.programs[last.rank][last.index].op, Op::Optimizer);
  for (size_t k = 1; k < t.criticalPath.size(); ++k) {
    ActionRef a = t.criticalPath[k - 1], b = t.criticalPath[k];
    bool barrier = s.programs[b.rank][b.index].op == Op::Optimizer;
    double link = a.rank == b.rank || barrier ? 0.0 : c.link(a.rank, b.rank);
    EXPECT_NEAR(t.start[b.rank][b.index], t.end[a.rank][a.index] + link, 1e-12);
  }
}

TEST(Simulator, OptimizerIsABarrier) {
  Schedule s = oneFOneB(4, 8);
  Costs c = Costs::uniform(s, 1, 1, 1);
  double before = run(s, c).makespan;
  c.optimizer = 0.5;
  Timeline t = run(s, c);
  EXPECT_DOUBLE_EQ(t.makespan, before + 0.5);
  for (int r = 0; r < 4; ++r)
    EXPECT_DOUBLE_EQ(t.start[r].back(), before); // every rank waits for rank 0's last BW
  EXPECT_DOUBLE_EQ(t.span, before);              // span stops before the optimizer
}

TEST(Simulator, ExplicitCommunicationMeansTheSameTimeline) {
  Schedule s = interleaved1F1B(4, 8, 2);
  Costs c = Costs::uniform(s, 0.5, 0.6, 0.4, 0.3);
  Timeline implicit = run(s, c);
  addCommunication(s);
  Timeline explicitComm = run(s, c);
  EXPECT_DOUBLE_EQ(explicitComm.makespan, implicit.makespan);
  // Sends go out the moment their producer ends.
  for (int r = 0; r < 4; ++r)
    for (size_t i = 1; i < s.programs[r].size(); ++i)
      if (s.programs[r][i].op == Op::SendAct)
        EXPECT_DOUBLE_EQ(explicitComm.start[r][i], explicitComm.end[r][i - 1]);
}

TEST(Simulator, PeakActivationBytes) {
  Schedule s = oneFOneB(4, 8);
  Costs c = Costs::uniform(s, 1, 1, 1);
  c.activationBytes = {4e9, 3e9, 3e9, 5e9};
  Timeline t = run(s, c);
  for (int r = 0; r < 4; ++r)
    EXPECT_DOUBLE_EQ(t.peakActivationBytes[r], (4 - r) * c.activationBytes[r]);
}

TEST(Simulator, RefusesAScheduleThatCannotFinish) {
  Schedule s = linearLayout(1, 1);
  s.programs[0] = {{Op::BW, 0, 0}, {Op::F, 0, 0}}; // the backward waits for a later forward
  std::string error;
  EXPECT_FALSE(simulate(s, Costs::uniform(s, 1, 1, 1), &error).has_value());
  EXPECT_EQ(error, "rank 0 stalls at BW(mb 0, stage 0)");
}

} // namespace
