//===- DType.cpp - element type names across formats ----------------------===//
#include "loom/Checkpoint/DType.h"

#include "llvm/ADT/APFloat.h"
#include "llvm/Support/ErrorHandling.h"
#include <iterator>

using namespace loom::ckpt;

namespace {
struct DTypeInfo {
  DType dtype;
  unsigned size;
  const char *safetensors;
  const char *torchStorage;
  const char *torchDType;
};

// Order matches the enum so lookups by dtype index directly.
constexpr DTypeInfo kDTypes[] = {
    {DType::Bool, 1, "BOOL", "BoolStorage", "bool"},
    {DType::UInt8, 1, "U8", "ByteStorage", "uint8"},
    {DType::Int8, 1, "I8", "CharStorage", "int8"},
    {DType::Int16, 2, "I16", "ShortStorage", "int16"},
    {DType::Int32, 4, "I32", "IntStorage", "int32"},
    {DType::Int64, 8, "I64", "LongStorage", "int64"},
    {DType::Float16, 2, "F16", "HalfStorage", "float16"},
    {DType::BFloat16, 2, "BF16", "BFloat16Storage", "bfloat16"},
    {DType::Float32, 4, "F32", "FloatStorage", "float32"},
    {DType::Float64, 8, "F64", "DoubleStorage", "float64"},
};

const DTypeInfo &info(DType dtype) {
  auto index = static_cast<size_t>(dtype);
  if (index >= std::size(kDTypes))
    llvm_unreachable("DType outside the table");
  return kDTypes[index];
}
} // namespace

unsigned loom::ckpt::dtypeSize(DType dtype) { return info(dtype).size; }

const llvm::fltSemantics *loom::ckpt::floatSemantics(DType dtype) {
  switch (dtype) {
  case DType::Float16:
    return &llvm::APFloat::IEEEhalf();
  case DType::BFloat16:
    return &llvm::APFloat::BFloat();
  case DType::Float32:
    return &llvm::APFloat::IEEEsingle();
  case DType::Float64:
    return &llvm::APFloat::IEEEdouble();
  default:
    return nullptr;
  }
}

llvm::StringRef loom::ckpt::safetensorsName(DType dtype) { return info(dtype).safetensors; }

llvm::StringRef loom::ckpt::torchStorageName(DType dtype) { return info(dtype).torchStorage; }

llvm::StringRef loom::ckpt::torchDTypeName(DType dtype) { return info(dtype).torchDType; }

std::optional<DType> loom::ckpt::dtypeFromTorchName(llvm::StringRef name) {
  for (const DTypeInfo &entry : kDTypes)
    if (name == entry.torchDType)
      return entry.dtype;
  return std::nullopt;
}

std::optional<DType> loom::ckpt::dtypeFromSafetensors(llvm::StringRef name) {
  for (const DTypeInfo &entry : kDTypes)
    if (name == entry.safetensors)
      return entry.dtype;
  return std::nullopt;
}

std::optional<DType> loom::ckpt::dtypeFromTorchStorage(llvm::StringRef name) {
  for (const DTypeInfo &entry : kDTypes)
    if (name == entry.torchStorage)
      return entry.dtype;
  return std::nullopt;
}
