//===- Coalesce.cpp - fewer, larger copies in a ckpt program ---------------===//
//
// Builders emit one slice and one write per piece, so regrouping a fused tensor
// whose groups happen to stay in order (QKV when only pp changes) becomes several
// adjacent copies. Two writes of slices of the same value into the same tensor merge
// when their source boxes and their destination boxes are neighbours along the same
// dimension with equal extents elsewhere; a slice that ends up covering its whole
// input is dropped. Fewer copies mean longer sequential runs at run time.
//
//===----------------------------------------------------------------------===//
#include "loom/Reshard/Reshard.h"

#include "mlir/Pass/Pass.h"

#include <map>

using namespace mlir;
using namespace loom;
using namespace loom::ckptir;

namespace {
struct Copy {
  WriteOp write;
  Value base;                     // the sliced value (or the written value itself)
  SmallVector<int64_t, 4> src;    // offsets in base
  SmallVector<int64_t, 4> dst;    // offsets in the output tensor
  SmallVector<int64_t, 4> sizes;
};

/// The dimension along which `b` continues `a` on both sides, or -1.
int adjacentDim(const Copy &a, const Copy &b) {
  int dim = -1;
  for (size_t d = 0; d < a.sizes.size(); ++d) {
    bool same = a.src[d] == b.src[d] && a.dst[d] == b.dst[d] && a.sizes[d] == b.sizes[d];
    bool next = a.src[d] + a.sizes[d] == b.src[d] && a.dst[d] + a.sizes[d] == b.dst[d];
    if (same)
      continue;
    if (!next || dim >= 0)
      return -1;
    dim = int(d);
  }
  return dim;
}
} // namespace

unsigned loom::reshard::coalesceCopies(ProgramOp program) {
  // Copies grouped by (value, output, key), in program order.
  std::map<std::tuple<void *, std::string, std::string>, std::vector<Copy>> groups;
  for (auto write : program.getBodyBlock()->getOps<WriteOp>()) {
    Copy c{write, write.getInput(), {}, llvm::to_vector<4>(write.getOffsets()),
           llvm::to_vector<4>(write.getInput().getType().getShape())};
    if (auto slice = write.getInput().getDefiningOp<SliceOp>()) {
      c.base = slice.getInput();
      c.src = llvm::to_vector<4>(slice.getOffsets());
    } else {
      c.src.assign(c.sizes.size(), 0);
    }
    groups[{c.base.getAsOpaquePointer(), write.getOutput().str(), write.getKey().str()}]
        .push_back(std::move(c));
  }
  unsigned merged = 0;
  for (auto &[key, copies] : groups) {
    for (size_t i = 0; i + 1 < copies.size();) {
      Copy &a = copies[i];
      Copy &b = copies[i + 1];
      int dim = adjacentDim(a, b);
      if (dim < 0) {
        ++i;
        continue;
      }
      // One slice covering both, written where `a` was; `b`'s write goes away.
      SmallVector<int64_t, 4> sizes = a.sizes;
      sizes[dim] += b.sizes[dim];
      auto baseType = cast<RankedTensorType>(a.base.getType());
      OpBuilder builder(a.write);
      Value part = a.base;
      if (ArrayRef<int64_t>(sizes) != baseType.getShape())
        part = builder.create<SliceOp>(a.write.getLoc(),
                                       RankedTensorType::get(sizes, baseType.getElementType()),
                                       a.base, builder.getDenseI64ArrayAttr(a.src));
      Value oldA = a.write.getInput(), oldB = b.write.getInput();
      a.write.getInputMutable().assign(part);
      b.write.erase();
      for (Value old : {oldA, oldB})
        if (old.use_empty() && old.getDefiningOp<SliceOp>())
          old.getDefiningOp()->erase();
      a.sizes = sizes;
      copies.erase(copies.begin() + i + 1);
      ++merged;
    }
  }
  return merged;
}

namespace {
struct CoalescePass : PassWrapper<CoalescePass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(CoalescePass)
  StringRef getArgument() const override { return "ckpt-coalesce"; }
  StringRef getDescription() const override {
    return "merge copies of neighbouring boxes of one value into one tensor";
  }
  void runOnOperation() override {
    getOperation().walk([](ProgramOp program) { loom::reshard::coalesceCopies(program); });
  }
};
} // namespace

void loom::reshard::registerReshardPasses() {
  PassRegistration<CoalescePass>();
  registerPartitionPass();
}
