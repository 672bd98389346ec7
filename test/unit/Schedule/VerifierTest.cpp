//===- VerifierTest.cpp - hand-broken schedules and what verify() says ----===//

#include "loom/Schedule/Generators.h"

#include "ScheduleTesting.h"

using namespace loom::sched;
using namespace loom::sched::testing;

namespace {

bool mentions(const std::string &text, const std::string &what) {
  return text.find(what) != std::string::npos;
}

/// Index of an action in a rank's program.
size_t find(const Schedule &s, int rank, Action a) {
  const auto &prog = s.programs[rank];
  return std::find(prog.begin(), prog.end(), a) - prog.begin();
}

TEST(Verifier, AcceptsAGoodSchedule) { EXPECT_EQ(diagnostics(oneFOneB(4, 8)), ""); }

TEST(Verifier, FindsTheCycleOfADeadlock) {
  // Rank 0 waits for microbatch 0's gradient before sending microbatch 1
  // forward; rank 1 insists on microbatch 1 before microbatch 0.
  Schedule s = linearLayout(2, 2);
  s.programs[0] = {{Op::F, 0, 0}, {Op::BW, 0, 0}, {Op::F, 1, 0}, {Op::BW, 1, 0}};
  s.programs[1] = {{Op::F, 1, 1}, {Op::F, 0, 1}, {Op::BW, 0, 1}, {Op::BW, 1, 1}};
  std::string d = diagnostics(s);
  EXPECT_TRUE(mentions(d, "rank 0, action 1: BW(mb 0, stage 0) waits for BW(mb 0, stage 1) "
                          "(rank 1, action 2), which never runs"))
      << d;
  EXPECT_TRUE(mentions(d, "rank 1, action 0: F(mb 1, stage 1) waits for F(mb 1, stage 0) "
                          "(rank 0, action 2)"))
      << d;
  EXPECT_TRUE(mentions(d, "deadlock: rank 0 waits for rank 1 waits for rank 0")) << d;
  EXPECT_FALSE(simulate(s, Costs::uniform(s, 1, 1, 1)).has_value());
}

TEST(Verifier, FindsAMissingSend) {
  Schedule s = oneFOneB(2, 2);
  addCommunication(s);
  auto &prog = s.programs[0];
  prog.erase(prog.begin() + find(s, 0, {Op::SendAct, 1, 0, 1}));
  std::string d = diagnostics(s);
  EXPECT_TRUE(mentions(d, "RecvAct(mb 1, stage 1 <- 0) has no matching SendAct(mb 1, stage 0 -> 1) "
                          "on rank 0"))
      << d;
}

TEST(Verifier, FindsARecvAfterItsConsumer) {
  Schedule s = oneFOneB(2, 2);
  addCommunication(s);
  // Move rank 1's first receive behind the forward that needs it.
  auto &prog = s.programs[1];
  std::swap(prog[0], prog[1]);
  EXPECT_TRUE(mentions(diagnostics(s), "F(mb 0, stage 1) runs before its RecvAct(mb 0, stage 1 <- 0)"));
}

TEST(Verifier, FindsBBeforeF) {
  Schedule s = oneFOneB(2, 3);
  auto &prog = s.programs[1]; // F0 BW0 F1 BW1 ...
  std::swap(prog[2], prog[3]);
  EXPECT_TRUE(mentions(diagnostics(s), "rank 1, action 2: BW(mb 1, stage 1) runs before its F at action 3"));
}

TEST(Verifier, FindsWBeforeB) {
  Schedule s = zeroBubbleH1(2, 4);
  size_t b = find(s, 0, {Op::B, 2, 0}), w = find(s, 0, {Op::W, 2, 0});
  std::swap(s.programs[0][b], s.programs[0][w]);
  EXPECT_TRUE(mentions(diagnostics(s), "W(mb 2, stage 0) runs before its B"));
}

TEST(Verifier, FindsMemoryOverTheLimit) {
  Schedule s = gpipe(4, 8);
  std::string d = diagnostics(s, {.memoryLimit = 4});
  EXPECT_TRUE(mentions(d, "rank 0, action 4: 5 activation units in flight after F(mb 4, stage 0), "
                          "limit 4"))
      << d;
  EXPECT_EQ(diagnostics(oneFOneB(4, 8), {.memoryLimit = 4}), "");
}

TEST(Verifier, FindsMisplacedDuplicatedAndMissingActions) {
  Schedule s = zeroBubbleH1(2, 2);
  s.programs[0].insert(s.programs[0].begin(), {Op::F, 0, 1}); // stage 1 lives on rank 1
  EXPECT_TRUE(mentions(diagnostics(s), "rank 0, action 0: F(mb 0, stage 1) belongs to rank 1"));

  s = zeroBubbleH1(2, 2);
  s.programs[1].insert(s.programs[1].begin() + 1, {Op::F, 0, 1});
  EXPECT_TRUE(mentions(diagnostics(s), "F(mb 0, stage 1) runs a second time (first at F(mb 0, stage 1) (rank 1, action 0))"));

  s = zeroBubbleH1(2, 2);
  s.programs[1].erase(s.programs[1].begin() + find(s, 1, {Op::W, 1, 1}));
  EXPECT_TRUE(mentions(diagnostics(s), "rank 1: no action runs W(mb 1, stage 1)"));
}

TEST(Verifier, OptimizerStepIsForEveryRankAtTheEnd) {
  Schedule s = oneFOneB(3, 3);
  s.programs[2].pop_back();
  EXPECT_TRUE(mentions(diagnostics(s), "only 2 of 3 ranks take the optimizer step"));
  s = oneFOneB(3, 3);
  std::swap(s.programs[1].back(), s.programs[1].front());
  EXPECT_TRUE(mentions(diagnostics(s), "optimizer step before the end"));
}

TEST(Verifier, PathRules) {
  PathRules rules{.maxSkipFraction = 0.25, .maxSwaps = 1, .minStageShare = 0.75};
  // Six stages: four in the middle, one may be skipped.
  std::vector<std::vector<int32_t>> good = {{0, 1, 2, 3, 4, 5}, {0, 1, 3, 4, 5}, {0, 2, 1, 3, 4, 5},
                                            {0, 1, 2, 4, 3, 5}};
  EXPECT_TRUE(verifyPaths(good, 6, rules).empty());

  auto text = [&](const std::vector<std::vector<int32_t>> &paths) {
    std::string out;
    for (const Diagnostic &d : verifyPaths(paths, 6, rules))
      out += d.str() + "\n";
    return out;
  };
  std::string d = text({{0, 1, 4, 5}, {1, 2, 3, 4, 5}, {0, 2, 1, 4, 3, 5}, {0, 1, 1, 2, 3, 4, 5}});
  EXPECT_TRUE(mentions(d, "microbatch 0 skips 2 of 4 middle stages, more than 25%")) << d;
  EXPECT_TRUE(mentions(d, "microbatch 1 must start at stage 0")) << d;
  EXPECT_TRUE(mentions(d, "microbatch 2 visits 2 pairs of stages out of order, limit 1")) << d;
  EXPECT_TRUE(mentions(d, "microbatch 3 visits stage 1 twice")) << d;
  EXPECT_TRUE(mentions(d, "stage 3 runs 2 of 4 microbatches, fewer than the required 75%")) << d;

  // verify() applies the rules to a schedule's paths, and its layout check
  // catches a repeated stage on its own.
  Schedule s = linearLayout(6, 2);
  s.paths[1] = {0, 1, 3, 3, 5};
  EXPECT_TRUE(mentions(diagnostics(s, {.pathRules = rules}), "microbatch 1 visits stage 3 twice"));
}

} // namespace
