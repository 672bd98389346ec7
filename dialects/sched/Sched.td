//===- Sched.td - pipeline schedules as IR ------------------*- tablegen -*-===//
//
// `sched` is the IR form of lib/Schedule's data model (include/loom/Schedule/
// Schedule.h): a `sched.schedule` holds one `sched.rank` per pipeline rank,
// each an ordered program of action ops, plus `sched.path` ops for the
// microbatches whose stages differ from 0..S-1. Ops check what they can see
// locally; `sched.schedule` converts itself to a loom::sched::Schedule and
// runs the library verifier, reporting each problem on the op at fault.
//
//===----------------------------------------------------------------------===//

#ifndef LOOM_SCHED_TD
#define LOOM_SCHED_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/IR/BuiltinAttributes.td"
include "mlir/IR/CommonAttrConstraints.td"

def Sched_Dialect : Dialect {
  let name = "sched";
  let cppNamespace = "::loom::sched";
  let summary = "Pipeline schedules: per-rank programs of forward, backward and p2p actions";
  let description = [{
    A pipeline has stages (model chunks) hosted on ranks. Each rank runs an
    ordered program of actions over (microbatch, stage): F (forward), B (input
    gradient), W (weight gradient), BW (unsplit backward), sends and receives
    of activations and gradients, and the optimizer step. A microbatch's path
    is the order in which its forward visits stages (SkipPipe lets it skip or
    reorder them); its backward runs the path in reverse.
  }];
}

def Sched_ActionOpInterface : OpInterface<"ActionOpInterface"> {
  let cppNamespace = "::loom::sched";
  let description = [{
    An entry of a rank's program. Checks that need only the enclosing
    schedule's attributes (indices in range, the stage hosted on this rank,
    the peer on another rank) run here, before the whole-schedule verifier.
  }];
  let methods = [
    InterfaceMethod<"the library action this op stands for",
      "::loom::sched::Action", "getAction">,
  ];
  let verify = [{ return ::loom::sched::verifyActionOp($_op); }];
}

class Sched_Op<string mnemonic, list<Trait> traits = []>
    : Op<Sched_Dialect, mnemonic, traits>;

def Sched_ScheduleOp : Sched_Op<"schedule", [Symbol, NoTerminator, SingleBlock]> {
  let summary = "a pipeline schedule: layout, paths and one program per rank";
  let description = [{
    ```
    sched.schedule @zb_h1 ranks 2 microbatches 2 stage_ranks [0, 1]
        units [1.0, 1.0] mem_limit 2.0 {
      sched.rank 0 { sched.f mb 0 stage 0  ... }
      sched.rank 1 { ... }
    }
    ```
    `stage_ranks[s]` is the rank hosting stage s; `units[s]` the activation
    memory one microbatch holds on stage s, relative to a whole rank's layers
    (1/v when interleaving). `mem_limit` bounds the units a rank holds at once.
    `path_rules(max_skip f, max_swaps n, min_share g)` are SkipPipe's rules:
    at most f of the middle stages skipped, n pairs out of order, every stage
    run by at least g of the microbatches. Microbatches without a `sched.path`
    visit stages 0..S-1. `links [..]`, when given, are the p2p seconds between
    every pair of ranks (ranks x ranks, row = sender), the links the schedule
    was made for (SkipPipe's slow links); sched-simulate prices with them.

    Constraints: at least one rank and one microbatch; every stage on an
    existing rank; one unit figure per stage, each > 0; mem_limit > 0; path
    rules within [0, 1] (swaps >= 0); links: ranks x ranks times >= 0, zero
    from a rank to itself; the body holds sched.rank 0..ranks-1 in
    order and at most one sched.path per microbatch. Then, over the whole
    schedule: F before B before W for each (microbatch, stage) on a path,
    sends matched by receives, no deadlock, activation units within
    mem_limit, paths within the rules.
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, I32Attr:$num_ranks,
                       I32Attr:$num_microbatches, DenseI32ArrayAttr:$stage_ranks,
                       DenseF64ArrayAttr:$activation_units,
                       OptionalAttr<F64Attr>:$mem_limit,
                       OptionalAttr<F64Attr>:$max_skip_fraction,
                       OptionalAttr<I32Attr>:$max_swaps,
                       OptionalAttr<F64Attr>:$min_stage_share,
                       OptionalAttr<DenseF64ArrayAttr>:$links);
  let regions = (region SizedRegion<1>:$body);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let extraClassDeclaration = [{
    mlir::Block *getBodyBlock() { return &getBody().front(); }
    auto getRanks() { return getBodyBlock()->getOps<RankOp>(); }
    auto getPaths() { return getBodyBlock()->getOps<PathOp>(); }
    int32_t getNumStages() { return static_cast<int32_t>(getStageRanks().size()); }
  }];
}

def Sched_PathOp : Sched_Op<"path", [HasParent<"ScheduleOp">]> {
  let summary = "the stages a microbatch's forward visits, in order";
  let description = [{
    `sched.path mb 3 stages [0, 2, 1, 3]`. Constraints: the microbatch and
    every stage exist; no stage twice.
  }];
  let arguments = (ins I32Attr:$microbatch, DenseI32ArrayAttr:$stages);
  let assemblyFormat = "`mb` $microbatch `stages` $stages attr-dict";
  let hasVerifier = 1;
}

def Sched_RankOp : Sched_Op<"rank", [HasParent<"ScheduleOp">, NoTerminator, SingleBlock]> {
  let summary = "the program of one pipeline rank, in execution order";
  let arguments = (ins I32Attr:$rank);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$rank attr-dict-with-keyword $body";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    mlir::Block *getBodyBlock() { return &getBody().front(); }
  }];
}

// F, B, W and BW of (microbatch, stage): `sched.f mb 3 stage 1`.
class Sched_ComputeOp<string mnemonic, string kind, string what>
    : Sched_Op<mnemonic, [HasParent<"RankOp">,
                          DeclareOpInterfaceMethods<Sched_ActionOpInterface>]> {
  let summary = what;
  let arguments = (ins I32Attr:$microbatch, I32Attr:$stage);
  let assemblyFormat = "`mb` $microbatch `stage` $stage attr-dict";
  let extraClassDefinition = [{
    ::loom::sched::Action $cppClass::getAction() {
      return {::loom::sched::Op::}] # kind # [{,
              static_cast<int32_t>(getMicrobatchAttr().getInt()),
              static_cast<int32_t>(getStageAttr().getInt())};
    }
  }];
}

def Sched_FOp : Sched_ComputeOp<"f", "F", "forward of a microbatch on a stage">;
def Sched_BOp : Sched_ComputeOp<"b", "B", "input gradient (zero-bubble split backward)">;
def Sched_WOp : Sched_ComputeOp<"w", "W", "weight gradient (zero-bubble split backward)">;
def Sched_BWOp : Sched_ComputeOp<"bw", "BW", "whole backward, where it is not split">;

// Point-to-point transfers along a path edge between ranks:
// `sched.send_act mb 3 stage 1 to 2`, `sched.recv_act mb 3 stage 2 from 1`.
class Sched_CommOp<string mnemonic, string kind, string dir, string what>
    : Sched_Op<mnemonic, [HasParent<"RankOp">,
                          DeclareOpInterfaceMethods<Sched_ActionOpInterface>]> {
  let summary = what;
  let arguments = (ins I32Attr:$microbatch, I32Attr:$stage, I32Attr:$peer);
  let assemblyFormat = "`mb` $microbatch `stage` $stage `" # dir # "` $peer attr-dict";
  let extraClassDefinition = [{
    ::loom::sched::Action $cppClass::getAction() {
      return {::loom::sched::Op::}] # kind # [{,
              static_cast<int32_t>(getMicrobatchAttr().getInt()),
              static_cast<int32_t>(getStageAttr().getInt()),
              static_cast<int32_t>(getPeerAttr().getInt())};
    }
  }];
}

def Sched_SendActOp : Sched_CommOp<"send_act", "SendAct", "to",
    "send the stage's forward output to the next stage on the path (async)">;
def Sched_RecvActOp : Sched_CommOp<"recv_act", "RecvAct", "from",
    "receive the stage's forward input from the previous stage (blocks)">;
def Sched_SendGradOp : Sched_CommOp<"send_grad", "SendGrad", "to",
    "send the stage's input gradient to the previous stage on the path (async)">;
def Sched_RecvGradOp : Sched_CommOp<"recv_grad", "RecvGrad", "from",
    "receive the stage's output gradient from the next stage (blocks)">;

def Sched_OptimizerOp : Sched_Op<"optimizer",
    [HasParent<"RankOp">, DeclareOpInterfaceMethods<Sched_ActionOpInterface>]> {
  let summary = "optimizer step, a barrier over all ranks";
  let assemblyFormat = "attr-dict";
  let extraClassDefinition = [{
    ::loom::sched::Action $cppClass::getAction() {
      return {::loom::sched::Op::Optimizer};
    }
  }];
}

#endif // LOOM_SCHED_TD
