//===- SchedIRTest.cpp - schedules survive the trip through sched IR ------===//
//
// Every kind the generators build (with and without explicit p2p, and
// SkipPipe paths) is written as sched IR, verified as IR, and read back into
// exactly the schedule it came from: programs, layout, paths (the default
// ones are not written out), memory limit and path rules.
//
//===----------------------------------------------------------------------===//

#include "loom/Transforms/SchedPasses.h"
#include "sched/Sched.h"

#include "mlir/IR/Verifier.h"

#include <gtest/gtest.h>

using namespace loom;
using namespace loom::sched;

namespace {

void expectRoundTrip(const ScheduleRequest &request) {
  SCOPED_TRACE(request.kind + (request.p2p ? " p2p" : "") + " " + request.skip);
  std::string error;
  std::optional<GeneratedSchedule> g = generateSchedule(request, error);
  ASSERT_TRUE(g) << error;

  mlir::MLIRContext context;
  context.loadDialect<SchedDialect>();
  mlir::OpBuilder b(&context);
  mlir::Location loc = b.getUnknownLoc();
  mlir::OwningOpRef<mlir::ModuleOp> module = mlir::ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());
  ScheduleOp op = buildSchedule(b, loc, g->symbol, g->schedule, g->options);
  ASSERT_TRUE(succeeded(mlir::verify(*module)));

  ScheduleFromIR back = readSchedule(op);
  const Schedule &s = g->schedule;
  EXPECT_EQ(back.schedule.numRanks, s.numRanks);
  EXPECT_EQ(back.schedule.stageRank, s.stageRank);
  EXPECT_EQ(back.schedule.activationUnits, s.activationUnits);
  EXPECT_EQ(back.schedule.paths, s.paths);
  EXPECT_EQ(back.schedule.programs, s.programs);
  EXPECT_EQ(back.options.memoryLimit, g->options.memoryLimit);
  EXPECT_EQ(back.options.pathRules.has_value(), g->options.pathRules.has_value());
  for (size_t r = 0; r < back.actionOps.size(); ++r)
    for (size_t i = 0; i < back.actionOps[r].size(); ++i)
      ASSERT_EQ(mlir::cast<ActionOpInterface>(back.actionOps[r][i]).getAction(),
                s.programs[r][i]);
}

TEST(SchedIR, EveryKindRoundTrips) {
  for (const char *kind : {"gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v", "zb-auto",
                           "dualpipe"})
    for (bool p2p : {false, true}) {
      ScheduleRequest request;
      request.kind = kind;
      request.stages = 4;
      request.microbatches = 8;
      request.vpp = request.kind == "interleaved" ? 2 : 1;
      request.memLimit = request.kind == "zb-auto" ? 6 : 0;
      request.p2p = p2p;
      expectRoundTrip(request);
    }
}

TEST(SchedIR, SkipPathsAndRulesRoundTrip) {
  ScheduleRequest request;
  request.stages = 5;
  request.microbatches = 10;
  request.skip = "max-skip=0.34,max-swaps=1,min-share=0.6,slow=2:2.0";
  request.p2p = true;
  expectRoundTrip(request);
}

} // namespace
