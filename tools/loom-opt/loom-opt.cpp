//===- loom-opt.cpp - mlir-opt with loom's dialects and passes ------------===//
//
// Registers only what loom uses (func, arith and loom's dialects); registering
// all of MLIR would cost tens of seconds of link time for nothing.
//
//===----------------------------------------------------------------------===//

#include "loom/Reshard/Reshard.h"
#include "loom/Transforms/Passes.h"
#include "loom/Transforms/SchedPasses.h"
#include "ckpt/Ckpt.h"
#include "place/Place.h"
#include "sched/Sched.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<loom::ckptir::CkptDialect, loom::place::PlaceDialect, loom::sched::SchedDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect>();
  loom::registerLoomPasses();
  loom::registerLoomSchedPasses();
  loom::reshard::registerReshardPasses();
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  mlir::registerSymbolDCEPass();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "loom optimizer driver\n", registry));
}
