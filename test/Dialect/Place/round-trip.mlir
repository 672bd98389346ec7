// RUN: loom-opt %s | loom-opt --mlir-print-local-scope | FileCheck %s
// RUN: loom-opt %s --mlir-print-op-generic | loom-opt --mlir-print-local-scope | FileCheck %s
// RUN: loom-opt %s | FileCheck %s --check-prefix=ALIAS

// Placements are printed once at the top and referred to by alias.
// ALIAS: #placement = #place.placement<params [tp: sharded(vocab)]
// ALIAS: place.embedding "embedding" {{.*}}placement = #placement,

// CHECK-LABEL: place.tier @nvlink4
// CHECK-SAME: bandwidth_gbps = 3.600000e+03 : f64
place.tier @nvlink4 {bandwidth_gbps = 3600.0 : f64, latency_us = 1.0 : f64}
// CHECK: place.tier @wan {{{.*}}per_node}
place.tier @wan {bandwidth_gbps = 400.0 : f64, latency_us = 10000.0 : f64, per_node}
place.tier @ib {bandwidth_gbps = 400.0 : f64, latency_us = 5.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
// CHECK: place.cluster @c device @h100 axes [#place.axis<"dc", 2, @wan>, #place.axis<"node", 4, @ib>, #place.axis<"gpu", 8, @nvlink4>]
place.cluster @c device @h100 axes [#place.axis<"dc", 2, @wan>, #place.axis<"node", 4, @ib>, #place.axis<"gpu", 8, @nvlink4>]
// Datacenters of three cells and one.
// CHECK: place.cluster @cells device @h100 axes [#place.axis<"dc", 4, @wan>, #place.axis<"node", 4, @ib>, #place.axis<"gpu", 8, @nvlink4>] {cell_dc = array<i32: 0, 0, 0, 1>}
place.cluster @cells device @h100 axes [#place.axis<"dc", 4, @wan>, #place.axis<"node", 4, @ib>, #place.axis<"gpu", 8, @nvlink4>] {cell_dc = array<i32: 0, 0, 0, 1>}
// CHECK: place.mesh @m of @c axes [#place.laxis<pp = dc:2>, #place.laxis<dp = node:4 * gpu:2>, #place.laxis<ep = gpu:2>, #place.laxis<tp = gpu:2>]
place.mesh @m of @c axes [#place.laxis<pp = dc:2>, #place.laxis<dp = node:4 * gpu:2>, #place.laxis<ep = gpu:2>, #place.laxis<tp = gpu:2>]

// CHECK-LABEL: place.model @moe mesh @m
// CHECK-SAME: v_shape
// CHECK-SAME: virtual_stages = 2
place.model @moe mesh @m attributes {vocab = 32000 : i64, hidden = 4096 : i64, seq_len = 4096 : i64, global_batch = 64 : i64, micro_batch = 2 : i64, virtual_stages = 2 : i64, pipeline_axis = "pp", dtype = "bf16", v_shape} {
  // CHECK: place.embedding "embedding" {{.*}}placement = #place.placement<params [tp: sharded(vocab)], optim [tp: sharded(vocab), dp: sharded(flat), ep: sharded(flat)], grads [tp: sharded(vocab)], acts [dp: sharded(batch), ep: sharded(batch)], reduce [dp, ep]>
  place.embedding "embedding" {params = 131072000 : i64, fwd_flops = 0 : i64, stage = 0 : i64, vocab = 32000 : i64, hidden = 4096 : i64,
    placement = #place.placement<params [tp: sharded(vocab)], optim [tp: sharded(vocab), dp: sharded(flat), ep: sharded(flat)], grads [tp: sharded(vocab)], acts [dp: sharded(batch), ep: sharded(batch)], reduce [dp, ep]>}
  // CHECK: place.attention "layers.0.attention" {{.*}}kv_lora_rank = 512 : i64{{.*}}placement = #place.placement<params [tp: sharded(heads), dp: sharded_with_gather(flat), ep: sharded_with_gather(flat)], {{.*}}acts [dp: sharded(batch), ep: sharded(batch), tp: sharded(seq)] materialized, reduce [dp, ep]>
  place.attention "layers.0.attention" {params = 1000 : i64, fwd_flops = 2000 : i64, stage = 0 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 128 : i64, q_lora_rank = 1536 : i64, kv_lora_rank = 512 : i64, rope_head_dim = 64 : i64, v_head_dim = 128 : i64,
    placement = #place.placement<params [tp: sharded(heads), dp: sharded_with_gather(flat), ep: sharded_with_gather(flat)], optim [tp: sharded(heads), dp: sharded(flat), ep: sharded(flat)], grads [tp: sharded(heads), dp: sharded(flat), ep: sharded(flat)], acts [dp: sharded(batch), ep: sharded(batch), tp: sharded(seq)] materialized, reduce [dp, ep]>}
  // CHECK: place.moe "layers.0.moe" {{.*}}placement = #place.placement<params [ep: sharded(experts), tp: sharded(ffn)], optim [ep: sharded(experts), tp: sharded(ffn), dp: sharded(flat)] offloaded, grads [ep: sharded(experts), tp: sharded(ffn)], acts [dp: sharded(batch), ep: sharded(batch)] selective, reduce [dp]>
  place.moe "layers.0.moe" {params = 1000 : i64, fwd_flops = 2000 : i64, stage = 1 : i64, layer = 0 : i64, experts = 8 : i64, top_k = 2 : i64, shared_experts = 0 : i64, ffn = 14336 : i64, activation = "swiglu",
    placement = #place.placement<params [ep: sharded(experts), tp: sharded(ffn)], optim [ep: sharded(experts), tp: sharded(ffn), dp: sharded(flat)] offloaded, grads [ep: sharded(experts), tp: sharded(ffn)], acts [dp: sharded(batch), ep: sharded(batch)] selective, reduce [dp]>}
  // CHECK: place.mlp "layers.1.mlp" {{.*}}stage = 2
  place.mlp "layers.1.mlp" {params = 1000 : i64, fwd_flops = 2000 : i64, stage = 2 : i64, layer = 1 : i64, ffn = 14336 : i64, activation = "swiglu"}
  // CHECK: place.head "head" {{.*}}tied
  place.head "head" {params = 4096 : i64, fwd_flops = 2000 : i64, stage = 3 : i64, vocab = 32000 : i64, hidden = 4096 : i64, tied}
}

// An unplaced model needs no mesh.
// CHECK-LABEL: place.model @bare attributes
place.model @bare attributes {vocab = 100 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 8 : i64, micro_batch = 1 : i64, dtype = "fp32"} {
  // CHECK: place.embedding "embedding"
  place.embedding "embedding" {params = 6400 : i64, fwd_flops = 0 : i64, vocab = 100 : i64, hidden = 64 : i64}
}

// A cluster of two kinds of node: each node group names its device, GPUs per
// node and tiers; the axes take the slowest tiers. The model runs its two
// pipeline positions on the pp ranks in reverse order, and says which device
// each position runs on.
// CHECK-LABEL: place.device @a100
place.device @a100 {peak_tflops = 312.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 2039.0 : f64, kind = "a100-80g"}
place.tier @nvlink3 {bandwidth_gbps = 2400.0 : f64, latency_us = 1.0 : f64}
place.tier @ib200 {bandwidth_gbps = 200.0 : f64, latency_us = 5.0 : f64}
// CHECK: place.cluster @mixed axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nvlink3>] groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nvlink3, inter_node = @ib200>, #place.nodes<count = 2, device = @h100, gpus_per_node = 8, intra_node = @nvlink4, inter_node = @ib>]
place.cluster @mixed axes [#place.axis<"node", 4, @ib200>, #place.axis<"gpu", 8, @nvlink3>]
    groups [#place.nodes<count = 2, device = @a100, gpus_per_node = 8, intra_node = @nvlink3, inter_node = @ib200>,
            #place.nodes<device = @h100, count = 2, intra_node = @nvlink4, inter_node = @ib, gpus_per_node = 8>]
place.mesh @mixed_mesh of @mixed axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:8>]
// CHECK-LABEL: place.model @on_mixed mesh @mixed_mesh
// CHECK-SAME: pipeline_devices = [@h100, @a100], pipeline_ranks = array<i64: 1, 0>
place.model @on_mixed mesh @mixed_mesh attributes {vocab = 100 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16", pipeline_axis = "pp", pipeline_ranks = array<i64: 1, 0>, pipeline_devices = [@h100, @a100]} {
  place.embedding "embedding" {params = 6400 : i64, fwd_flops = 0 : i64, stage = 0 : i64, vocab = 100 : i64, hidden = 64 : i64}
  place.head "head" {params = 6400 : i64, fwd_flops = 12800 : i64, stage = 1 : i64, vocab = 100 : i64, hidden = 64 : i64}
}
