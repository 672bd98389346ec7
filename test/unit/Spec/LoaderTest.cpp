//===- LoaderTest.cpp - spec files in three formats, files vs catalog -----===//

#include "SpecTesting.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

using namespace loom::spec;
using google::protobuf::util::MessageDifferencer;
using loom::spec::testing::errorOf;
using loom::spec::testing::input;

namespace {

TEST(Loader, FormatFollowsExtension) {
  EXPECT_EQ(formatForPath("a/b.yaml"), Format::Yaml);
  EXPECT_EQ(formatForPath("b.YML"), Format::Yaml);
  EXPECT_EQ(formatForPath("config.json"), Format::Json);
  EXPECT_EQ(formatForPath("x.textproto"), Format::TextProto);
  EXPECT_EQ(formatForPath("x.txtpb"), Format::TextProto);
  EXPECT_EQ(formatForPath("x.pbtxt"), Format::TextProto);
  EXPECT_EQ(errorOf([] { formatForPath("model.toml"); }),
            "model.toml: unknown spec format '.toml' (use .yaml/.yml, .json or "
            ".textproto/.txtpb/.pbtxt)");
}

TEST(Loader, YamlJsonAndTextProtoAgree) {
  SpecFile yaml = loadSpecFile(input("small.yaml"));
  SpecFile json = loadSpecFile(input("small.json"));
  SpecFile textproto = loadSpecFile(input("small.textproto"));
  std::string diff;
  MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(yaml, json)) << diff;
  EXPECT_TRUE(differ.Compare(yaml, textproto)) << diff;
}

TEST(Loader, MapsEveryKindOfField) {
  SpecFile spec = loadSpecFile(input("small.yaml"));
  const Model &model = spec.model();
  EXPECT_EQ(model.name(), "tiny-moe");
  // Enum names match without regard to case: "BF16", "rmsnorm", "Rope".
  EXPECT_EQ(model.dtype(), BF16);
  EXPECT_EQ(model.norm(), RMSNORM);
  EXPECT_EQ(model.position(), ROPE);
  ASSERT_EQ(model.blocks_size(), 2);
  EXPECT_EQ(model.blocks(0).ffn_case(), Block::kMlp);
  EXPECT_EQ(model.blocks(0).mlp().activation(), SWIGLU);
  const Block &moeBlock = model.blocks(1);
  EXPECT_EQ(moeBlock.count(), 6u);
  EXPECT_EQ(moeBlock.attention().head_dim(), 64u);
  EXPECT_TRUE(moeBlock.attention().qkv_bias());
  EXPECT_EQ(moeBlock.moe().shared_experts(), 1u);
  EXPECT_DOUBLE_EQ(moeBlock.moe().capacity_factor(), 1.25);

  const Cluster &cluster = spec.cluster();
  ASSERT_EQ(cluster.links_size(), 3);
  EXPECT_TRUE(cluster.links(2).per_node());
  EXPECT_DOUBLE_EQ(cluster.links(2).latency_us(), 15000);
  EXPECT_EQ(cluster.inter_dc_link(), "wan");
  EXPECT_EQ(findGpu(cluster, "lab-gpu"), &cluster.gpu_types(0));

  EXPECT_EQ(spec.training().global_batch(), 256u);
  EXPECT_EQ(spec.training().optimizer(), ADAM);
  EXPECT_EQ(spec.training().precision(), BF16_MIXED);
}

TEST(Loader, ParseSpecValidatesOnlyWhatIsPresent) {
  // A training-only document is fine: model and cluster are not required.
  SpecFile spec = parseSpec("training: {global_batch: 64, seq_len: 1024}\n",
                            Format::Yaml, "t.yaml");
  EXPECT_FALSE(spec.has_model());
  EXPECT_FALSE(spec.has_cluster());
  EXPECT_EQ(spec.training().seq_len(), 1024u);
}

TEST(Loader, NullSectionIsPresentButEmpty) {
  // "training:" with nothing under it is a training section with every field
  // unset, so validation reports the first required field.
  EXPECT_EQ(errorOf([] { parseSpec("training:\n", Format::Yaml, "t.yaml"); }),
            "t.yaml:1: training.global_batch: must be > 0, got 0");
}

TEST(Loader, ModelFromSpecFileIsNamedAfterTheFile) {
  Model model = loadModel(input("model-only.yaml"));
  EXPECT_EQ(model.name(), "model-only");
  EXPECT_EQ(countParameters(model).total(), 124439808u); // GPT-2 small
}

TEST(Loader, ClusterAndTrainingFromFiles) {
  Cluster cluster = loadCluster(input("small.textproto"));
  EXPECT_EQ(cluster.name(), "two-sites");
  EXPECT_EQ(clusterSize(cluster).gpus, 4u * 8 + 2 * 4);

  Training training = loadTraining(input("training-only.textproto"));
  EXPECT_EQ(training.global_batch(), 1536u);
  EXPECT_EQ(training.seq_len(), 2048u);
  EXPECT_EQ(training.optimizer(), ADAM);       // filled in
  EXPECT_EQ(training.precision(), BF16_MIXED); // filled in
  EXPECT_EQ(training.micro_batch(), 0u);       // the planner chooses
}

TEST(Loader, MissingSectionIsAnError) {
  std::string path = input("model-only.yaml");
  EXPECT_EQ(errorOf([&] { loadCluster(path); }),
            path + ": no 'cluster' section");
  EXPECT_EQ(errorOf([&] { loadTraining(path); }),
            path + ": no 'training' section");
  std::string trainingOnly = input("training-only.textproto");
  EXPECT_EQ(errorOf([&] { loadModel(trainingOnly); }),
            trainingOnly + ": no 'model' section");
}

TEST(Loader, ModelArgumentIsFileHFConfigOrCatalogName) {
  // A .json file with a model_type key is an HF config, not a loom spec.
  EXPECT_EQ(loadModel(input("hf/gpt2/config.json")).family(), "gpt2");
  EXPECT_EQ(loadModel(input("small.json")).name(), "tiny-moe");
  EXPECT_EQ(loadModel("llama3-8b").name(), "llama3-8b");
}

TEST(Loader, DefaultTrainingFollowsTheModel) {
  Training llama = defaultTraining(*findCatalogModel("llama3-8b"));
  EXPECT_EQ(llama.seq_len(), 4096u);     // min(8192, 4096)
  EXPECT_EQ(llama.global_batch(), 512u); // 2M tokens / 4096
  EXPECT_EQ(llama.optimizer(), ADAM);
  EXPECT_EQ(llama.precision(), BF16_MIXED);
  validateTraining(llama, "default");

  Training megatron = defaultTraining(*findCatalogModel("megatron-7.5b"));
  EXPECT_EQ(megatron.seq_len(), 2048u);
  EXPECT_EQ(megatron.global_batch(), 1024u);
  EXPECT_EQ(megatron.precision(), FP16_MIXED); // published in fp16
}

TEST(Loader, PublicValidatorsPrefixWhere) {
  Model model = *findCatalogModel("llama3-8b");
  model.mutable_blocks(0)->mutable_attention()->set_kv_heads(7);
  EXPECT_EQ(errorOf([&] { validateModel(model, "llama3-8b"); }),
            "llama3-8b: model.blocks[0].attention.kv_heads: must divide heads "
            "(32), got 7");
  Training training;
  EXPECT_EQ(errorOf([&] { validateTraining(training, ""); }),
            "training.global_batch: must be > 0, got 0");
}

} // namespace
