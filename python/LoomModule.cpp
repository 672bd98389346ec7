//===- LoomModule.cpp - the `loom._loom` extension module -----------------===//
//
// loom's planner and cost model for Python. Each function takes the names or
// spec files `loom plan` / `loom estimate` take and returns the JSON text
// those commands print with --json; python/loom/__init__.py parses it into
// plain dicts. Integer arguments are Python ints of any size, checked against
// the CLI's bounds; errors are loom.Error.
//
//===----------------------------------------------------------------------===//

#include "loom/CostModel/Estimate.h"
#include "loom/CostModel/FromStrategy.h"
#include "loom/Schedule/ScheduleJson.h"
#include "loom/Search/PlanJson.h"
#include "loom/Search/SimulatedPipeline.h"
#include "loom/Transforms/SchedPasses.h"

#include <fmt/format.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

namespace py = pybind11;
using namespace loom;

namespace {

/// Raised as loom.Error: an argument out of range, or the CLI's error line.
struct LoomError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Inputs {
  spec::Model model;
  spec::Cluster cluster;
  spec::Training training;
};

/// `value`, a Python int of any size, in [min, max]; otherwise loom.Error
/// "tp=0: must be 1 to 16777216", then `note` ("0: search it") in brackets.
int64_t bounded(const char *name, const py::object &value, int64_t min, int64_t max,
                const char *note = nullptr) {
  if (!py::isinstance<py::int_>(value))
    throw py::type_error(
        fmt::format("{} must be an int, got {}", name, Py_TYPE(value.ptr())->tp_name));
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (!overflow && v >= min && v <= max)
    return v;
  throw LoomError(fmt::format("{}={}: must be {} to {}{}", name, std::string(py::str(value)), min,
                              max, note ? fmt::format(" ({})", note) : ""));
}

Inputs load(const std::string &model, const std::string &cluster,
            const py::object &globalBatchArg, const py::object &seqArg, bool bf16Grads) {
  // 0 keeps the default; the bounds are the CLI's --global-batch and --seq.
  int64_t globalBatch = bounded("global_batch", globalBatchArg, 0,
                                int64_t(spec::kMaxGlobalBatch), "0: the default");
  int64_t seq = bounded("seq", seqArg, 0, int64_t(spec::kMaxSeqLen), "0: the default");
  Inputs in{spec::loadModel(model), spec::loadCluster(cluster), {}};
  in.training = spec::defaultTraining(in.model);
  if (globalBatch > 0)
    in.training.set_global_batch(globalBatch);
  if (seq > 0)
    in.training.set_seq_len(seq);
  if (bf16Grads) {
    std::string why = spec::bf16GradsConflict(in.training);
    if (!why.empty())
      throw LoomError("grad_reduce_in_bf16 " + why);
    in.training.set_grad_reduce_in_bf16(true);
  }
  return in;
}

std::string plan(const std::string &model, const std::string &cluster, const py::object &top,
                 const py::object &globalBatch, const py::object &seq, const py::object &dp,
                 const py::object &tp, const py::object &pp, const py::object &vpp,
                 const py::object &ep, const py::object &cp, const py::object &mbs,
                 const py::object &zero, bool bf16Grads, const std::string &framework) {
  Inputs in = load(model, cluster, globalBatch, seq, bf16Grads);
  search::PlannerOptions options;
  options.topK = bounded("top", top, 1, search::kMaxTopK);
  // 0 searches the degree, as `loom plan` does for an option left out.
  auto degree = [](const char *name, const py::object &value) {
    return bounded(name, value, 0, cost::kMaxDegree, "0: search it");
  };
  options.fixed.dp = degree("dp", dp);
  options.fixed.tp = degree("tp", tp);
  options.fixed.pp = degree("pp", pp);
  options.fixed.vpp = degree("vpp", vpp);
  options.fixed.ep = degree("ep", ep);
  options.fixed.cp = degree("cp", cp);
  options.fixed.microBatch = degree("mbs", mbs);
  if (!zero.is_none())
    options.fixed.zero = bounded("zero", zero, 0, 3, "None: search it");
  if (!framework.empty()) {
    search::Framework f = search::Framework::Any;
    if (!search::parseFramework(framework, f))
      throw LoomError("framework='" + framework + "': must be 'megatron' or 'deepspeed' (or '')");
    if (std::string why = search::restrictToFramework(f, options); !why.empty())
      throw LoomError("framework='" + framework + "': " + why);
  }
  // Inputs no plan can take raise, as `loom plan` refuses them; a plan that
  // does not fit in memory is a result ("fits": false).
  auto raise = [](const search::InputProblem &problem) {
    std::string options;
    for (const auto &[name, value] : problem.options)
      options += fmt::format("{}{}={}", options.empty() ? "" : ", ", name, value);
    return LoomError((options.empty() ? problem.message : options + ": " + problem.message) +
                     " (" + problem.hint + ")");
  };
  if (auto problem = search::checkInputs(in.model, in.cluster, options))
    throw raise(*problem);
  search::PlanResult r = search::plan(in.model, in.cluster, in.training, options);
  if (auto problem = search::nothingPriced(in.model, in.cluster, in.training, r, options))
    throw raise(*problem);
  return search::planResultJson(in.model, in.cluster, in.training, r).dump();
}

std::string estimate(const std::string &model, const std::string &cluster,
                     const py::object &globalBatch, const py::object &seq, const py::object &dp,
                     const py::object &tp, const py::object &pp, const py::object &vpp,
                     const py::object &ep, const py::object &cp, const py::object &mbs,
                     const py::object &zero, const std::string &recompute, bool sp,
                     bool analytic, bool bf16Grads) {
  Inputs in = load(model, cluster, globalBatch, seq, bf16Grads);
  auto degree = [](const char *name, const py::object &value) {
    return bounded(name, value, 1, cost::kMaxDegree);
  };
  cost::StrategyChoice c;
  c.dp = bounded("dp", dp, 0, cost::kMaxDegree, "0: what the GPUs leave");
  c.tp = degree("tp", tp);
  c.pp = degree("pp", pp);
  c.vpp = degree("vpp", vpp);
  c.ep = degree("ep", ep);
  c.cp = degree("cp", cp);
  c.microBatch = degree("mbs", mbs);
  c.zero = bounded("zero", zero, 0, 3);
  c.sequenceParallel = sp;
  c.tpCommOverlap = sp;
  if (!cost::parseRecompute(recompute, c.recompute))
    throw LoomError("recompute='" + recompute + "': must be none, selective or full");
  cost::WorkloadResult w = cost::fromStrategy(in.model, in.cluster, in.training, c);
  if (!w.ok())
    throw LoomError(w.error);
  std::vector<cost::ComputeModel> computes = cost::computeModelsFor(in.cluster, in.training);
  cost::Estimate e = cost::estimate(w.workload, computes);
  // The pipeline simulated, as `loom estimate` does unless told --analytic.
  bool simulated = !analytic && search::simulateEstimate(e, w.workload, computes);
  return search::estimateJson(in.model, in.cluster, c, w.workload, e, simulated).dump();
}

std::string schedule(const std::string &kind, const py::object &stages,
                     const py::object &microbatches, const py::object &vpp,
                     const std::vector<double> &costs, double memLimit, const std::string &skip) {
  ScheduleRequest request;
  request.kind = kind;
  // Any Python int; the generator then applies its own, tighter bounds.
  request.stages = bounded("stages", stages, 1, cost::kMaxDegree);
  request.microbatches = bounded("microbatches", microbatches, 1, cost::kMaxDegree);
  request.vpp = bounded("vpp", vpp, 1, cost::kMaxDegree);
  request.costs = costs;
  request.memLimit = memLimit;
  request.skip = skip;
  request.p2p = true; // executors need every transfer
  if (!costs.empty() && costs.size() != 4)
    throw LoomError("costs must be 4 numbers F, B, W, comm, got " +
                    std::to_string(costs.size()));
  std::string error;
  std::optional<GeneratedSchedule> g = generateSchedule(request, error);
  if (!g)
    throw LoomError(error);
  std::optional<sched::Timeline> t = sched::simulate(g->schedule, g->costs, &error);
  if (!t)
    throw LoomError("the schedule cannot be simulated: " + error);
  return sched::scheduleJson(kind, g->schedule, *t, memLimit).dump();
}

} // namespace

PYBIND11_MODULE(_loom, m) {
  m.doc() = "loom's planner and cost model (JSON text; use the loom package)";
  static py::exception<LoomError> error(m, "Error");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p)
        std::rethrow_exception(p);
    } catch (const LoomError &e) {
      error(e.what());
    } catch (const spec::SpecError &e) {
      error(e.what());
    }
  });
  m.def("plan", &plan, py::arg("model"), py::arg("cluster"), py::arg("top") = 5,
        py::arg("global_batch") = 0, py::arg("seq") = 0, py::arg("dp") = 0, py::arg("tp") = 0,
        py::arg("pp") = 0, py::arg("vpp") = 0, py::arg("ep") = 0, py::arg("cp") = 0,
        py::arg("mbs") = 0, py::arg("zero") = py::none(),
        py::arg("grad_reduce_in_bf16") = false, py::arg("framework") = std::string());
  m.def("estimate", &estimate, py::arg("model"), py::arg("cluster"), py::arg("global_batch") = 0,
        py::arg("seq") = 0, py::arg("dp") = 0, py::arg("tp") = 1, py::arg("pp") = 1,
        py::arg("vpp") = 1, py::arg("ep") = 1, py::arg("cp") = 1, py::arg("mbs") = 1,
        py::arg("zero") = 0, py::arg("recompute") = "none", py::arg("sp") = false,
        py::arg("analytic") = false, py::arg("grad_reduce_in_bf16") = false);
  m.def("schedule", &schedule, py::arg("kind"), py::arg("stages"), py::arg("microbatches"),
        py::arg("vpp") = 1, py::arg("costs") = std::vector<double>{}, py::arg("mem_limit") = 0.0,
        py::arg("skip") = std::string());
}
