// RUN: loom-opt %s -split-input-file -verify-diagnostics

// One case per rule of the ckpt dialect. The program-level rule that matters
// most: every element of every declared output tensor is written exactly once.

ckpt.program source "in" output "out" {
  ckpt.output @o0 "x.pt" format "torch" {
    // expected-error @below {{'t': 4 of 8 elements are never written}}
    ckpt.tensor "t" : tensor<4x2xf32>
  }
  %0 = ckpt.zeros : tensor<2x2xf32>
  ckpt.write %0 to @o0 "t" at [0, 0] : tensor<2x2xf32>
  ckpt.commit @o0
}

// -----

ckpt.program source "in" output "out" {
  ckpt.output @o0 "x.pt" format "torch" {
    ckpt.tensor "t" : tensor<4x2xf32>
  }
  %0 = ckpt.zeros : tensor<3x2xf32>
  // expected-note @below {{the earlier write}}
  ckpt.write %0 to @o0 "t" at [0, 0] : tensor<3x2xf32>
  %1 = ckpt.zeros : tensor<2x2xf32>
  // expected-error @below {{writes elements of 't' that another write already wrote}}
  ckpt.write %1 to @o0 "t" at [2, 0] : tensor<2x2xf32>
  ckpt.commit @o0
}

// -----

ckpt.program source "in" output "out" {
  ckpt.output @o0 "x.pt" format "torch" {
    ckpt.tensor "t" : tensor<4x2xf32>
  }
  %0 = ckpt.zeros : tensor<2x2xf32>
  // expected-error @below {{dimension 0 of 't': [3, 5) is outside its 4}}
  ckpt.write %0 to @o0 "t" at [3, 0] : tensor<2x2xf32>
  ckpt.commit @o0
}

// -----

ckpt.program source "in" output "out" {
  ckpt.output @o0 "x.pt" format "torch" {
    ckpt.tensor "t" : tensor<2xf32>
  }
  %0 = ckpt.zeros : tensor<2xbf16>
  // expected-error @below {{writes a 'tensor<2xbf16>' into 't' declared 'tensor<2xf32>'}}
  ckpt.write %0 to @o0 "t" at [0] : tensor<2xbf16>
  ckpt.commit @o0
}

// -----

ckpt.program source "in" output "out" {
  ckpt.output @o0 "x.pt" format "torch" {
    ckpt.tensor "t" : tensor<2xf32>
  }
  %0 = ckpt.zeros : tensor<2xf32>
  // expected-error @below {{writes 'u', which @o0 does not declare}}
  ckpt.write %0 to @o0 "u" at [0] : tensor<2xf32>
  ckpt.commit @o0
}

// -----

ckpt.program source "in" output "out" {
  ckpt.output @o0 "x.pt" format "torch" {
    ckpt.tensor "t" : tensor<2xf32>
  }
  %0 = ckpt.zeros : tensor<2xf32>
  ckpt.commit @o0
  // expected-error @below {{writes into @o0 after it was committed}}
  ckpt.write %0 to @o0 "t" at [0] : tensor<2xf32>
}

// -----

ckpt.program source "in" output "out" {
  // expected-error @below {{is never committed}}
  ckpt.output @o0 "x.pt" format "torch" {
  }
}

// -----

ckpt.program source "in" output "out" {
  ckpt.output @o0 "x.pt" format "torch" {
  }
  ckpt.commit @o0
  // expected-error @below {{commits @o0 a second time}}
  ckpt.commit @o0
}

// -----

ckpt.program source "in" output "out" {
  ckpt.output @o0 "x.pt" format "torch" {
  }
  // expected-error @below {{refers to @o0, which is not a ckpt.source here}}
  %0 = ckpt.read @o0 "t" : tensor<2xf32>
  ckpt.commit @o0
}

// -----

ckpt.program source "in" output "out" {
  // expected-error @below {{path '../x.pt' leaves the program's root through '..'}}
  ckpt.source @s0 "../x.pt" format "torch"
}

// -----

ckpt.program source "in" output "out" {
  // expected-error @below {{path '/etc/x' must be relative to the program's root}}
  ckpt.output @o0 "/etc/x" format "torch" {
  }
  ckpt.commit @o0
}

// -----

ckpt.program source "in" output "out" {
  // expected-error @below {{unknown source format 'pickle'}}
  ckpt.source @s0 "x.pt" format "pickle"
}

// -----

ckpt.program source "in" output "out" {
  ckpt.output @o0 "x.pt" format "torch" {
    ckpt.tensor "t" : tensor<2xf32>
    // expected-error @below {{declares 't' twice}}
    ckpt.tensor "t" : tensor<2xf32>
  }
  ckpt.commit @o0
}

// -----

ckpt.program source "in" output "out" {
  ckpt.output @o0 "x.txt" format "text" meta "hello" {
    // expected-error @below {{declares a tensor in a text file}}
    ckpt.tensor "t" : tensor<2xf32>
  }
  ckpt.commit @o0
}

// -----

ckpt.program source "in" output "out" {
  ckpt.output @o0 "x.pt" format "torch" {
    // expected-error @below {{element type 'complex<f32>' is not a checkpoint dtype}}
    ckpt.tensor "t" : tensor<2xcomplex<f32>>
  }
  ckpt.commit @o0
}

// -----

%0 = ckpt.zeros : tensor<4x2xf32>
// expected-error @below {{dimension 0: [3, 5) is outside the input's 4}}
%1 = ckpt.slice %0 [3, 0] : tensor<4x2xf32> to tensor<2x2xf32>

// -----

%0 = ckpt.zeros : tensor<4x2xf32>
// expected-error @below {{must keep the element type and the number of elements}}
%1 = ckpt.reshape %0 : tensor<4x2xf32> to tensor<6xf32>

// -----

%0 = ckpt.zeros : tensor<4xi32>
// expected-error @below {{converts floating-point tensors only}}
%1 = ckpt.cast %0 : tensor<4xi32> to tensor<4xf32>
