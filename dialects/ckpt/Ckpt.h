//===- Ckpt.h - the checkpoint resharding dialect ---------------*- C++ -*-===//
//
// IR only: the ops of a resharding program (Ckpt.td) and the element-type mapping
// between MLIR types and checkpoint dtypes. lib/Reshard builds programs from two
// layouts and runs them.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_DIALECTS_CKPT_CKPT_H
#define LOOM_DIALECTS_CKPT_CKPT_H

#include "loom/Checkpoint/DType.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include <optional>

#include "ckpt/CkptDialect.h.inc"

#define GET_OP_CLASSES
#include "ckpt/CkptOps.h.inc"

namespace loom::ckptir {

/// The checkpoint dtype of an MLIR element type (bf16, f16, f32, f64, i1, i8, ui8,
/// i16, i32, i64), or nullopt.
std::optional<ckpt::DType> dtypeOf(mlir::Type elementType);
mlir::Type elementTypeOf(mlir::MLIRContext *context, ckpt::DType dtype);

/// Formats ckpt.source reads and ckpt.output writes.
bool isSourceFormat(llvm::StringRef format);
bool isOutputFormat(llvm::StringRef format);

} // namespace loom::ckptir

#endif // LOOM_DIALECTS_CKPT_CKPT_H
