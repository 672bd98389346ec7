// RUN: loom-opt %s --sched-simulate | FileCheck %s
// RUN: loom-opt %s --sched-simulate='costs=1,2,1,0.5' | FileCheck %s --check-prefix=COSTS
// RUN: loom-opt %s --sched-generate='kind=zb-h1 stages=4 microbatches=8' --sched-simulate | FileCheck %s --check-prefix=ZBH1
// RUN: loom-opt %s --sched-generate='kind=interleaved stages=4 microbatches=8 vpp=2' --sched-simulate | FileCheck %s --check-prefix=INTERLEAVED
// RUN: not loom-opt %s --sched-simulate='costs=1,-1,1,0' 2>&1 | FileCheck %s --check-prefix=BAD

// 1F1B on two ranks, two microbatches, F = B = W = 1: each rank is busy 6,
// the bubble is (p-1)(F+B+W) = 3 of a makespan of 9; rank 0 holds both
// microbatches' activations at once, rank 1 one.
// CHECK-LABEL: sched.schedule @"1f1b"
// CHECK-SAME: sched.bubble_ratio = array<f64: 0.33333333333333331, 0.33333333333333331>
// CHECK-SAME: sched.makespan = 9.000000e+00
// CHECK-SAME: sched.peak_in_flight = array<f64: 2.000000e+00, 1.000000e+00>
// CHECK-SAME: sched.span = 9.000000e+00

// F=1, B=2, W=1 (BW = 3) and a 0.5 hop each way: rank 1 starts at 1.5, and
// rank 0's second backward ends at 13; 5 of 13 idle on both ranks.
// COSTS: sched.bubble_ratio = array<f64: 0.38461538461538464, 0.38461538461538464>
// COSTS-SAME: sched.makespan = 1.300000e+01

// ZB-H1 (p = 4, m = 8): bubble p-1 = 3 of 27, 1F1B's peak p on every rank
// ZBH1: sched.schedule @"1f1b"
// ZBH1: sched.schedule @zb_h1
// ZBH1-SAME: sched.bubble_ratio = array<f64: 0.1111111111111111, 0.1111111111111111, 0.1111111111111111, 0.1111111111111111>
// ZBH1-SAME: sched.makespan = 2.700000e+01
// ZBH1-SAME: sched.peak_in_flight = array<f64: 4.000000e+00, 4.000000e+00, 4.000000e+00, 4.000000e+00>

// Interleaving with v = 2 halves 1F1B's bubble: 9 / 2 = 4.5 of 28.5.
// INTERLEAVED: sched.schedule @interleaved
// INTERLEAVED-SAME: sched.bubble_ratio = array<f64: 0.15789473684210525,
// INTERLEAVED-SAME: sched.makespan = 2.850000e+01

// BAD: error: sched-simulate: costs need F, B and W > 0 and comm >= 0

sched.schedule @"1f1b" ranks 2 microbatches 2 stage_ranks [0, 1] units [1.0, 1.0] {
  sched.rank 0 {
    sched.f mb 0 stage 0
    sched.f mb 1 stage 0
    sched.bw mb 0 stage 0
    sched.bw mb 1 stage 0
    sched.optimizer
  }
  sched.rank 1 {
    sched.f mb 0 stage 1
    sched.bw mb 0 stage 1
    sched.f mb 1 stage 1
    sched.bw mb 1 stage 1
    sched.optimizer
  }
}
