// RUN: loom-opt %s -split-input-file -verify-diagnostics

// One case per constraint the place dialect states.

// expected-error @below {{bandwidth_gbps must be > 0, got -5}}
place.tier @t {bandwidth_gbps = -5.0 : f64, latency_us = 1.0 : f64}

// -----

// expected-error @below {{latency_us must be >= 0, got -1}}
place.tier @t {bandwidth_gbps = 5.0 : f64, latency_us = -1.0 : f64}

// -----

// expected-error @below {{hbm_gib must be > 0, got 0}}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 0.0 : f64, hbm_gbytes_per_s = 1.0 : f64}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
// expected-error @below {{axis 'gpu' is declared twice}}
place.cluster @c device @d axes [#place.axis<"gpu", 4, @t>, #place.axis<"gpu", 8, @t>]

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
// expected-error @below {{cluster axis 'gpu' must have size >= 1, got 0}}
place.cluster @c device @d axes [#place.axis<"gpu", 0, @t>]

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
// expected-error @below {{axis 'gpu' uses tier 'nvlink', which is not a place.tier}}
place.cluster @c device @d axes [#place.axis<"gpu", 8, @nvlink>]

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
// expected-error @below {{device 'h100' is not a place.device}}
place.cluster @c device @h100 axes [#place.axis<"gpu", 8, @t>]

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
// expected-error @below {{axis 'tp' takes ranks of 'nvlink', which cluster 'c' does not have}}
place.mesh @m of @c axes [#place.laxis<dp = node:4 * gpu:2>, #place.laxis<tp = nvlink:4>]

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
// expected-error @below {{mesh takes 16 ranks of cluster axis 'gpu', which has 8; the pieces of each cluster axis must multiply to its size}}
place.mesh @m of @c axes [#place.laxis<dp = node:4 * gpu:4>, #place.laxis<tp = gpu:4>]

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
// expected-error @below {{axis 'tp' is declared twice}}
place.mesh @m of @c axes [#place.laxis<tp = node:4>, #place.laxis<tp = gpu:8>]

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
// expected-error @below {{mesh axis 'tp' takes 0 ranks of cluster axis 'gpu'; a piece must be >= 1}}
place.mesh @m of @c axes [#place.laxis<tp = gpu:0>]

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{params names axis 'tp' twice; each axis may place a state once}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads), tp: sharded(heads)], optim [tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{optim along 'dp' is sharded_with_gather, which only parameters may be}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads), dp: sharded_with_gather(flat)], grads [tp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{params cannot be materialized; only activations are rebuilt by recomputation}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)] materialized, optim [tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{acts along 'dp' are sharded by heads; activations split by batch, seq or hidden}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(heads)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{params along 'tp' are sharded by batch; weights split by hidden, heads, ffn, experts, vocab or flat}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(batch)], optim [tp: sharded(batch)], grads [tp: sharded(batch)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{state consistency: params are sharded(heads) along 'tp' but optim are replicated; they must be sharded the same way}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [], grads [tp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{state consistency: params are sharded_with_gather(flat) along 'dp' but grads are replicated; they must be sharded so each rank updates the shard it owns}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads), dp: sharded_with_gather(flat)], optim [tp: sharded(heads), dp: sharded(flat)], grads [tp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{state consistency: grads are sharded along 'dp' but optim is replicated}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads)], grads [tp: sharded(heads), dp: sharded(flat)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{reduce names axis 'dp' twice}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp, dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{heads (30) are not divisible by axis 'tp' of size 4}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 30 : i64, kv_heads = 6 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{kv_heads (2) are not divisible by axis 'tp' of size 4}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 2 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{experts (6) are not divisible by axis 'tp' of size 4}}
  place.moe "layers.0.moe" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, experts = 6 : i64, top_k = 2 : i64, shared_experts = 0 : i64, ffn = 64 : i64, activation = "swiglu", placement = #place.placement<params [tp: sharded(experts)], optim [tp: sharded(experts)], grads [tp: sharded(experts)], acts [dp: sharded(batch), tp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 130 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{seq_len (130) is not divisible by axis 'dp' of size 4}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(seq)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 6 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{global_batch (6) is not divisible by the 4 batch shards times micro_batch 1}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{gradient integrity: parameters are whole on every rank along 'dp' and activations are sharded(batch), so gradients must be reduced over 'dp'}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(batch)], reduce []>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{gradient integrity: gradients are reduced over 'tp', but parameters are sharded there: each rank owns a different slice}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(batch), tp: sharded(seq)], reduce [dp, tp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{gradient integrity: gradients are reduced over 'tp', but activations are replicated there: every rank already holds the full gradient}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [], optim [], grads [], acts [dp: sharded(batch)], reduce [dp, tp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{params name axis 'cp', which mesh 'm' does not have}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [cp: sharded(heads)], optim [cp: sharded(heads)], grads [cp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{params name the pipeline axis 'pp'; pipeline placement is given by `stage`}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [pp: sharded(heads)], optim [pp: sharded(heads)], grads [pp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{stage 2 is out of range: the model has 2 stages (pipeline size x virtual_stages)}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 2 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, stage = 1 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp]>}
// expected-error @below {{stage 0 comes after stage 1; stages must not decrease in layer order}}
  place.mlp "layers.0.mlp" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, ffn = 64 : i64, activation = "gelu"}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{has no stage, but the model is pipelined along 'pp'}}
  place.mlp "layers.0.mlp" {params = 10 : i64, fwd_flops = 10 : i64, layer = 0 : i64, ffn = 64 : i64, activation = "gelu"}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{kv_heads (5) must divide heads (32)}}
  place.attention "a" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 5 : i64, head_dim = 2 : i64}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp"} {
// expected-error @below {{top_k must be in [1, experts=8], got 9}}
  place.moe "m" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, experts = 8 : i64, top_k = 9 : i64, shared_experts = 0 : i64, ffn = 64 : i64, activation = "swiglu"}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
// expected-error @below {{micro_batch (3) must divide global_batch (16)}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 3 : i64, dtype = "bf16"} {
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
// expected-error @below {{pipeline_axis 'stages' is not an axis of the mesh}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "stages"} {

}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
// expected-error @below {{mesh 'nomesh' is not a place.mesh}}
place.model @x mesh @nomesh attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16"} {
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
place.model @x attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16"} {
// expected-error @below {{has a placement but the model names no mesh}}
  place.attention "layers.0.attention" {params = 10 : i64, fwd_flops = 10 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 2 : i64, placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

// expected-error @below {{unknown placement mode 'split'; expected replicated, sharded or sharded_with_gather}}
#bad = #place.placement<params [tp: split(heads)], optim [], grads [], acts [], reduce []>

// -----

// expected-error @below {{efficiency must be in (0, 1], got 1.5}}
place.tier @t {bandwidth_gbps = 5.0 : f64, latency_us = 1.0 : f64, efficiency = 1.5 : f64}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"gpu", 8, @t>]
place.model @x attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16"} {
  // expected-error @below {{routed_params must be in [0, params=10], got 11}}
  place.moe "m" {params = 10 : i64, fwd_flops = 10 : i64, layer = 0 : i64, experts = 8 : i64, top_k = 2 : i64, shared_experts = 0 : i64, ffn = 64 : i64, activation = "swiglu", routed_params = 11 : i64}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"gpu", 8, @t>]
place.model @x attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16"} {
  // expected-error @below {{capacity_factor must be >= 1 (absent: dropless), got 0.5}}
  place.moe "m" {params = 10 : i64, fwd_flops = 10 : i64, layer = 0 : i64, experts = 8 : i64, top_k = 2 : i64, shared_experts = 0 : i64, ffn = 64 : i64, activation = "swiglu", capacity_factor = 0.5 : f64}
}

// -----

// expected-error @below {{optimizer must be adam or sgd, got 'lion'}}
place.model @x attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", optimizer = "lion"} {
}

// -----

// expected-error @below {{grad_reduce_bf16 needs a bf16 or fp8 model, got dtype 'fp16'}}
place.model @x attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "fp16", grad_reduce_bf16} {
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
// expected-error @below {{has cell_dc but no 'dc' axis to map}}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>] {cell_dc = array<i32: 0, 1>}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
// expected-error @below {{cell_dc has 3 entries but the 'dc' axis has 4 cells}}
place.cluster @c device @d axes [#place.axis<"dc", 4, @t>, #place.axis<"gpu", 8, @t>] {cell_dc = array<i32: 0, 0, 1>}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
// expected-error @below {{cell_dc must start at datacenter 0, got 1}}
place.cluster @c device @d axes [#place.axis<"dc", 2, @t>, #place.axis<"gpu", 8, @t>] {cell_dc = array<i32: 1, 1>}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
// expected-error @below {{cell_dc[2] = 3: datacenters must be numbered in cell order without gaps (expected 1 or 2)}}
place.cluster @c device @d axes [#place.axis<"dc", 3, @t>, #place.axis<"gpu", 8, @t>] {cell_dc = array<i32: 0, 1, 3>}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
// expected-error @below {{cell_dc[2] = 0: datacenters must be numbered in cell order without gaps (expected 1 or 2)}}
place.cluster @c device @d axes [#place.axis<"dc", 3, @t>, #place.axis<"gpu", 8, @t>] {cell_dc = array<i32: 0, 1, 0>}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
// expected-error @below {{cell_dc puts every cell in one datacenter; drop it and make the cells one 'node' axis}}
place.cluster @c device @d axes [#place.axis<"dc", 2, @t>, #place.axis<"gpu", 8, @t>] {cell_dc = array<i32: 0, 0>}

// -----

// Clusters of several kinds of node: node groups.

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
// expected-error @below {{has both a device and node groups; with groups, each group names its device}}
place.cluster @c device @a100 axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>]

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
// expected-error @below {{needs a device, or node groups that name theirs}}
place.cluster @c axes [#place.axis<"gpu", 8, @nv3>]

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
// expected-error @below {{has one node group; a cluster of one kind of node names its device instead}}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 4, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>]

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
// expected-error @below {{has node groups, so its axes must end in 'node' and 'gpu' (the nodes, then the GPUs of one node)}}
place.cluster @c axes [#place.axis<"host", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>]

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
// expected-error @below {{node group 1 has 4 GPUs per node, but the 'gpu' axis has 8; a mesh needs the same GPU count on every node}}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 4, intra_node = @nv3, inter_node = @ib200>]

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
// expected-error @below {{node groups hold 3 nodes, but the axes outside 'gpu' count 4}}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 1, device = @h100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>]

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
// expected-error @below {{node group of @h100 must have count >= 1, got 0}}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 4, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 0, device = @h100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>]

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
// expected-error @below {{node group of @h100 must have gpus_per_node >= 1, got 0}}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 0, intra_node = @nv3, inter_node = @ib200>]

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
// expected-error @below {{node group 1 names device 'b200', which is not a place.device}}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @b200, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>]

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
// expected-error @below {{node group 1 has inter_node tier 'ib400', which is not a place.tier}}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib400>]

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @nv4 {bandwidth_gbps = 3600.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
// expected-error @below {{axis 'gpu' uses tier 'nv4', but collectives along it run at the pace of the slowest intra_node tier of its node groups, 'nv3'}}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv4>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv4, inter_node = @ib200>]

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.tier @slow {bandwidth_gbps = 100.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
// expected-error @below {{axis 'node' uses tier 'slow', but collectives along it run at the pace of the slowest inter_node tier of its node groups, 'ib200'}}
place.cluster @c axes [#place.axis<"node", 4, @slow>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>]

// -----

// Where pipeline positions run.
place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @nv4 {bandwidth_gbps = 3600.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.tier @ib400 {bandwidth_gbps = 400.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv4, inter_node = @ib400>]
place.mesh @m of @c axes [#place.laxis<dp = node:4 * gpu:8>]
// expected-error @below {{pipeline_ranks needs a pipeline_axis}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_ranks = array<i64: 0>} {
  place.mlp "a" {params = 10 : i64, fwd_flops = 10 : i64, layer = 0 : i64, ffn = 64 : i64, activation = "gelu"}
}

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @nv4 {bandwidth_gbps = 3600.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.tier @ib400 {bandwidth_gbps = 400.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv4, inter_node = @ib400>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:8>]
// expected-error @below {{pipeline_ranks needs one entry per rank of pipeline axis 'pp' (2), got 3}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp", pipeline_ranks = array<i64: 1, 0, 2>} {
  place.mlp "a" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, ffn = 64 : i64, activation = "gelu"}
}

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @nv4 {bandwidth_gbps = 3600.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.tier @ib400 {bandwidth_gbps = 400.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv4, inter_node = @ib400>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:8>]
// expected-error @below {{pipeline_ranks[1] = 2 is not a rank of pipeline axis 'pp' (0 to 1)}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp", pipeline_ranks = array<i64: 0, 2>} {
  place.mlp "a" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, ffn = 64 : i64, activation = "gelu"}
}

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @nv4 {bandwidth_gbps = 3600.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.tier @ib400 {bandwidth_gbps = 400.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv4, inter_node = @ib400>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:8>]
// expected-error @below {{pipeline_ranks[1] = 1 repeats a rank; pipeline_ranks must be a permutation of the pipeline axis's ranks}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp", pipeline_ranks = array<i64: 1, 1>} {
  place.mlp "a" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, ffn = 64 : i64, activation = "gelu"}
}

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @nv4 {bandwidth_gbps = 3600.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.tier @ib400 {bandwidth_gbps = 400.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv4, inter_node = @ib400>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:8>]
// expected-error @below {{pipeline_devices needs one entry per rank of pipeline axis 'pp' (2), got 1}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp", pipeline_devices = [@a100]} {
  place.mlp "a" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, ffn = 64 : i64, activation = "gelu"}
}

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @nv4 {bandwidth_gbps = 3600.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.tier @ib400 {bandwidth_gbps = 400.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv4, inter_node = @ib400>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:8>]
// expected-error @below {{pipeline_devices[1] names 'b200', which is not a place.device}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp", pipeline_devices = [@a100, @b200]} {
  place.mlp "a" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, ffn = 64 : i64, activation = "gelu"}
}

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @nv4 {bandwidth_gbps = 3600.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.tier @ib400 {bandwidth_gbps = 400.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv4, inter_node = @ib400>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:8>]
// expected-error @below {{pipeline_devices[0] names @h100, but position 0 runs on rank 0 of 'pp', whose nodes have @a100}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp", pipeline_devices = [@h100, @a100]} {
  place.mlp "a" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, ffn = 64 : i64, activation = "gelu"}
}

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @nv4 {bandwidth_gbps = 3600.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.tier @ib400 {bandwidth_gbps = 400.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv4, inter_node = @ib400>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:8>]
// expected-error @below {{pipeline_devices[0] names @a100, but position 0 runs on rank 1 of 'pp', whose nodes have @h100}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp", pipeline_ranks = array<i64: 1, 0>, pipeline_devices = [@a100, @h100]} {
  place.mlp "a" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, ffn = 64 : i64, activation = "gelu"}
}

// -----

place.tier @nv3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @nv4 {bandwidth_gbps = 3600.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
place.tier @ib400 {bandwidth_gbps = 400.0 : f64, latency_us = 5.0 : f64}
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
place.cluster @c axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nv3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nv3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nv4, inter_node = @ib400>]
place.mesh @m of @c axes [#place.laxis<dp = node:4 * gpu:4>, #place.laxis<pp = gpu:2>]
// expected-error @below {{pipeline_devices[0] names @a100, but position 0 runs on rank 0 of 'pp', whose nodes have @a100 and @h100; only a position on one kind of node names a device}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp", pipeline_devices = [@a100, @a100]} {
  place.mlp "a" {params = 10 : i64, fwd_flops = 10 : i64, stage = 0 : i64, layer = 0 : i64, ffn = 64 : i64, activation = "gelu"}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
// expected-error @below {{v_shape folds two stages per pipeline position into a V: it needs virtual_stages = 2, got 3}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp", virtual_stages = 3 : i64, v_shape} {
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<dp = node:4 * gpu:2>, #place.laxis<tp = gpu:4>]
// expected-error @below {{v_shape needs a pipeline_axis: it places stages on pipeline positions}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", virtual_stages = 2 : i64, v_shape} {
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 4, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
// expected-error @below {{dual_pipe runs one stage per pipeline position in each direction: it needs virtual_stages = 1 and no v_shape}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp", virtual_stages = 2 : i64, dual_pipe} {
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"node", 3, @t>, #place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<pp = node:3>, #place.laxis<dp = gpu:2>, #place.laxis<tp = gpu:4>]
// expected-error @below {{dual_pipe needs a pipeline_axis of an even size: it pairs position p with position pp - 1 - p}}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp", dual_pipe} {
}
