//===- Driver.h - shared pieces of the loom CLI -----------------*- C++ -*-===//
//
// Every failure a user can cause ends as a UserError: printed as one line
// "error: ..." plus a "hint: ..." line, exit code 1. Usage errors exit 2.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_TOOLS_LOOM_DRIVER_H
#define LOOM_TOOLS_LOOM_DRIVER_H

#include "loom/CostModel/FromStrategy.h"
#include "loom/Spec/Spec.h"
#include "loom/Transforms/Passes.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"

#include "CLI/CLI.hpp"

#include <memory>

#include <stdexcept>
#include <string>

namespace loom::cli {

class UserError : public std::runtime_error {
public:
  UserError(const std::string &message, std::string hint = {}, int exitCode = 1)
      : std::runtime_error(message), hint(std::move(hint)), exitCode(exitCode) {}
  std::string hint;
  int exitCode;
};

/// Exit code for outcomes that are not errors of the input (e.g. 3: the plan
/// does not fit, reported in --json output rather than as an error line).
extern int exitStatus;

/// What a user typed for --model, --cluster, --training, --seq and
/// --global-batch, shared by every command that reads a model and a cluster.
struct SpecArgs {
  std::string model, cluster, training;
  int64_t seq = 0, globalBatch = 0;
  bool gradReduceInBf16 = false;
};
void addSpecOptions(CLI::App *cmd, SpecArgs &args);

/// --order: which of pipeline and data parallelism spans the outermost links
/// (search::RankOrder's names); `lead` is what the command does with it.
inline CLI::Option *addOrderOption(CLI::App *cmd, std::string &order, const char *lead) {
  return cmd
      ->add_option("--order", order,
                   std::string(lead) +
                       " which of pipeline (pp-outer, Megatron-LM's order) and data\n"
                       "parallelism (dp-outer) spans the outermost links, e.g. crosses "
                       "datacenters")
      ->check(CLI::IsMember({"pp-outer", "dp-outer"}));
}

/// --no-grad-accumulation-fusion (cost::StrategyChoice::fusedGradAccumulation).
inline void addNoGradFusionFlag(CLI::App *cmd, bool &noFusion) {
  cmd->add_flag("--no-grad-accumulation-fusion", noFusion,
                "each micro-batch's weight gradients are added to the gradient buffer by a\n"
                "separate kernel (Megatron-LM before 2022, plain PyTorch accumulation)");
}

inline void addSyncTpBackwardFlag(CLI::App *cmd, bool &sync) {
  cmd->add_flag("--sync-tp-backward", sync,
                "the backward's tensor-parallel communication waits for its GEMMs (Megatron-LM\n"
                "before 2021-09); otherwise a column-parallel linear's input-gradient reduction\n"
                "runs beside its weight-gradient GEMM, as Megatron-Core and Transformer Engine do");
}

/// A parallel degree option (--tp 8): an integer from 1 to cost::kMaxDegree.
inline void addDegreeOption(CLI::App *cmd, const char *name, int64_t &value, const char *desc) {
  cmd->add_option(name, value, desc)->check(CLI::Range(int64_t(1), cost::kMaxDegree));
}

/// What those arguments name, loaded and validated.
struct SpecInputs {
  spec::Model model;
  spec::Cluster cluster;
  spec::Training training;
};
SpecInputs loadSpecInputs(const SpecArgs &args);

/// Plan `index` of the file at `path` (a plan, or `loom plan --json` output), as
/// `loom emit`, `loom estimate --plan` and `loom reshard --plan` read it; a
/// UserError naming the file otherwise.
spec::Plan readPlanFile(const std::string &path, int64_t index);

/// Place IR with the context that owns it (declared first: destroyed last).
struct PlacedModule {
  std::unique_ptr<mlir::MLIRContext> context;
  mlir::OwningOpRef<mlir::ModuleOp> module;
};

/// Lowers the specs into verified place IR; with `apply`, places every layer
/// and reads the strategy back (place-apply-strategy, place-derive-strategy);
/// with `estimate`, annotates per-rank memory and the step time too. Failures
/// are UserErrors carrying the first diagnostic.
PlacedModule lowerAndPlace(const SpecInputs &in, const PlaceApplyStrategyOptions *apply,
                           bool estimate);
std::string printModule(mlir::ModuleOp module);

/// Writes `text` to stdout, or atomically to `path` when it is not empty or "-".
void writeOutput(const std::string &path, const std::string &text);

void addCatalogCommand(CLI::App &app);
void addLowerCommand(CLI::App &app);
void addEstimateCommand(CLI::App &app);
void addPlanCommand(CLI::App &app);
void addScheduleCommand(CLI::App &app);
/// `loom inspect` and `loom verify-ckpt` (Inspect.cpp).
void addCheckpointCommands(CLI::App &app);
void addEmitCommand(CLI::App &app);
/// `loom reshard` (Reshard.cpp).
void addReshardCommand(CLI::App &app);

} // namespace loom::cli

#endif // LOOM_TOOLS_LOOM_DRIVER_H
