// RUN: loom-opt %s --place-apply-strategy="dp=4 tp=4 pp=2 zero=1 recompute=selective sp=true" --mlir-print-local-scope | FileCheck %s --check-prefix=TP
// RUN: loom-opt %s --place-apply-strategy="dp=8 ep=4 tp=2 pp=2 zero=3 mbs=2 recompute=full" --mlir-print-local-scope | FileCheck %s --check-prefix=EP
// RUN: loom-opt %s --place-apply-strategy="dp=2 cp=2 tp=8 zero=2" --mlir-print-local-scope | FileCheck %s --check-prefix=CP
// RUN: loom-opt %s --place-apply-strategy="dp=4 tp=4 pp=2 vpp=2" --mlir-print-local-scope | FileCheck %s --check-prefix=VPP
// RUN: not loom-opt %s --place-apply-strategy="dp=4 tp=4" 2>&1 | FileCheck %s --check-prefix=RANKS
// RUN: not loom-opt %s --place-apply-strategy="dp=4 ep=3 tp=8" 2>&1 | FileCheck %s --check-prefix=EPDIV
// RUN: not loom-opt %s --place-apply-strategy="dp=32 recompute=most" 2>&1 | FileCheck %s --check-prefix=RECOMP
// RUN: loom-opt %s --place-apply-strategy="dp=4 tp=4 pp=2 stage-layers=1,3" --mlir-print-local-scope | FileCheck %s --check-prefix=UNEVEN
// RUN: not loom-opt %s --place-apply-strategy="dp=4 tp=4 pp=2 stage-layers=1,2" 2>&1 | FileCheck %s --check-prefix=UNEVENSUM
// RUN: not loom-opt %s --place-apply-strategy="dp=4 tp=4 pp=2 vpp=2 stage-layers=1,3" 2>&1 | FileCheck %s --check-prefix=VPPCOUNT
// RUN: loom lower --model llama3-8b --cluster dgx-h100:nodes=1 --emit-mlir | loom-opt --place-apply-strategy="dp=2 tp=2 pp=2 vpp=2 stage-layers=7,8,8,9" | FileCheck %s --check-prefix=VPPSPLIT
// RUN: not loom-opt %s --place-apply-strategy="dp=32 order=sideways" 2>&1 | FileCheck %s --check-prefix=ORDER
// RUN: loom-opt %s --place-apply-strategy="dp=4 tp=4 pp=2 order=dp-outer" --mlir-print-local-scope | FileCheck %s --check-prefix=DPOUT
// RUN: not loom-opt %s --place-apply-strategy="dp=4 pp=8" 2>&1 | FileCheck %s --check-prefix=LAYERS
// RUN: not loom-opt %s --place-apply-strategy="dp=2 tp=16" 2>&1 | FileCheck %s --check-prefix=KV
// RUN: loom-opt %s --place-apply-strategy="dp=4 tp=4 pp=2 pipeline-ranks=1,0" | FileCheck %s --check-prefix=RANKORDER
// RUN: not loom-opt %s --place-apply-strategy="dp=4 tp=4 pp=2 pipeline-ranks=1,1" 2>&1 | FileCheck %s --check-prefix=RANKPERM
// RUN: loom-opt %s --place-apply-strategy="dp=4 tp=4 pp=2 vpp=2 v-shape=true" --mlir-print-local-scope | FileCheck %s --check-prefix=VSHAPE
// RUN: not loom-opt %s --place-apply-strategy="dp=4 tp=4 pp=2 v-shape=true" 2>&1 | FileCheck %s --check-prefix=VSHAPEVPP
// RUN: loom lower --model llama3-8b --cluster %inputs/mixed-a100-h100.yaml --emit-mlir | loom-opt --place-apply-strategy="dp=32 pp=2 cp=2 zero=1 mbs=2 stage-layers=26,6 pipeline-ranks=1,0" | FileCheck %s --check-prefix=MIXED
// RUN: loom lower --model llama3-8b --cluster %inputs/mixed-a100-h100.yaml --emit-mlir | loom-opt --place-apply-strategy="dp=4 tp=8 pp=4 order=dp-outer" | FileCheck %s --check-prefix=MIXEDSPAN

// A 4-node x 8-GPU cluster and a 4-layer model whose last layer is an MoE.
place.tier @nvlink4 {bandwidth_gbps = 3600.0 : f64, latency_us = 1.0 : f64}
place.tier @ib {bandwidth_gbps = 400.0 : f64, latency_us = 5.0 : f64}
place.device @h100 {peak_tflops = 989.0 : f64, hbm_gib = 80.0 : f64, hbm_gbytes_per_s = 3350.0 : f64}
place.cluster @c device @h100 axes [#place.axis<"node", 4, @ib>, #place.axis<"gpu", 8, @nvlink4>]
place.model @tiny attributes {vocab = 32000 : i64, hidden = 4096 : i64, seq_len = 4096 : i64, global_batch = 64 : i64, micro_batch = 1 : i64, dtype = "bf16"} {
  place.embedding "embedding" {params = 131072000 : i64, fwd_flops = 0 : i64, vocab = 32000 : i64, hidden = 4096 : i64}
  place.attention "layers.0.attention" {params = 1000 : i64, fwd_flops = 2000 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 128 : i64}
  place.mlp "layers.0.mlp" {params = 1000 : i64, fwd_flops = 2000 : i64, layer = 0 : i64, ffn = 14336 : i64, activation = "swiglu"}
  place.attention "layers.1.attention" {params = 1000 : i64, fwd_flops = 2000 : i64, layer = 1 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 128 : i64}
  place.mlp "layers.1.mlp" {params = 1000 : i64, fwd_flops = 2000 : i64, layer = 1 : i64, ffn = 14336 : i64, activation = "swiglu"}
  place.attention "layers.2.attention" {params = 1000 : i64, fwd_flops = 2000 : i64, layer = 2 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 128 : i64}
  place.mlp "layers.2.mlp" {params = 1000 : i64, fwd_flops = 2000 : i64, layer = 2 : i64, ffn = 14336 : i64, activation = "swiglu"}
  place.attention "layers.3.attention" {params = 1000 : i64, fwd_flops = 2000 : i64, layer = 3 : i64, heads = 32 : i64, kv_heads = 8 : i64, head_dim = 128 : i64}
  place.moe "layers.3.moe" {params = 1000 : i64, fwd_flops = 2000 : i64, layer = 3 : i64, experts = 8 : i64, top_k = 2 : i64, shared_experts = 0 : i64, ffn = 1024 : i64, activation = "swiglu"}
  place.head "head" {params = 1000 : i64, fwd_flops = 2000 : i64, vocab = 32000 : i64, hidden = 4096 : i64}
}

// tp takes half of the NVLink domain, dp the other half and two nodes, pp the rest.
// TP: place.mesh @mesh of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2 * gpu:2>, #place.laxis<tp = gpu:4>]
// TP-LABEL: place.model @tiny mesh @mesh
// TP-SAME: pipeline_axis = "pp"
// TP: place.embedding "embedding" {{.*}}placement = #place.placement<params [tp: sharded(vocab)], optim [tp: sharded(vocab), dp: sharded(flat)], grads [tp: sharded(vocab)], acts [dp: sharded(batch), tp: sharded(seq)] selective, reduce [dp]>, stage = 0
// TP: place.attention "layers.0.attention" {{.*}}placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads), dp: sharded(flat)], grads [tp: sharded(heads)], acts [dp: sharded(batch), tp: sharded(seq)] selective, reduce [dp]>, stage = 0
// TP: place.mlp "layers.1.mlp" {{.*}}sharded(ffn){{.*}}stage = 0
// TP: place.attention "layers.2.attention" {{.*}}stage = 1
// TP: place.head "head" {{.*}}stage = 1

// Experts shard over ep inside dp; dense layers reduce over dp and ep, experts over dp only.
// EP: place.mesh @mesh of @c axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:2>, #place.laxis<ep = gpu:4>, #place.laxis<tp = gpu:2>]
// EP: place.model @tiny mesh @mesh {{.*}}micro_batch = 2
// EP: place.attention "layers.0.attention" {{.*}}placement = #place.placement<params [tp: sharded(heads), dp: sharded_with_gather(flat), ep: sharded_with_gather(flat)], optim [tp: sharded(heads), dp: sharded(flat), ep: sharded(flat)], grads [tp: sharded(heads), dp: sharded(flat), ep: sharded(flat)], acts [dp: sharded(batch), ep: sharded(batch)] materialized, reduce [dp, ep]>
// EP: place.moe "layers.3.moe" {{.*}}placement = #place.placement<params [ep: sharded(experts), tp: sharded(ffn), dp: sharded_with_gather(flat)], optim [ep: sharded(experts), tp: sharded(ffn), dp: sharded(flat)], grads [ep: sharded(experts), tp: sharded(ffn), dp: sharded(flat)], acts [dp: sharded(batch), ep: sharded(batch)] materialized, reduce [dp]>

// Context parallelism shards the sequence and joins the gradient reduction.
// CP: place.mesh @mesh of @c axes [#place.laxis<dp = node:2>, #place.laxis<cp = node:2>, #place.laxis<tp = gpu:8>]
// CP-NOT: pipeline_axis
// CP: place.attention "layers.0.attention" {{.*}}placement = #place.placement<params [tp: sharded(heads)], optim [tp: sharded(heads), dp: sharded(flat), cp: sharded(flat)], grads [tp: sharded(heads), dp: sharded(flat), cp: sharded(flat)], acts [dp: sharded(batch), cp: sharded(seq)], reduce [dp, cp]>
// CP-NOT: stage =

// Two virtual stages per pipeline rank: 4 stages, one layer each.
// VPP: place.model @tiny mesh @mesh {{.*}}virtual_stages = 2
// VPP: place.embedding {{.*}}stage = 0
// VPP: place.mlp "layers.0.mlp" {{.*}}stage = 0
// VPP: place.mlp "layers.1.mlp" {{.*}}stage = 1
// VPP: place.mlp "layers.2.mlp" {{.*}}stage = 2
// VPP: place.moe "layers.3.moe" {{.*}}stage = 3
// VPP: place.head {{.*}}stage = 3

// RANKS: place-apply-strategy: tp=4 x cp=1 x ep=1 x dp=4 x pp=1 = 16 ranks, but the cluster has 32 GPUs
// A product past 2^64 is reported, not wrapped around (it read 0 ranks).
// RUN: not loom-opt %s --place-apply-strategy="dp=16777216 tp=16777216 pp=65536" 2>&1 | FileCheck %s --check-prefix=HUGE
// HUGE: tp=16777216 x cp=1 x ep=1 x dp=16777216 x pp=65536 = more than 4611686018427387904 ranks, but the cluster has 32 GPUs
// EPDIV: place-apply-strategy: ep=3 must divide dp=4 (experts shard over part of the data-parallel ranks)
// RECOMP: place-apply-strategy: recompute='most' must be none, selective or full
// An uneven split: one layer on the first stage, three on the second.
// UNEVEN: place.mlp "layers.0.mlp" {{.*}}stage = 0
// UNEVEN: place.attention "layers.1.attention" {{.*}}stage = 1
// UNEVEN: place.moe "layers.3.moe" {{.*}}stage = 1
// UNEVENSUM: place-apply-strategy: stage-layers add up to 3 but model 'tiny' has 4 layers
// VPPCOUNT: place-apply-strategy: stage-layers needs one count per pipeline stage (pp x vpp = 4), got 2 counts
// Interleaved virtual stages of 7, 8, 8 and 9 layers: stage s on rank s mod 2.
// VPPSPLIT: place.attention "layers.6.attention" {{.*}}stage = 0
// VPPSPLIT: place.attention "layers.7.attention" {{.*}}stage = 1
// VPPSPLIT: place.attention "layers.22.attention" {{.*}}stage = 2
// VPPSPLIT: place.attention "layers.23.attention" {{.*}}stage = 3
// VPPSPLIT: place.head {{.*}}stage = 3
// ORDER: place-apply-strategy: order='sideways' must be pp-outer or dp-outer
// Data parallelism outside the pipeline: each pipeline lives in one node.
// DPOUT: place.mesh @mesh of @c axes [#place.laxis<dp = node:4>, #place.laxis<pp = gpu:2>, #place.laxis<tp = gpu:4>]
// LAYERS: place-apply-strategy: pp x vpp = 8 stages but model 'tiny' has 4 layers
// KV: error: 'place.attention' op kv_heads (8) are not divisible by axis 'tp' of size 16

// The pipeline positions on the pp ranks in reverse order; one kind of node,
// so no device is named per position.
// RANKORDER: place.model @tiny mesh @mesh attributes {{{.*}}pipeline_axis = "pp", pipeline_ranks = array<i64: 1, 0>
// RANKORDER-NOT: pipeline_devices
// RANKPERM: place-apply-strategy: pipeline-ranks must be a permutation of the pp=2 ranks 0 to 1, got 1, 1
// The layers take the same four stages as interleaving; the model says the
// stages fold into a V (stage 3, with the head, on position 0).
// VSHAPE: place.model @tiny mesh @mesh {{.*}}v_shape, virtual_stages = 2
// VSHAPE: place.head {{.*}}stage = 3
// VSHAPEVPP: place-apply-strategy: v-shape folds two stages per pipeline rank into a V: it needs pp > 1 and vpp=2, got pp=2 vpp=1
// A100 and H100 nodes: the first stage (26 layers and the embedding) on the
// H100 rank, the last (6 layers and the head) on the A100 rank.
// MIXED: place.mesh @mesh of @mixed_a100_h100 axes [#place.laxis<pp = node:2>, #place.laxis<dp = node:8 * gpu:4>, #place.laxis<cp = gpu:2>]
// MIXED: place.model @llama3_8b mesh @mesh attributes {{{.*}}pipeline_axis = "pp", pipeline_devices = [@h100_sxm, @a100_80g], pipeline_ranks = array<i64: 1, 0>
// MIXED: place.attention "layers.25.attention" {{.*}}stage = 0
// MIXED: place.attention "layers.26.attention" {{.*}}stage = 1
// Data parallelism outside the pipeline: every pp rank has nodes of both
// kinds, so no position names a device.
// MIXEDSPAN: place.mesh @mesh of @mixed_a100_h100 axes [#place.laxis<dp = node:4>, #place.laxis<pp = node:4>, #place.laxis<tp = gpu:8>]
// MIXEDSPAN-NOT: pipeline_devices
// MIXEDSPAN: place.model @llama3_8b mesh @mesh attributes {{{.*}}pipeline_axis = "pp"
// MIXEDSPAN-NOT: pipeline_devices
