//===- Ckpt.cpp - the checkpoint resharding dialect ------------------------===//
#include "ckpt/Ckpt.h"

#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"

#include <map>

using namespace mlir;
using namespace loom::ckptir;
using loom::ckpt::DType;

#include "ckpt/CkptDialect.cpp.inc"

void CkptDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "ckpt/CkptOps.cpp.inc"
      >();
}

#define GET_OP_CLASSES
#include "ckpt/CkptOps.cpp.inc"

std::optional<DType> loom::ckptir::dtypeOf(Type type) {
  if (type.isBF16())
    return DType::BFloat16;
  if (type.isF16())
    return DType::Float16;
  if (type.isF32())
    return DType::Float32;
  if (type.isF64())
    return DType::Float64;
  if (type.isSignlessInteger(1))
    return DType::Bool;
  if (type.isUnsignedInteger(8))
    return DType::UInt8;
  if (type.isSignlessInteger(8))
    return DType::Int8;
  if (type.isSignlessInteger(16))
    return DType::Int16;
  if (type.isSignlessInteger(32))
    return DType::Int32;
  if (type.isSignlessInteger(64))
    return DType::Int64;
  return std::nullopt;
}

Type loom::ckptir::elementTypeOf(MLIRContext *context, DType dtype) {
  Builder b(context);
  switch (dtype) {
  case DType::Bool:
    return b.getI1Type();
  case DType::UInt8:
    return IntegerType::get(context, 8, IntegerType::Unsigned);
  case DType::Int8:
    return b.getI8Type();
  case DType::Int16:
    return b.getI16Type();
  case DType::Int32:
    return b.getI32Type();
  case DType::Int64:
    return b.getI64Type();
  case DType::Float16:
    return b.getF16Type();
  case DType::BFloat16:
    return b.getBF16Type();
  case DType::Float32:
    return b.getF32Type();
  case DType::Float64:
    return b.getF64Type();
  }
  return {};
}

bool loom::ckptir::isSourceFormat(llvm::StringRef format) {
  return llvm::is_contained({"torch", "safetensors", "universal", "dcp"}, format);
}
bool loom::ckptir::isOutputFormat(llvm::StringRef format) {
  return llvm::is_contained({"torch", "torch-tree", "safetensors", "dcp", "universal", "text"},
                            format);
}

/// A relative path that stays under the root: a script cannot read or write
/// outside the folders it is run on.
static LogicalResult checkPath(Operation *op, llvm::StringRef path) {
  if (path.empty() || path.starts_with("/"))
    return op->emitOpError("path '") << path << "' must be relative to the program's root";
  llvm::SmallVector<llvm::StringRef> parts;
  path.split(parts, '/');
  if (llvm::is_contained(parts, ".."))
    return op->emitOpError("path '") << path << "' leaves the program's root through '..'";
  return success();
}

static LogicalResult checkElementType(Operation *op, Type type) {
  auto tensor = cast<RankedTensorType>(type);
  if (!dtypeOf(tensor.getElementType()))
    return op->emitOpError("element type ") << tensor.getElementType()
                                            << " is not a checkpoint dtype (bf16, f16, f32, f64, "
                                               "i1, i8, ui8, i16, i32, i64)";
  return success();
}

LogicalResult SourceOp::verify() {
  if (!isSourceFormat(getFormat()))
    return emitOpError("unknown source format '")
           << getFormat() << "' (expected torch, safetensors, universal or dcp)";
  return checkPath(*this, getPath());
}

LogicalResult OutputOp::verify() {
  if (!isOutputFormat(getFormat()))
    return emitOpError("unknown output format '")
           << getFormat() << "' (expected torch, torch-tree, safetensors, dcp, universal or text)";
  if (getPath() != "." && failed(checkPath(*this, getPath())))
    return failure();
  llvm::StringSet<> keys;
  for (Operation &op : *getBodyBlock()) {
    auto tensor = dyn_cast<TensorOp>(op);
    if (!tensor)
      return op.emitOpError("is not a ckpt.tensor declaration inside ckpt.output");
    if (getFormat() == "text")
      return tensor.emitOpError("declares a tensor in a text file");
    if (!keys.insert(tensor.getKey()).second)
      return tensor.emitOpError("declares '") << tensor.getKey() << "' twice";
    if (failed(checkElementType(tensor, tensor.getType())))
      return failure();
  }
  return success();
}

LogicalResult SliceOp::verify() {
  auto in = getInput().getType(), out = getResult().getType();
  if (in.getElementType() != out.getElementType() || in.getRank() != out.getRank())
    return emitOpError("result must keep the input's element type and rank");
  if (int64_t(getOffsets().size()) != in.getRank())
    return emitOpError("has ") << getOffsets().size() << " offsets for a rank-" << in.getRank()
                               << " tensor";
  for (int64_t d = 0; d < in.getRank(); ++d)
    if (getOffsets()[d] < 0 || getOffsets()[d] + out.getDimSize(d) > in.getDimSize(d))
      return emitOpError("dimension ") << d << ": [" << getOffsets()[d] << ", "
                                       << getOffsets()[d] + out.getDimSize(d)
                                       << ") is outside the input's " << in.getDimSize(d);
  return success();
}

LogicalResult ReshapeOp::verify() {
  auto in = getInput().getType(), out = getResult().getType();
  if (in.getElementType() != out.getElementType() || in.getNumElements() != out.getNumElements())
    return emitOpError("must keep the element type and the number of elements");
  return success();
}

LogicalResult CastOp::verify() {
  auto in = getInput().getType(), out = getResult().getType();
  if (in.getShape() != out.getShape())
    return emitOpError("must keep the shape");
  if (!isa<FloatType>(in.getElementType()) || !isa<FloatType>(out.getElementType()))
    return emitOpError("converts floating-point tensors only");
  return success();
}

namespace {
/// The writes into one declared tensor, for the exactly-once check.
struct Coverage {
  TensorOp decl;
  std::vector<WriteOp> writes;
};

bool overlaps(llvm::ArrayRef<int64_t> aOff, llvm::ArrayRef<int64_t> aSize,
              llvm::ArrayRef<int64_t> bOff, llvm::ArrayRef<int64_t> bSize) {
  for (size_t d = 0; d < aOff.size(); ++d)
    if (aOff[d] >= bOff[d] + bSize[d] || bOff[d] >= aOff[d] + aSize[d])
      return false;
  return true;
}
} // namespace

LogicalResult ProgramOp::verifyRegions() {
  llvm::StringMap<Operation *> symbols;
  std::map<std::pair<Operation *, std::string>, Coverage> coverage;
  llvm::DenseMap<Operation *, CommitOp> committed;
  for (Operation &op : *getBodyBlock()) {
    if (auto sym = op.getAttrOfType<StringAttr>(mlir::SymbolTable::getSymbolAttrName())) {
      if (!symbols.try_emplace(sym.getValue(), &op).second)
        return op.emitOpError("redefines symbol @") << sym.getValue();
      if (auto output = dyn_cast<OutputOp>(op))
        for (auto decl : output.getBodyBlock()->getOps<TensorOp>())
          coverage[{&op, decl.getKey().str()}].decl = decl;
    }
  }
  auto lookup = [&](Operation *user, FlatSymbolRefAttr ref, bool wantOutput) -> Operation * {
    Operation *target = symbols.lookup(ref.getValue());
    if (!target || (wantOutput ? !isa<OutputOp>(target) : !isa<SourceOp>(target))) {
      user->emitOpError("refers to @") << ref.getValue() << ", which is not a ckpt."
                                       << (wantOutput ? "output" : "source") << " here";
      return nullptr;
    }
    return target;
  };
  for (Operation &op : *getBodyBlock()) {
    if (auto read = dyn_cast<ReadOp>(op)) {
      if (!lookup(read, read.getSourceAttr(), false) ||
          failed(checkElementType(read, read.getType())))
        return failure();
    } else if (auto write = dyn_cast<WriteOp>(op)) {
      Operation *output = lookup(write, write.getOutputAttr(), true);
      if (!output)
        return failure();
      if (committed.count(output))
        return write.emitOpError("writes into @")
               << write.getOutput() << " after it was committed";
      auto found = coverage.find({output, write.getKey().str()});
      if (found == coverage.end())
        return write.emitOpError("writes '") << write.getKey() << "', which @"
                                             << write.getOutput() << " does not declare";
      auto declType = cast<RankedTensorType>(found->second.decl.getType());
      auto inType = write.getInput().getType();
      if (declType.getElementType() != inType.getElementType() ||
          declType.getRank() != inType.getRank())
        return write.emitOpError("writes a ")
               << inType << " into '" << write.getKey() << "' declared " << declType;
      if (int64_t(write.getOffsets().size()) != declType.getRank())
        return write.emitOpError("has ") << write.getOffsets().size() << " offsets for a rank-"
                                         << declType.getRank() << " tensor";
      for (int64_t d = 0; d < declType.getRank(); ++d)
        if (write.getOffsets()[d] < 0 ||
            write.getOffsets()[d] + inType.getDimSize(d) > declType.getDimSize(d))
          return write.emitOpError("dimension ")
                 << d << " of '" << write.getKey() << "': [" << write.getOffsets()[d] << ", "
                 << write.getOffsets()[d] + inType.getDimSize(d) << ") is outside its "
                 << declType.getDimSize(d);
      found->second.writes.push_back(write);
    } else if (auto commit = dyn_cast<CommitOp>(op)) {
      Operation *output = lookup(commit, commit.getOutputAttr(), true);
      if (!output)
        return failure();
      if (!committed.try_emplace(output, commit).second)
        return commit.emitOpError("commits @") << commit.getOutput() << " a second time";
    }
  }
  for (auto output : getBodyBlock()->getOps<OutputOp>())
    if (!committed.count(output))
      return output.emitOpError("is never committed");

  // Exactly once: the writes of each tensor are pairwise disjoint and their volumes
  // add up to the tensor's. Sorted by the first offset, a write can only overlap the
  // earlier ones that reach past its start.
  for (auto &[key, cover] : coverage) {
    auto declType = cast<RankedTensorType>(cover.decl.getType());
    auto &writes = cover.writes;
    auto start = [](WriteOp w) { return w.getOffsets().empty() ? 0 : w.getOffsets()[0]; };
    llvm::stable_sort(writes, [&](WriteOp a, WriteOp b) { return start(a) < start(b); });
    uint64_t written = 0;
    std::vector<WriteOp> active;
    for (WriteOp write : writes) {
      auto shape = write.getInput().getType().getShape();
      written += write.getInput().getType().getNumElements();
      llvm::erase_if(active, [&](WriteOp w) {
        return !shape.empty() && start(w) + w.getInput().getType().getDimSize(0) <= start(write);
      });
      for (WriteOp other : active)
        if (overlaps(write.getOffsets(), shape, other.getOffsets(),
                     other.getInput().getType().getShape())) {
          InFlightDiagnostic diag = write.emitOpError("writes elements of '")
                                    << cover.decl.getKey() << "' that another write already wrote";
          diag.attachNote(other.getLoc()) << "the earlier write";
          return diag;
        }
      active.push_back(write);
    }
    if (written != uint64_t(declType.getNumElements()))
      return cover.decl.emitOpError("'")
             << cover.decl.getKey() << "': " << declType.getNumElements() - written << " of "
             << declType.getNumElements() << " elements are never written";
  }
  return success();
}
