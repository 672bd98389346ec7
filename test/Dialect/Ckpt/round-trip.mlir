// RUN: loom-opt %s | loom-opt | FileCheck %s

// A fused QKV of one GQA group regrouped from two files, a padded vocabulary
// and a cast: the ops print and parse back unchanged.

// CHECK-LABEL: ckpt.program source "in" output "out"
// CHECK: ckpt.source @s0 "a/model.pt" format "torch"
// CHECK: ckpt.output @o0 "b/model.pt" format "torch-tree" meta "{}"
// CHECK-NEXT: ckpt.tensor "qkv" : tensor<4x2xbf16>
// CHECK: %[[R:.*]] = ckpt.read @s0 "q" : tensor<4x2xbf16>
// CHECK: %[[S:.*]] = ckpt.slice %[[R]] [2, 0] : tensor<4x2xbf16> to tensor<2x2xbf16>
// CHECK: ckpt.write %[[S]] to @o0 "qkv" at [0, 0] : tensor<2x2xbf16>
// CHECK: ckpt.reshape {{.*}} : tensor<2x2xbf16> to tensor<4xbf16>
// CHECK: ckpt.cast {{.*}} : tensor<4xbf16> to tensor<4xf32>
// CHECK: ckpt.zeros : tensor<2x2xbf16>
// CHECK: ckpt.commit @o0
ckpt.program source "in" output "out" {
  ckpt.source @s0 "a/model.pt" format "torch"
  ckpt.source @s1 "a/other.safetensors" format "safetensors"
  ckpt.output @o0 "b/model.pt" format "torch-tree" meta "{}" {
    ckpt.tensor "qkv" : tensor<4x2xbf16>
    ckpt.tensor "flat" : tensor<4xf32>
  }
  %0 = ckpt.read @s0 "q" : tensor<4x2xbf16>
  %1 = ckpt.slice %0 [2, 0] : tensor<4x2xbf16> to tensor<2x2xbf16>
  ckpt.write %1 to @o0 "qkv" at [0, 0] : tensor<2x2xbf16>
  %2 = ckpt.reshape %1 : tensor<2x2xbf16> to tensor<4xbf16>
  %3 = ckpt.cast %2 : tensor<4xbf16> to tensor<4xf32>
  ckpt.write %3 to @o0 "flat" at [0] : tensor<4xf32>
  %4 = ckpt.zeros : tensor<2x2xbf16>
  ckpt.write %4 to @o0 "qkv" at [2, 0] : tensor<2x2xbf16>
  ckpt.commit @o0
}
