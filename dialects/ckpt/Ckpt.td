//===- Ckpt.td - checkpoint resharding programs ---------------*- tablegen -*-===//
//
// A `ckpt.program` is the universal-checkpoint resharding script: it names the
// files it reads (`ckpt.source`) and the files it writes (`ckpt.output`, which
// declares every tensor of the file), and moves bytes between them with tensor
// values that are views of the sources (`ckpt.read`, `ckpt.slice`,
// `ckpt.reshape`), converted (`ckpt.cast`) or made (`ckpt.zeros`, for padding),
// then placed into a declared output tensor (`ckpt.write`) until the file is
// complete (`ckpt.commit`). Regrouping a fused tensor (QKV per GQA group,
// SwiGLU's [gate; up]) and adding or stripping vocabulary padding are slices
// and writes at the right offsets.
//
// The program verifier proves the property a converter must have: every byte
// of every declared output tensor is written exactly once before its file is
// committed, with matching shapes and element types, and every read stays
// inside the source tensor it names (the runner checks each source tensor's
// real shape against the declared one when it opens the file).
//
//===----------------------------------------------------------------------===//

#ifndef LOOM_CKPT_TD
#define LOOM_CKPT_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/IR/BuiltinAttributes.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/IR/CommonTypeConstraints.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

def Ckpt_Dialect : Dialect {
  let name = "ckpt";
  let cppNamespace = "::loom::ckptir";
  let summary = "Checkpoint resharding programs over named tensors in files";
}

class Ckpt_Op<string mnemonic, list<Trait> traits = []>
    : Op<Ckpt_Dialect, mnemonic, traits>;

def Ckpt_ProgramOp : Ckpt_Op<"program", [SymbolTable, NoTerminator, SingleBlock,
                                         IsolatedFromAbove]> {
  let summary = "a resharding program: sources, outputs and the moves between them";
  let description = [{
    ```
    ckpt.program source "ckpt/megatron" output "out/megatron-tp1" {
      ckpt.source @s0 "iter_0000100/mp_rank_00_000/model_optim_rng.pt" format "torch"
      ckpt.output @o0 "iter_0000100/mp_rank_00/model_optim_rng.pt" format "torch-tree" meta "..." {
        ckpt.tensor "model.decoder.layers.0.mlp.linear_fc2.weight" : tensor<32x48xbf16>
      }
      %0 = ckpt.read @s0 "model.decoder.layers.0.mlp.linear_fc2.weight" : tensor<32x24xbf16>
      ckpt.write %0 to @o0 "model.decoder.layers.0.mlp.linear_fc2.weight" at [0, 0] : tensor<32x24xbf16>
      ...
      ckpt.commit @o0
    }
    ```
    `source` and `output` are the roots the file paths are relative to (a
    runner may be given others). Constraints, over the whole program: symbols
    are unique; every output is committed exactly once, after all its writes;
    the writes into each declared tensor tile it exactly (no byte twice, none
    missing).
  }];
  let arguments = (ins StrAttr:$source, StrAttr:$output);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "`source` $source `output` $output attr-dict-with-keyword $body";
  let hasRegionVerifier = 1;
  let extraClassDeclaration = [{
    mlir::Block *getBodyBlock() { return &getBody().front(); }
  }];
}

def Ckpt_SourceOp : Ckpt_Op<"source", [Symbol, HasParent<"ProgramOp">]> {
  let summary = "a file the program reads";
  let description = [{
    `format` says how keys are resolved: "torch" (a torch.save file; keys are
    the dotted paths of its tensors), "safetensors", "universal" (keys are
    parameter names, optimizer states as "<name>#exp_avg"), "dcp" (a DCP
    folder; keys are fully-qualified names). Constraints: a known format, a
    relative path without "..".
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, StrAttr:$path, StrAttr:$format);
  let assemblyFormat = "$sym_name $path `format` $format attr-dict";
  let hasVerifier = 1;
}

def Ckpt_OutputOp : Ckpt_Op<"output", [Symbol, HasParent<"ProgramOp">, NoTerminator,
                                       SingleBlock]> {
  let summary = "a file the program writes, with the tensors it will hold";
  let description = [{
    The body declares the file's tensors in file order (`ckpt.tensor`).
    `format`: "torch" (a state dict of the declared tensors), "torch-tree" (a
    torch.save file whose object tree `meta` gives as a JSON skeleton with the
    tensors at marked places: Megatron and DeepSpeed files), "safetensors",
    "dcp" (a PyTorch distributed-checkpoint folder; `meta` gives {"ranks": N},
    over which each tensor's rows are split, and {"config": text}, the model's
    config.json written in the folder), "universal" (`meta` gives the
    metadata) or "text" (no tensors; `meta` is the content).
    Constraints: a known format, a relative path without "..", keys unique,
    no tensors in a text file.
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, StrAttr:$path, StrAttr:$format,
                       DefaultValuedStrAttr<StrAttr, "">:$meta);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$sym_name $path `format` $format (`meta` $meta^)? attr-dict-with-keyword $body";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    mlir::Block *getBodyBlock() { return &getBody().front(); }
  }];
}

def Ckpt_TensorOp : Ckpt_Op<"tensor", [HasParent<"OutputOp">]> {
  let summary = "a tensor of an output file: its key, shape and element type";
  let arguments = (ins StrAttr:$key, TypeAttrOf<AnyStaticShapeTensor>:$type);
  let assemblyFormat = "$key `:` $type attr-dict";
}

def Ckpt_ReadOp : Ckpt_Op<"read", [HasParent<"ProgramOp">, Pure]> {
  let summary = "a whole source tensor, as a view of the file's bytes";
  let arguments = (ins FlatSymbolRefAttr:$source, StrAttr:$key);
  let results = (outs AnyStaticShapeTensor:$result);
  let assemblyFormat = "$source $key attr-dict `:` type($result)";
}

def Ckpt_SliceOp : Ckpt_Op<"slice", [Pure]> {
  let summary = "a box of a tensor: offsets here, sizes from the result type";
  let arguments = (ins AnyStaticShapeTensor:$input, DenseI64ArrayAttr:$offsets);
  let results = (outs AnyStaticShapeTensor:$result);
  let assemblyFormat = "$input $offsets attr-dict `:` type($input) `to` type($result)";
  let hasVerifier = 1;
}

def Ckpt_ReshapeOp : Ckpt_Op<"reshape", [Pure]> {
  let summary = "the same elements in row-major order under another shape";
  let description = [{
    How a ZeRO flat partition's range becomes a parameter's shape and back.
  }];
  let arguments = (ins AnyStaticShapeTensor:$input);
  let results = (outs AnyStaticShapeTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `to` type($result)";
  let hasVerifier = 1;
}

def Ckpt_CastOp : Ckpt_Op<"cast", [Pure]> {
  let summary = "converts floating-point elements (bf16, f16, f32, f64), same shape";
  let arguments = (ins AnyStaticShapeTensor:$input);
  let results = (outs AnyStaticShapeTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `to` type($result)";
  let hasVerifier = 1;
}

def Ckpt_ZerosOp : Ckpt_Op<"zeros", [Pure]> {
  let summary = "a tensor of zeros (padding rows, such as Megatron's vocabulary padding)";
  let results = (outs AnyStaticShapeTensor:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

def Ckpt_WriteOp : Ckpt_Op<"write", [HasParent<"ProgramOp">]> {
  let summary = "places a value into a declared output tensor at the given offsets";
  let arguments = (ins AnyStaticShapeTensor:$input, FlatSymbolRefAttr:$output, StrAttr:$key,
                       DenseI64ArrayAttr:$offsets);
  let assemblyFormat = "$input `to` $output $key `at` $offsets attr-dict `:` type($input)";
}

def Ckpt_CommitOp : Ckpt_Op<"commit", [HasParent<"ProgramOp">]> {
  let summary = "the output file is complete: write it out under its final name";
  let arguments = (ins FlatSymbolRefAttr:$output);
  let assemblyFormat = "$output attr-dict";
}

#endif // LOOM_CKPT_TD
