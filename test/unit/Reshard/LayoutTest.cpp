//===- LayoutTest.cpp - layout arithmetic of the resharder -----------------===//
//
// flatRuns must cut every element range of every shape into contiguous boxes that
// tile it in order; the Megatron and DeepSpeed generators must produce layouts that
// checkLayout accepts for every degree that divides the model, and refuse the others.
//
//===----------------------------------------------------------------------===//
#include "loom/Reshard/Layout.h"

#include <gtest/gtest.h>

#include <map>

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

/// Where each parameter starts in the "param" buffer of `file` (distrib_optim.pt):
/// its first piece's offset, by full name.
std::map<std::string, int64_t> bufferStarts(const Layout &layout, const ShardFile &file) {
  std::map<std::string, int64_t> starts;
  for (const LocalTensor &t : file.tensors)
    if (llvm::StringRef(t.key).ends_with(".param"))
      for (const Piece &piece : t.pieces) {
        llvm::StringRef name = llvm::StringRef(layout.fulls[piece.full].name).split('#').first;
        auto [it, fresh] = starts.try_emplace(name.str(), piece.localOffsets[0]);
        if (!fresh)
          it->second = std::min(it->second, piece.localOffsets[0]);
      }
  return starts;
}

/// Megatron's distributed optimizer, on a model small enough to place by hand:
/// hidden 8, 2 heads of 4, ffn 12 with SwiGLU, vocabulary padded to 128 rows. Per
/// layer: qkv norm 8, qkv 24x8 = 192, proj 64, fc1 norm 8, fc1 24x8 = 192, fc2 96.
TEST(MegatronShards, DistributedOptimizerBuffers) {
  std::vector<FullTensor> fulls = llama(2, 2, 2, 4, 8, 12, 100);
  for (size_t f = 0, n = fulls.size(); f < n; ++f)
    for (const char *state : {"#fp32", "#exp_avg", "#exp_avg_sq"})
      fulls.push_back({fulls[f].name + state, ckpt::DType::Float32, fulls[f].shape});
  ckpt::MegatronDims dims;
  dims.numLayers = 2;
  dims.hidden = 8;
  dims.heads = dims.queryGroups = 2;
  dims.headDim = 4;
  dims.ffn = 12;
  dims.vocab = 100;
  dims.paddedVocab = 128;
  dims.swiglu = true;
  auto place = [&](unsigned pp, const MegatronDistOpt &distOpt, unsigned stage) {
    std::vector<int64_t> perStage(pp, 2 / pp);
    auto files = megatronShards(fulls, dims, ckpt::MegatronNaming::MCore, 1, pp, perStage, "",
                                &distOpt);
    EXPECT_TRUE(bool(files)) << llvm::toString(files.takeError());
    Layout layout;
    layout.fulls = fulls;
    layout.files = std::move(*files);
    llvm::Error err = checkLayout(layout, "distributed optimizer");
    EXPECT_FALSE(bool(err)) << llvm::toString(std::move(err));
    // Model files first (without states), then one distrib_optim.pt per rank.
    EXPECT_EQ(layout.files.size(), 2u * pp);
    const ShardFile &file = layout.files[pp + stage];
    EXPECT_EQ(file.path, pp == 1 ? "mp_rank_00/distrib_optim.pt"
                                 : "mp_rank_00_00" + std::to_string(stage) + "/distrib_optim.pt");
    EXPECT_EQ(file.tensors.size(), 3u);
    EXPECT_EQ(file.tensors[0].key, "0.(torch.bfloat16, torch.float32).param");
    return std::pair{bufferStarts(layout, file), file.tensors[0].shape[0]};
  };
  // One bucket: reverse registration order, starts aligned to 64.
  auto [starts, numel] = place(2, {}, 1);
  std::string l1 = "model.layers.1.";
  EXPECT_EQ(starts["lm_head.weight"], 0);
  EXPECT_EQ(starts["model.norm.weight"], 1024);
  EXPECT_EQ(starts[l1 + "mlp.down_proj.weight"], 1088);
  EXPECT_EQ(starts[l1 + "mlp.gate_proj.weight"], 1216);
  EXPECT_EQ(starts[l1 + "post_attention_layernorm.weight"], 1408);
  EXPECT_EQ(starts[l1 + "self_attn.o_proj.weight"], 1472);
  EXPECT_EQ(starts[l1 + "self_attn.q_proj.weight"], 1536);
  EXPECT_EQ(starts[l1 + "input_layernorm.weight"], 1728);
  EXPECT_EQ(numel, 1736);
  // Buckets of 1030 elements, on the first stage only: the first closes after the
  // final norm of a one-stage model at 1032, off the grid, and the next starts there.
  MegatronDistOpt buckets;
  buckets.bucketSize = 1030;
  std::tie(starts, numel) = place(1, buckets, 0);
  EXPECT_EQ(starts["model.norm.weight"], 1024);
  EXPECT_EQ(starts[l1 + "mlp.down_proj.weight"], 1032);
  EXPECT_EQ(starts[l1 + "mlp.gate_proj.weight"], 1160);
  std::tie(starts, numel) = place(2, buckets, 1);
  EXPECT_EQ(starts[l1 + "mlp.down_proj.weight"], 1088);
  // A tied output layer on the last of two stages takes a bucket of its own; with a
  // vocabulary padded to 100 rows it ends off the grid, and the norm follows at once.
  dims.paddedVocab = 100;
  MegatronDistOpt tied;
  tied.sharedEmbedding = true;
  EXPECT_EQ(place(2, tied, 1).first["model.norm.weight"], 800);
  EXPECT_EQ(place(2, {}, 1).first["model.norm.weight"], 832);
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
