//===- Reshard.cpp - `loom reshard` ----------------------------------------===//
//
// SRC OUT --to FORMAT[:OPTIONS]: describe the source's layout, build the target's,
// derive the ckpt program between them, verify it, and run it (or print it with
// --emit-script). --run-script runs a saved program.
//
//===----------------------------------------------------------------------===//
#include "Driver.h"

#include "loom/Checkpoint/Mpi.h"
#include "loom/Reshard/Reshard.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include "llvm/Support/SourceMgr.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <numeric>
#include <unistd.h>

using namespace loom;
using namespace loom::cli;

namespace {
/// This process's peak resident memory (VmHWM). getrusage's ru_maxrss would do but
/// for counting, after exec, the memory of the process that started loom.
/// A memory figure of this process from /proc/self/status ("VmHWM:" the peak
/// resident set, "VmRSS:" the current one), in bytes.
uint64_t statusBytes(llvm::StringRef field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (llvm::StringRef(line).starts_with(field))
      return std::stoull(line.substr(field.size())) * 1024;
  return 0;
}

struct ReshardOptions {
  std::string source, output, to, emitScript, runScript, plan, maxMemory = "256MiB";
  int64_t planIndex = 0;
  bool weightsOnly = false, resume = false, json = false, mpi = false, divergentReplicas = false;
};

/// Keeps the first error MLIR reports, to be thrown as a one-line UserError.
class FirstError {
public:
  explicit FirstError(mlir::MLIRContext &ctx)
      : handler(&ctx, [this](mlir::Diagnostic &d) {
          if (d.getSeverity() == mlir::DiagnosticSeverity::Error && text.empty()) {
            text = d.str();
            if (auto loc = mlir::dyn_cast<mlir::FileLineColLoc>(d.getLocation()))
              text = fmt::format("{}:{}:{}: {}", loc.getFilename().str(), loc.getLine(),
                                 loc.getColumn(), text);
          }
          return mlir::success();
        }) {}
  std::string text;

private:
  mlir::ScopedDiagnosticHandler handler;
};

/// `path` without trailing slashes ("/" itself stays): "out/s1/" names the folder
/// "out/s1", whose partial output is its sibling "out/s1.loom-partial", not a folder
/// inside it that could never be renamed over its parent.
std::string withoutTrailingSlashes(llvm::StringRef path) {
  while (path.size() > 1 && path.ends_with("/"))
    path = path.drop_back();
  return path.str();
}

template <typename T> T orThrow(llvm::Expected<T> value, const char *hint) {
  if (!value)
    throw UserError(llvm::toString(value.takeError()), hint);
  return std::move(*value);
}

/// A source whose copies Megatron keeps equal differ is refused; with
/// --allow-divergent-replicas the program keeps the first of each (the one the others
/// were compared with), and each is warned of.
void checkReplicas(llvm::ArrayRef<ckpt::DivergentReplica> replicas, bool allow) {
  if (replicas.empty())
    return;
  if (!allow)
    throw UserError(ckpt::summarizeDivergence(replicas),
                    "reshard would keep one copy and drop the others; check the ranks' "
                    "files, or give --allow-divergent-replicas to keep the copies the others "
                    "were compared with (" + ckpt::keptCopies(replicas) + ")");
  if (ckpt::mpi::rank() == 0)
    for (const ckpt::DivergentReplica &replica : replicas)
      fmt::print(stderr, "warning: {}; keeping {}\n", replica.what, replica.kept);
}

void progressBar(uint64_t done, uint64_t total, double seconds) {
  double fraction = total ? double(done) / total : 1.0;
  int width = 30, filled = int(fraction * width);
  double eta = fraction > 0 ? seconds * (1 - fraction) / fraction : 0;
  fmt::print(stderr, "\r[{}{}] {:5.1f}%  {:.1f}/{:.1f} MiB  ETA {:.0f}s", std::string(filled, '#'),
             std::string(width - filled, ' '), 100 * fraction, done / 1048576.0,
             total / 1048576.0, eta);
  if (done == total)
    fmt::print(stderr, "\n");
}

/// --plan: the target's degrees are the plan's (megatron: tp, pp, the first and last
/// stage's layers, and the distributed optimizer for ZeRO >= 1, as `loom emit` gives
/// it --use-distributed-optimizer; deepspeed: tp, dp, zero, and pp with GPTModelPipe's
/// layer files when the plan pipelines), and must not contradict what --to gives.
/// Returns the layers the plan's stages hold (0 if it lists none).
int64_t applyPlan(const ReshardOptions &o, reshard::TargetSpec &spec) {
  spec::Plan plan = readPlanFile(o.plan, o.planIndex);
  const spec::Strategy &s = plan.strategy();
  std::vector<unsigned> layers;
  for (const spec::Stage &stage : plan.stages())
    layers.push_back(stage.num_layers());
  if (s.vpp() > 1 || s.ep() > 1 || s.cp() > 1)
    throw UserError(fmt::format("{}: the plan uses vpp={} ep={} cp={}; reshard writes "
                                "layouts without virtual stages, experts or context parallelism",
                                o.plan, s.vpp(), s.ep(), s.cp()),
                    "pick a plan with vpp=ep=cp=1 (--plan-index)");
  auto take = [&](unsigned &field, unsigned fromPlan, const char *name) {
    if (llvm::is_contained(spec.given, name) && field != fromPlan)
      throw UserError(fmt::format("--to says {}={} but the plan has {}={}", name, field, name,
                                  fromPlan),
                      "leave the degree out of --to to take the plan's");
    field = fromPlan;
  };
  if (spec.format == "megatron") {
    take(spec.tp, s.tp(), "tp");
    take(spec.pp, s.pp(), "pp");
    // Stages as the plan splits them: Megatron-LM runs equal stages but for the
    // first and last (loom plan --for megatron), which first= and last= write.
    if (layers.size() > 2 && !std::equal(layers.begin() + 2, layers.end() - 1, layers.begin() + 1))
      throw UserError(fmt::format("{}: the plan's stages hold {} layers; Megatron-LM runs equal "
                                  "stages but for the first and last",
                                  o.plan, fmt::join(layers, ", ")),
                      "plan with --for megatron, or pick another plan (--plan-index)");
    if (layers.size() >= 2) {
      unsigned middle = layers.size() > 2           ? layers[1]
                        : layers.front() == layers.back() ? layers.front()
                                                          : 0;
      take(spec.firstLayers, layers.front() != middle ? layers.front() : 0, "first");
      take(spec.lastLayers, layers.back() != middle ? layers.back() : 0, "last");
    }
    bool distributed = s.zero() >= 1;
    if (llvm::is_contained(spec.given, "optimizer") && spec.distributedOptimizer != distributed)
      throw UserError(fmt::format("--to says optimizer={} but the plan has zero={}, which Megatron "
                                  "runs with{} --use-distributed-optimizer",
                                  spec.distributedOptimizer ? "distributed" : "mixed", s.zero(),
                                  distributed ? "" : "out"),
                      "leave optimizer= out of --to to take the plan's");
    spec.distributedOptimizer = distributed;
  } else if (spec.format == "deepspeed") {
    take(spec.tp, s.tp(), "tp");
    take(spec.pp, s.pp(), "pp");
    spec.pipeline |= s.pp() > 1;
    take(spec.dp, s.dp(), "dp");
    take(spec.zero, std::max(1u, s.zero()), "zero");
    if (spec.pipeline && spec.zero > 1)
      throw UserError(fmt::format("{}: the plan has pp={} with zero={}, and DeepSpeed's "
                                  "PipelineEngine refuses ZeRO-2 and ZeRO-3",
                                  o.plan, s.pp(), spec.zero),
                      "pick a plan with zero <= 1 (--plan-index)");
  } else {
    throw UserError("--plan applies to --to megatron or deepspeed, not " + spec.format);
  }
  return std::accumulate(layers.begin(), layers.end(), int64_t(0));
}

void runReshard(const ReshardOptions &o) {
  // Checked before any work is done.
  std::optional<uint64_t> budget = reshard::parseByteSize(o.maxMemory);
  if (!budget)
    throw UserError("--max-memory: '" + o.maxMemory + "' is not a size",
                    "give one such as 256MiB, 2GiB or a byte count");
  if (o.output == "-" && o.emitScript.empty())
    throw UserError("OUT '-': reshard writes a checkpoint to a path, not to stdout",
                    "give an output path; '-' is stdout for --emit-script");
  mlir::DialectRegistry registry;
  registry.insert<ckptir::CkptDialect>();
  mlir::MLIRContext context(registry);
  FirstError diags(context);
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::string sourceFormat, targetFormat;
  if (!o.runScript.empty()) {
    llvm::SourceMgr sources;
    module = mlir::parseSourceFile<mlir::ModuleOp>(o.runScript, sources, &context);
    if (!module)
      throw UserError(diags.text.empty() ? o.runScript + ": cannot read the script" : diags.text,
                      "a script is what `loom reshard ... --emit-script FILE` writes");
  } else {
    if (o.source.empty() || o.output.empty() || o.to.empty())
      throw UserError("reshard needs SRC, OUT and --to (or --run-script FILE)",
                      "e.g. loom reshard ckpt/ out/ --to megatron:tp=2,pp=2", 2);
    reshard::TargetSpec spec =
        orThrow(reshard::parseTargetSpec(o.to),
                "formats: megatron:tp=N,pp=N[,ep=N][,first=N][,last=N][,optimizer=distributed]"
                "[,format=torch_dist], "
                "deepspeed:zero=N,dp=N,tp=N,pp=N,optimizer=zero|bf16, "
                "deepspeed-universal, "
                "hf-safetensors[:shard=SIZE], torch, dcp[:ranks=N], universal");
    spec.weightsOnly = o.weightsOnly;
    if (o.mpi && (spec.format == "torch" || spec.format == "dcp"))
      throw UserError("--mpi splits the work by output file, and --to " + spec.format +
                          " is written as one output",
                      "convert to universal under mpirun (its one file is written by every "
                      "rank), then from it to " + spec.format + " in one process");
    int64_t planLayers = o.plan.empty() ? 0 : applyPlan(o, spec);
    reshard::Layout source = orThrow(reshard::describeCheckpoint(o.source),
                                     "the checkpoint is damaged or incomplete, or not one loom "
                                     "reads: Megatron, DeepSpeed, HF, torch, safetensors, DCP "
                                     "or universal");
    if (planLayers && source.dims && source.dims->layers != planLayers)
      throw UserError(fmt::format("{}: the plan splits {} layers over its stages, and {} has {}",
                                  o.plan, planLayers, o.source, source.dims->layers),
                      "plan for the checkpoint's model, or give the checkpoint the plan is for");
    checkReplicas(source.divergentReplicas, o.divergentReplicas);
    reshard::Layout target = orThrow(reshard::targetLayout(source, spec),
                                     "see `loom reshard --help` for the target formats");
    sourceFormat = source.format;
    targetFormat = target.format;
    module = orThrow(reshard::buildProgram(context, source, target, o.source, o.output),
                     "the source and target layouts disagree; this is a loom bug if the "
                     "source verifies with `loom verify-ckpt`");
  }
  if (failed(mlir::verify(*module)))
    throw UserError(diags.text, "the program breaks the ckpt dialect's rules; regenerate it "
                                "with --emit-script");
  auto programs = module->getBody()->getOps<ckptir::ProgramOp>();
  if (std::distance(programs.begin(), programs.end()) != 1)
    throw UserError("the script must hold exactly one ckpt.program");
  ckptir::ProgramOp program = *programs.begin();
  if (o.runScript.empty())
    reshard::coalesceCopies(program);
  if (!o.emitScript.empty()) {
    writeOutput(o.emitScript, printModule(*module));
    return;
  }
  reshard::RunOptions run;
  if (!o.runScript.empty()) {
    // SRC and OUT replace the script's roots; either way without trailing slashes.
    run.sourceRoot = withoutTrailingSlashes(o.source.empty() ? program.getSource() : o.source);
    run.outputRoot = withoutTrailingSlashes(o.output.empty() ? program.getOutput() : o.output);
    // The source may have changed since the script was made, or be another one.
    if (reshard::detectFormat(run.sourceRoot) == "megatron") {
      ckpt::MegatronLayout layout =
          orThrow(ckpt::readMegatronLayout(run.sourceRoot),
                  "the script reads this checkpoint; `loom verify-ckpt` names what is wrong");
      checkReplicas(layout.divergentReplicas, o.divergentReplicas);
    }
  }
  run.resume = o.resume;
  run.mpi = o.mpi;
  run.maxResidentSourceBytes = *budget;
  bool leader = ckpt::mpi::rank() == 0;
  auto started = std::chrono::steady_clock::now();
  if (!o.json && leader && isatty(STDERR_FILENO))
    run.progress = [started](uint64_t done, uint64_t total) {
      progressBar(done, total,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    };
  uint64_t rssBefore = statusBytes("VmRSS:"); // libraries, the program, parsed headers
  llvm::Expected<reshard::RunStats> ran = reshard::runProgram(program, run);
  if (!ran) {
    std::string hint;
    llvm::Error err = llvm::handleErrors(ran.takeError(), [&](const reshard::RunError &e) {
      hint = e.hint;
      return llvm::createStringError(e.message);
    });
    throw UserError(llvm::toString(std::move(err)), hint);
  }
  reshard::RunStats stats = *ran;
  std::string out = run.outputRoot.empty() ? program.getOutput().str() : run.outputRoot;
  uint64_t peakRss = statusBytes("VmHWM:");
  if (o.mpi) {
    // The job's totals; the slowest rank's time; rank 0 reports.
    stats.files = ckpt::mpi::sum(stats.files);
    stats.skippedFiles = ckpt::mpi::sum(stats.skippedFiles);
    stats.tensors = ckpt::mpi::sum(stats.tensors);
    stats.bytesWritten = ckpt::mpi::sum(stats.bytesWritten);
    stats.bytesRead = ckpt::mpi::sum(stats.bytesRead);
    stats.peakResidentSourceBytes = ckpt::mpi::max(stats.peakResidentSourceBytes);
    stats.sourceEvictions = ckpt::mpi::sum(stats.sourceEvictions);
    stats.seconds = ckpt::mpi::max(uint64_t(stats.seconds * 1e6)) / 1e6;
    peakRss = ckpt::mpi::max(peakRss);
    rssBefore = ckpt::mpi::max(rssBefore);
    if (!leader)
      return;
  }
  double gib = stats.bytesWritten / double(1ull << 30);
  if (o.json) {
    nlohmann::json j = {{"output", out},
                        {"source_format", sourceFormat},
                        {"target_format", targetFormat},
                        {"files_written", stats.files},
                        {"files_kept", stats.skippedFiles},
                        {"tensors_written", stats.tensors},
                        {"bytes_read", stats.bytesRead},
                        {"bytes_written", stats.bytesWritten},
                        {"seconds", stats.seconds},
                        {"gib_per_s", stats.seconds > 0 ? gib / stats.seconds : 0.0},
                        {"peak_rss_bytes", peakRss},
                        {"rss_before_run_bytes", rssBefore},
                        {"peak_resident_source_bytes", stats.peakResidentSourceBytes},
                        {"source_evictions", stats.sourceEvictions}};
    if (o.mpi)
      j["mpi_ranks"] = ckpt::mpi::size();
    writeOutput("", j.dump(2) + "\n");
    return;
  }
  auto count = [](uint64_t n, const char *noun) {
    return fmt::format("{} {}{}", n, noun, n == 1 ? "" : "s");
  };
  writeOutput("", fmt::format("wrote {}: {} ({} kept from an earlier run), {}, "
                              "{:.1f} MiB in {:.2f} s\n",
                              out, count(stats.files, "file"), stats.skippedFiles,
                              count(stats.tensors, "tensor"), stats.bytesWritten / 1048576.0,
                              stats.seconds));
}
} // namespace

void loom::cli::addReshardCommand(CLI::App &app) {
  auto o = std::make_shared<ReshardOptions>();
  auto *cmd = app.add_subcommand(
      "reshard",
      "Rewrite a checkpoint in another format or parallel layout. The source's layout is\n"
      "detected; the conversion is a ckpt-dialect program, verified to write every byte of\n"
      "every output tensor exactly once, then run. The output appears whole or not at all.");
  cmd->add_option("SRC", o->source, "checkpoint to read (any format `loom inspect` reads)");
  cmd->add_option("OUT", o->output, "path to create (must not exist)");
  cmd->add_option("--to", o->to,
                  "target: megatron:tp=N,pp=N[,ep=N][,first=N][,last=N][,optimizer=distributed]\n"
                  "(mcore names; first/last: the first and last stage's layers, the others\n"
                  "sharing the rest evenly, as --decoder-first/last-pipeline-num-layers;\n"
                  "ep: expert-parallel ranks of a mixture of experts, whose optimizer\n"
                  "states are a ChainedOptimizer's (dense, experts); with\n"
                  "optimizer states, optimizer=distributed writes them as\n"
                  "--use-distributed-optimizer does, in distrib_optim.pt, for the DDP bucketing\n"
                  "the args record; format=torch_dist writes Megatron-core's distributed\n"
                  "checkpoint, the states in model space (optimizer=distributed: the\n"
                  "distributed optimizer's fully_reshardable form)),\n"
                  "deepspeed:zero=1|2|3,dp=N\n"
                  "[,tp=N (Megatron-DeepSpeed names)][,pp=N (GPTModelPipe's layer files)]\n"
                  "[,optimizer=bf16 (BF16_Optimizer)] (with\n"
                  "optimizer states), deepspeed-universal (DeepSpeed's universal folder,\n"
                  "zero/<param>/*.pt), hf-safetensors[:shard=SIZE], torch (one state-dict file),\n"
                  "dcp[:ranks=N] (a PyTorch distributed checkpoint, rows split over N ranks'\n"
                  "files, with Adam's states as torch's get_state_dict keys them) or universal\n"
                  "(loom's HDF5 format, optimizer states included)");
  cmd->add_option("--plan", o->plan,
                  "take the target's degrees from a loom plan (`loom plan --json` output):\n"
                  "tp, pp, the first and last stage's layers and the distributed optimizer\n"
                  "(zero >= 1) for megatron, tp, pp, dp and zero for deepspeed");
  cmd->add_option("--plan-index", o->planIndex, "which plan of the file (default 0, the best)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--weights-only", o->weightsOnly,
                "leave optimizer states out (hf-safetensors and torch targets cannot hold them\nyet)");
  cmd->add_option("--emit-script", o->emitScript,
                  "write the ckpt program to this file ('-': stdout) instead of running it");
  cmd->add_option("--run-script", o->runScript,
                  "run a saved program; SRC and OUT, when given, replace its roots");
  cmd->add_flag("--resume", o->resume,
                "continue an interrupted run: keep the files already complete in OUT.loom-partial");
  cmd->add_option("--max-memory", o->maxMemory,
                  "source bytes kept mapped in memory at once (default 256MiB); past it the\n"
                  "least recently used give their pages back, so peak memory is about the\n"
                  "largest tensor being assembled plus this");
  cmd->add_flag("--allow-divergent-replicas", o->divergentReplicas,
                "convert a Megatron source whose TP ranks hold differing copies of a replicated\n"
                "tensor (a norm, a row-parallel bias), whose expert-parallel ranks hold differing\n"
                "copies of a dense parameter, or whose last stage's copy of tied word embeddings\n"
                "differs from the first stage's, keeping TP rank 0's copy (the first\n"
                "expert-parallel rank's, the first stage's embedding) with a warning for each,\n"
                "rather than refuse it");
  cmd->add_flag("--json", o->json, "print a machine-readable summary (and no progress bar)");
  cmd->add_flag("--mpi", o->mpi,
                "run as one rank of an MPI job (mpirun -n N loom reshard --mpi ...): to universal,\n"
                "each rank reads and assembles its share of the tensors and all write the one\n"
                "file with parallel HDF5; to targets of many files (megatron, deepspeed,\n"
                "deepspeed-universal, hf-safetensors), each rank writes whole files of its\n"
                "share; rank 0 renames the folder into place and reports (peak RSS: the\n"
                "largest rank's)");
  cmd->callback([o] {
    o->source = withoutTrailingSlashes(o->source);
    o->output = withoutTrailingSlashes(o->output);
    if (!o->mpi)
      return runReshard(*o);
    if (llvm::Error err = ckpt::mpi::init(nullptr, nullptr))
      throw UserError(llvm::toString(std::move(err)), "run without --mpi for one process");
    try {
      runReshard(*o);
    } catch (const UserError &e) {
      // The other ranks may be waiting in a collective call: end the job. Rank 0
      // says why; another rank names itself.
      int rank = ckpt::mpi::rank();
      fmt::print(stderr, "error: {}{}\n", rank ? fmt::format("rank {}: ", rank) : "", e.what());
      if (!e.hint.empty())
        fmt::print(stderr, "hint: {}\n", e.hint);
      std::fflush(stderr);
      ckpt::mpi::abortAll(e.exitCode);
    }
    ckpt::mpi::finalize();
  });
}
