//===- Lower.cpp - `loom lower` -------------------------------------------===//
//
// Lowers a model and a cluster into place IR and verifies it; with strategy
// options it also places every layer (place-apply-strategy), reads the strategy
// back from the placements (place-derive-strategy) and re-verifies, so what is
// printed is what the IR says, not what was asked for.
//
//===----------------------------------------------------------------------===//

#include "Driver.h"

#include "loom/Conversion/SpecToPlace.h"
#include "loom/Spec/Spec.h"
#include "loom/Support/Table.h"
#include "loom/Transforms/Passes.h"
#include "place/Place.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

using namespace mlir;
using namespace loom;
using namespace loom::cli;

namespace {
struct LowerOptions {
  SpecArgs spec;
  std::string output;
  int64_t dp = 0, tp = 1, pp = 1, vpp = 1, ep = 1, cp = 1, zero = 0, mbs = 1;
  std::string recompute = "none", order = "pp-outer";
  bool sp = false, emitMlir = false, json = false;
  bool strategyGiven = false;
};

/// Collects MLIR diagnostics so the CLI can print the first error as one line.
class DiagnosticCollector {
public:
  explicit DiagnosticCollector(MLIRContext *ctx)
      : handler(ctx, [this](Diagnostic &d) {
          if (d.getSeverity() == DiagnosticSeverity::Error && first.empty())
            first = d.str();
          return success();
        }) {}
  std::string first;

private:
  ScopedDiagnosticHandler handler;
};
} // namespace

PlacedModule loom::cli::lowerAndPlace(const SpecInputs &in,
                                      const PlaceApplyStrategyOptions *apply, bool estimate) {
  DialectRegistry registry;
  registerSpecToPlaceDialects(registry);
  PlacedModule placed{std::make_unique<MLIRContext>(registry), nullptr};
  MLIRContext &context = *placed.context;
  DiagnosticCollector diags(&context);
  Location loc = FileLineColLoc::get(&context, "loom", 0, 0);
  placed.module = lowerSpecToPlace(&context, in.model, in.cluster, in.training, loc);
  if (!placed.module || failed(verify(*placed.module)))
    throw UserError(diags.first, "see `loom catalog` for regular clusters");
  if (!apply)
    return placed;
  PassManager pm(&context);
  pm.addPass(createPlaceApplyStrategy(*apply));
  pm.addPass(createPlaceDeriveStrategy());
  if (estimate)
    pm.addPass(createPlaceEstimate());
  if (failed(pm.run(*placed.module)))
    throw UserError(diags.first,
                    "degrees must divide the model (heads, kv heads, experts, "
                    "layers, batch) and tile the cluster (dp*tp*pp*cp = GPUs)");
  return placed;
}

std::string loom::cli::printModule(ModuleOp module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  module.print(os);
  return text;
}

/// Parameters one rank of the layer holds: divided by every axis along which
/// they are sharded (with or without gather).
static double paramsPerRank(place::LayerOpInterface layer, place::MeshOp mesh) {
  double n = layer.getParamCount();
  if (auto p = layer.getPlacementAttr())
    for (const place::AxisMode &m : p.getParams())
      if (m.mode != place::Mode::replicated)
        n /= mesh.getAxisSize(m.axis.getValue());
  return n;
}

static void runLower(const LowerOptions &o) {
  auto [model, cluster, training] =
      loadSpecInputs(o.spec);
  training.set_micro_batch(o.mbs);

  spec::ClusterSize size = spec::clusterSize(cluster);
  std::optional<PlaceApplyStrategyOptions> apply;
  if (o.strategyGiven) {
    int64_t dp = o.dp;
    if (dp == 0) {
      int64_t others = o.tp * o.pp * o.cp;
      if (others <= 0 || static_cast<int64_t>(size.gpus) % others != 0)
        throw UserError(fmt::format("tp x pp x cp = {} does not divide the cluster's {} GPUs",
                                    others, size.gpus),
                        "choose degrees whose product divides the GPU count, or pass --dp");
      dp = size.gpus / others;
    }
    apply.emplace();
    apply->dp = dp;
    apply->tp = o.tp;
    apply->pp = o.pp;
    apply->vpp = o.vpp;
    apply->ep = o.ep;
    apply->cp = o.cp;
    apply->zero = o.zero;
    apply->recompute = o.recompute;
    apply->mbs = o.mbs;
    apply->sp = o.sp;
    apply->order = o.order;
  }
  PlacedModule placed = lowerAndPlace({model, cluster, training}, apply ? &*apply : nullptr,
                                      /*estimate=*/false);
  OwningOpRef<ModuleOp> &module = placed.module;

  if (o.emitMlir) {
    writeOutput(o.output, printModule(*module));
    return;
  }

  auto modelOp = *module->getOps<place::ModelOp>().begin();
  place::MeshOp mesh;
  for (auto m : module->getOps<place::MeshOp>())
    mesh = m;
  spec::ParamCount params = spec::countParameters(model);
  int64_t numLayerOps = std::distance(modelOp.getLayers().begin(), modelOp.getLayers().end());

  // Per-stage rows: which transformer layers and how many parameters per rank.
  struct StageRow {
    int64_t firstLayer = -1, lastLayer = -1;
    double params = 0;
  };
  std::map<int64_t, StageRow> stages;
  for (place::LayerOpInterface layer : modelOp.getLayers()) {
    StageRow &row = stages[layer.getStageIndex().value_or(0)];
    if (auto attn = dyn_cast<place::AttentionOp>(layer.getOperation())) {
      int64_t l = attn.getLayer();
      row.firstLayer = row.firstLayer < 0 ? l : std::min(row.firstLayer, l);
      row.lastLayer = std::max(row.lastLayer, l);
    }
    row.params += mesh ? paramsPerRank(layer, mesh) : layer.getParamCount();
  }

  std::string meshText;
  if (mesh) {
    std::string s;
    llvm::raw_string_ostream os(s);
    llvm::interleave(mesh.getAxes(), os, [&](Attribute a) {
      auto la = cast<place::LogicalAxisAttr>(a);
      os << la.getName().getValue() << " = ";
      llvm::interleave(llvm::zip(la.getPhysical(), la.getSizes()), os,
                       [&](auto piece) { os << std::get<0>(piece).getValue() << ":" << std::get<1>(piece); },
                       " * ");
    }, ", ");
    meshText = s;
  }
  auto strategy = modelOp->getAttrOfType<DictionaryAttr>("place.strategy");
  // On a cluster of node groups, the GPU each stage runs on (at the pipeline
  // position the model gives it), by its catalog name.
  ArrayAttr positionDevices = modelOp.getPipelineDevicesAttr();
  auto stageDevice = [&](int64_t stage) {
    auto device = SymbolTable::lookupNearestSymbolFrom<place::DeviceOp>(
        modelOp, cast<FlatSymbolRefAttr>(positionDevices[size_t(modelOp.getStagePosition(
                         stage, int64_t(positionDevices.size())))]));
    return device.getKind().value_or(device.getSymName()).str();
  };

  if (o.json) {
    nlohmann::json out{{"model", model.name()},
                       {"cluster", cluster.name()},
                       {"layers", spec::numLayers(model)},
                       {"parameters", params.total()},
                       {"gpus", size.gpus},
                       {"layer_ops", numLayerOps},
                       {"verified", true}};
    if (strategy) {
      nlohmann::json s;
      for (NamedAttribute a : strategy) {
        if (auto b = dyn_cast<BoolAttr>(a.getValue()))
          s[a.getName().str()] = b.getValue();
        else if (auto i = dyn_cast<IntegerAttr>(a.getValue()))
          s[a.getName().str()] = i.getInt();
        else if (auto str = dyn_cast<StringAttr>(a.getValue()))
          s[a.getName().str()] = str.str();
      }
      out["strategy"] = s;
      out["mesh"] = meshText;
      nlohmann::json rows = nlohmann::json::array();
      for (auto &[stage, row] : stages) {
        rows.push_back({{"stage", stage}, {"first_layer", row.firstLayer},
                        {"last_layer", row.lastLayer},
                        {"params_per_rank", static_cast<int64_t>(row.params)}});
        if (positionDevices)
          rows.back()["gpu"] = stageDevice(stage);
      }
      out["stages"] = rows;
    }
    writeOutput(o.output, out.dump(2) + "\n");
    return;
  }

  std::string text = fmt::format(
      "model    {}: {} layers, hidden {}, {} parameters\n"
      "cluster  {}: {} GPUs in {} node(s), {} datacenter(s)\n"
      "lowered  {} layer ops into place IR; verified\n",
      model.name(), spec::numLayers(model), model.hidden_size(),
      humanCount(static_cast<double>(params.total())), cluster.name(), size.gpus,
      size.nodes, size.datacenters, numLayerOps);
  if (strategy) {
    std::string s;
    llvm::raw_string_ostream os(s);
    llvm::interleave(strategy, os, [&](NamedAttribute a) {
      os << a.getName().getValue() << "=";
      if (auto b = dyn_cast<BoolAttr>(a.getValue()))
        os << (b.getValue() ? "on" : "off");
      else if (auto i = dyn_cast<IntegerAttr>(a.getValue()))
        os << i.getInt();
      else if (auto str = dyn_cast<StringAttr>(a.getValue()))
        os << str.getValue();
    }, " ");
    text += fmt::format("mesh     {}\nstrategy {} (read back from the placements)\n\n",
                        meshText, s);
    std::vector<std::string> header{">stage", "layers", ">params/rank", ">bf16 weights/rank"};
    if (positionDevices)
      header.push_back("gpu");
    Table table(header);
    for (auto &[stage, row] : stages) {
      std::vector<std::string> cells{
          std::to_string(stage),
          row.firstLayer < 0 ? "-" : fmt::format("{}-{}", row.firstLayer, row.lastLayer),
          humanCount(row.params), humanBytes(row.params * 2)};
      if (positionDevices)
        cells.push_back(stageDevice(stage));
      table.addRow(cells);
    }
    text += table.render();
  } else {
    text += "(no strategy given: pass --tp/--pp/--dp/... to place the layers)\n";
  }
  writeOutput(o.output, text);
}

/// "--tp: must be >= 1, got -4" rather than CLI11's floating-point range text.
static const CLI::Validator atLeastOne(
    [](std::string &value) -> std::string {
      try {
        if (std::stoll(value) >= 1)
          return {};
      } catch (const std::exception &) {
      }
      return "must be an integer >= 1, got " + value;
    },
    "INT>=1");

void loom::cli::addLowerCommand(CLI::App &app) {
  auto o = std::make_shared<LowerOptions>();
  auto *cmd = app.add_subcommand(
      "lower",
      "Lower a model and a cluster into place IR and verify it.\n"
      "With strategy options (--tp, --pp, ...) every layer is placed and the\n"
      "strategy is read back from the placements. --emit-mlir prints the IR.");
  addSpecOptions(cmd, o->spec);
  auto strategyOpt = [&](const char *name, int64_t &v, const char *desc) {
    cmd->add_option(name, v, desc)
        ->check(atLeastOne)
        ->each([o](const std::string &) { o->strategyGiven = true; });
  };
  strategyOpt("--dp", o->dp, "data-parallel size (default: what the GPUs leave)");
  strategyOpt("--tp", o->tp, "tensor-parallel size");
  strategyOpt("--pp", o->pp, "pipeline-parallel size");
  strategyOpt("--vpp", o->vpp, "virtual stages per pipeline rank");
  strategyOpt("--ep", o->ep, "expert-parallel size (divides dp)");
  strategyOpt("--cp", o->cp, "context-parallel size");
  cmd->add_option("--zero", o->zero, "ZeRO stage 0-3")
      ->check(CLI::Range(0, 3))
      ->each([o](const std::string &) { o->strategyGiven = true; });
  strategyOpt("--mbs", o->mbs, "micro-batch size");
  cmd->add_option("--recompute", o->recompute, "none, selective or full")
      ->check(CLI::IsMember({"none", "selective", "full"}))
      ->each([o](const std::string &) { o->strategyGiven = true; });
  cmd->add_flag("--sp", o->sp, "sequence parallelism along tp")
      ->each([o](const std::string &) { o->strategyGiven = true; });
  addOrderOption(cmd, o->order, "the rank order:")
      ->each([o](const std::string &) { o->strategyGiven = true; });
  cmd->add_flag("--emit-mlir", o->emitMlir, "print the place IR instead of a summary");
  cmd->add_flag("--json", o->json, "machine-readable summary");
  cmd->add_option("-o,--output", o->output, "write to this file (atomically)");
  cmd->callback([o] { runLower(*o); });
}
