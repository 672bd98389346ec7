// Applying a strategy and deriving it back gives the same tuple.
// RUN: loom-opt %S/place-apply-strategy.mlir --place-apply-strategy="dp=4 tp=4 pp=2 zero=1 recompute=selective sp=true" --place-derive-strategy | FileCheck %s --check-prefix=RT1
// RUN: loom-opt %S/place-apply-strategy.mlir --place-apply-strategy="dp=8 ep=4 tp=2 pp=2 zero=3 mbs=2 recompute=full" --place-derive-strategy | FileCheck %s --check-prefix=RT2
// RUN: loom-opt %S/place-apply-strategy.mlir --place-apply-strategy="dp=2 cp=2 tp=8 zero=2" --place-derive-strategy | FileCheck %s --check-prefix=RT3
// RUN: loom-opt %S/place-apply-strategy.mlir --place-apply-strategy="dp=32" --place-derive-strategy | FileCheck %s --check-prefix=RT4
// RUN: loom-opt %S/place-apply-strategy.mlir --place-apply-strategy="dp=4 tp=2 pp=4 order=dp-outer" --place-derive-strategy | FileCheck %s --check-prefix=RT5
// RUN: loom-opt %s --place-derive-strategy -split-input-file -verify-diagnostics | FileCheck %s

// RT1: place.strategy = {cp = 1 : i64, dp = 4 : i64, ep = 1 : i64, mbs = 1 : i64, order = "pp-outer", pp = 2 : i64, recompute = "selective", sp = true, tp = 4 : i64, vpp = 1 : i64, zero = 1 : i64}
// RT2: place.strategy = {cp = 1 : i64, dp = 8 : i64, ep = 4 : i64, mbs = 2 : i64, order = "pp-outer", pp = 2 : i64, recompute = "full", sp = false, tp = 2 : i64, vpp = 1 : i64, zero = 3 : i64}
// RT3: place.strategy = {cp = 2 : i64, dp = 2 : i64, ep = 1 : i64, mbs = 1 : i64, order = "pp-outer", pp = 1 : i64, recompute = "none", sp = false, tp = 8 : i64, vpp = 1 : i64, zero = 2 : i64}
// RT4: place.strategy = {cp = 1 : i64, dp = 32 : i64, ep = 1 : i64, mbs = 1 : i64, order = "pp-outer", pp = 1 : i64, recompute = "none", sp = false, tp = 1 : i64, vpp = 1 : i64, zero = 0 : i64}
// RT5: place.mesh @mesh of @{{.*}} axes [#place.laxis<dp = {{.*}}>, #place.laxis<pp = {{.*}}>, #place.laxis<tp = {{.*}}>]
// RT5: order = "dp-outer", pp = 4 : i64

// Hand-written IR with unusual axis names derives by meaning, not by name:
// "model" shards heads (tensor parallel), "replica" holds data shards.
place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<replica = gpu:4>, #place.laxis<model = gpu:2>]
// CHECK: place.strategy = {cp = 1 : i64, dp = 4 : i64, ep = 1 : i64, mbs = 1 : i64, order = "pp-outer", pp = 1 : i64, recompute = "none", sp = false, tp = 2 : i64, vpp = 1 : i64, zero = 2 : i64}
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16"} {
  place.attention "a" {params = 10 : i64, fwd_flops = 10 : i64, layer = 0 : i64, heads = 4 : i64, kv_heads = 2 : i64, head_dim = 16 : i64,
    placement = #place.placement<params [model: sharded(heads)], optim [model: sharded(heads), replica: sharded(flat)], grads [model: sharded(heads), replica: sharded(flat)], acts [replica: sharded(batch)], reduce [replica]>}
}

// -----

// Layers that disagree on ZeRO cannot be described by one tuple.
place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"gpu", 8, @t>]
place.mesh @m of @c axes [#place.laxis<dp = gpu:8>]
place.model @x mesh @m attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16"} {
  place.mlp "a" {params = 10 : i64, fwd_flops = 10 : i64, layer = 0 : i64, ffn = 64 : i64, activation = "gelu",
    placement = #place.placement<params [], optim [dp: sharded(flat)], grads [], acts [dp: sharded(batch)], reduce [dp]>}
  // expected-error @below {{is placed unlike the layers before it}}
  place.mlp "b" {params = 10 : i64, fwd_flops = 10 : i64, layer = 1 : i64, ffn = 64 : i64, activation = "gelu",
    placement = #place.placement<params [], optim [], grads [], acts [dp: sharded(batch)], reduce [dp]>}
}

// -----

place.tier @t {bandwidth_gbps = 1.0 : f64, latency_us = 1.0 : f64}
place.device @d {peak_tflops = 1.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1.0 : f64}
place.cluster @c device @d axes [#place.axis<"gpu", 8, @t>]
// expected-error @below {{has no mesh to derive a strategy from}}
place.model @x attributes {vocab = 1000 : i64, hidden = 64 : i64, seq_len = 128 : i64, global_batch = 16 : i64, micro_batch = 1 : i64, dtype = "bf16"} {
  place.mlp "a" {params = 10 : i64, fwd_flops = 10 : i64, layer = 0 : i64, ffn = 64 : i64, activation = "gelu"}
}
