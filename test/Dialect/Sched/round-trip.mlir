// RUN: loom-opt %s | loom-opt | FileCheck %s
// RUN: loom-opt %s --mlir-print-op-generic | loom-opt | FileCheck %s

// Zero-bubble actions with every p2p operation listed, a memory limit, and
// units that are not whole (two stages per rank would give 0.5 each).
// CHECK-LABEL: sched.schedule @zb ranks 2 microbatches 2 stage_ranks [0, 1] units [1.0, 0.75] mem_limit 2.0 {
sched.schedule @zb ranks 2 microbatches 2 stage_ranks [0, 1] units [1.0, 0.75] mem_limit 2.0 {
  // CHECK-NEXT: sched.rank 0 {
  // CHECK-NEXT:   sched.f mb 0 stage 0
  // CHECK-NEXT:   sched.send_act mb 0 stage 0 to 1
  // CHECK-NEXT:   sched.f mb 1 stage 0
  // CHECK-NEXT:   sched.send_act mb 1 stage 0 to 1
  // CHECK-NEXT:   sched.recv_grad mb 0 stage 0 from 1
  // CHECK-NEXT:   sched.b mb 0 stage 0
  // CHECK-NEXT:   sched.w mb 0 stage 0
  sched.rank 0 {
    sched.f mb 0 stage 0
    sched.send_act mb 0 stage 0 to 1
    sched.f mb 1 stage 0
    sched.send_act mb 1 stage 0 to 1
    sched.recv_grad mb 0 stage 0 from 1
    sched.b mb 0 stage 0
    sched.w mb 0 stage 0
    sched.recv_grad mb 1 stage 0 from 1
    sched.b mb 1 stage 0
    sched.w mb 1 stage 0
    sched.optimizer
  }
  // CHECK:      sched.rank 1 {
  // CHECK-NEXT:   sched.recv_act mb 0 stage 1 from 0
  // CHECK-NEXT:   sched.f mb 0 stage 1
  // CHECK-NEXT:   sched.b mb 0 stage 1
  // CHECK-NEXT:   sched.send_grad mb 0 stage 1 to 0
  sched.rank 1 {
    sched.recv_act mb 0 stage 1 from 0
    sched.f mb 0 stage 1
    sched.b mb 0 stage 1
    sched.send_grad mb 0 stage 1 to 0
    sched.recv_act mb 1 stage 1 from 0
    sched.f mb 1 stage 1
    sched.b mb 1 stage 1
    sched.send_grad mb 1 stage 1 to 0
    sched.w mb 0 stage 1
    sched.w mb 1 stage 1
    sched.optimizer
  }
  // CHECK:      sched.optimizer
  // CHECK-NEXT: }
  // CHECK-NEXT: }
}

// SkipPipe: microbatch 1 skips stage 1, microbatch 2 visits 2 before 1; the
// unsplit backward (BW); rules and discardable attributes survive.
// CHECK-LABEL: sched.schedule @skip ranks 4 microbatches 3 stage_ranks [0, 1, 2, 3] units [1.0, 1.0, 1.0, 1.0]
// CHECK-SAME:    path_rules(max_skip 0.5, max_swaps 1, min_share 0.6) attributes {sched.note = "geo"} {
// CHECK-NEXT:  sched.path mb 1 stages [0, 2, 3]
// CHECK-NEXT:  sched.path mb 2 stages [0, 2, 1, 3]
// CHECK-NEXT:  sched.rank 0 {
// CHECK-NEXT:    sched.f mb 0 stage 0
// CHECK:         sched.bw mb 2 stage 0
sched.schedule @skip ranks 4 microbatches 3 stage_ranks [0, 1, 2, 3] units [1.0, 1.0, 1.0, 1.0]
    path_rules(max_skip 0.5, max_swaps 1, min_share 0.6) attributes {sched.note = "geo"} {
  sched.path mb 1 stages [0, 2, 3]
  sched.path mb 2 stages [0, 2, 1, 3]
  sched.rank 0 {
    sched.f mb 0 stage 0
    sched.f mb 1 stage 0
    sched.f mb 2 stage 0
    sched.bw mb 0 stage 0
    sched.bw mb 1 stage 0
    sched.bw mb 2 stage 0
  }
  sched.rank 1 {
    sched.f mb 0 stage 1
    sched.f mb 2 stage 1
    sched.bw mb 0 stage 1
    sched.bw mb 2 stage 1
  }
  sched.rank 2 {
    sched.f mb 0 stage 2
    sched.f mb 1 stage 2
    sched.f mb 2 stage 2
    sched.bw mb 0 stage 2
    sched.bw mb 1 stage 2
    sched.bw mb 2 stage 2
  }
  sched.rank 3 {
    sched.f mb 0 stage 3
    sched.bw mb 0 stage 3
    sched.f mb 1 stage 3
    sched.bw mb 1 stage 3
    sched.f mb 2 stage 3
    sched.bw mb 2 stage 3
  }
}

// Interleaving: stage s on rank s mod 2, a third of a rank's layers each.
// CHECK-LABEL: sched.schedule @interleaved ranks 2 microbatches 1 stage_ranks [0, 1, 0, 1] units [0.3333333333333333, 0.3333333333333333, 0.3333333333333333, 0.3333333333333333] {
sched.schedule @interleaved ranks 2 microbatches 1 stage_ranks [0, 1, 0, 1] units [0.3333333333333333, 0.3333333333333333, 0.3333333333333333, 0.3333333333333333] {
  sched.rank 0 {
    sched.f mb 0 stage 0
    sched.f mb 0 stage 2
    sched.bw mb 0 stage 2
    sched.bw mb 0 stage 0
  }
  sched.rank 1 {
    sched.f mb 0 stage 1
    sched.f mb 0 stage 3
    sched.bw mb 0 stage 3
    sched.bw mb 0 stage 1
  }
}

// -----

// The links a schedule was made for (p2p seconds, row = sender).
// CHECK-LABEL: sched.schedule @linked ranks 2 microbatches 1 stage_ranks [0, 1] units [1.0, 1.0] links [0.0, 2.5, 0.5, 0.0] {
sched.schedule @linked ranks 2 microbatches 1 stage_ranks [0, 1] units [1.0, 1.0] links [0.0, 2.5, 0.5, 0.0] {
  sched.rank 0 {
    sched.f mb 0 stage 0
    sched.bw mb 0 stage 0
    sched.optimizer
  }
  sched.rank 1 {
    sched.f mb 0 stage 1
    sched.bw mb 0 stage 1
    sched.optimizer
  }
}
