//===- SchedPasses.td - passes over the sched dialect -------*- tablegen -*-===//
//
// Kept apart from Passes.td (the place passes) so that each dialect's passes
// register and link on their own, as CIRCT does per dialect.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_TRANSFORMS_SCHEDPASSES_TD
#define LOOM_TRANSFORMS_SCHEDPASSES_TD

include "mlir/Pass/PassBase.td"

def SchedGenerate : Pass<"sched-generate", "mlir::ModuleOp"> {
  let summary = "Build a pipeline schedule of a named kind into the module";
  let description = [{
    Appends a `sched.schedule` built by lib/Schedule's generator for `kind`:
    gpipe, 1f1b, interleaved (vpp virtual stages per rank; microbatches a
    multiple of stages), zb-h1, zb-h2, zb-v, zb-auto (under mem-limit) or
    dualpipe (even stages, even microbatches >= 2 x stages). `stages` is the
    number of pipeline ranks. `costs` = F,B,W,comm (default 1,1,1,0): seconds
    for one microbatch through a whole rank's layers (a stage holding a share
    of them, like an interleaved chunk, costs that share) and per p2p hop;
    they steer zb-auto, zb-v and skip paths. `skip` turns on SkipPipe path choice (kinds 1f1b or zb-auto):
    comma-separated `max-skip=F` (share of middle stages a microbatch may
    skip, default 0.25), `max-swaps=N` (stage pairs out of order, default 0),
    `min-share=G` (share of microbatches each stage must run, default 0.5),
    `slow=R:T` (every link into and out of rank R takes T, repeatable).
    `mem-limit` (activation units per rank, 1 = one microbatch of a whole
    rank's layers; 0 = none) is recorded on the schedule, so the verifier
    holds every kind to it. With `p2p` every send and receive is listed.
  }];
  let dependentDialects = ["::loom::sched::SchedDialect"];
  let options = [
    Option<"kind", "kind", "std::string", "\"1f1b\"",
           "gpipe, 1f1b, interleaved, zb-h1, zb-h2, zb-v, zb-auto or dualpipe">,
    Option<"stages", "stages", "int64_t", "4", "pipeline ranks">,
    Option<"microbatches", "microbatches", "int64_t", "8", "microbatches per iteration">,
    Option<"vpp", "vpp", "int64_t", "1", "virtual stages per rank (interleaved)">,
    ListOption<"costs", "costs", "double", "F,B,W,comm (default 1,1,1,0)">,
    Option<"memLimit", "mem-limit", "double", "0",
           "activation units a rank may hold; 0: no limit">,
    Option<"skip", "skip", "std::string", "\"\"",
           "SkipPipe paths: max-skip=F,max-swaps=N,min-share=G,slow=R:T">,
    Option<"p2p", "p2p", "bool", "false", "list every send and receive">,
  ];
}

def SchedSimulate : Pass<"sched-simulate", "mlir::ModuleOp"> {
  let summary = "Annotate schedules with their simulated timeline figures";
  let description = [{
    Runs lib/Schedule's discrete-event simulator on every `sched.schedule`
    with `costs` (F,B,W,comm per microbatch of a rank's layers, as for
    sched-generate; default 1,1,1,0) and records
    `sched.makespan` (to the end of the optimizer step), `sched.span` (the
    iteration period when iterations overlap), and per rank
    `sched.bubble_ratio` (idle share of the makespan) and
    `sched.peak_in_flight` (activation units held at most).
  }];
  let options = [
    ListOption<"costs", "costs", "double", "F,B,W,comm (default 1,1,1,0)">,
  ];
}

#endif // LOOM_TRANSFORMS_SCHEDPASSES_TD
