//===- Emit.cpp - `loom emit` ---------------------------------------------===//
//
// Writes what a training job starts from, for a plan `loom plan --json` wrote:
// Megatron-LM arguments, a DeepSpeed config, torchrun or Slurm launch scripts,
// or the rank map. The work is lib/Emit's; this file reads the inputs.
//
//===----------------------------------------------------------------------===//

#include "Driver.h"

#include "loom/Emit/Emit.h"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

using namespace loom;
using namespace loom::cli;

namespace {
struct EmitCliOptions {
  std::string planFile, target, output, nodesFile, masterAddr, script = "train.py";
  std::string model, cluster; // the schedule target's; default: the plan's
  int64_t planIndex = 0;
  int port = 29500;
};

std::string readFile(const std::string &path, const char *what) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw UserError(fmt::format("cannot read {} '{}'", what, path),
                    "check the path and its permissions");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// One host per line; blank lines and # comments skipped.
std::vector<std::string> readHosts(const std::string &path) {
  std::vector<std::string> hosts;
  std::istringstream lines(readFile(path, "nodes file"));
  for (std::string line; std::getline(lines, line);) {
    line = line.substr(0, line.find('#'));
    size_t begin = line.find_first_not_of(" \t\r"), end = line.find_last_not_of(" \t\r");
    if (begin != std::string::npos)
      hosts.push_back(line.substr(begin, end - begin + 1));
  }
  if (hosts.empty())
    throw UserError(fmt::format("nodes file '{}' lists no hosts", path),
                    "list one host name per line, in node order");
  return hosts;
}

/// The plan's model or cluster, by catalog name or spec file.
template <typename T> T loadSpec(const std::string &nameOrPath, const char *what) {
  try {
    if constexpr (std::is_same_v<T, spec::Model>)
      return spec::loadModel(nameOrPath);
    else
      return spec::loadCluster(nameOrPath);
  } catch (const spec::SpecError &e) {
    throw UserError(fmt::format("the plan's {} '{}' cannot be loaded: {}", what, nameOrPath, e.what()),
                    fmt::format("pass --{} with the spec the plan was made from", what));
  }
}

void runEmit(const EmitCliOptions &o) {
  emit::Provenance from{o.planFile, o.planIndex};
  try {
    spec::Plan plan = readPlanFile(o.planFile, o.planIndex);
    emit::LaunchOptions launch;
    if (!o.nodesFile.empty())
      launch.hosts = readHosts(o.nodesFile);
    launch.masterAddr = o.masterAddr;
    launch.script = o.script;
    launch.port = o.port;
    std::string text;
    if (o.target == "megatron")
      text = emit::emitMegatron(plan, from);
    else if (o.target == "deepspeed")
      text = emit::emitDeepSpeed(plan, from);
    else if (o.target == "torchrun")
      text = emit::emitTorchrun(plan, from, launch);
    else if (o.target == "slurm")
      text = emit::emitSlurm(plan, from, launch);
    else if (o.target == "schedule")
      text = emit::emitSchedule(plan, loadSpec<spec::Model>(o.model.empty() ? plan.model() : o.model, "model"),
                                loadSpec<spec::Cluster>(o.cluster.empty() ? plan.cluster() : o.cluster, "cluster"),
                                from);
    else
      text = emit::emitRankMap(plan, from);
    writeOutput(o.output, text);
  } catch (const emit::EmitError &e) {
    throw UserError(e.what(), e.hint);
  }
}
} // namespace

void loom::cli::addEmitCommand(CLI::App &app) {
  auto o = std::make_shared<EmitCliOptions>();
  CLI::App *cmd = app.add_subcommand(
      "emit", "write launch files for a plan: Megatron-LM arguments, a DeepSpeed config, "
              "torchrun or Slurm scripts, the rank map, or the per-rank schedule");
  cmd->add_option("plan", o->planFile, "a plan, or `loom plan --json` output")->required();
  cmd->add_option("--target", o->target, "what to write")
      ->required()
      ->check(CLI::IsMember({"megatron", "deepspeed", "torchrun", "slurm", "rankmap", "schedule"}));
  cmd->add_option("--plan-index", o->planIndex, "which of the file's plans (default 0)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  cmd->add_option("-o,--output", o->output, "output file (default stdout), written atomically");
  cmd->add_option("--nodes-file", o->nodesFile, "host names, one per line, in node order");
  cmd->add_option("--master-addr", o->masterAddr, "rendezvous host (default: the first host)");
  cmd->add_option("--master-port", o->port, "rendezvous port")->check(CLI::Range(1, 65535));
  cmd->add_option("--script", o->script, "the training script torchrun starts");
  cmd->add_option("--model", o->model,
                  "schedule: the model the plan was made for (default: the plan's name for it)");
  cmd->add_option("--cluster", o->cluster,
                  "schedule: the cluster the plan was made for (default: the plan's name for it)");
  cmd->callback([o] { runEmit(*o); });
}
