//===- CatalogTest.cpp - built-in models, GPUs, links, cluster forms ------===//

#include "SpecTesting.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

using namespace loom::spec;

namespace {

std::vector<std::string> namesOfKind(const std::string &kind) {
  std::vector<std::string> names;
  for (const CatalogEntry &entry : catalogEntries())
    if (entry.kind == kind)
      names.push_back(entry.name);
  return names;
}

TEST(Catalog, ListsEveryKindWithSources) {
  EXPECT_EQ(namesOfKind("model").size(), 20u);
  EXPECT_EQ(namesOfKind("gpu"),
            (std::vector<std::string>{"a100-40g", "a100-80g", "h100-sxm",
                                      "h200", "b200", "mi300x"}));
  EXPECT_EQ(namesOfKind("link"),
            (std::vector<std::string>{"nvlink3", "nvlink4", "nvlink5",
                                      "infinity-fabric", "ib-hdr-200",
                                      "ib-ndr-400"}));
  EXPECT_EQ(namesOfKind("cluster"),
            (std::vector<std::string>{"dgx-a100", "dgx-h100", "dgx-h200",
                                      "dgx-b200", "mi300x"}));
  for (const CatalogEntry &entry : catalogEntries()) {
    SCOPED_TRACE(entry.name);
    EXPECT_FALSE(entry.summary.empty());
    EXPECT_FALSE(entry.source.empty());
  }
}

TEST(Catalog, SummariesAreOneUsefulLine) {
  std::map<std::string, std::string> summary;
  for (const CatalogEntry &entry : catalogEntries())
    summary[entry.kind + "/" + entry.name] = entry.summary;
  EXPECT_EQ(summary["model/llama3-8b"],
            "llama, 32 layers, hidden 4096, 32 heads (8 kv), 8.03B params");
  EXPECT_EQ(summary["model/deepseek-v3"],
            "deepseek_v3, 61 layers, hidden 7168, 128 heads (MLA), 256 experts "
            "top-8, 671.03B params");
  EXPECT_EQ(summary["gpu/h100-sxm"],
            "989 TFLOP/s bf16 dense, 80 GiB HBM at 3350 GB/s");
  EXPECT_EQ(
      summary["cluster/dgx-h100"],
      "dgx-h100:nodes=N[,dcs=K,wan-gbps=X,wan-ms=Y]: 8 x h100-sxm per node, "
      "nvlink4 within, ib-ndr-400 between nodes");
}

TEST(Catalog, EveryModelLoadsAndValidates) {
  for (const std::string &name : namesOfKind("model")) {
    SCOPED_TRACE(name);
    Model model = loadModel(name);
    EXPECT_EQ(model.name(), name);
    EXPECT_NO_THROW(validateModel(model, name));
    EXPECT_EQ(findCatalogModel(name)->name(), name);
    EXPECT_FALSE(model.source().empty());
  }
  EXPECT_EQ(findCatalogModel("gpt-5"), nullptr);
}

struct Published {
  const char *model;
  double total;     // parameters as published
  double tolerance; // relative
};

// Totals as published by the model authors; see catalog/models.yaml for what
// the schema leaves out (BLOOM's embedding LayerNorm, DeepSeek-V3's MTP
// module).
const Published kPublished[] = {
    {"llama3-8b", 8.03e9, 0.01},      // Meta model card: 8B; HF: 8.03B
    {"llama3-70b", 70.55e9, 0.01},    // HF: 70.6B
    {"llama3-405b", 405.85e9, 0.01},  // HF: 406B
    {"mixtral-8x7b", 46.70e9, 0.01},  // Mistral: 46.7B total
    {"mixtral-8x22b", 140.6e9, 0.01}, // Mistral: 141B total, HF: 140.6B
    {"deepseek-v3", 671e9, 0.01},     // tech report: 671B, MTP module apart
    {"kimi-k2", 1.04e12, 0.02},       // tech report: "1.04 trillion"; rounding unstated
    {"gpt3-175b", 175e9, 0.01},       // Brown et al. Table 2.1
    {"bloom-176b", 176.247e9, 0.01},  // BLOOM paper / HF: 176,247,271,424
};

TEST(Catalog, ParameterCountsMatchPublishedTotals) {
  for (const Published &p : kPublished) {
    SCOPED_TRACE(p.model);
    double total = double(countParameters(*findCatalogModel(p.model)).total());
    EXPECT_NEAR(total / p.total, 1.0, p.tolerance);
  }
}

TEST(Catalog, ParameterCountsAreExactWhereTheCheckpointIsKnown) {
  // Totals of the released safetensors checkpoints.
  auto total = [](const char *name) {
    return countParameters(*findCatalogModel(name)).total();
  };
  EXPECT_EQ(total("llama3-8b"), 8030261248u);
  EXPECT_EQ(total("llama3-70b"), 70553706496u);
  EXPECT_EQ(total("llama3-405b"), 405853388800u);
  EXPECT_EQ(total("mixtral-8x7b"), 46702792704u);
  // BLOOM's embedding LayerNorm (weight + bias of 14336) has no schema field.
  EXPECT_EQ(total("bloom-176b"), 176247271424u - 2 * 14336);
  EXPECT_EQ(total("gpt-neox-20b"), 20554567680u);
}

struct MegatronRow {
  const char *model;
  double nominal;   // Table 1 "Number of parameters (billion)"
  double tolerance; // relative
  uint64_t layers, hidden;
};

// Narayanan et al. SC'21, Table 1.
const MegatronRow kMegatron[] = {
    // The table's 1.7B is not what its own shape gives: 24 layers of hidden
    // 2304 with vocabulary 51200 are 1.65B by the paper's formula too.
    {"megatron-1.7b", 1.7e9, 0.03, 24, 2304},
    {"megatron-3.6b", 3.6e9, 0.02, 30, 3072},
    {"megatron-7.5b", 7.5e9, 0.02, 36, 4096},
    {"megatron-18.4b", 18.4e9, 0.02, 40, 6144},
    {"megatron-39.1b", 39.1e9, 0.02, 48, 8192},
    {"megatron-76.1b", 76.1e9, 0.02, 60, 10240},
    {"megatron-145.6b", 145.6e9, 0.02, 80, 12288},
    {"megatron-310.1b", 310.1e9, 0.02, 96, 16384},
    {"megatron-529.6b", 529.6e9, 0.02, 105, 20480},
    {"megatron-1t", 1008.0e9, 0.02, 128, 25600},
};

TEST(Catalog, MegatronRowsMatchTheTableAndThePapersFormula) {
  const uint64_t vocab = 51200, seq = 2048;
  for (const MegatronRow &row : kMegatron) {
    SCOPED_TRACE(row.model);
    const Model &model = *findCatalogModel(row.model);
    EXPECT_EQ(numLayers(model), row.layers);
    EXPECT_EQ(model.hidden_size(), row.hidden);
    ParamCount count = countParameters(model);
    EXPECT_NEAR(double(count.total()) / row.nominal, 1.0, row.tolerance);
    // The paper's P = 12 l h^2 (1 + 13/(12h) + (V+s)/(12 l h)), i.e.
    // 12 l h^2 + 13 l h + (V+s) h, leaves out only the final LayerNorm.
    const uint64_t l = row.layers, h = row.hidden;
    EXPECT_EQ(count.total() - count.finalNorm,
              12 * l * h * h + 13 * l * h + (vocab + seq) * h);
  }
}

TEST(Catalog, GpuFigures) {
  for (const std::string &name : namesOfKind("gpu")) {
    SCOPED_TRACE(name);
    const GpuType *gpu = findCatalogGpu(name);
    ASSERT_NE(gpu, nullptr);
    EXPECT_GT(gpu->bf16_tflops(), 0);
    EXPECT_GT(gpu->hbm_gib(), 0);
    EXPECT_GT(gpu->hbm_gbytes_per_s(), 0);
    EXPECT_FALSE(gpu->source().empty());
  }
  // shared/VALIDATION.md and the vendor datasheets.
  EXPECT_EQ(findCatalogGpu("a100-80g")->bf16_tflops(), 312);
  EXPECT_EQ(findCatalogGpu("a100-80g")->hbm_gbytes_per_s(), 2039);
  EXPECT_EQ(findCatalogGpu("h100-sxm")->bf16_tflops(), 989);
  EXPECT_EQ(findCatalogGpu("h100-sxm")->hbm_gbytes_per_s(), 3350);
  EXPECT_EQ(findCatalogGpu("h200")->hbm_gib(), 141);
  EXPECT_EQ(findCatalogGpu("h200")->hbm_gbytes_per_s(), 4800);
  EXPECT_EQ(findCatalogGpu("b200")->bf16_tflops(), 2250);
  EXPECT_EQ(findCatalogGpu("b200")->fp8_tflops(), 4500);
  EXPECT_EQ(findCatalogGpu("b200")->hbm_gib(), 180);
  EXPECT_EQ(findCatalogGpu("mi300x")->bf16_tflops(), 1307.4);
  EXPECT_EQ(findCatalogGpu("mi300x")->fp8_tflops(), 2614.9);
  EXPECT_EQ(findCatalogGpu("a100-40g")->fp8_tflops(), 0); // none on Ampere
  EXPECT_EQ(findCatalogGpu("h100"), nullptr);
}

TEST(Catalog, LinkBandwidthIsPerDirectionInGigabits) {
  Cluster none;
  auto gbps = [&](const char *name) {
    return findLink(none, name)->bandwidth_gbps();
  };
  EXPECT_EQ(gbps("nvlink3"), 600 / 2 * 8); // 600 GB/s both directions
  EXPECT_EQ(gbps("nvlink4"), 900 / 2 * 8);
  EXPECT_EQ(gbps("nvlink5"), 1800 / 2 * 8);
  EXPECT_EQ(gbps("ib-hdr-200"), 200);
  EXPECT_EQ(gbps("ib-ndr-400"), 400);
  EXPECT_EQ(findLink(none, "ib-ndr-400")->latency_us(), 5);
  EXPECT_FALSE(findLink(none, "nvlink4")->per_node());
  EXPECT_EQ(findLink(none, "pcie"), nullptr);
}

TEST(Catalog, ClusterLookupsPreferTheClustersOwnEntries) {
  Cluster cluster;
  GpuType *gpu = cluster.add_gpu_types();
  gpu->set_name("h100-sxm");
  gpu->set_bf16_tflops(800); // a power-capped part
  LinkTier *link = cluster.add_links();
  link->set_name("nvlink4");
  EXPECT_EQ(findGpu(cluster, "h100-sxm"), gpu);
  EXPECT_EQ(findLink(cluster, "nvlink4"), link);
  EXPECT_EQ(findGpu(cluster, "h200"), findCatalogGpu("h200"));
}

struct FormCase {
  const char *form;
  const char *canonical;
  const char *gpu;
  uint32_t datacenters;
  uint64_t nodes, gpus;
};

const FormCase kForms[] = {
    {"dgx-a100:nodes=4", "dgx-a100:nodes=4", "a100-80g", 1, 4, 32},
    {"dgx-h100:nodes=64,dcs=2,wan-gbps=400,wan-ms=10",
     "dgx-h100:nodes=64,dcs=2,wan-gbps=400,wan-ms=10", "h100-sxm", 2, 64, 512},
    // Parameters in any order; defaults filled into the canonical name.
    {"dgx-h200:dcs=3,nodes=12,wan-ms=2.5",
     "dgx-h200:nodes=12,dcs=3,wan-gbps=100,wan-ms=2.5", "h200", 3, 12, 96},
    {"dgx-b200:nodes=1", "dgx-b200:nodes=1", "b200", 1, 1, 8},
    {"mi300x:nodes=16,dcs=1", "mi300x:nodes=16", "mi300x", 1, 16, 128},
};

TEST(Catalog, ClusterFormsBuildValidClusters) {
  for (const FormCase &c : kForms) {
    SCOPED_TRACE(c.form);
    Cluster cluster = loadCluster(c.form);
    EXPECT_NO_THROW(validateCluster(cluster, c.form));
    EXPECT_EQ(cluster.name(), c.canonical);
    ClusterSize size = clusterSize(cluster);
    EXPECT_EQ(size.datacenters, c.datacenters);
    EXPECT_EQ(size.nodes, c.nodes);
    EXPECT_EQ(size.gpus, c.gpus);
    EXPECT_TRUE(size.regular);
    const NodeGroup &group = cluster.datacenters(0).node_groups(0);
    EXPECT_EQ(group.gpu(), c.gpu);
    // The cluster carries the link tiers it names.
    std::set<std::string> own;
    for (const LinkTier &link : cluster.links())
      own.insert(link.name());
    EXPECT_TRUE(own.count(group.intra_node_link()));
    EXPECT_TRUE(own.count(group.inter_node_link()));
    EXPECT_EQ(own.count("wan"), c.datacenters > 1 ? 1u : 0u);
  }
}

TEST(Catalog, ClusterFormSplitsNodesOverDatacentersAndAddsTheWan) {
  Cluster cluster =
      loadCluster("dgx-h100:nodes=64,dcs=2,wan-gbps=400,wan-ms=10");
  ASSERT_EQ(cluster.datacenters_size(), 2);
  EXPECT_EQ(cluster.datacenters(0).name(), "dc0");
  EXPECT_EQ(cluster.datacenters(1).name(), "dc1");
  EXPECT_EQ(cluster.datacenters(1).node_groups(0).count(), 32u);
  EXPECT_EQ(cluster.inter_dc_link(), "wan");
  const LinkTier *wan = findLink(cluster, "wan");
  ASSERT_NE(wan, nullptr);
  EXPECT_EQ(wan->bandwidth_gbps(), 400);
  EXPECT_EQ(wan->latency_us(), 10000);
  EXPECT_TRUE(wan->per_node());

  Cluster defaults = loadCluster("dgx-a100:nodes=8,dcs=4");
  EXPECT_EQ(findLink(defaults, "wan")->bandwidth_gbps(), 100);
  EXPECT_EQ(findLink(defaults, "wan")->latency_us(), 10000);
}

} // namespace
