//===- loom-translate.cpp - specs in, place IR out, launch files out --------===//
//
// `loom-translate --import-spec spec.yaml` reads a spec file holding a model, a
// cluster and (optionally) training settings and prints the unplaced place IR.
// Catalog names work too: `--import-spec --model llama3-8b --cluster dgx-h100:nodes=4`
// ignores the input file.
//
// `loom-translate --export-<target> placed.mlir` goes the other way for placed
// IR (`loom plan --emit-mlir`, or place-apply-strategy's output): the model,
// cluster and training read back from the IR (PlaceToSpec), the strategy from
// its place.strategy, priced and laid out as `loom plan` does, then written as
// `loom emit --target <target>` writes it; --export-plan prints the plan JSON.
// Place IR states placement, not the pipeline schedule: exports name 1F1B
// (interleaved with virtual stages); nor does it say whether sequence-parallel
// communication overlaps the GEMMs, which is assumed as `loom plan` assumes it.
//
//===----------------------------------------------------------------------===//

#include "loom/Conversion/PlaceToSpec.h"
#include "loom/Conversion/SpecToPlace.h"
#include "loom/CostModel/Estimate.h"
#include "loom/CostModel/FromStrategy.h"
#include "loom/Emit/Emit.h"
#include "loom/Search/PlanJson.h"
#include "loom/Search/Planner.h"
#include "place/Place.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Tools/mlir-translate/MlirTranslateMain.h"
#include "mlir/Tools/mlir-translate/Translation.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/SourceMgr.h"

#include <google/protobuf/util/json_util.h>

#include <map>
#include <set>

using namespace mlir;
using loom::SpecInputs;

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

/// The plan placed IR states: its specs read back, its place.strategy priced and
/// laid out as `loom plan` lays out a candidate.
static FailureOr<std::pair<SpecInputs, loom::search::Candidate>> planOf(Operation *op) {
  auto module = dyn_cast<ModuleOp>(op);
  if (!module)
    return op->emitError("export needs a module of place IR"), failure();
  FailureOr<loom::SpecInputs> inputs = loom::specFromPlace(module);
  if (failed(inputs))
    return failure();
  loom::place::ModelOp model;
  module.walk([&](loom::place::ModelOp m) { model = m; });
  auto strategy = model->getAttrOfType<DictionaryAttr>("place.strategy");
  if (!strategy)
    return model.emitError("has no place.strategy: export placed IR (`loom plan --emit-mlir`, "
                           "or run place-apply-strategy or place-derive-strategy first)"),
           failure();
  // The strategy as a plan states it, so that choiceFromPlan reads it as it reads
  // `loom plan --json` output (uneven stages included).
  auto integer = [&](StringRef key, uint32_t fallback) {
    auto a = strategy.getAs<IntegerAttr>(key);
    return a ? uint32_t(a.getInt()) : fallback;
  };
  loom::spec::Plan stated;
  loom::spec::Strategy &st = *stated.mutable_strategy();
  st.set_dp(integer("dp", 0));
  st.set_tp(integer("tp", 1));
  st.set_pp(integer("pp", 1));
  st.set_vpp(integer("vpp", 1));
  st.set_ep(integer("ep", 1));
  st.set_cp(integer("cp", 1));
  st.set_zero(integer("zero", 0));
  st.set_micro_batch(integer("mbs", 1));
  if (auto sp = strategy.getAs<BoolAttr>("sp"))
    st.set_sequence_parallel(sp.getValue());
  // Placement does not say whether sequence-parallel communication overlaps the
  // GEMMs; `loom plan` assumes Transformer Engine's overlap unless told not to.
  st.set_tp_comm_overlap(st.sequence_parallel());
  if (auto recompute = strategy.getAs<StringAttr>("recompute"))
    st.set_recompute(recompute.getValue() == "full"        ? loom::spec::RECOMPUTE_FULL
                     : recompute.getValue() == "selective" ? loom::spec::RECOMPUTE_SELECTIVE
                                                           : loom::spec::RECOMPUTE_NONE);
  if (auto order = strategy.getAs<StringAttr>("order"))
    st.set_rank_order(order.str());
  if (model.getVShape()) // the placement of ZB-V's stages is its schedule's
    st.set_schedule(loom::spec::ZB_V);
  if (model.getDualPipe()) // and DualPipe's mirrored copies are its schedule's
    st.set_schedule(loom::spec::DUALPIPE);
  // The IR's own layer->stage assignment.
  std::map<int64_t, std::set<int64_t>> stageLayers;
  module.walk([&](Operation *layer) {
    auto stage = layer->getAttrOfType<IntegerAttr>("stage");
    auto index = layer->getAttrOfType<IntegerAttr>("layer");
    if (stage && index)
      stageLayers[stage.getInt()].insert(index.getInt());
  });
  // The pp rank each stage runs on, when the IR runs them in another order.
  std::optional<ArrayRef<int64_t>> ranks;
  if (auto attr = model.getPipelineRanksAttr()) {
    ranks = attr.asArrayRef();
    if (stageLayers.size() != ranks->size())
      return model.emitError("has pipeline_ranks and virtual stages; a plan gives a pp "
                             "rank only to one stage per rank"),
             failure();
  }
  for (auto &[index, layers] : stageLayers) {
    loom::spec::Stage *stage = stated.add_stages();
    stage->set_index(uint32_t(index));
    stage->set_first_layer(uint32_t(*layers.begin()));
    stage->set_num_layers(uint32_t(layers.size()));
    if (ranks)
      stage->set_pp_rank(uint32_t((*ranks)[index]));
  }
  *stated.mutable_training() = inputs->training;
  loom::cost::StrategyChoice c = loom::search::choiceFromPlan(stated);
  loom::cost::WorkloadResult w =
      loom::cost::fromStrategy(inputs->model, inputs->cluster, inputs->training, c);
  if (!w.ok())
    return model.emitError("place.strategy does not fit the model on the cluster: ") << w.error,
           failure();
  loom::search::Candidate candidate;
  candidate.choice = c;
  candidate.dp = w.workload.dp;
  candidate.estimate = loom::cost::estimate(
      w.workload, loom::cost::computeModelsFor(inputs->cluster, inputs->training));
  return std::pair{std::move(*inputs), std::move(candidate)};
}

/// Registers --export-<target>: the placed IR's plan written as `loom emit` would.
static void registerExport(StringRef target, StringRef what,
                           std::string (*emit)(const loom::spec::Plan &, const SpecInputs &,
                                               const loom::emit::Provenance &)) {
  static std::vector<std::unique_ptr<TranslateFromMLIRRegistration>> registrations;
  registrations.push_back(std::make_unique<TranslateFromMLIRRegistration>(
      ("export-" + target).str(), what,
      [emit](Operation *op, llvm::raw_ostream &os) -> LogicalResult {
        auto planned = planOf(op);
        if (failed(planned))
          return failure();
        auto &[inputs, candidate] = *planned;
        loom::spec::Plan plan = loom::search::toPlan(inputs.model, inputs.cluster,
                                                     inputs.training, candidate);
        std::string file = "place IR";
        if (auto loc = dyn_cast<FileLineColLoc>(op->getLoc()))
          file = loc.getFilename().str();
        try {
          os << emit(plan, inputs, {file, 0});
        } catch (const loom::emit::EmitError &e) {
          return op->emitError(e.what()) << " (" << e.hint << ")";
        }
        return success();
      },
      [](DialectRegistry &registry) { loom::registerSpecToPlaceDialects(registry); }));
}

int main(int argc, char **argv) {
  TranslateToMLIRRegistration importRegistration(
      "import-spec", "lower a model + cluster spec into place IR", importSpec,
      [](DialectRegistry &registry) { loom::registerSpecToPlaceDialects(registry); });
  using Inputs = const SpecInputs &;
  using From = const loom::emit::Provenance &;
  registerExport("plan", "placed IR -> the plan as `loom plan --json` writes one",
                 [](const loom::spec::Plan &plan, Inputs, From) {
                   std::string json;
                   google::protobuf::util::JsonPrintOptions options;
                   options.add_whitespace = true;
                   options.preserve_proto_field_names = true;
                   (void)google::protobuf::util::MessageToJsonString(plan, &json, options);
                   return json;
                 });
  registerExport("megatron", "placed IR -> Megatron-LM arguments",
                 [](const loom::spec::Plan &plan, Inputs, From from) {
                   return loom::emit::emitMegatron(plan, from);
                 });
  registerExport("deepspeed", "placed IR -> a DeepSpeed config",
                 [](const loom::spec::Plan &plan, Inputs, From from) {
                   return loom::emit::emitDeepSpeed(plan, from);
                 });
  registerExport("torchrun", "placed IR -> a torchrun launch script",
                 [](const loom::spec::Plan &plan, Inputs, From from) {
                   return loom::emit::emitTorchrun(plan, from, {});
                 });
  registerExport("slurm", "placed IR -> a Slurm batch script",
                 [](const loom::spec::Plan &plan, Inputs, From from) {
                   return loom::emit::emitSlurm(plan, from, {});
                 });
  registerExport("rankmap", "placed IR -> the rank map",
                 [](const loom::spec::Plan &plan, Inputs, From from) {
                   return loom::emit::emitRankMap(plan, from);
                 });
  registerExport("schedule", "placed IR -> the per-rank pipeline schedule",
                 [](const loom::spec::Plan &plan, Inputs in, From from) {
                   return loom::emit::emitSchedule(plan, in.model, in.cluster, from);
                 });
  return failed(mlirTranslateMain(argc, argv, "loom translation driver\n"));
}
