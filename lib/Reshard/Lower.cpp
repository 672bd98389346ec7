//===- Lower.cpp - a ckpt program from two layouts -------------------------===//
#include "loom/Reshard/Reshard.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FormatVariadic.h"

#include <map>

using namespace loom;
using namespace loom::reshard;
using namespace mlir;

namespace {
struct SourceRef {
  unsigned file, tensor, piece;
};

/// `box` (inside `outer`) as boxes that are each contiguous in row-major order of
/// `outer`: unit steps along the leading dimensions where it is narrower than `outer`
/// ahead of a dimension that is not whole.
std::vector<Box> contiguousWithin(const Box &box, const Box &outer) {
  size_t rank = box.sizes.size();
  size_t j = rank; // dimensions >= j are whole in `outer`
  while (j > 0 && box.sizes[j - 1] == outer.sizes[j - 1])
    --j;
  if (j == 0)
    return {box};
  // Dimension j - 1 is partial; dimensions before it must be single steps.
  std::vector<Box> out;
  SmallVector<int64_t, 4> index(j - 1, 0);
  for (;;) {
    Box run = box;
    for (size_t d = 0; d + 1 < j; ++d) {
      run.offsets[d] = box.offsets[d] + index[d];
      run.sizes[d] = 1;
    }
    out.push_back(run);
    size_t d = j - 1;
    while (d > 0 && ++index[d - 1] == box.sizes[d - 1])
      index[--d] = 0;
    if (d == 0)
      return out;
  }
}

ckpt::DType dtypeOf(RankedTensorType type) { return *ckptir::dtypeOf(type.getElementType()); }

SmallVector<int64_t, 4> plus(ArrayRef<int64_t> a, ArrayRef<int64_t> b, ArrayRef<int64_t> c) {
  SmallVector<int64_t, 4> out;
  for (size_t i = 0; i < a.size(); ++i)
    out.push_back(a[i] - b[i] + c[i]);
  return out;
}
} // namespace

llvm::Expected<OwningOpRef<ModuleOp>>
reshard::buildProgram(MLIRContext &context, const Layout &source, const Layout &target,
                      llvm::StringRef sourceRoot, llvm::StringRef outputRoot) {
  context.loadDialect<ckptir::CkptDialect>();
  OpBuilder b(&context);
  Location loc = b.getUnknownLoc();
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());
  auto program = b.create<ckptir::ProgramOp>(loc, sourceRoot, outputRoot);
  program.getBody().emplaceBlock();
  b.setInsertionPointToEnd(program.getBodyBlock());

  auto typeOf = [&](llvm::ArrayRef<int64_t> shape, ckpt::DType dtype) {
    return RankedTensorType::get(shape, ckptir::elementTypeOf(&context, dtype));
  };

  // Source pieces by full-tensor name; of identical boxes (replicas) only the first.
  llvm::StringMap<std::vector<SourceRef>> pieces;
  for (unsigned f = 0; f < source.files.size(); ++f)
    for (unsigned t = 0; t < source.files[f].tensors.size(); ++t)
      for (unsigned p = 0; p < source.files[f].tensors[t].pieces.size(); ++p) {
        const Piece &piece = source.files[f].tensors[t].pieces[p];
        auto &list = pieces[source.fulls[piece.full].name];
        bool replica = llvm::any_of(list, [&](const SourceRef &r) {
          const Box &other = source.files[r.file].tensors[r.tensor].pieces[r.piece].fullBox;
          return other.offsets == piece.fullBox.offsets && other.sizes == piece.fullBox.sizes;
        });
        if (!replica)
          list.push_back({f, t, p});
      }
  auto sourceName = [](const FullTensor &full) { return full.from.empty() ? full.name : full.from; };
  for (const FullTensor &full : target.fulls) {
    const FullTensor *from = source.findFull(sourceName(full));
    if (!from)
      return llvm::createStringError("the target needs " + full.name +
                                     ", which the source does not hold");
    if (from->shape != full.shape)
      return llvm::createStringError("the target's " + full.name +
                                     " has another shape than the source's");
  }

  std::vector<std::string> sourceSyms;
  for (unsigned f = 0; f < source.files.size(); ++f) {
    sourceSyms.push_back(llvm::formatv("s{0}", f).str());
    b.create<ckptir::SourceOp>(loc, sourceSyms.back(), source.files[f].path,
                               source.files[f].format);
  }

  for (unsigned o = 0; o < target.files.size(); ++o) {
    const ShardFile &file = target.files[o];
    std::string sym = llvm::formatv("o{0}", o).str();
    auto output = b.create<ckptir::OutputOp>(loc, sym, file.path, file.format, file.meta);
    output.getBody().emplaceBlock();
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToEnd(output.getBodyBlock());
      for (const LocalTensor &local : file.tensors)
        b.create<ckptir::TensorOp>(loc, b.getStringAttr(local.key), TypeAttr::get(typeOf(local.shape, local.dtype)));
    }
    // One read per source tensor within an output, so that a runner can drop what
    // an output no longer needs.
    std::map<std::pair<unsigned, unsigned>, Value> reads;
    auto outRef = FlatSymbolRefAttr::get(&context, sym);
    for (const LocalTensor &local : file.tensors) {
      std::vector<Box> gaps{Box::whole(local.shape)};
      for (const Piece &piece : local.pieces) {
        const FullTensor &full = target.fulls[piece.full];
        Box inLocal = piece.flat ? Box{piece.localOffsets, {int64_t(piece.fullBox.volume())}}
                                 : Box{piece.localOffsets, piece.fullBox.sizes};
        std::vector<Box> left;
        for (const Box &gap : gaps)
          gap.subtract(inLocal, left);
        gaps = std::move(left);
        uint64_t filled = 0;
        for (const SourceRef &ref : pieces[sourceName(full)]) {
          const LocalTensor &src = source.files[ref.file].tensors[ref.tensor];
          const Piece &srcPiece = src.pieces[ref.piece];
          auto common = piece.fullBox.intersect(srcPiece.fullBox);
          if (!common)
            continue;
          filled += common->volume();
          Value &value = reads[{ref.file, ref.tensor}];
          if (!value)
            value = b.create<ckptir::ReadOp>(loc, typeOf(src.shape, src.dtype),
                                             FlatSymbolRefAttr::get(&context, sourceSyms[ref.file]),
                                             b.getStringAttr(src.key));
          Value part = value;
          auto slice = [&](Value from, ArrayRef<int64_t> offsets, ArrayRef<int64_t> sizes) {
            auto type = cast<RankedTensorType>(from.getType());
            if (type.getShape() == sizes)
              return from;
            return Value(b.create<ckptir::SliceOp>(loc, typeOf(sizes, dtypeOf(type)), from,
                                                   b.getDenseI64ArrayAttr(offsets)));
          };
          auto reshape = [&](Value from, ArrayRef<int64_t> sizes) {
            auto type = cast<RankedTensorType>(from.getType());
            if (type.getShape() == sizes)
              return from;
            return Value(b.create<ckptir::ReshapeOp>(loc, typeOf(sizes, dtypeOf(type)), from));
          };
          if (!srcPiece.flat) {
            part = slice(part, plus(common->offsets, srcPiece.fullBox.offsets, srcPiece.localOffsets),
                         common->sizes);
          } else {
            // The piece's run of the flat buffer, viewed at the box's shape, then the
            // common part of it.
            int64_t volume = srcPiece.fullBox.volume();
            part = slice(part, {srcPiece.localOffsets[0]}, {volume});
            part = reshape(part, srcPiece.fullBox.sizes);
            SmallVector<int64_t, 4> zero(common->sizes.size(), 0);
            part = slice(part, plus(common->offsets, srcPiece.fullBox.offsets, zero), common->sizes);
          }
          if (src.dtype != local.dtype)
            part = b.create<ckptir::CastOp>(loc, typeOf(common->sizes, local.dtype), part);
          if (!piece.flat) {
            b.create<ckptir::WriteOp>(
                loc, part, outRef, b.getStringAttr(local.key),
                b.getDenseI64ArrayAttr(plus(common->offsets, piece.fullBox.offsets, piece.localOffsets)));
            continue;
          }
          // Into a flat buffer: cut the common box into boxes contiguous within the
          // piece's box, each written as a run.
          for (const Box &run : contiguousWithin(*common, piece.fullBox)) {
            SmallVector<int64_t, 4> zero(run.sizes.size(), 0);
            Value v = slice(part, plus(run.offsets, common->offsets, zero), run.sizes);
            v = reshape(v, {int64_t(run.volume())});
            SmallVector<int64_t, 4> rel = plus(run.offsets, piece.fullBox.offsets, zero);
            int64_t at = piece.localOffsets[0] + linearIndex(piece.fullBox.sizes, rel);
            b.create<ckptir::WriteOp>(loc, v, outRef, b.getStringAttr(local.key),
                                      b.getDenseI64ArrayAttr({at}));
          }
        }
        if (filled != piece.fullBox.volume())
          return llvm::createStringError("the source's pieces of " + full.name +
                                         " do not cover what " + file.path + " needs of it");
      }
      for (const Box &gap : gaps) {
        Value zeros = b.create<ckptir::ZerosOp>(loc, typeOf(gap.sizes, local.dtype));
        b.create<ckptir::WriteOp>(loc, zeros, outRef, b.getStringAttr(local.key),
                                  b.getDenseI64ArrayAttr(gap.offsets));
      }
    }
    b.create<ckptir::CommitOp>(loc, outRef);
  }
  return module;
}
