//===- ModelInfoTest.cpp - attention shapes, parameter pieces, sizes ------===//
//
// Expected values are worked out by hand in the comments, weight by weight.
//
//===----------------------------------------------------------------------===//

#include "SpecTesting.h"

#include <gtest/gtest.h>

using namespace loom::spec;
using loom::spec::testing::input;

namespace {

const Model &catalogModel(const char *name) { return *findCatalogModel(name); }

TEST(ModelInfo, AttentionShapeFillsDefaults) {
  const Model &llama = catalogModel("llama3-8b");
  AttentionShape gqa = attentionShape(llama, llama.blocks(0));
  EXPECT_EQ(gqa.heads, 32u);
  EXPECT_EQ(gqa.kvHeads, 8u);
  EXPECT_EQ(gqa.headDim, 128u); // 4096 / 32
  EXPECT_FALSE(gqa.mla);

  const Model &gpt = catalogModel("gpt3-175b");
  AttentionShape mha = attentionShape(gpt, gpt.blocks(0));
  EXPECT_EQ(mha.kvHeads, 96u); // kv_heads unset: one per head
  EXPECT_EQ(mha.headDim, 128u);

  Model small = loadModel(input("small.yaml"));
  EXPECT_EQ(attentionShape(small, small.blocks(1)).headDim, 64u); // given

  const Model &deepseek = catalogModel("deepseek-v3");
  AttentionShape mla = attentionShape(deepseek, deepseek.blocks(0));
  EXPECT_TRUE(mla.mla);
  EXPECT_EQ(mla.kvHeads, 128u);
  EXPECT_EQ(mla.headDim, 192u); // qk_nope 128 + qk_rope 64
}

TEST(ModelInfo, LlamaLayerPieces) {
  const Model &llama = catalogModel("llama3-8b");
  const Block &block = llama.blocks(0);
  // q, o: 4096x4096 each; k, v: 4096x1024 each; RMSNorm 4096.
  EXPECT_EQ(attentionParameters(llama, block),
            2u * 4096 * 4096 + 2u * 4096 * 1024 + 4096);
  // gate, up, down: 4096x14336 each; RMSNorm 4096.
  EXPECT_EQ(ffnParameters(llama, block), 3u * 4096 * 14336 + 4096);
  EXPECT_EQ(ffnActiveParameters(llama, block), ffnParameters(llama, block));
  EXPECT_EQ(layerParameters(llama, block),
            attentionParameters(llama, block) + ffnParameters(llama, block));
}

TEST(ModelInfo, GptLayerWithBiasesAndLayerNorm) {
  const Model &gpt = catalogModel("megatron-7.5b");
  const Block &block = gpt.blocks(0);
  const uint64_t h = 4096;
  // qkv 3h^2 + 3h bias, o h^2 + h bias, LayerNorm 2h.
  EXPECT_EQ(attentionParameters(gpt, block), 4 * h * h + 4 * h + 2 * h);
  // up h x 4h + 4h bias, down 4h x h + h bias, LayerNorm 2h.
  EXPECT_EQ(ffnParameters(gpt, block), 8 * h * h + 5 * h + 2 * h);
  ParamCount count = countParameters(gpt);
  EXPECT_EQ(count.embedding, (51200 + 2048) * h); // tokens + learned positions
  EXPECT_EQ(count.lmHead, 0u);                    // tied
  EXPECT_EQ(count.finalNorm, 2 * h);
  EXPECT_EQ(count.activePerLayer, count.perLayer); // dense
}

TEST(ModelInfo, MoeCountsEveryExpertButActivatesTopK) {
  const Model &mixtral = catalogModel("mixtral-8x7b");
  const Block &block = mixtral.blocks(0);
  const uint64_t h = 4096, expert = 3 * h * 14336;
  // RMSNorm + router (h x 8) + 8 experts.
  EXPECT_EQ(ffnParameters(mixtral, block), h + h * 8 + 8 * expert);
  EXPECT_EQ(ffnActiveParameters(mixtral, block), h + h * 8 + 2 * expert);
}

TEST(ModelInfo, LatentAttentionAndSharedExperts) {
  const Model &deepseek = catalogModel("deepseek-v3");
  const Block &moeBlock = deepseek.blocks(1);
  const uint64_t h = 7168, heads = 128;
  uint64_t query = h * 1536 + 1536 + 1536 * heads * (128 + 64);
  uint64_t keyValue = h * (512 + 64) + 512 + 512 * heads * (128 + 128);
  uint64_t out = heads * 128 * h;
  EXPECT_EQ(attentionParameters(deepseek, moeBlock),
            h + query + keyValue + out);
  const uint64_t expert = 3 * h * 2048;
  EXPECT_EQ(ffnParameters(deepseek, moeBlock),
            h + h * 256 + (256 + 1) * expert);
  EXPECT_EQ(ffnActiveParameters(deepseek, moeBlock),
            h + h * 256 + (8 + 1) * expert);
  EXPECT_EQ(numLayers(deepseek), 61u);
}

TEST(ModelInfo, ClusterSize) {
  Cluster mixed = loadCluster(input("small.yaml"));
  ClusterSize size = clusterSize(mixed);
  EXPECT_EQ(size.datacenters, 2u);
  EXPECT_EQ(size.nodes, 6u);
  EXPECT_EQ(size.gpus, 4u * 8 + 2 * 4);
  EXPECT_FALSE(size.regular); // different GPUs and node counts per DC

  EXPECT_TRUE(clusterSize(loadCluster("dgx-h100:nodes=8,dcs=2")).regular);
  EXPECT_FALSE(clusterSize(Cluster()).regular);
}

TEST(ModelInfo, UnequalDatacentersGiveCells) {
  // 6 and 4 nodes of 8 GPUs: cells of gcd(6, 4) = 2 nodes, three in the first
  // DC and two in the second.
  Cluster cluster = loadCluster("dgx-h100:nodes=12,dcs=2");
  cluster.mutable_datacenters(0)->mutable_node_groups(0)->set_count(6);
  cluster.mutable_datacenters(1)->mutable_node_groups(0)->set_count(4);
  ClusterSize size = clusterSize(cluster);
  EXPECT_FALSE(size.regular);
  EXPECT_TRUE(size.shapeRegular);
  EXPECT_TRUE(size.unequalDcs);
  EXPECT_EQ(size.cellNodes, 2u);
  std::vector<ClusterLevel> levels = clusterLevels(cluster);
  ASSERT_EQ(levels.size(), 3u);
  EXPECT_EQ(levels[0].name, "dc");
  EXPECT_EQ(levels[0].size, 5);
  EXPECT_EQ(levels[0].cellDc, (std::vector<int32_t>{0, 0, 0, 1, 1}));
  EXPECT_EQ(levels[0].tier->name(), "wan");
  EXPECT_EQ(levels[1].size, 2);
  EXPECT_EQ(levels[2].size, 8);

  // Equal DCs: a cell is a datacenter and needs no map.
  std::vector<ClusterLevel> equal = clusterLevels(loadCluster("dgx-h100:nodes=8,dcs=2"));
  EXPECT_EQ(equal[0].size, 2);
  EXPECT_EQ(equal[1].size, 4);
  EXPECT_TRUE(equal[0].cellDc.empty());
}

TEST(ModelInfo, DtypeNames) {
  EXPECT_EQ(dtypeName(FP32), "fp32");
  EXPECT_EQ(dtypeName(BF16), "bf16");
  EXPECT_EQ(dtypeName(FP16), "fp16");
  EXPECT_EQ(dtypeName(FP8), "fp8");
  EXPECT_EQ(dtypeName(DTYPE_UNSPECIFIED), "unspecified");
}

} // namespace
