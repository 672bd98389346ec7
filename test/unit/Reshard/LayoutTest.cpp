//===- LayoutTest.cpp - layout arithmetic of the resharder -----------------===//
//
// flatRuns must cut every element range of every shape into contiguous boxes that
// tile it in order; the Megatron and DeepSpeed generators must produce layouts that
// checkLayout accepts for every degree that divides the model, and refuse the others.
//
//===----------------------------------------------------------------------===//
#include "loom/Reshard/Layout.h"

#include <gtest/gtest.h>

using namespace loom;
using namespace loom::reshard;

namespace {
TEST(FlatRuns, TileEveryRangeInOrder) {
  for (llvm::SmallVector<int64_t, 4> shape :
       {llvm::SmallVector<int64_t, 4>{7}, {4, 6}, {3, 1, 5}, {2, 3, 4}, {1}, {5, 1}}) {
    int64_t numel = 1;
    for (int64_t d : shape)
      numel *= d;
    for (int64_t begin = 0; begin <= numel; ++begin)
      for (int64_t end = begin; end <= numel; ++end) {
        std::vector<Box> runs = flatRuns(shape, begin, end);
        int64_t at = begin;
        for (const Box &run : runs) {
          // Contiguous: its first element is `at` and its elements follow in order.
          ASSERT_EQ(linearIndex(shape, run.offsets), at);
          auto again = flatRuns(shape, at, at + int64_t(run.volume()));
          ASSERT_EQ(again.size(), 1u);
          ASSERT_EQ(again[0].sizes, run.sizes);
          at += run.volume();
        }
        ASSERT_EQ(at, end);
        ASSERT_LE(runs.size(), std::max<size_t>(1, 2 * shape.size() - 1));
      }
  }
}

TEST(Box, Intersect) {
  Box a{{0, 2}, {4, 4}}, b{{3, 0}, {3, 3}};
  auto c = a.intersect(b);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->offsets, (llvm::SmallVector<int64_t, 4>{3, 2}));
  EXPECT_EQ(c->sizes, (llvm::SmallVector<int64_t, 4>{1, 1}));
  EXPECT_FALSE(a.intersect(Box{{4, 0}, {1, 8}}));
}

/// The full tensors of a small Llama-like model with HF names.
std::vector<FullTensor> llama(int64_t layers, int64_t heads, int64_t groups, int64_t hd,
                              int64_t hidden, int64_t ffn, int64_t vocab) {
  using ckpt::DType;
  std::vector<FullTensor> fulls{{"model.embed_tokens.weight", DType::BFloat16, {vocab, hidden}},
                                {"lm_head.weight", DType::BFloat16, {vocab, hidden}},
                                {"model.norm.weight", DType::BFloat16, {hidden}}};
  for (int64_t i = 0; i < layers; ++i) {
    std::string p = "model.layers." + std::to_string(i) + ".";
    for (auto [name, shape] : std::initializer_list<std::pair<const char *, llvm::SmallVector<int64_t, 4>>>{
             {"input_layernorm.weight", {hidden}},
             {"post_attention_layernorm.weight", {hidden}},
             {"self_attn.q_proj.weight", {heads * hd, hidden}},
             {"self_attn.k_proj.weight", {groups * hd, hidden}},
             {"self_attn.v_proj.weight", {groups * hd, hidden}},
             {"self_attn.o_proj.weight", {hidden, heads * hd}},
             {"mlp.gate_proj.weight", {ffn, hidden}},
             {"mlp.up_proj.weight", {ffn, hidden}},
             {"mlp.down_proj.weight", {hidden, ffn}}})
      fulls.push_back({p + name, DType::BFloat16, shape});
  }
  return fulls;
}

TEST(MegatronShards, EveryDividingDegreeGivesAValidLayout) {
  auto fulls = llama(4, 8, 4, 4, 32, 48, 250);
  ckpt::MegatronDims dims;
  dims.numLayers = 4;
  dims.hidden = 32;
  dims.heads = 8;
  dims.queryGroups = 4;
  dims.headDim = 4;
  dims.ffn = 48;
  dims.vocab = 250;
  dims.swiglu = true;
  for (unsigned tp : {1u, 2u, 4u, 3u})
    for (unsigned pp : {1u, 2u, 4u}) {
      dims.paddedVocab = (250 + 128 * tp - 1) / (128 * tp) * (128 * tp);
      std::vector<int64_t> perStage(pp, 4 / pp);
      auto files = megatronShards(fulls, dims, ckpt::MegatronNaming::MCore, tp, pp, perStage, "");
      if (tp == 3) { // 4 query groups do not divide by 3
        ASSERT_FALSE(files);
        llvm::consumeError(files.takeError());
        continue;
      }
      ASSERT_TRUE(bool(files)) << llvm::toString(files.takeError());
      EXPECT_EQ(files->size(), tp * pp);
      Layout layout;
      layout.fulls = fulls;
      layout.files = std::move(*files);
      llvm::Error err = checkLayout(layout, "megatron");
      EXPECT_FALSE(bool(err)) << "tp=" << tp << " pp=" << pp << ": " << llvm::toString(std::move(err));
    }
}

TEST(DeepSpeedShards, PartitionsCoverEveryStateOnce) {
  std::vector<FullTensor> fulls;
  std::vector<std::vector<std::string>> groups(2);
  int index = 0;
  for (llvm::SmallVector<int64_t, 4> shape :
       {llvm::SmallVector<int64_t, 4>{5, 3}, {7}, {2, 2, 3}, {1}, {11, 2}}) {
    std::string name = "p" + std::to_string(index);
    groups[index++ % 2].push_back(name);
    fulls.push_back({name, ckpt::DType::BFloat16, shape});
    for (const char *state : {"#fp32", "#exp_avg", "#exp_avg_sq"})
      fulls.push_back({name + state, ckpt::DType::Float32, shape});
  }
  for (unsigned stage : {1u, 3u})
    for (unsigned dp : {1u, 2u, 3u, 4u, 7u}) {
      Layout layout;
      layout.fulls = fulls;
      if (stage == 3) { // the parameter is the fp32 master
        layout.fulls.clear();
        for (const FullTensor &f : fulls)
          if (!llvm::StringRef(f.name).ends_with("#fp32"))
            layout.fulls.push_back(
                {f.name, ckpt::DType::Float32, f.shape});
      }
      DeepSpeedConfig config;
      config.stage = stage;
      config.dp = dp;
      auto files = deepspeedShards(layout.fulls, groups, config, "tag/");
      ASSERT_TRUE(bool(files)) << llvm::toString(files.takeError());
      layout.files = std::move(*files);
      llvm::Error err = checkLayout(layout, "deepspeed");
      EXPECT_FALSE(bool(err)) << "zero=" << stage << " dp=" << dp << ": "
                              << llvm::toString(std::move(err));
    }
}

/// Megatron-DeepSpeed's parameters, cut over mp ranks by their names: every state
/// still covered once, row-parallel slices cut into rows, replicated ones alike on
/// every mp rank.
TEST(DeepSpeedShards, TensorParallelSlicesCoverEveryStateOnce) {
  std::string layer = "language_model.encoder.layers.0.";
  std::vector<std::pair<std::string, llvm::SmallVector<int64_t, 4>>> params = {
      {"language_model.embedding.word_embeddings.weight", {10, 4}},
      {layer + "input_layernorm.weight", {4}},
      {layer + "self_attention.query_key_value.weight", {12, 4}},
      {layer + "self_attention.query_key_value.bias", {12}},
      {layer + "self_attention.dense.weight", {4, 6}},
      {layer + "self_attention.dense.bias", {4}},
      {layer + "mlp.dense_4h_to_h.weight", {3, 8}}};
  std::vector<FullTensor> fulls;
  std::vector<std::vector<std::string>> groups(2);
  for (const auto &[name, shape] : params) {
    groups[shape.size() == 1].push_back(name);
    fulls.push_back({name, ckpt::DType::BFloat16, shape});
    for (const char *state : {"#fp32", "#exp_avg", "#exp_avg_sq"})
      fulls.push_back({name + state, ckpt::DType::Float32, shape});
  }
  for (bool bf16 : {false, true})
    for (unsigned tp : {1u, 2u})
      for (unsigned dp : {1u, 2u, 3u, 5u}) {
        DeepSpeedConfig config;
        config.dp = dp;
        config.tp = tp;
        config.bf16Optimizer = config.bf16Names = bf16;
        auto files = deepspeedShards(fulls, groups, config, "");
        ASSERT_TRUE(bool(files)) << llvm::toString(files.takeError());
        ASSERT_EQ(files->size(), tp * (dp + 1));
        EXPECT_EQ(files->back().path,
                  llvm::formatv("{0}zero_pp_rank_{1}_mp_rank_{2:d2}_optim_states.pt",
                                bf16 ? "bf16_" : "", dp - 1, tp - 1)
                      .str());
        Layout layout;
        layout.fulls = fulls;
        layout.files = std::move(*files);
        llvm::Error err = checkLayout(layout, "deepspeed");
        EXPECT_FALSE(bool(err)) << "tp=" << tp << " dp=" << dp << " bf16=" << bf16 << ": "
                                << llvm::toString(std::move(err));
        if (tp == 2) { // mp rank 1's row-parallel slice: columns 3..5 of dense.weight
          const LocalTensor &dense = layout.files[1].tensors[2];
          EXPECT_EQ(dense.key, "module." + layer + "self_attention.dense.weight");
          EXPECT_EQ(dense.shape, (llvm::SmallVector<int64_t, 4>{4, 3}));
          EXPECT_EQ(dense.pieces[0].fullBox.offsets, (llvm::SmallVector<int64_t, 4>{0, 3}));
        }
      }
}

TEST(DeepSpeedShards, UnknownNameUnderTensorParallelismIsAnError) {
  std::vector<FullTensor> fulls = {{"head.weight", ckpt::DType::BFloat16, {4, 4}}};
  for (const char *state : {"#fp32", "#exp_avg", "#exp_avg_sq"})
    fulls.push_back({std::string("head.weight") + state, ckpt::DType::Float32, {4, 4}});
  DeepSpeedConfig config;
  config.tp = 2;
  auto files = deepspeedShards(fulls, {{"head.weight"}}, config, "");
  ASSERT_FALSE(bool(files));
  std::string message = llvm::toString(files.takeError());
  EXPECT_NE(message.find("head.weight: not a Megatron-DeepSpeed parameter name"), std::string::npos)
      << message;
}
} // namespace
