//===- HFImportTest.cpp - Hugging Face config.json import -----------------===//
//
// test/Inputs/spec/hf/<model>/config.json hold the public config values of
// meta-llama/Meta-Llama-3-8B, mistralai/Mistral-7B-v0.1,
// mistralai/Mixtral-8x7B-v0.1, Qwen/Qwen2-7B, openai-community/gpt2,
// EleutherAI/pythia-160m and deepseek-ai/DeepSeek-V3, retyped, including keys
// the importer must ignore. Expected totals are those of the released
// checkpoints.
//
//===----------------------------------------------------------------------===//

#include "SpecTesting.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

using namespace loom::spec;
using google::protobuf::util::MessageDifferencer;
using loom::spec::testing::errorOf;
using loom::spec::testing::input;

namespace {

Model importFixture(const std::string &dir) {
  return loadModel(input("hf/" + dir + "/config.json"));
}

/// Imported layers must equal the catalog's hand-written ones.
void expectSameLayers(const Model &imported, const char *catalogName) {
  const Model &catalog = *findCatalogModel(catalogName);
  ASSERT_EQ(imported.blocks_size(), catalog.blocks_size());
  for (int i = 0; i < imported.blocks_size(); ++i) {
    std::string diff;
    MessageDifferencer differ;
    differ.ReportDifferencesToString(&diff);
    EXPECT_TRUE(differ.Compare(imported.blocks(i), catalog.blocks(i))) << diff;
  }
  EXPECT_EQ(countParameters(imported).total(),
            countParameters(catalog).total());
}

/// Parameters one token touches, embedding and output layer included.
double activeTotal(const ParamCount &count) {
  return double(count.embedding + count.activePerLayer + count.finalNorm +
                count.lmHead);
}

TEST(HFImport, Llama3_8B) {
  Model model = importFixture("llama3-8b");
  EXPECT_EQ(model.name(), "llama3-8b"); // the checkout directory
  EXPECT_EQ(model.family(), "llama");
  EXPECT_EQ(model.hidden_size(), 4096u);
  EXPECT_EQ(model.vocab_size(), 128256u);
  EXPECT_EQ(model.max_seq_len(), 8192u);
  EXPECT_EQ(model.dtype(), BF16);
  EXPECT_EQ(model.norm(), RMSNORM);
  EXPECT_EQ(model.position(), ROPE);
  EXPECT_FALSE(model.tied_embeddings());
  expectSameLayers(model, "llama3-8b");
  EXPECT_EQ(countParameters(model).total(), 8030261248u);
}

TEST(HFImport, Mistral7B) {
  Model model = importFixture("mistral-7b");
  EXPECT_EQ(model.family(), "mistral");
  const Block &block = model.blocks(0);
  EXPECT_EQ(block.attention().kv_heads(), 8u);
  EXPECT_EQ(block.mlp().ffn_hidden(), 14336u);
  EXPECT_EQ(block.mlp().activation(), SWIGLU);
  EXPECT_EQ(countParameters(model).total(), 7241732096u); // 7.24B
}

TEST(HFImport, Mixtral8x7B) {
  Model model = importFixture("mixtral-8x7b");
  const Moe &moe = model.blocks(0).moe();
  EXPECT_EQ(moe.experts(), 8u);
  EXPECT_EQ(moe.top_k(), 2u);
  EXPECT_EQ(moe.expert_ffn_hidden(), 14336u);
  expectSameLayers(model, "mixtral-8x7b");
  EXPECT_EQ(countParameters(model).total(), 46702792704u);
  // Mistral: 12.9B parameters active per token (2 of 8 experts).
  EXPECT_NEAR(activeTotal(countParameters(model)) / 1e9, 12.9, 0.05);
}

TEST(HFImport, Qwen2_7B_BiasesQkvOnly) {
  Model model = importFixture("qwen2-7b");
  const Attention &attention = model.blocks(0).attention();
  EXPECT_TRUE(attention.qkv_bias());
  EXPECT_FALSE(attention.out_bias());
  EXPECT_EQ(attention.heads(), 28u);
  EXPECT_EQ(attention.kv_heads(), 4u);
  EXPECT_EQ(attentionShape(model, model.blocks(0)).headDim, 128u);
  EXPECT_EQ(countParameters(model).total(), 7615616512u); // 7.62B
}

TEST(HFImport, Gpt2_LearnedPositionsTiedHead) {
  Model model = importFixture("gpt2");
  EXPECT_EQ(model.position(), LEARNED);
  EXPECT_EQ(model.norm(), LAYERNORM);
  EXPECT_TRUE(model.tied_embeddings());
  EXPECT_EQ(model.max_seq_len(), 1024u);
  EXPECT_EQ(model.dtype(), FP32); // no torch_dtype: transformers loads fp32
  EXPECT_EQ(model.blocks(0).mlp().ffn_hidden(), 4u * 768); // n_inner absent
  EXPECT_EQ(model.blocks(0).mlp().activation(), GELU);
  ParamCount count = countParameters(model);
  EXPECT_EQ(count.embedding, (50257u + 1024u) * 768u);
  EXPECT_EQ(count.lmHead, 0u);
  EXPECT_EQ(count.total(), 124439808u); // 124M
}

TEST(HFImport, Gpt2_NullInnerMeansFourTimesHidden) {
  Model model = importHFConfig(R"({"model_type": "gpt2", "n_embd": 64,
      "n_head": 4, "n_layer": 2, "n_positions": 128, "vocab_size": 1000,
      "n_inner": null})",
                               "tiny.json");
  EXPECT_EQ(model.blocks(0).mlp().ffn_hidden(), 256u);
  EXPECT_EQ(model.name(), "tiny");
}

TEST(HFImport, Pythia160m_GptNeoXUntiedHead) {
  Model model = importFixture("pythia-160m");
  EXPECT_EQ(model.family(), "gpt_neox");
  EXPECT_EQ(model.position(), ROPE);
  EXPECT_EQ(model.norm(), LAYERNORM);
  EXPECT_EQ(model.dtype(), FP16);
  EXPECT_FALSE(model.tied_embeddings());
  EXPECT_TRUE(model.blocks(0).attention().qkv_bias());
  EXPECT_TRUE(model.blocks(0).mlp().bias());
  ParamCount count = countParameters(model);
  EXPECT_EQ(count.lmHead, 50304u * 768u);
  EXPECT_EQ(count.total(), 162322944u); // 162M
}

TEST(HFImport, DeepSeekV3_DenseThenMoeWithLatentAttention) {
  Model model = importFixture("deepseek-v3");
  ASSERT_EQ(model.blocks_size(), 2);
  EXPECT_EQ(model.blocks(0).count(), 3u);
  EXPECT_EQ(model.blocks(0).mlp().ffn_hidden(), 18432u);
  EXPECT_EQ(model.blocks(1).count(), 58u);
  const Moe &moe = model.blocks(1).moe();
  EXPECT_EQ(moe.experts(), 256u);
  EXPECT_EQ(moe.top_k(), 8u);
  EXPECT_EQ(moe.shared_experts(), 1u);
  EXPECT_EQ(moe.expert_ffn_hidden(), 2048u);
  const Attention &mla = model.blocks(1).attention();
  EXPECT_EQ(mla.q_lora_rank(), 1536u);
  EXPECT_EQ(mla.kv_lora_rank(), 512u);
  EXPECT_EQ(mla.qk_rope_head_dim(), 64u);
  EXPECT_EQ(mla.qk_nope_head_dim(), 128u);
  EXPECT_EQ(mla.v_head_dim(), 128u);
  EXPECT_EQ(mla.kv_heads(), 0u); // num_key_value_heads does not apply to MLA
  expectSameLayers(model, "deepseek-v3");
  // The report's "37B activated" (abstract); it does not say how it counts the
  // embedding and output layers (1.85B together), hence the 1B margin.
  EXPECT_NEAR(activeTotal(countParameters(model)) / 1e9, 37.0, 1.0);
}

TEST(HFImport, Errors) {
  EXPECT_EQ(
      errorOf([] {
        importHFConfig(R"({"model_type": "llama", "hidden_size": 4096})",
                       "cfg.json");
      }),
      "cfg.json: missing key 'vocab_size' (needed for model_type 'llama')");
  EXPECT_EQ(
      errorOf([] { importHFConfig(R"({"model_type": "t5"})", "cfg.json"); }),
      "cfg.json: unsupported model_type 't5' (supported: llama, mistral, "
      "mixtral, qwen2, gpt2, gpt_neox, deepseek_v3)");
  EXPECT_EQ(
      errorOf([] { importHFConfig(R"({"hidden_size": 8})", "cfg.json"); }),
      "cfg.json: missing key 'model_type' (supported: llama, mistral, mixtral, "
      "qwen2, gpt2, gpt_neox, deepseek_v3)");
  EXPECT_EQ(
      errorOf([] {
        importHFConfig(R"({"model_type": "gpt2", "n_embd": "768"})",
                       "cfg.json");
      }),
      "cfg.json: 'n_embd' must be a non-negative 32-bit integer, got \"768\"");
  EXPECT_EQ(
      errorOf([] {
        importHFConfig(R"({"model_type": "mistral", "torch_dtype": "int8"})",
                       "cfg.json");
      }),
      "cfg.json: unsupported torch_dtype 'int8' (float32, bfloat16, float16)");
  EXPECT_EQ(
      errorOf(
          [] { importHFConfig("{\n  \"model_type\": gpt2\n}", "cfg.json"); }),
      "cfg.json:2: invalid JSON: syntax error while parsing value - invalid "
      "literal; last read: '\"model_type\": g'");
}

TEST(HFImport, ImportedShapesAreValidated) {
  EXPECT_EQ(
      errorOf([] {
        importHFConfig(R"({"model_type": "llama", "hidden_size": 4096,
                  "vocab_size": 32000, "max_position_embeddings": 4096,
                  "num_attention_heads": 32, "num_key_value_heads": 6,
                  "num_hidden_layers": 2, "intermediate_size": 11008})",
                       "cfg.json");
      }),
      "cfg.json: model.blocks[0].attention.kv_heads: must divide heads (32), "
      "got 6");
}

} // namespace
