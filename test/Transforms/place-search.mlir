// place-search plans inside the pipeline exactly as `loom plan` does: the same
// strategy and step time from the IR as from the specs it was lowered from.
// RUN: loom lower --model %inputs/tiny.yaml --cluster %inputs/tiny.yaml --emit-mlir > %t.mlir
// RUN: loom-opt %t.mlir --place-search --place-derive-strategy --place-estimate | FileCheck %s --check-prefix=TINY
// RUN: loom-opt %t.mlir --place-search > %t.searched.mlir
// RUN: loom plan --model %inputs/tiny.yaml --cluster %inputs/tiny.yaml --top 1 --json > %t.plan.json
// RUN: %python -c "import json,re; p=json.load(open('%t.plan.json'))['plans'][0]; s=p['strategy']; ir=open('%t.searched.mlir').read(); m=re.search(r'strategy = \"([^\"]*)\"', ir).group(1); want='dp={} tp={} pp={} vpp={} ep={} cp={} zero={}'.format(s['dp'],s['tp'],s['pp'],s['vpp'],s['ep'],s['cp'],s['zero']); assert m.startswith(want), (m, want); t=float(re.search(r'step_time_s = ([0-9.e+-]+)', ir).group(1)); assert abs(t-p['estimate']['step_time_s'])<=1e-9*t, (t, p['estimate']); print('same plan')" | FileCheck %s --check-prefix=SAME
// Across two datacenters the search also chooses what crosses the WAN.
// RUN: loom lower --model llama3-8b --cluster dgx-h100:nodes=4,dcs=2,wan-gbps=100,wan-ms=20 --emit-mlir | loom-opt --place-search --place-derive-strategy | FileCheck %s --check-prefix=MULTIDC
// On A100 and H100 nodes it reads the node groups back and says which GPU
// type runs each stage: the H100 stages hold more layers. (Which pp rank runs
// which stage can differ between runs: the planner gives Z3 a time limit.)
// RUN: loom lower --model llama3-8b --cluster %inputs/mixed-a100-h100.yaml --emit-mlir | loom-opt --place-search > %t.mixed.mlir
// RUN: %python -c "import re,sys; ir=open(sys.argv[1]).read(); dev=re.search(r'pipeline_devices = \[([^]]*)\]', ir).group(1).split(', '); n=[0]*len(dev); [n.__setitem__(int(s)%len(dev), n[int(s)%len(dev)]+1) for s in re.findall(r'place.attention .*stage = ([0-9]+)', ir)]; a=[k for d,k in zip(dev,n) if d=='@a100_80g']; h=[k for d,k in zip(dev,n) if d=='@h100_sxm']; assert a and h and min(h) > max(a), (dev, n); print('H100 stages hold more layers')" %t.mixed.mlir | FileCheck %s --check-prefix=MIXED
// RUN: loom-opt %s --place-search -split-input-file -verify-diagnostics

// TINY: place.mesh @mesh of @two_nodes
// TINY: place.model @tiny_llama mesh @mesh
// TINY-SAME: place.estimate = {{{.*}}fits = true
// TINY-SAME: place.search = {evaluated = {{[1-9][0-9]*}} : i64
// TINY-SAME: place.strategy =
// SAME: same plan
// MIXED: H100 stages hold more layers
// MULTIDC: place.search = {{{.*}}strategy = "dp={{[0-9]+}} tp={{[1248]}} {{.*}} order={{(pp|dp)}}-outer"

// A model no strategy fits: the error names the closest plan and its memory,
// and a note each change that would make it fit (Llama 3 405B on one DGX H100:
// 16 times the nodes, as `loom plan` says).
// RUN: loom lower --model llama3-405b --cluster dgx-h100:nodes=1 --emit-mlir | not loom-opt --place-search 2>&1 >/dev/null | FileCheck %s --check-prefix=NOFIT
// NOFIT: error: 'place.model' op fits no strategy on this cluster: the closest
// NOFIT: note: it fits with 16 times the nodes, 128 GPUs ({{[0-9.]+}} GiB per GPU)
place.tier @t {bandwidth_gbps = 100.0 : f64, latency_us = 5.0 : f64}
place.device @d {peak_tflops = 100.0 : f64, hbm_gib = 1.0 : f64, hbm_gbytes_per_s = 1000.0 : f64, kind = "toy-1g"}
place.cluster @c device @d axes [#place.axis<"gpu", 2, @t>]
// expected-error @below {{fits no strategy on this cluster: the closest (dp=1 tp=2 pp=1}}
place.model @big attributes {vocab = 32000 : i64, hidden = 4096 : i64, seq_len = 4096 : i64, global_batch = 8 : i64, micro_batch = 1 : i64, dtype = "bf16"} {
  place.embedding "embedding" {params = 131072000 : i64, fwd_flops = 0 : i64, vocab = 32000 : i64, hidden = 4096 : i64}
  place.attention "layers.0.attention" {params = 67108864 : i64, fwd_flops = 1 : i64, layer = 0 : i64, heads = 32 : i64, kv_heads = 32 : i64, head_dim = 128 : i64}
  place.mlp "layers.0.mlp" {params = 176160768 : i64, fwd_flops = 1 : i64, layer = 0 : i64, ffn = 14336 : i64, activation = "swiglu"}
  place.head "head" {params = 131072000 : i64, fwd_flops = 1 : i64, vocab = 32000 : i64, hidden = 4096 : i64}
}

// -----

// expected-error @below {{expected one place.model and one place.cluster, found 0 and 0}}
module {
}
