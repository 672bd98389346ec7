// RUN: loom-opt %s -ckpt-coalesce | FileCheck %s

// Three adjacent row blocks of one read land in order: one whole-tensor write.
// CHECK-LABEL: ckpt.output @o0
// CHECK: %[[A:.*]] = ckpt.read @s0 "a" : tensor<8x4xbf16>
// CHECK-NEXT: ckpt.write %[[A]] to @o0 "x" at [0, 0] : tensor<8x4xbf16>
// Out of order (gate/up interleaving): kept apart.
// CHECK: %[[B:.*]] = ckpt.read @s0 "b" : tensor<4x4xbf16>
// CHECK: ckpt.slice %[[B]] [0, 0] : tensor<4x4xbf16> to tensor<2x4xbf16>
// CHECK: ckpt.write {{.*}} to @o0 "y" at [0, 0]
// CHECK: ckpt.slice %[[B]] [2, 0] : tensor<4x4xbf16> to tensor<2x4xbf16>
// CHECK: ckpt.write {{.*}} to @o0 "y" at [4, 0]
// CHECK-COUNT-2: ckpt.zeros
// Neighbours along dim 1 merge into a 2x4 slice of a 2x8 read.
// CHECK: %[[C:.*]] = ckpt.read @s0 "c" : tensor<2x8xbf16>
// CHECK-NEXT: %[[S:.*]] = ckpt.slice %[[C]] [0, 0] : tensor<2x8xbf16> to tensor<2x4xbf16>
// CHECK-NEXT: ckpt.write %[[S]] to @o0 "z" at [0, 0] : tensor<2x4xbf16>
// CHECK-NEXT: ckpt.commit @o0
ckpt.program source "in" output "out" {
  ckpt.source @s0 "a.pt" format "torch"
  ckpt.output @o0 "x.pt" format "torch" {
    ckpt.tensor "x" : tensor<8x4xbf16>
    ckpt.tensor "y" : tensor<8x4xbf16>
    ckpt.tensor "z" : tensor<2x4xbf16>
  }
  %a = ckpt.read @s0 "a" : tensor<8x4xbf16>
  %a0 = ckpt.slice %a [0, 0] : tensor<8x4xbf16> to tensor<4x4xbf16>
  ckpt.write %a0 to @o0 "x" at [0, 0] : tensor<4x4xbf16>
  %a1 = ckpt.slice %a [4, 0] : tensor<8x4xbf16> to tensor<2x4xbf16>
  ckpt.write %a1 to @o0 "x" at [4, 0] : tensor<2x4xbf16>
  %a2 = ckpt.slice %a [6, 0] : tensor<8x4xbf16> to tensor<2x4xbf16>
  ckpt.write %a2 to @o0 "x" at [6, 0] : tensor<2x4xbf16>
  %b = ckpt.read @s0 "b" : tensor<4x4xbf16>
  %b0 = ckpt.slice %b [0, 0] : tensor<4x4xbf16> to tensor<2x4xbf16>
  ckpt.write %b0 to @o0 "y" at [0, 0] : tensor<2x4xbf16>
  %b1 = ckpt.slice %b [2, 0] : tensor<4x4xbf16> to tensor<2x4xbf16>
  ckpt.write %b1 to @o0 "y" at [4, 0] : tensor<2x4xbf16>
  %z = ckpt.zeros : tensor<2x4xbf16>
  ckpt.write %z to @o0 "y" at [2, 0] : tensor<2x4xbf16>
  %z2 = ckpt.zeros : tensor<2x4xbf16>
  ckpt.write %z2 to @o0 "y" at [6, 0] : tensor<2x4xbf16>
  %c = ckpt.read @s0 "c" : tensor<2x8xbf16>
  %c0 = ckpt.slice %c [0, 0] : tensor<2x8xbf16> to tensor<2x2xbf16>
  ckpt.write %c0 to @o0 "z" at [0, 0] : tensor<2x2xbf16>
  %c1 = ckpt.slice %c [0, 2] : tensor<2x8xbf16> to tensor<2x2xbf16>
  ckpt.write %c1 to @o0 "z" at [0, 2] : tensor<2x2xbf16>
  ckpt.commit @o0
}
