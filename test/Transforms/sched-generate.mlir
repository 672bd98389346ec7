// RUN: loom-opt %s --sched-generate='kind=zb-h1 stages=2 microbatches=3' | FileCheck %s --check-prefix=ZBH1
// RUN: loom-opt %s --sched-generate='kind=zb-h2 stages=2 microbatches=3' | FileCheck %s --check-prefix=ZBH2
// RUN: loom-opt %s --sched-generate='kind=1f1b stages=2 microbatches=2 p2p=true mem-limit=2' | FileCheck %s --check-prefix=P2P
// RUN: loom-opt %s --sched-generate='kind=interleaved stages=2 microbatches=2 vpp=2' | FileCheck %s --check-prefix=INTERLEAVED
// RUN: loom-opt %s --sched-generate='kind=zb-v stages=2 microbatches=4' | FileCheck %s --check-prefix=ZBV
// RUN: loom-opt %s --sched-generate='kind=dualpipe stages=2 microbatches=4' | FileCheck %s --check-prefix=DUAL
// RUN: loom-opt %s --sched-generate='kind=zb-auto stages=4 microbatches=8 mem-limit=4 costs=1,1,1,0.1' | FileCheck %s --check-prefix=AUTO
// RUN: loom-opt %s --sched-generate='kind=1f1b stages=4 microbatches=8 skip=max-skip=0.5,min-share=0.5,slow=2:3.0' | FileCheck %s --check-prefix=SKIP
// The output is valid IR: the sched verifier accepts what the generators build.
// RUN: loom-opt %s --sched-generate='kind=gpipe stages=3 microbatches=2' | loom-opt | FileCheck %s --check-prefix=GPIPE

// ZB-H2 lets rank 0 run 2p - 1 forwards before its first backward (here all
// three), and the last rank defers every W to the end to fill its bubble.
// ZBH2-LABEL: sched.schedule @zb_h2 ranks 2 microbatches 3
// ZBH2-NEXT:    sched.rank 0 {
// ZBH2-NEXT:      sched.f mb 0 stage 0
// ZBH2-NEXT:      sched.f mb 1 stage 0
// ZBH2-NEXT:      sched.f mb 2 stage 0
// ZBH2-NEXT:      sched.b mb 0 stage 0
// ZBH2:         sched.rank 1 {
// ZBH2:           sched.b mb 2 stage 1
// ZBH2-NEXT:      sched.w mb 0 stage 1
// ZBH2-NEXT:      sched.w mb 1 stage 1
// ZBH2-NEXT:      sched.w mb 2 stage 1
// ZBH2-NEXT:      sched.optimizer

// Stages on ranks 0..p-1; ZB-H1 splits the backward: rank 0 runs p warmup
// forwards, then B and W of the oldest microbatch before the next F.
// ZBH1-LABEL: sched.schedule @zb_h1 ranks 2 microbatches 3 stage_ranks [0, 1] units [1.0, 1.0] {
// ZBH1-NEXT:    sched.rank 0 {
// ZBH1-NEXT:      sched.f mb 0 stage 0
// ZBH1-NEXT:      sched.f mb 1 stage 0
// ZBH1-NEXT:      sched.b mb 0 stage 0
// ZBH1-NEXT:      sched.w mb 0 stage 0
// ZBH1-NEXT:      sched.f mb 2 stage 0
// ZBH1:           sched.optimizer
// ZBH1:         sched.rank 1 {
// ZBH1-NEXT:      sched.f mb 0 stage 1
// ZBH1-NEXT:      sched.b mb 0 stage 1
// ZBH1-NEXT:      sched.f mb 1 stage 1

// p2p lists each transfer beside its producer and consumer; the limit is
// recorded, so the verifier holds the schedule to it.
// P2P-LABEL: sched.schedule @"1f1b" ranks 2 microbatches 2 stage_ranks [0, 1] units [1.0, 1.0] mem_limit 2.0 {
// P2P-NEXT:    sched.rank 0 {
// P2P-NEXT:      sched.f mb 0 stage 0
// P2P-NEXT:      sched.send_act mb 0 stage 0 to 1
// P2P:           sched.recv_grad mb 0 stage 0 from 1
// P2P-NEXT:      sched.bw mb 0 stage 0
// P2P:         sched.rank 1 {
// P2P-NEXT:      sched.recv_act mb 0 stage 1 from 0
// P2P-NEXT:      sched.f mb 0 stage 1
// P2P-NEXT:      sched.bw mb 0 stage 1
// P2P-NEXT:      sched.send_grad mb 0 stage 1 to 0

// Megatron's chunks: stage c*p + r on rank r, 1/v of the layers each.
// INTERLEAVED: sched.schedule @interleaved ranks 2 microbatches 2 stage_ranks [0, 1, 0, 1] units [0.5, 0.5, 0.5, 0.5] {
// INTERLEAVED-NOT: sched.path

// ZB-V folds the stages into a V: rank 0 holds the first and the last.
// ZBV: sched.schedule @zb_v ranks 2 microbatches 4 stage_ranks [0, 1, 1, 0] units [0.5, 0.5, 0.5, 0.5] {
// ZBV-NEXT: sched.rank 0 {

// DualPipe feeds half the microbatches from the other end, through the
// second copy of each stage.
// DUAL: sched.schedule @dualpipe ranks 2 microbatches 4 stage_ranks [0, 1, 1, 0] units [1.0, 1.0, 1.0, 1.0] {
// DUAL-NEXT: sched.path mb 0 stages [0, 1]
// DUAL-NEXT: sched.path mb 1 stages [0, 1]
// DUAL-NEXT: sched.path mb 2 stages [2, 3]
// DUAL-NEXT: sched.path mb 3 stages [2, 3]

// AUTO: sched.schedule @zb_auto ranks 4 microbatches 8 stage_ranks [0, 1, 2, 3] units [1.0, 1.0, 1.0, 1.0] mem_limit 4.0 {
// AUTO: sched.w mb

// Stage 2 sits behind a slow link: half of the microbatches (the share it
// must see) skip it. The links go into the IR for the simulator.
// SKIP: sched.schedule @skip ranks 4 microbatches 8 stage_ranks [0, 1, 2, 3] units [1.0, 1.0, 1.0, 1.0] path_rules(max_skip 0.5, max_swaps 0, min_share 0.5) links [0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 3.0, 0.0, 3.0, 3.0, 0.0, 3.0, 0.0, 0.0, 3.0, 0.0] {
// SKIP-COUNT-4: sched.path mb {{[0-9]}} stages [0, 1, 3]
// SKIP-COUNT-4: sched.path mb {{[0-9]}} stages [0, 2, 3]
// SKIP-NEXT: sched.rank 0 {

// GPIPE: sched.schedule @gpipe ranks 3 microbatches 2
// GPIPE: sched.rank 2 {
// GPIPE-NEXT: sched.f mb 0 stage 2
// GPIPE-NEXT: sched.f mb 1 stage 2
// GPIPE-NEXT: sched.bw mb 1 stage 2
// GPIPE-NEXT: sched.bw mb 0 stage 2

// Requests the generators cannot honour are refused with the reason.
// RUN: not loom-opt %s --sched-generate='kind=2f2b' 2>&1 | FileCheck %s --check-prefix=KIND
// KIND: error: sched-generate: unknown kind '2f2b'; kinds: gpipe, 1f1b, interleaved, zb-h1, zb-h2, zb-v, zb-auto, dualpipe
// RUN: not loom-opt %s --sched-generate='kind=interleaved stages=4 microbatches=6 vpp=2' 2>&1 | FileCheck %s --check-prefix=SHAPE
// SHAPE: error: sched-generate: interleaved 1F1B needs the microbatches (6) to be a multiple of the ranks (4)
// RUN: not loom-opt %s --sched-generate='kind=1f1b vpp=2' 2>&1 | FileCheck %s --check-prefix=VPP
// VPP: error: sched-generate: 1f1b has no virtual stages
// RUN: not loom-opt %s --sched-generate='costs=1,1,1' 2>&1 | FileCheck %s --check-prefix=COSTS
// COSTS: error: sched-generate: costs must be 4 numbers F,B,W,comm, got 3
// RUN: not loom-opt %s --sched-generate='kind=1f1b stages=4 microbatches=8 mem-limit=2' 2>&1 | FileCheck %s --check-prefix=LIMIT
// LIMIT: error: sched-generate: the 1f1b schedule fails its checks: rank 0, action 2: 3 activation units in flight after F(mb 2, stage 0), limit 2
// RUN: not loom-opt %s --sched-generate='kind=zb-h1 skip=slow=2:1.0' 2>&1 | FileCheck %s --check-prefix=SKIPKIND
// SKIPKIND: error: sched-generate: skip paths are list-scheduled: use kind 1f1b (whole backward) or zb-auto (split backward)
// RUN: not loom-opt %s --sched-generate='skip=slow=9:1.0' 2>&1 | FileCheck %s --check-prefix=SKIPRANK
// SKIPRANK: error: sched-generate: skip: slow=R:T needs a rank below 4 and a link time >= 0, got 'slow=9:1.0'
// RUN: not loom-opt %s --sched-generate='skip=max-hops=2' 2>&1 | FileCheck %s --check-prefix=SKIPKEY
// SKIPKEY: error: sched-generate: skip: unknown key 'max-hops'; keys are max-skip, max-swaps, min-share and slow
