//===- SpecFuzzer.cpp - libFuzzer target for user specs and their estimates ===//
//
// What `loom estimate` does with a spec file a user wrote: the input is read as
// a YAML spec (a JSON one when it starts with '{', an HF config.json when that
// has a model_type), validated, and every section it lacks is taken from a
// small default (a 2-layer catalog-shaped model, two DGX H100 nodes, the
// model's default training). Three layouts are then priced, and the pipelined
// ones simulated. A SpecError or a layout the cost model refuses is the
// expected outcome of bad input; anything else that escapes (another
// exception, an ASan or UBSan report, a hang) is a bug the CLI would show as a
// crash.
//
//===----------------------------------------------------------------------===//
#include "loom/CostModel/Estimate.h"
#include "loom/CostModel/FromStrategy.h"
#include "loom/Search/SimulatedPipeline.h"
#include "loom/Spec/Spec.h"

#include <nlohmann/json.hpp>

#include <string_view>

using namespace loom;

namespace {

spec::SpecFile parse(std::string_view text) {
  if (!text.empty() && text.front() == '{') {
    auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (json.is_object() && json.contains("model_type")) {
      spec::SpecFile file;
      *file.mutable_model() = spec::importHFConfig(text, "fuzz.json");
      return file;
    }
    return spec::parseSpec(text, spec::Format::Json, "fuzz.json");
  }
  return spec::parseSpec(text, spec::Format::Yaml, "fuzz.yaml");
}

void price(const spec::Model &model, const spec::Cluster &cluster,
           const spec::Training &training) {
  std::vector<cost::ComputeModel> computes = cost::computeModelsFor(cluster, training);
  if (computes.empty())
    return;
  cost::StrategyChoice layouts[3];
  layouts[1].tp = 2;
  layouts[1].pp = 2;
  layouts[1].zero = 1;
  layouts[1].recompute = cost::Recompute::Selective;
  layouts[2].pp = 2;
  layouts[2].cp = 2;
  layouts[2].microBatch = 2;
  layouts[2].sequenceParallel = true;
  layouts[2].schedule = cost::Schedule::ZeroBubbleH2;
  for (const cost::StrategyChoice &choice : layouts) {
    cost::WorkloadResult w = cost::fromStrategy(model, cluster, training, choice);
    if (!w.ok())
      continue;
    cost::Estimate e = cost::estimate(w.workload, computes);
    (void)search::simulateEstimate(e, w.workload, computes);
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view text(reinterpret_cast<const char *>(data), size);
  try {
    spec::SpecFile file = parse(text);
    spec::Model model = file.has_model() ? file.model() : *spec::findCatalogModel("llama3-8b");
    if (!file.has_model())
      model.mutable_blocks(0)->set_count(2);
    spec::Cluster cluster =
        file.has_cluster() ? file.cluster() : spec::loadCluster("dgx-h100:nodes=2");
    spec::Training training = file.has_training() ? spec::withTrainingDefaults(file.training())
                                                  : spec::defaultTraining(model);
    price(model, cluster, training);
  } catch (const spec::SpecError &) {
  }
  return 0;
}
