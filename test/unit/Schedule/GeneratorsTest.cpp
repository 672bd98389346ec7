//===- GeneratorsTest.cpp - bubbles and memory of the fixed schedules -----===//
//
// Oracles are the closed forms of Qi et al., "Zero Bubble Pipeline
// Parallelism" (ICLR 2024), as quoted in /work/shared/VALIDATION.md, with
// F = B = W = 1 and free communication: 1F1B's bubble (p-1)(F+B+W), ZB-H1's
// (p-1)(F+B-W) at 1F1B's peak of p microbatches, ZB-H2's none (under the
// paper's optimizer post-validation, i.e. our span) with 2p-1 in flight, and
// interleaving dividing 1F1B's bubble by v; and DualPipe's bubble at most
// (p/2-1)(F&B+B-3W) from deepseek-ai/DualPipe's README, where B is the whole
// backward (our B+W) and F&B = F+B+W as we do not overlap the two.
//
//===----------------------------------------------------------------------===//

#include "loom/Schedule/Generators.h"

#include "ScheduleTesting.h"

using namespace loom::sched;
using namespace loom::sched::testing;

namespace {

constexpr int kRanks[] = {2, 4, 8, 16};

TEST(Generators, OneFOneBBubbleAndMemory) {
  for (int p : kRanks)
    for (int m : {p, 2 * p, 3 * p + 1}) {
      Schedule s = oneFOneB(p, m);
      Timeline t = run(s, Costs::uniform(s, 1, 1, 1));
      SCOPED_TRACE("p=" + std::to_string(p) + " m=" + std::to_string(m));
      EXPECT_DOUBLE_EQ(t.makespan, (m + p - 1) * 3.0);
      for (int r = 0; r < p; ++r) {
        EXPECT_DOUBLE_EQ(t.bubble[r], (p - 1) * 3.0);
        EXPECT_DOUBLE_EQ(t.peakActivations[r], p - r); // rank r warms up with p-r-1
      }
    }
}

TEST(Generators, GPipeMatches1F1BTimeButHoldsEveryMicrobatch) {
  for (int p : kRanks) {
    int m = 2 * p;
    Schedule s = gpipe(p, m);
    Timeline t = run(s, Costs::uniform(s, 1, 1, 1));
    EXPECT_DOUBLE_EQ(t.makespan, (m + p - 1) * 3.0);
    EXPECT_DOUBLE_EQ(peak(t), m);
  }
}

TEST(Generators, ZeroBubbleH1) {
  for (int p : kRanks)
    for (int m : {p, 2 * p, 3 * p + 1}) {
      Schedule s = zeroBubbleH1(p, m);
      Timeline t = run(s, Costs::uniform(s, 1, 1, 1));
      SCOPED_TRACE("p=" + std::to_string(p) + " m=" + std::to_string(m));
      EXPECT_DOUBLE_EQ(t.maxBubble(), (p - 1) * (1.0 + 1.0 - 1.0));
      EXPECT_DOUBLE_EQ(t.peakActivations[0], p);
      EXPECT_DOUBLE_EQ(peak(t), p); // no rank holds more than 1F1B's rank 0
    }
}

TEST(Generators, ZeroBubbleH2) {
  for (int p : kRanks)
    for (int m : {2 * p, 3 * p + 1}) {
      Schedule s = zeroBubbleH2(p, m);
      Timeline t = run(s, Costs::uniform(s, 1, 1, 1));
      SCOPED_TRACE("p=" + std::to_string(p) + " m=" + std::to_string(m));
      EXPECT_NEAR(t.maxSpanBubble(), 0.0, 1e-9);
      EXPECT_DOUBLE_EQ(t.span, m * 3.0);
      EXPECT_LE(peak(t), 2 * p - 1);
      EXPECT_DOUBLE_EQ(t.peakActivations[0], 2 * p - 1);
    }
}

TEST(Generators, InterleavingDividesTheBubbleByV) {
  for (int p : kRanks)
    for (int v : {2, 4})
      for (int m : {p, 2 * p, 4 * p}) {
        Schedule s = interleaved1F1B(p, m, v);
        // A chunk holds 1/v of the rank's layers, so 1/v of the time.
        Timeline t = run(s, Costs::uniform(s, 1.0 / v, 1.0 / v, 1.0 / v));
        SCOPED_TRACE("p=" + std::to_string(p) + " v=" + std::to_string(v) +
                     " m=" + std::to_string(m));
        EXPECT_NEAR(t.maxBubble(), (p - 1) * 3.0 / v, 1e-9);
      }
}

TEST(Generators, DualPipeBubbleAndMemory) {
  for (int p : {2, 4, 8, 16})
    for (int m : {2 * p, 3 * p}) {
      if (m % 2)
        continue;
      Schedule s = dualPipe(p, m);
      ASSERT_EQ(diagnostics(s), "");
      Timeline t = run(s, Costs::uniform(s, 1, 1, 1));
      SCOPED_TRACE("p=" + std::to_string(p) + " m=" + std::to_string(m));
      const double wholeBackward = 2, fAndB = 1 + wholeBackward;
      EXPECT_LE(t.maxBubble(), (p / 2 - 1) * (fAndB + wholeBackward - 3 * 1.0) + 1e-9);
      EXPECT_LT(t.maxBubble(), run(zeroBubbleH1(p, m), Costs::uniform(linearLayout(p, m), 1, 1, 1))
                                   .maxBubble());
      EXPECT_LE(peak(t), p + 1); // DualPipe README: PP+1 activations per device
      // Both directions really share the ranks.
      int reverse = 0;
      for (const Action &a : s.programs[0])
        reverse += a.op == Op::F && a.stage >= p;
      EXPECT_EQ(reverse, m / 2);
    }
}

TEST(Generators, ZeroBubbleVBeatsH1AtTheSameMemory) {
  for (int p : {2, 4, 8})
    for (int m : {2 * p, 4 * p}) {
      Schedule h1 = zeroBubbleH1(p, m);
      Schedule vl = vShapeLayout(p, m);
      // Each chunk has half the rank's layers: half the time per pass.
      Costs cv = Costs::uniform(vl, 0.5, 0.5, 0.5);
      Schedule v = zeroBubbleV(p, m, cv);
      ASSERT_EQ(diagnostics(v, {.memoryLimit = double(p)}), "");
      Timeline tv = run(v, cv), th = run(h1, Costs::uniform(h1, 1, 1, 1));
      SCOPED_TRACE("p=" + std::to_string(p) + " m=" + std::to_string(m));
      EXPECT_LE(peak(tv), p);
      EXPECT_LT(tv.maxBubble(), th.maxBubble());
      // Zero bubble: the last rank cannot start before p-1 chunk forwards have
      // run, and then has 3m chunk passes of 0.5 to do; ZB-V [ZB §5] wastes
      // nothing beyond that.
      EXPECT_NEAR(tv.makespan, (p - 1) * 0.5 + 3 * m * 0.5 * 2, 1e-9);
    }
}

/// Every generator's output must verify for a grid of shapes, with implicit
/// and explicit communication, and mean the same timeline both ways.
TEST(Generators, EveryKindVerifiesOnAGrid) {
  for (Kind kind : {Kind::GPipe, Kind::OneFOneB, Kind::Interleaved, Kind::ZBH1, Kind::ZBH2,
                    Kind::ZBV, Kind::ZBAuto, Kind::DualPipe})
    for (int p : {1, 2, 3, 4, 8})
      for (int m : {1, 2, p, 2 * p + 1, 3 * p, 4 * p})
        for (int v : {1, 2, 3}) {
          Shape shape{p, m, v};
          if (!checkShape(kind, shape).empty())
            continue;
          SCOPED_TRACE(std::string(kindName(kind)) + " p=" + std::to_string(p) +
                       " m=" + std::to_string(m) + " v=" + std::to_string(v));
          Schedule layout = layoutFor(kind, shape);
          Costs c = Costs::uniform(layout, 1.0, 1.25, 0.75, 0.1);
          Schedule s = generate(kind, shape, c, p);
          EXPECT_EQ(s.name, kindName(kind));
          ASSERT_EQ(diagnostics(s), "");
          Timeline implicit = run(s, c);
          addCommunication(s);
          ASSERT_EQ(diagnostics(s), "");
          EXPECT_NEAR(run(s, c).makespan, implicit.makespan, 1e-9);
        }
}

TEST(Generators, ShapeChecksExplainThemselves) {
  EXPECT_NE(checkShape(Kind::Interleaved, {4, 6, 2}).find("multiple of the ranks"),
            std::string::npos);
  EXPECT_NE(checkShape(Kind::DualPipe, {4, 6, 1}).find("at least twice the ranks"),
            std::string::npos);
  EXPECT_NE(checkShape(Kind::OneFOneB, {4, 8, 2}).find("no virtual stages"), std::string::npos);
  EXPECT_NE(checkShape(Kind::Interleaved, {4, 8, 1}).find("needs vpp >= 2"), std::string::npos);
  EXPECT_EQ(checkShape(Kind::ZBV, {4, 8, 1}), "");
  for (Kind k : {Kind::GPipe, Kind::ZBAuto, Kind::DualPipe})
    EXPECT_EQ(kindFromName(kindName(k)), k);
  EXPECT_FALSE(kindFromName("2f2b"));
}

} // namespace
