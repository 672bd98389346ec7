//===- PlanInputs.cpp - inputs no strategy can take -----------------------===//
//
// The planner's answer when there is nothing to rank: shared by `loom plan`
// and the Python module, so both refuse the same inputs with the same words.
//
//===----------------------------------------------------------------------===//

#include "loom/Search/Planner.h"
#include "loom/Support/Table.h"

#include <fmt/format.h>

#include <algorithm>

using namespace loom;
using namespace loom::search;

std::optional<InputProblem> loom::search::checkInputs(const spec::Model &model,
                                                      const spec::Cluster &cluster,
                                                      const PlannerOptions &options) {
  std::vector<spec::ClusterLevel> levels = spec::clusterLevels(cluster);
  if (levels.empty())
    return InputProblem{{},
                        fmt::format("cluster '{}' has nodes with different GPU counts; loom "
                                    "lays one mesh over nodes of one GPU count",
                                    cluster.name()),
                        "plan the node groups of each GPU count as clusters of their own"};
  if (options.fixed.ep > 1 &&
      std::none_of(model.blocks().begin(), model.blocks().end(),
                   [](const spec::Block &b) { return b.has_moe(); }))
    return InputProblem{{{"ep", std::to_string(options.fixed.ep)}},
                        fmt::format("{} has no experts to split", model.name()),
                        "leave ep out for a dense model",
                        true};
  // Within one datacenter pipeline parallelism is outermost; asking for that
  // (as --for does) is no error.
  if (options.fixed.order == RankOrder::DataOuter && levels.size() <= 2)
    return InputProblem{{{"order", std::string(rankOrderName(*options.fixed.order))}},
                        fmt::format("{} is one datacenter, where pipeline parallelism is "
                                    "outermost (Megatron-LM's order)",
                                    cluster.name()),
                        "leave order out, or plan a cluster of several datacenters (dcs=2)",
                        true};
  return std::nullopt;
}

std::optional<InputProblem> loom::search::nothingPriced(const spec::Model &model,
                                                        const spec::Cluster &cluster,
                                                        const spec::Training &training,
                                                        const PlanResult &r,
                                                        const PlannerOptions &options) {
  if (r.evaluated > 0)
    return std::nullopt;
  const Constraints &f = options.fixed;
  std::vector<std::pair<std::string, std::string>> fixed;
  for (auto [name, value] : {std::pair<const char *, int64_t>{"dp", f.dp}, {"tp", f.tp},
                             {"pp", f.pp}, {"vpp", f.vpp}, {"ep", f.ep}, {"cp", f.cp},
                             {"mbs", f.microBatch}})
    if (value)
      fixed.push_back({name, std::to_string(value)});
  if (r.rejected == 0 && !fixed.empty()) {
    // Expert parallelism must also divide the experts of every MoE block.
    std::string experts;
    for (const spec::Block &b : model.blocks())
      if (b.has_moe() && experts.empty())
        experts = fmt::format(", {} experts", b.moe().experts());
    return InputProblem{
        fixed,
        fmt::format("no strategy has these fixed degrees: {} GPUs, {} layers, {} heads{} and a "
                    "global batch of {} do not divide that way",
                    spec::clusterSize(cluster).gpus, spec::numLayers(model),
                    model.blocks(0).attention().heads(), experts, training.global_batch()),
        fmt::format("fix fewer degrees, or ones that divide the GPU count, layers, heads{} and "
                    "batch",
                    experts.empty() ? "" : ", experts"),
        true};
  }
  auto most = std::max_element(r.rejections.begin(), r.rejections.end(),
                               [](auto &a, auto &b) { return a.second < b.second; });
  std::string why = most == r.rejections.end()
                        ? std::string()
                        : fmt::format(": every candidate was rejected, most often ({} of {}) "
                                      "with \"{}\"",
                                      most->second, r.rejected, most->first);
  return InputProblem{{},
                      "no strategy is valid for this model on this cluster" + why,
                      "check that the GPU count factors into the model's heads and layers"};
}

std::string loom::search::describeFix(const FitFix &fix, const Candidate &closest,
                                      std::string_view offload) {
  std::string memory = gib(fix.peakMemoryBytes, 1) + " GiB per GPU";
  if (fix.offloadOptimizer)
    return fmt::format("{} ({})", offload, memory);
  return fmt::format("{} the nodes, {} GPUs{} ({})",
                     fix.nodesTimes == 2 ? std::string("twice")
                                         : fmt::format("{} times", fix.nodesTimes),
                     fix.gpus, fix.zero != closest.choice.zero ? ", and ZeRO-3" : "", memory);
}
