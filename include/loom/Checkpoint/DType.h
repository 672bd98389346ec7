//===- DType.h - element types of checkpoint tensors ------------*- C++ -*-===//
//
// The element types loom reads and writes, with their names in each format:
// safetensors ("BF16"), torch storage classes ("BFloat16Storage") and torch dtypes
// ("bfloat16"). One table in DType.cpp serves every format so the names cannot drift.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_DTYPE_H
#define LOOM_CHECKPOINT_DTYPE_H

#include "llvm/ADT/StringRef.h"
#include <cstdint>
#include <optional>

namespace llvm {
struct fltSemantics;
} // namespace llvm

namespace loom::ckpt {

enum class DType : uint8_t {
  Bool,
  UInt8,
  Int8,
  Int16,
  Int32,
  Int64,
  Float16,
  BFloat16,
  Float32,
  Float64,
};

/// Bytes per element.
unsigned dtypeSize(DType dtype);

/// The IEEE-style format of a floating-point dtype (for llvm::APFloat), or null
/// for integers and bool.
const llvm::fltSemantics *floatSemantics(DType dtype);

/// "BF16", "F32", ... as the safetensors header spells them.
llvm::StringRef safetensorsName(DType dtype);
std::optional<DType> dtypeFromSafetensors(llvm::StringRef name);

/// "BFloat16Storage", "FloatStorage", ... (the class torch.save names in data.pkl).
llvm::StringRef torchStorageName(DType dtype);
std::optional<DType> dtypeFromTorchStorage(llvm::StringRef name);

/// "bfloat16", "float32", ... (torch.<name> dtype objects).
llvm::StringRef torchDTypeName(DType dtype);
std::optional<DType> dtypeFromTorchName(llvm::StringRef name);

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_DTYPE_H
