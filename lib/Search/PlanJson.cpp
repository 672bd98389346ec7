//===- PlanJson.cpp - planner results as JSON -----------------------------===//

#include "loom/Search/PlanJson.h"

#include <google/protobuf/util/json_util.h>

using namespace loom;
using namespace loom::search;

nlohmann::json loom::search::planJson(const spec::Model &model, const spec::Cluster &cluster,
                                      const spec::Training &training,
                                      const Candidate &candidate) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  options.always_print_enums_as_ints = false;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(toPlan(model, cluster, training, candidate),
                                                    &json, options);
  return nlohmann::json::parse(json);
}

nlohmann::json loom::search::planResultJson(const spec::Model &model,
                                            const spec::Cluster &cluster,
                                            const spec::Training &training,
                                            const PlanResult &r) {
  nlohmann::json plans = nlohmann::json::array();
  for (const Candidate &c : r.best)
    plans.push_back(planJson(model, cluster, training, c));
  nlohmann::json out{{"model", model.name()},        {"cluster", cluster.name()},
                     {"evaluated", r.evaluated},     {"rejected", r.rejected},
                     {"search_seconds", r.seconds},  {"fits", r.anyFits},
                     {"plans", plans}};
  if (!r.anyFits && r.evaluated > 0)
    out["closest"] = planJson(model, cluster, training, r.closest);
  return out;
}
