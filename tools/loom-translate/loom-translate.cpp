//===- loom-translate.cpp - specs in, place IR out ------------------------===//
//
// `loom-translate --import-spec spec.yaml` reads a spec file holding a model, a
// cluster and (optionally) training settings and prints the unplaced place IR.
// Catalog names work too: `--import-spec --model llama3-8b --cluster dgx-h100:nodes=4`
// ignores the input file.
//
//===----------------------------------------------------------------------===//

#include "loom/Conversion/SpecToPlace.h"
#include "place/Place.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Tools/mlir-translate/MlirTranslateMain.h"
#include "mlir/Tools/mlir-translate/Translation.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/SourceMgr.h"

using namespace mlir;

static llvm::cl::opt<std::string> modelName("model",
    llvm::cl::desc("catalog model or model spec file (overrides the input's model)"),
    llvm::cl::init(""));
static llvm::cl::opt<std::string> clusterName("cluster",
    llvm::cl::desc("catalog cluster or cluster spec file (overrides the input's cluster)"),
    llvm::cl::init(""));

static OwningOpRef<Operation *> importSpec(llvm::SourceMgr &sourceMgr,
                                           MLIRContext *context) {
  const llvm::MemoryBuffer *buffer = sourceMgr.getMemoryBuffer(sourceMgr.getMainFileID());
  std::string name = buffer->getBufferIdentifier().str();
  Location loc = FileLineColLoc::get(context, name, 1, 1);
  try {
    loom::spec::SpecFile file;
    if (modelName.empty() || clusterName.empty())
      file = loom::spec::parseSpec(buffer->getBuffer(), loom::spec::formatForPath(name), name);
    loom::spec::Model model = modelName.empty() ? file.model() : loom::spec::loadModel(modelName);
    loom::spec::Cluster cluster =
        clusterName.empty() ? file.cluster() : loom::spec::loadCluster(clusterName);
    if (model.blocks().empty() || cluster.datacenters().empty()) {
      emitError(loc) << "the spec needs a model and a cluster (or pass --model/--cluster)";
      return nullptr;
    }
    loom::spec::Training training =
        file.has_training() ? file.training() : loom::spec::defaultTraining(model);
    auto module = loom::lowerSpecToPlace(context, model, cluster, training, loc);
    if (!module || failed(verify(*module)))
      return nullptr;
    return OwningOpRef<Operation *>(module.release());
  } catch (const loom::spec::SpecError &e) {
    emitError(loc) << e.what();
    return nullptr;
  }
}

int main(int argc, char **argv) {
  TranslateToMLIRRegistration importRegistration(
      "import-spec", "lower a model + cluster spec into place IR", importSpec,
      [](DialectRegistry &registry) { loom::registerSpecToPlaceDialects(registry); });
  return failed(mlirTranslateMain(argc, argv, "loom translation driver\n"));
}
