//===- CatalogLoweringTest.cpp - every catalog model lowers and round-trips ===//
//
// For each catalog model on several clusters (one and two datacenters):
// lower -> verify -> print -> parse -> print gives the same text, before and
// after placing the layers with a strategy, and the strategy read back from the
// placements equals the one applied.
//
//===----------------------------------------------------------------------===//

#include "loom/Conversion/SpecToPlace.h"
#include "loom/Spec/Spec.h"
#include "loom/Transforms/Passes.h"
#include "place/Place.h"

#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <numeric>

using namespace mlir;
using namespace loom;

namespace {

std::string printed(ModuleOp module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  module.print(os);
  return text;
}

/// Parses `text`, verifies it and prints it again.
std::string reprinted(MLIRContext &ctx, const std::string &text) {
  OwningOpRef<ModuleOp> parsed = parseSourceString<ModuleOp>(text, &ctx);
  if (!parsed)
    return "<parse failed>";
  if (failed(verify(*parsed)))
    return "<verify failed>";
  return printed(*parsed);
}

struct Case {
  std::string model, cluster;
};

class CatalogLowering : public ::testing::TestWithParam<Case> {};

TEST_P(CatalogLowering, LowersVerifiesAndRoundTrips) {
  const Case &c = GetParam();
  spec::Model model = spec::loadModel(c.model);
  spec::Cluster cluster = spec::loadCluster(c.cluster);
  spec::Training training = spec::defaultTraining(model);

  DialectRegistry registry;
  registerSpecToPlaceDialects(registry);
  MLIRContext ctx(registry);
  OwningOpRef<ModuleOp> module =
      lowerSpecToPlace(&ctx, model, cluster, training, UnknownLoc::get(&ctx));
  ASSERT_TRUE(module);
  ASSERT_TRUE(succeeded(verify(*module)));

  // One layer op per attention and per MLP/MoE, plus embedding and head, and the
  // parameters they carry add up to the model's count.
  auto modelOp = *module->getOps<place::ModelOp>().begin();
  int64_t ops = 0, params = 0;
  for (place::LayerOpInterface layer : modelOp.getLayers()) {
    ++ops;
    params += layer.getParamCount();
  }
  EXPECT_EQ(ops, 2 * spec::numLayers(model) + 2);
  EXPECT_EQ(static_cast<uint64_t>(params), spec::countParameters(model).total());

  std::string text = printed(*module);
  EXPECT_EQ(reprinted(ctx, text), text);

  // Place with tensor parallelism inside the node (as wide as the kv heads
  // allow), experts over 8 ranks where there are experts, data parallel over
  // the rest; then read it back.
  spec::AttentionShape shape = spec::attentionShape(model, model.blocks(0));
  int64_t tp = std::gcd<int64_t>(8, shape.kvHeads);
  int64_t dp = spec::clusterSize(cluster).gpus / tp;
  bool moe = false;
  for (const auto &b : model.blocks())
    moe |= b.has_moe();
  int64_t ep = moe ? 8 : 1;
  PlaceApplyStrategyOptions apply;
  apply.dp = dp;
  apply.tp = tp;
  apply.ep = ep;
  apply.zero = 1;
  apply.recompute = "selective";
  PassManager pm(&ctx);
  pm.addPass(createPlaceApplyStrategy(apply));
  pm.addPass(createPlaceDeriveStrategy());
  ASSERT_TRUE(succeeded(pm.run(*module)));
  ASSERT_TRUE(succeeded(verify(*module)));
  auto derived = modelOp->getAttrOfType<DictionaryAttr>("place.strategy");
  ASSERT_TRUE(derived);
  EXPECT_EQ(cast<IntegerAttr>(derived.get("tp")).getInt(), tp);
  EXPECT_EQ(cast<IntegerAttr>(derived.get("dp")).getInt(), dp);
  EXPECT_EQ(cast<IntegerAttr>(derived.get("ep")).getInt(), ep);
  EXPECT_EQ(cast<IntegerAttr>(derived.get("zero")).getInt(), 1);
  EXPECT_EQ(cast<StringAttr>(derived.get("recompute")).getValue(), "selective");

  std::string placed = printed(*module);
  EXPECT_EQ(reprinted(ctx, placed), placed);
}

std::vector<Case> allCases() {
  std::vector<Case> cases;
  for (const spec::CatalogEntry &e : spec::catalogEntries())
    if (e.kind == "model")
      for (const char *cluster :
           {"dgx-h100:nodes=64", "dgx-a100:nodes=16",
            "dgx-h100:nodes=64,dcs=2,wan-gbps=400,wan-ms=10"})
        cases.push_back({e.name, cluster});
  return cases;
}

std::string caseName(const ::testing::TestParamInfo<Case> &info) {
  std::string name = info.param.model + "_on_" + info.param.cluster;
  for (char &ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch)))
      ch = '_';
  return name;
}

} // namespace

INSTANTIATE_TEST_SUITE_P(Catalog, CatalogLowering, ::testing::ValuesIn(allCases()), caseName);

TEST(CatalogLoweringCoverage, EveryCatalogModelIsCovered) {
  // The models named by the foundation issue, Kimi K2 and GPT-NeoX-20B.
  EXPECT_EQ(allCases().size(), 20u * 3u);
}
