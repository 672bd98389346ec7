//===- Schedule.cpp - `loom schedule` -------------------------------------===//
//
// Builds a pipeline schedule through the same request sched-generate reads
// (so the CLI and loom-opt accept and refuse alike), simulates it, and shows
// it four ways: a terminal timeline with per-rank figures, JSON action tables
// (what the Python executor runs: every p2p operation listed, in order), an
// SVG picture and a Chrome trace. --emit-mlir prints the sched IR instead.
//
//===----------------------------------------------------------------------===//

#include "Driver.h"

#include "loom/Schedule/ScheduleJson.h"
#include "loom/Schedule/Simulator.h"
#include "loom/Support/Table.h"
#include "loom/Transforms/SchedPasses.h"
#include "sched/Sched.h"

#include "mlir/IR/Verifier.h"
#include "llvm/ADT/StringExtras.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

using namespace loom;
using namespace loom::cli;
using sched::Action;
using sched::Op;
using sched::Timeline;

namespace {

struct ScheduleCliOptions {
  ScheduleRequest request;
  std::string costs, svg, trace;
  bool json = false, emitMlir = false;
};

/// Actions that occupy a rank and so appear in pictures; sends and receives
/// take no rank time (their transfer sits on the link).
bool drawn(const Action &a) { return a.op != Op::Optimizer && sched::isCompute(a.op); }

char letter(Op op) { return op == Op::F ? 'F' : op == Op::W ? 'W' : 'B'; }

std::string num(double v) { return fmt::format("{:g}", v); }

std::vector<double> parseCostList(const std::string &text) {
  std::vector<double> out;
  for (llvm::StringRef item : llvm::split(llvm::StringRef(text), ',')) {
    double v = 0;
    if (item.trim().getAsDouble(v))
      throw UserError("--costs: '" + item.trim().str() + "' is not a number",
                      "--costs takes F,B,W,comm, e.g. 1,1,1,0");
    out.push_back(v);
  }
  return out;
}

/// A hint for each way a request can be refused (messages from
/// loom::generateSchedule).
std::string hintFor(const std::string &error, const std::string &kind) {
  llvm::StringRef e(error);
  if (e.starts_with("the interleaved schedule needs vpp"))
    return "give --vpp 2 or more, or use --kind 1f1b";
  if (e.starts_with("interleaved"))
    return "give --microbatches a multiple of --stages";
  if (e.contains("has no virtual stages"))
    return "--vpp is for --kind interleaved";
  if (e.starts_with("costs"))
    return "--costs takes four numbers F,B,W,comm, e.g. 1,2,1,0.1";
  if (e.starts_with("skip:"))
    return "--skip takes max-skip=F,max-swaps=N,min-share=G,slow=R:T (see --help)";
  if (e.contains("stage passes") || e.contains("list-schedules at most"))
    return "a schedule's pattern repeats: fewer --microbatches (or --stages) show the same one";
  if (e.contains("activation units in flight"))
    return kind == "zb-auto"
               ? "raise --mem-limit: zb-auto schedules under it, but each rank holds at least "
                 "one micro-batch's activations (1 unit)"
               : "raise --mem-limit, or use --kind zb-auto, which schedules under the limit";
  return "`loom schedule --help` lists the kinds and what each needs";
}

/// One row per rank, in units of the cheapest action. Up to 50 units each
/// gets two columns and an action starts with its letter and microbatch digit
/// (a two-unit backward of microbatch 3 reads "B3BB"); up to 100, one column
/// and the letter only; beyond, 100 columns scaled to the makespan.
std::string renderTimeline(const sched::Schedule &s, const sched::Costs &c, const Timeline &t) {
  double unit = std::numeric_limits<double>::infinity();
  for (int32_t st = 0; st < s.numStages(); ++st)
    unit = std::min({unit, c.forward[st], c.backward[st], c.weight[st]});
  double units = t.makespan / unit;
  bool labels = units <= 50;
  double scale = labels ? 2 / unit : units <= 100 ? 1 / unit : 100 / t.makespan;
  auto column = [&](double time) { return static_cast<size_t>(std::lround(time * scale)); };
  size_t width = column(t.makespan);
  std::string out = fmt::format("time ->  1 column = {}\n", num(1 / scale));
  for (int32_t r = 0; r < s.numRanks; ++r) {
    // Each column shows the action running at its midpoint, so an action
    // narrower than a column cannot paint over its neighbours.
    std::string row(width, '.');
    const auto &program = s.programs[r];
    size_t i = 0;
    for (size_t col = 0; col < width; ++col) {
      double mid = (col + 0.5) / scale;
      while (i < program.size() && (!drawn(program[i]) || t.end[r][i] <= mid))
        ++i;
      if (i < program.size() && t.start[r][i] <= mid)
        row[col] = letter(program[i].op);
    }
    for (size_t k = 0; labels && k < program.size(); ++k)
      if (drawn(program[k]) && column(t.end[r][k]) - column(t.start[r][k]) >= 2)
        row[column(t.start[r][k]) + 1] = static_cast<char>('0' + program[k].microBatch % 10);
    out += fmt::format("rank {:<3} {}\n", r, row);
  }
  out += "F forward, B backward (input gradient, or all of it where W is not split off), "
         "W weight gradient, . idle";
  return out + (labels ? "; digit: microbatch mod 10\n" : "\n");
}

std::string renderFigures(const sched::Schedule &s, const Timeline &t) {
  Table table({"rank", ">busy", ">bubble", ">bubble %", ">peak in flight"});
  for (int32_t r = 0; r < s.numRanks; ++r)
    table.addRow({std::to_string(r), num(t.busy[r]), num(t.bubble[r]),
                  fmt::format("{:.1f}%", 100 * t.bubbleRatio[r]), num(t.peakActivations[r])});
  return table.render() +
         fmt::format("makespan {}, span {} (the iteration period when iterations overlap)\n"
                     "peak in flight: activation units (1 = one microbatch through a whole "
                     "rank's layers)\n",
                     num(t.makespan), num(t.span));
}

const char *colour(Op op) {
  switch (op) {
  case Op::F:
    return "#4e79a7";
  case Op::B:
    return "#f28e2b";
  case Op::W:
    return "#59a14f";
  default:
    return "#e15759"; // BW
  }
}

std::string renderSvg(const sched::Schedule &s, const Timeline &t, const std::string &title) {
  const double left = 70, top = 30, rowHeight = 26, plotWidth = 1000;
  const double scale = plotWidth / t.makespan;
  double height = top + rowHeight * s.numRanks + 30;
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n<text x=\"{}\" y=\"18\" "
      "font-size=\"13\">{} (makespan {})</text>\n",
      left + plotWidth + 10, height, left, title, num(t.makespan));
  for (int32_t r = 0; r < s.numRanks; ++r) {
    double y = top + r * rowHeight;
    svg += fmt::format("<text x=\"8\" y=\"{:.1f}\">rank {}</text>\n", y + rowHeight * 0.65, r);
    for (size_t i = 0; i < s.programs[r].size(); ++i) {
      const Action &a = s.programs[r][i];
      if (!drawn(a))
        continue;
      double x = left + t.start[r][i] * scale, w = (t.end[r][i] - t.start[r][i]) * scale;
      svg += fmt::format("<rect x=\"{:.2f}\" y=\"{}\" width=\"{:.2f}\" height=\"{}\" "
                         "fill=\"{}\" stroke=\"white\"><title>{}</title></rect>\n",
                         x, y + 2, w, rowHeight - 4, colour(a.op), a.str());
      if (w >= 10)
        svg += fmt::format("<text x=\"{:.2f}\" y=\"{:.1f}\" text-anchor=\"middle\" "
                           "fill=\"white\">{}</text>\n",
                           x + w / 2, y + rowHeight * 0.65, a.microBatch);
    }
  }
  double legendY = top + rowHeight * s.numRanks + 18;
  double x = left;
  for (auto [op, name] : {std::pair{Op::F, "F forward"}, {Op::B, "B input grad"},
                          {Op::W, "W weight grad"}, {Op::BW, "BW whole backward"}}) {
    svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>"
                       "<text x=\"{}\" y=\"{}\">{}</text>\n",
                       x, legendY - 10, colour(op), x + 16, legendY, name);
    x += 130;
  }
  return svg + "</svg>\n";
}

/// Chrome's trace-event format (chrome://tracing, Perfetto): one complete
/// ("X") event per compute action, a thread per rank, times in microseconds
/// of the costs' seconds.
std::string renderTrace(const sched::Schedule &s, const Timeline &t) {
  nlohmann::ordered_json events = nlohmann::ordered_json::array();
  for (int32_t r = 0; r < s.numRanks; ++r) {
    events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", 0}, {"tid", r},
                      {"args", {{"name", "rank " + std::to_string(r)}}}});
    for (size_t i = 0; i < s.programs[r].size(); ++i) {
      const Action &a = s.programs[r][i];
      if (!drawn(a))
        continue;
      events.push_back({{"name", fmt::format("{}{}", sched::opName(a.op), a.microBatch)},
                        {"cat", sched::irOpName(a.op)},
                        {"ph", "X"},
                        {"pid", 0},
                        {"tid", r},
                        {"ts", t.start[r][i] * 1e6},
                        {"dur", (t.end[r][i] - t.start[r][i]) * 1e6},
                        {"args", {{"microbatch", a.microBatch}, {"stage", a.stage}}}});
    }
  }
  return nlohmann::ordered_json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() + "\n";
}

std::string emitMlir(const GeneratedSchedule &g) {
  mlir::MLIRContext context;
  context.loadDialect<sched::SchedDialect>();
  mlir::OpBuilder b(&context);
  mlir::Location loc = mlir::FileLineColLoc::get(&context, "loom", 0, 0);
  mlir::OwningOpRef<mlir::ModuleOp> module = mlir::ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());
  sched::buildSchedule(b, loc, g.symbol, g.schedule, g.options, g.links);
  // generateSchedule verified the schedule; this checks the IR says the same.
  if (failed(mlir::verify(*module)))
    throw UserError("the generated sched IR does not verify", "please report this as a bug");
  return printModule(*module);
}

void runSchedule(ScheduleCliOptions o) {
  if (!o.costs.empty())
    o.request.costs = parseCostList(o.costs);
  // Executors need every transfer spelled out; pictures ignore them.
  o.request.p2p = true;
  std::string error;
  std::optional<GeneratedSchedule> g = generateSchedule(o.request, error);
  if (!g)
    throw UserError(error, hintFor(error, o.request.kind));
  const sched::Schedule &s = g->schedule;
  std::string simError;
  std::optional<Timeline> t = sched::simulate(s, g->costs, &simError);
  if (!t)
    throw UserError("the schedule cannot be simulated: " + simError, "please report this as a bug");

  std::string title = fmt::format("{}: {} ranks, {} stages, {} microbatches",
                                  o.request.skip.empty() ? o.request.kind : "skip (" + o.request.kind + ")",
                                  s.numRanks, s.numStages(), s.numMicroBatches());
  if (!o.svg.empty())
    writeOutput(o.svg, renderSvg(s, *t, title));
  if (!o.trace.empty())
    writeOutput(o.trace, renderTrace(s, *t));
  if (o.emitMlir)
    return writeOutput("", emitMlir(*g));
  if (o.json) {
    nlohmann::ordered_json out = sched::scheduleJson(o.request.kind, s, *t, o.request.memLimit);
    return writeOutput("", out.dump(2) + "\n");
  }
  std::vector<double> c = o.request.costs.empty() ? std::vector<double>{1, 1, 1, 0}
                                                  : o.request.costs;
  std::string text = title + fmt::format(" (F={} B={} W={} comm={})\n", num(c[0]), num(c[1]),
                                         num(c[2]), num(c[3]));
  if (g->options.pathRules)
    for (int32_t mb = 0; mb < s.numMicroBatches(); ++mb)
      text += fmt::format("path of microbatch {}: {}\n", mb, fmt::join(s.paths[mb], " "));
  text += renderTimeline(s, g->costs, *t) + "\n" + renderFigures(s, *t);
  writeOutput("", text);
}

} // namespace

void loom::cli::addScheduleCommand(CLI::App &app) {
  auto o = std::make_shared<ScheduleCliOptions>();
  auto *cmd = app.add_subcommand(
      "schedule",
      "Build, verify and simulate a pipeline schedule; show its timeline, bubble ratio\n"
      "and peak in-flight activations per rank, or write it as JSON action tables, an\n"
      "SVG picture, a Chrome trace or sched IR.");
  cmd->add_option("--kind", o->request.kind,
                  "gpipe, 1f1b, interleaved (needs --vpp, microbatches a multiple of\n"
                  "stages), zb-h1, zb-h2, zb-v, zb-auto (schedules under --mem-limit) or\n"
                  "dualpipe (even stages, even microbatches >= 2 x stages)")
      ->required()
      ->check(CLI::IsMember(
          {"gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v", "zb-auto", "dualpipe"}));
  cmd->add_option("--stages", o->request.stages, "pipeline ranks")
      ->required()
      ->check(CLI::Range(int64_t(1), int64_t(4096)));
  cmd->add_option("--microbatches", o->request.microbatches, "microbatches per iteration")
      ->required()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--vpp", o->request.vpp, "virtual stages per rank (interleaved only)")
      ->check(CLI::Range(int64_t(1), int64_t(4096)));
  cmd->add_option("--costs", o->costs,
                  "F,B,W,comm: seconds for one microbatch through a whole rank's layers\n"
                  "(forward, input grad, weight grad) and per p2p hop; default 1,1,1,0");
  cmd->add_option("--mem-limit", o->request.memLimit,
                  "activation units a rank may hold (1 = one microbatch through a whole\n"
                  "rank's layers; 1F1B needs --stages); every kind is checked against it")
      ->check(CLI::Range(0.0, 1e9));
  cmd->add_option("--skip", o->request.skip,
                  "SkipPipe paths (with --kind 1f1b or zb-auto): comma-separated\n"
                  "max-skip=F (share of middle stages a microbatch may skip, default 0.25),\n"
                  "max-swaps=N (stage pairs visited out of order, default 0),\n"
                  "min-share=G (share of microbatches every stage runs, default 0.5),\n"
                  "slow=R:T (links into and out of rank R take T seconds; repeatable),\n"
                  "e.g. --skip max-skip=0.5,slow=2:2.0");
  auto *json = cmd->add_flag("--json", o->json,
                             "per-rank action tables with simulated start/end, and the figures");
  cmd->add_option("--svg", o->svg, "write an SVG timeline to this file");
  cmd->add_option("--trace", o->trace, "write a Chrome trace (chrome://tracing) to this file");
  cmd->add_flag("--emit-mlir", o->emitMlir, "print the schedule as sched IR")->excludes(json);
  cmd->callback([o] { runSchedule(*o); });
}
