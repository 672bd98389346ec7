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
      auto files = deepspeedShards(layout.fulls, groups, stage, dp, "tag/");
      ASSERT_TRUE(bool(files)) << llvm::toString(files.takeError());
      layout.files = std::move(*files);
      llvm::Error err = checkLayout(layout, "deepspeed");
      EXPECT_FALSE(bool(err)) << "zero=" << stage << " dp=" << dp << ": "
                              << llvm::toString(std::move(err));
    }
}
} // namespace
