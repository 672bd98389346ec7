// RUN: loom-opt %s -split-input-file -verify-diagnostics

// One case per constraint of the sched dialect; the whole-schedule checks
// come from lib/Schedule's verifier and land on the action they name.

// expected-error @below {{needs at least one rank, got 0}}
sched.schedule @s ranks 0 microbatches 1 stage_ranks [0] units [1.0] {
}

// -----

// expected-error @below {{stage 1 is hosted on rank 2, which does not exist (ranks 0..1)}}
sched.schedule @s ranks 2 microbatches 1 stage_ranks [0, 2] units [1.0, 1.0] {
}

// -----

// expected-error @below {{has 1 activation units for 2 stages}}
sched.schedule @s ranks 2 microbatches 1 stage_ranks [0, 1] units [1.0] {
}

// -----

// expected-error @below {{mem_limit must be > 0, got 0.0}}
sched.schedule @s ranks 1 microbatches 1 stage_ranks [0] units [1.0] mem_limit 0.0 {
  sched.rank 0 {
  }
}

// -----

// expected-error @below {{path rules need max_skip_fraction, max_swaps and min_stage_share together}}
sched.schedule @s ranks 1 microbatches 1 stage_ranks [0] units [1.0] attributes {max_swaps = 1 : i32} {
  sched.rank 0 {
  }
}

// -----

// expected-error @below {{path_rules min_share must be in [0, 1], got 1.5}}
sched.schedule @s ranks 1 microbatches 1 stage_ranks [0] units [1.0] path_rules(max_skip 0.5, max_swaps 0, min_share 1.5) {
  sched.rank 0 {
  }
}

// -----

// expected-error @below {{has 1 sched.rank ops for 2 ranks}}
sched.schedule @s ranks 2 microbatches 1 stage_ranks [0, 1] units [1.0, 1.0] {
  sched.rank 0 {
  }
}

// -----

sched.schedule @s ranks 2 microbatches 1 stage_ranks [0, 1] units [1.0, 1.0] {
  // expected-error @below {{is rank 1 where rank 0 belongs: ranks are listed 0..1 in order}}
  sched.rank 1 {
  }
  sched.rank 0 {
  }
}

// -----

sched.schedule @s ranks 1 microbatches 1 stage_ranks [0] units [1.0] {
  sched.path mb 0 stages [0]
  // expected-error @below {{is the second path of microbatch 0}}
  sched.path mb 0 stages [0]
  sched.rank 0 {
  }
}

// -----

sched.schedule @s ranks 2 microbatches 1 stage_ranks [0, 1] units [1.0, 1.0] {
  // expected-error @below {{visits stage 1 twice}}
  sched.path mb 0 stages [0, 1, 1]
  sched.rank 0 {
  }
  sched.rank 1 {
  }
}

// -----

sched.schedule @s ranks 1 microbatches 2 stage_ranks [0] units [1.0] {
  sched.rank 0 {
    // expected-error @below {{microbatch 2 does not exist: the schedule has 2}}
    sched.f mb 2 stage 0
  }
}

// -----

sched.schedule @s ranks 1 microbatches 1 stage_ranks [0] units [1.0] {
  sched.rank 0 {
    // expected-error @below {{stage -1 does not exist: the schedule has 1}}
    sched.f mb 0 stage -1
  }
}

// -----

sched.schedule @s ranks 2 microbatches 1 stage_ranks [0, 1] units [1.0, 1.0] {
  sched.rank 0 {
    // expected-error @below {{stage 1 runs on rank 1, not on rank 0}}
    sched.f mb 0 stage 1
  }
  sched.rank 1 {
  }
}

// -----

sched.schedule @s ranks 2 microbatches 1 stage_ranks [0, 0, 1] units [1.0, 1.0, 1.0] {
  sched.rank 0 {
    sched.f mb 0 stage 0
    // expected-error @below {{peer stage 1 is on this rank too: sends and receives cross ranks}}
    sched.send_act mb 0 stage 0 to 1
  }
  sched.rank 1 {
  }
}

// -----

sched.schedule @s ranks 1 microbatches 1 stage_ranks [0] units [1.0] {
  sched.rank 0 {
    // expected-error @below {{cannot appear in a sched.rank, which holds schedule actions}}
    sched.path mb 0 stages [0]
  }
}

// -----

// F after B: the input gradient needs the forward's activations.
sched.schedule @s ranks 1 microbatches 1 stage_ranks [0] units [1.0] {
  sched.rank 0 {
    // expected-error @below {{B(mb 0, stage 0) runs before its F at action 1}}
    sched.b mb 0 stage 0
    sched.f mb 0 stage 0
    sched.w mb 0 stage 0
  }
}

// -----

// W before B: the weight gradient needs the output gradient B received.
sched.schedule @s ranks 1 microbatches 1 stage_ranks [0] units [1.0] {
  sched.rank 0 {
    sched.f mb 0 stage 0
    // expected-error @below {{W(mb 0, stage 0) runs before its B at action 2}}
    sched.w mb 0 stage 0
    sched.b mb 0 stage 0
  }
}

// -----

// A forward that never runs is reported on its rank.
sched.schedule @s ranks 1 microbatches 2 stage_ranks [0] units [1.0] {
  // expected-error @below {{no action runs F(mb 1, stage 0)}}
  sched.rank 0 {
    sched.f mb 0 stage 0
    sched.bw mb 0 stage 0
    sched.bw mb 1 stage 0
  }
}

// -----

// Missing send: rank 1 receives an activation rank 0 never sends.
sched.schedule @s ranks 2 microbatches 1 stage_ranks [0, 1] units [1.0, 1.0] {
  sched.rank 0 {
    sched.f mb 0 stage 0
    sched.recv_grad mb 0 stage 0 from 1
    sched.bw mb 0 stage 0
  }
  sched.rank 1 {
    // expected-error @below {{RecvAct(mb 0, stage 1 <- 0) has no matching SendAct(mb 0, stage 0 -> 1) on rank 0}}
    sched.recv_act mb 0 stage 1 from 0
    sched.f mb 0 stage 1
    sched.bw mb 0 stage 1
    sched.send_grad mb 0 stage 1 to 0
  }
}

// -----

// Deadlock: rank 0 waits for a gradient before sending the activation that
// rank 1 needs to produce it.
// expected-error @below {{deadlock: rank 0 waits for rank 1 waits for rank 0}}
sched.schedule @s ranks 2 microbatches 1 stage_ranks [0, 1] units [1.0, 1.0] {
  sched.rank 0 {
    sched.f mb 0 stage 0
    // expected-error @below {{RecvGrad(mb 0, stage 0 <- 1) waits for SendGrad(mb 0, stage 1 -> 0) (rank 1, action 3), which never runs}}
    sched.recv_grad mb 0 stage 0 from 1
    sched.send_act mb 0 stage 0 to 1
    sched.bw mb 0 stage 0
  }
  sched.rank 1 {
    // expected-error @below {{RecvAct(mb 0, stage 1 <- 0) waits for SendAct(mb 0, stage 0 -> 1) (rank 0, action 2), which never runs}}
    sched.recv_act mb 0 stage 1 from 0
    sched.f mb 0 stage 1
    sched.bw mb 0 stage 1
    sched.send_grad mb 0 stage 1 to 0
  }
}

// -----

// Memory over the limit: two microbatches' activations, room for one.
sched.schedule @s ranks 1 microbatches 2 stage_ranks [0] units [1.0] mem_limit 1.0 {
  sched.rank 0 {
    sched.f mb 0 stage 0
    // expected-error @below {{2 activation units in flight after F(mb 1, stage 0), limit 1}}
    sched.f mb 1 stage 0
    sched.bw mb 0 stage 0
    sched.bw mb 1 stage 0
  }
}

// -----

// Bad path: microbatch 1 skips both middle stages where half may be skipped,
// so stages 1 and 2 also miss their share.
// expected-error @below {{microbatch 1 skips 2 of 2 middle stages, more than 50%}}
// expected-error @below {{stage 1 runs 1 of 2 microbatches, fewer than the required 100%}}
// expected-error @below {{stage 2 runs 1 of 2 microbatches, fewer than the required 100%}}
sched.schedule @s ranks 4 microbatches 2 stage_ranks [0, 1, 2, 3] units [1.0, 1.0, 1.0, 1.0] path_rules(max_skip 0.5, max_swaps 0, min_share 1.0) {
  sched.path mb 1 stages [0, 3]
  sched.rank 0 {
    sched.f mb 0 stage 0
    sched.f mb 1 stage 0
    sched.bw mb 0 stage 0
    sched.bw mb 1 stage 0
  }
  sched.rank 1 {
    sched.f mb 0 stage 1
    sched.bw mb 0 stage 1
  }
  sched.rank 2 {
    sched.f mb 0 stage 2
    sched.bw mb 0 stage 2
  }
  sched.rank 3 {
    sched.f mb 0 stage 3
    sched.bw mb 0 stage 3
    sched.f mb 1 stage 3
    sched.bw mb 1 stage 3
  }
}

// -----

// Reordering beyond the allowed swaps; the path must also end at the last stage.
// expected-error @below {{microbatch 0 visits 1 pairs of stages out of order, limit 0}}
// expected-error @below {{microbatch 1 must start at stage 0 and end at stage 3}}
sched.schedule @s ranks 4 microbatches 2 stage_ranks [0, 1, 2, 3] units [1.0, 1.0, 1.0, 1.0] path_rules(max_skip 0.0, max_swaps 0, min_share 0.0) {
  sched.path mb 0 stages [0, 2, 1, 3]
  sched.path mb 1 stages [0, 1, 2]
  sched.rank 0 {
    sched.f mb 0 stage 0
    sched.f mb 1 stage 0
    sched.bw mb 0 stage 0
    sched.bw mb 1 stage 0
  }
  sched.rank 1 {
    sched.f mb 0 stage 1
    sched.f mb 1 stage 1
    sched.bw mb 0 stage 1
    sched.bw mb 1 stage 1
  }
  sched.rank 2 {
    sched.f mb 0 stage 2
    sched.f mb 1 stage 2
    sched.bw mb 0 stage 2
    sched.bw mb 1 stage 2
  }
  sched.rank 3 {
    sched.f mb 0 stage 3
    sched.bw mb 0 stage 3
  }
}

// -----

// expected-error @below {{links needs 4 times (ranks x ranks), got 3}}
sched.schedule @s ranks 2 microbatches 1 stage_ranks [0, 1] units [1.0, 1.0] links [0.0, 1.0, 1.0] {
}

// -----

// expected-error @below {{link 1 -> 1 must be 0, got 1.0}}
sched.schedule @s ranks 2 microbatches 1 stage_ranks [0, 1] units [1.0, 1.0] links [0.0, 1.0, 1.0, 1.0] {
}

// -----

// expected-error @below {{link 0 -> 1 must be a time >= 0, got -1.0}}
sched.schedule @s ranks 2 microbatches 1 stage_ranks [0, 1] units [1.0, 1.0] links [0.0, -1.0, 1.0, 0.0] {
}

// -----

// Many forwards short: one error, before the schedule is read into a path per
// micro-batch.
// expected-error @below {{declares 2147483647 micro-batches but holds 1 sched.f ops: every micro-batch needs a forward on each stage of its path}}
sched.schedule @s ranks 1 microbatches 2147483647 stage_ranks [0] units [1.0] {
  sched.rank 0 {
    sched.f mb 0 stage 0
    sched.bw mb 0 stage 0
  }
}
