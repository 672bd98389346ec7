//===- loom.cpp - the loom command line -----------------------------------===//

#include "Driver.h"

#include "loom/Emit/Emit.h"
#include "loom/Spec/Spec.h"
#include "loom/Support/AtomicFile.h"

#include <fmt/format.h>
#include <llvm/Support/MemoryBuffer.h>

#include <cstdio>
#include <iostream>

using namespace loom::cli;

int loom::cli::exitStatus = 0;

void loom::cli::addSpecOptions(CLI::App *cmd, SpecArgs &args) {
  cmd->add_option("--model", args.model, "catalog model, spec file or HF config.json")
      ->required();
  cmd->add_option("--cluster", args.cluster,
                  "catalog cluster (e.g. dgx-h100:nodes=64,dcs=2,wan-gbps=100: WAN\n"
                  "bandwidth per node, see `loom catalog`) or spec file")
      ->required();
  cmd->add_option("--training", args.training, "spec file with a training: section");
  cmd->add_option("--seq", args.seq, "sequence length (overrides the training spec)")
      ->check(CLI::Range(int64_t(1), int64_t(spec::kMaxSeqLen)));
  cmd->add_option("--global-batch", args.globalBatch, "sequences per step (overrides)")
      ->check(CLI::Range(int64_t(1), int64_t(spec::kMaxGlobalBatch)));
  cmd->add_flag("--grad-reduce-in-bf16", args.gradReduceInBf16,
                "bf16 gradient buffers, accumulated and reduced in bf16 (Megatron-LM's flag, "
                "NeMo's grad_sync_dtype: bf16): half the gradient memory and traffic");
}

SpecInputs loom::cli::loadSpecInputs(const SpecArgs &args) {
  SpecInputs in{spec::loadModel(args.model), spec::loadCluster(args.cluster), {}};
  in.training = args.training.empty() ? spec::defaultTraining(in.model)
                                      : spec::loadTraining(args.training);
  if (args.seq)
    in.training.set_seq_len(args.seq);
  if (args.globalBatch)
    in.training.set_global_batch(args.globalBatch);
  if (args.gradReduceInBf16) {
    std::string why = spec::bf16GradsConflict(in.training);
    if (!why.empty())
      throw UserError("--grad-reduce-in-bf16 " + why,
                      "drop the flag, or give a --training spec with precision: bf16");
    in.training.set_grad_reduce_in_bf16(true);
  }
  return in;
}

loom::spec::Plan loom::cli::readPlanFile(const std::string &path, int64_t index) {
  auto text = llvm::MemoryBuffer::getFile(path);
  if (!text)
    throw UserError(fmt::format("cannot read plan file '{}': {}", path, text.getError().message()),
                    "give a file `loom plan --json` wrote");
  try {
    return emit::parsePlan((*text)->getBuffer().str(), path, index);
  } catch (const emit::EmitError &e) {
    throw UserError(e.what(), e.hint);
  }
}

void loom::cli::writeOutput(const std::string &path, const std::string &text) {
  if (path.empty() || path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return;
  }
  std::string err = loom::writeFileAtomic(path, text);
  if (!err.empty())
    throw UserError(err, "check that the directory exists and is writable");
}

int main(int argc, char **argv) {
  CLI::App app{"loom: plans parallelism for large-model training.\n"
               "Models and clusters come from the built-in catalog (see `loom catalog`) "
               "or from YAML/JSON/textproto spec files and HF config.json files."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "loom 0.1.0");
  addCatalogCommand(app);
  addLowerCommand(app);
  addEstimateCommand(app);
  addPlanCommand(app);
  addScheduleCommand(app);
  addCheckpointCommands(app);
  addReshardCommand(app);
  addEmitCommand(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp &e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp &e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion &e) {
    return app.exit(e);
  } catch (const CLI::ParseError &e) {
    fmt::print(stderr, "error: {}\n", e.what());
    fmt::print(stderr, "hint: `loom --help` lists the commands, `loom <command> --help` "
                       "their options\n");
    return 2;
  } catch (const UserError &e) {
    fmt::print(stderr, "error: {}\n", e.what());
    if (!e.hint.empty())
      fmt::print(stderr, "hint: {}\n", e.hint);
    return e.exitCode;
  } catch (const loom::spec::SpecError &e) {
    fmt::print(stderr, "error: {}\n", e.what());
    fmt::print(stderr, "hint: `loom catalog` lists built-in models and clusters; "
                       "spec files are .yaml, .json or .textproto\n");
    return 1;
  }
  return exitStatus;
}
