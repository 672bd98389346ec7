// RUN: loom-opt %s -split-input-file -ckpt-partition=ranks=2 -verify-diagnostics | FileCheck %s
// RUN: loom-opt %s -split-input-file -ckpt-partition=ranks=3 -verify-diagnostics | FileCheck %s --check-prefix=THREE

// Many files: whole files go to the rank with the fewest bytes so far, in the
// order the program commits them: b.pt (128 bytes) to rank 0, then a.pt (64),
// c.pt (32) and the text file (0) to rank 1, which has fewer bytes each time.
// On three ranks: b.pt, a.pt, c.pt to 0, 1, 2, and the text file to rank 2 (32
// bytes, the fewest).
// CHECK-LABEL: ckpt.program source "in" output "out" attributes {ckpt.ranks = 2 : i64}
// CHECK: ckpt.output @o0 "a.pt" format "torch" attributes {ckpt.rank = 1 : i64}
// CHECK: ckpt.output @o1 "b.pt" format "torch" attributes {ckpt.rank = 0 : i64}
// CHECK: ckpt.output @o2 "c.pt" format "torch" attributes {ckpt.rank = 1 : i64}
// CHECK: ckpt.output @o3 "latest.txt" format "text" meta "1" attributes {ckpt.rank = 1 : i64}
// THREE-LABEL: ckpt.program source "in" output "out" attributes {ckpt.ranks = 3 : i64}
// THREE: ckpt.output @o0 "a.pt" format "torch" attributes {ckpt.rank = 1 : i64}
// THREE: ckpt.output @o1 "b.pt" format "torch" attributes {ckpt.rank = 0 : i64}
// THREE: ckpt.output @o2 "c.pt" format "torch" attributes {ckpt.rank = 2 : i64}
// THREE: ckpt.output @o3 "latest.txt" format "text" meta "1" attributes {ckpt.rank = 2 : i64}
ckpt.program source "in" output "out" {
  ckpt.source @s0 "src.pt" format "torch"
  ckpt.output @o0 "a.pt" format "torch" {
    ckpt.tensor "x" : tensor<8x4xbf16>
  }
  ckpt.output @o1 "b.pt" format "torch" {
    ckpt.tensor "y" : tensor<16x4xbf16>
  }
  ckpt.output @o2 "c.pt" format "torch" {
    ckpt.tensor "z" : tensor<4x4xbf16>
  }
  ckpt.output @o3 "latest.txt" format "text" meta "1" {
  }
  %y = ckpt.read @s0 "y" : tensor<16x4xbf16>
  ckpt.write %y to @o1 "y" at [0, 0] : tensor<16x4xbf16>
  ckpt.commit @o1
  %x = ckpt.read @s0 "x" : tensor<8x4xbf16>
  ckpt.write %x to @o0 "x" at [0, 0] : tensor<8x4xbf16>
  ckpt.commit @o0
  %z = ckpt.read @s0 "z" : tensor<4x4xbf16>
  ckpt.write %z to @o2 "z" at [0, 0] : tensor<4x4xbf16>
  ckpt.commit @o2
  ckpt.commit @o3
}

// -----

// One universal file: its tensors are shared, in the order their last writes
// complete them.
// CHECK-LABEL: ckpt.program source "in" output "out.h5" attributes {ckpt.ranks = 2 : i64}
// CHECK: ckpt.tensor "p" : tensor<8x4xbf16> {ckpt.rank = 1 : i64}
// CHECK: ckpt.tensor "q" : tensor<16x4xbf16> {ckpt.rank = 0 : i64}
// CHECK: ckpt.tensor "r" : tensor<4x4xbf16> {ckpt.rank = 1 : i64}
ckpt.program source "in" output "out.h5" {
  ckpt.source @s0 "src.pt" format "torch"
  ckpt.output @u "." format "universal" {
    ckpt.tensor "p" : tensor<8x4xbf16>
    ckpt.tensor "q" : tensor<16x4xbf16>
    ckpt.tensor "r" : tensor<4x4xbf16>
  }
  %q = ckpt.read @s0 "q" : tensor<16x4xbf16>
  ckpt.write %q to @u "q" at [0, 0] : tensor<16x4xbf16>
  %p = ckpt.read @s0 "p" : tensor<8x4xbf16>
  ckpt.write %p to @u "p" at [0, 0] : tensor<8x4xbf16>
  %r = ckpt.read @s0 "r" : tensor<4x4xbf16>
  ckpt.write %r to @u "r" at [0, 0] : tensor<4x4xbf16>
  ckpt.commit @u
}

// -----

// One torch file cannot be shared.
// expected-error @+1 {{a program writing one file is shared over MPI ranks only when the file is loom's universal format}}
ckpt.program source "in" output "out.pt" {
  ckpt.source @s0 "src.pt" format "torch"
  ckpt.output @o "." format "torch" {
    ckpt.tensor "x" : tensor<8x4xbf16>
  }
  %x = ckpt.read @s0 "x" : tensor<8x4xbf16>
  ckpt.write %x to @o "x" at [0, 0] : tensor<8x4xbf16>
  ckpt.commit @o
}
