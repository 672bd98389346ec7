//===- Partition.cpp - a ckpt program shared out over MPI ranks ------------===//
//
// `loom reshard --mpi` runs one program on every rank; this pass decides which
// rank does what, and records it in the program, so a script shows its split and
// every rank reads the same answer. The work is shared out by bytes, each piece to
// the rank with the fewest so far, in the order the program completes the pieces
// (so the ranks' shares also finish at about the same time):
//  * a program writing one universal file shares that file's tensors: every rank
//    opens the file with parallel HDF5 and writes its own tensors' chunks;
//  * a program writing many files (Megatron, DeepSpeed, HF shards) shares whole
//    files: each is read, assembled and written by one rank as a serial run would.
// Other single-file outputs (torch, DCP) cannot be shared and are refused.
//
// The split is stored as discardable attributes: "ckpt.ranks" on the program,
// "ckpt.rank" on each output or, for the universal file, on each tensor.
//
//===----------------------------------------------------------------------===//
#include "loom/Reshard/Reshard.h"

#include "loom/Checkpoint/DType.h"

#include "mlir/IR/Builders.h"
#include "mlir/Pass/Pass.h"

#include <tuple>

using namespace mlir;
using namespace loom;
using namespace loom::ckptir;

namespace {
constexpr llvm::StringLiteral kRanks = "ckpt.ranks", kRank = "ckpt.rank";

uint64_t bytesOf(TensorOp decl) {
  auto type = cast<RankedTensorType>(decl.getType());
  return uint64_t(type.getNumElements()) * ckpt::dtypeSize(*dtypeOf(type.getElementType()));
}
} // namespace

bool reshard::writesOneFile(ProgramOp program) {
  auto outputs = program.getBodyBlock()->getOps<OutputOp>();
  return std::distance(outputs.begin(), outputs.end()) == 1 && (*outputs.begin()).getPath() == ".";
}

llvm::Error reshard::partitionProgram(ProgramOp program, int ranks) {
  Block *body = program.getBodyBlock();
  bool oneFile = writesOneFile(program);
  if (oneFile && (*body->getOps<OutputOp>().begin()).getFormat() != "universal")
    return llvm::createStringError(
        "a program writing one file is shared over MPI ranks only when the file is loom's "
        "universal format (a torch or DCP output is written by one process)");
  // Each piece of work: (position where the program completes it, the op to mark,
  // bytes).
  std::vector<std::tuple<unsigned, Operation *, uint64_t>> work;
  llvm::StringMap<unsigned> lastWrite, commitAt;
  unsigned position = 0;
  for (Operation &op : *body) {
    if (auto write = dyn_cast<WriteOp>(op))
      lastWrite[write.getKey()] = position;
    else if (auto commit = dyn_cast<CommitOp>(op))
      commitAt[commit.getOutput()] = position;
    ++position;
  }
  for (OutputOp output : body->getOps<OutputOp>()) {
    uint64_t bytes = 0;
    for (TensorOp decl : output.getBodyBlock()->getOps<TensorOp>()) {
      bytes += bytesOf(decl);
      if (oneFile)
        work.push_back({lastWrite.lookup(decl.getKey()), decl, bytesOf(decl)});
    }
    if (!oneFile)
      work.push_back({commitAt.lookup(output.getSymName()), output, bytes});
  }
  // Stable: pieces completed at the same point keep their program order.
  std::stable_sort(work.begin(), work.end(), [](const auto &a, const auto &b) {
    return std::get<0>(a) < std::get<0>(b);
  });
  Builder builder(program.getContext());
  std::vector<uint64_t> load(ranks, 0);
  for (const auto &[at, op, bytes] : work) {
    int rank = int(std::min_element(load.begin(), load.end()) - load.begin());
    load[rank] += bytes;
    op->setAttr(kRank, builder.getI64IntegerAttr(rank));
  }
  program->setAttr(kRanks, builder.getI64IntegerAttr(ranks));
  return llvm::Error::success();
}

std::optional<int> reshard::partitionRanks(ProgramOp program) {
  if (auto ranks = program->getAttrOfType<IntegerAttr>(kRanks))
    return int(ranks.getInt());
  return std::nullopt;
}

std::optional<int> reshard::partitionRankOf(Operation *op) {
  if (auto rank = op->getAttrOfType<IntegerAttr>(kRank))
    return int(rank.getInt());
  return std::nullopt;
}

namespace {
struct PartitionPass : PassWrapper<PartitionPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(PartitionPass)
  PartitionPass() = default;
  PartitionPass(const PartitionPass &other) : PassWrapper(other) {}
  StringRef getArgument() const override { return "ckpt-partition"; }
  StringRef getDescription() const override {
    return "share a program's output files (or its universal file's tensors) over MPI ranks";
  }
  Option<int> ranks{*this, "ranks", llvm::cl::desc("MPI ranks to share the work over"),
                    llvm::cl::init(2)};
  void runOnOperation() override {
    if (ranks < 1) {
      getOperation().emitError("ckpt-partition: ranks must be at least 1");
      return signalPassFailure();
    }
    getOperation().walk([&](ProgramOp program) {
      if (llvm::Error err = reshard::partitionProgram(program, ranks)) {
        program.emitOpError(llvm::toString(std::move(err)));
        signalPassFailure();
      }
    });
  }
};
} // namespace

void reshard::registerPartitionPass() { PassRegistration<PartitionPass>(); }
