//===- LayoutTest.cpp - layout arithmetic of the resharder -----------------===//
//
// flatRuns must cut every element range of every shape into contiguous boxes that
// tile it in order; the Megatron and DeepSpeed generators must produce layouts that
// checkLayout accepts for every degree that divides the model, and refuse the others.
//
//===----------------------------------------------------------------------===//
#include "loom/Reshard/Layout.h"

#include "llvm/Support/FormatVariadic.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

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

/// llama's model with every MLP a Mixtral mixture of `experts` experts of `ffn` rows.
std::vector<FullTensor> mixtral(int64_t layers, int64_t experts, int64_t ffn) {
  std::vector<FullTensor> fulls;
  for (FullTensor &f : llama(layers, 8, 4, 4, 32, ffn, 250))
    if (!llvm::StringRef(f.name).contains(".mlp."))
      fulls.push_back(std::move(f));
  for (int64_t i = 0; i < layers; ++i) {
    std::string p = "model.layers." + std::to_string(i) + ".block_sparse_moe.";
    fulls.push_back({p + "gate.weight", ckpt::DType::BFloat16, {experts, 32}});
    for (int64_t e = 0; e < experts; ++e) {
      std::string x = p + "experts." + std::to_string(e) + ".";
      fulls.push_back({x + "w1.weight", ckpt::DType::BFloat16, {ffn, 32}});
      fulls.push_back({x + "w3.weight", ckpt::DType::BFloat16, {ffn, 32}});
      fulls.push_back({x + "w2.weight", ckpt::DType::BFloat16, {32, ffn}});
    }
  }
  return fulls;
}

/// The dimensions of mixtral(2, 4, 24).
ckpt::MegatronDims mixtralDims() {
  ckpt::MegatronDims dims;
  dims.numLayers = 2;
  dims.hidden = 32;
  dims.heads = 8;
  dims.queryGroups = 4;
  dims.headDim = 4;
  dims.ffn = dims.moeFfn = 24;
  dims.vocab = 250;
  dims.paddedVocab = 256;
  dims.swiglu = true;
  dims.experts = 4;
  return dims;
}

/// `fulls` with each tensor's fp32 master and Adam moments after them.
std::vector<FullTensor> withStates(std::vector<FullTensor> fulls) {
  for (size_t f = 0, n = fulls.size(); f < n; ++f)
    for (const char *state : {"#fp32", "#exp_avg", "#exp_avg_sq"})
      fulls.push_back({fulls[f].name + state, ckpt::DType::Float32, fulls[f].shape});
  return fulls;
}

TEST(MegatronShards, ExpertsSpreadOverEpRanks) {
  auto fulls = mixtral(2, 4, 24);
  ckpt::MegatronDims dims = mixtralDims();
  for (bool grouped : {false, true})
    for (unsigned ep : {1u, 2u, 4u, 3u}) {
      dims.groupedGemm = grouped;
      auto files = megatronShards(fulls, dims, ckpt::MegatronNaming::MCore, 2, 2, {1, 1}, "",
                                  nullptr, nullptr, ep);
      if (ep == 3) { // 4 experts do not split over 3 ranks
        ASSERT_FALSE(files);
        EXPECT_NE(llvm::toString(files.takeError()).find("do not split evenly over ep=3"),
                  std::string::npos);
        continue;
      }
      ASSERT_TRUE(bool(files)) << llvm::toString(files.takeError());
      ASSERT_EQ(files->size(), 2 * 2 * ep);
      // Stage-major, then TP rank, then ep rank; expert e of a layer sits in ep rank
      // e / (4 / ep) under local index e % (4 / ep), in both TP ranks' files.
      EXPECT_EQ((*files)[0].path, ep == 1 ? "mp_rank_00_000/model_optim_rng.pt"
                                          : "mp_rank_00_000_000/model_optim_rng.pt");
      EXPECT_EQ(files->back().path, ep == 1 ? "mp_rank_01_001/model_optim_rng.pt"
                                            : llvm::formatv("mp_rank_01_001_{0:d3}/"
                                                            "model_optim_rng.pt",
                                                            ep - 1)
                                                  .str());
      const ShardFile &last = files->back();
      std::string fc1 = grouped ? "model.decoder.layers.0.mlp.experts.linear_fc1.weight0"
                                : "model.decoder.layers.0.mlp.experts.local_experts.0."
                                  "linear_fc1.weight";
      auto found = llvm::find_if(last.tensors, [&](const LocalTensor &t) { return t.key == fc1; });
      ASSERT_NE(found, last.tensors.end()) << fc1;
      // [gate; up] of TP rank 1's 12 rows of expert (ep - 1) * 4 / ep.
      EXPECT_EQ(found->shape, (llvm::SmallVector<int64_t, 4>{24, 32}));
      ASSERT_EQ(found->pieces.size(), 2u);
      std::string expert = std::to_string((ep - 1) * (4 / ep));
      EXPECT_EQ(fulls[found->pieces[0].full].name,
                "model.layers.1.block_sparse_moe.experts." + expert + ".w1.weight");
      EXPECT_EQ(found->pieces[0].fullBox.offsets[0], 12);
      size_t experts = llvm::count_if(last.tensors, [](const LocalTensor &t) {
        return llvm::StringRef(t.key).contains(".mlp.experts.");
      });
      EXPECT_EQ(experts, 2 * 4 / ep);
      Layout layout;
      layout.fulls = fulls;
      layout.files = std::move(*files);
      llvm::Error err = checkLayout(layout, "megatron");
      EXPECT_FALSE(bool(err)) << "ep=" << ep << ": " << llvm::toString(std::move(err));
    }
  // A dense model has no experts to spread.
  auto dense = megatronShards(llama(2, 8, 4, 4, 32, 24, 250), dims, ckpt::MegatronNaming::MCore,
                              1, 1, {2}, "", nullptr, nullptr, 2);
  ASSERT_FALSE(dense);
  EXPECT_EQ(llvm::toString(dense.takeError()),
            "ep=2 asks for expert parallelism, and the model has no experts");
}

/// A mixture of experts' states are a ChainedOptimizer's: in model_optim_rng.pt
/// "optimizer.0." the dense parameters' optimizer (in every expert-parallel rank's
/// file), "optimizer.1." the rank's experts'; in distrib_optim.pt "0." (expert-parallel
/// rank 0's file only, None elsewhere) and "1.".
TEST(MegatronShards, ChainedOptimizerOfExperts) {
  std::vector<FullTensor> fulls = withStates(mixtral(2, 4, 24));
  ckpt::MegatronDims dims = mixtralDims();
  auto keysOf = [](const ShardFile &file, llvm::StringRef prefix) {
    return llvm::count_if(file.tensors, [&](const LocalTensor &t) {
      return llvm::StringRef(t.key).starts_with(prefix);
    });
  };
  for (bool distributed : {false, true}) {
    MegatronDistOpt distOpt;
    distOpt.bucketSize = 1000;
    auto files = megatronShards(fulls, dims, ckpt::MegatronNaming::MCore, 2, 1, {2}, "",
                                distributed ? &distOpt : nullptr, nullptr, 2);
    ASSERT_TRUE(bool(files)) << llvm::toString(files.takeError());
    Layout layout;
    layout.fulls = fulls;
    layout.files = *files;
    llvm::Error err = checkLayout(layout, "chained");
    EXPECT_FALSE(bool(err)) << llvm::toString(std::move(err));
    if (!distributed) {
      ASSERT_EQ(files->size(), 4u);
      for (const ShardFile &file : *files) {
        // 8 dense parameters of 2 layers plus 3 model ones, each with 3 states; 2
        // layers of 2 local experts' fc1 and fc2, all in the experts' one group.
        EXPECT_EQ(keysOf(file, "optimizer.0."), 3 * (2 * 5 + 3)) << file.path;
        EXPECT_EQ(keysOf(file, "optimizer.1.fp32_from_fp16_params.0."), 2 * 2 * 2);
        EXPECT_EQ(keysOf(file, "optimizer.1.fp32_from_fp16_params.1."), 0);
        EXPECT_EQ(keysOf(file, "optimizer.1.optimizer.state."), 2 * 2 * 2 * 2);
      }
      continue;
    }
    ASSERT_EQ(files->size(), 8u);
    for (unsigned e = 0; e < 2; ++e) {
      const ShardFile &distrib = (*files)[4 + e];
      EXPECT_EQ(distrib.path, llvm::formatv("mp_rank_00_{0:d3}/distrib_optim.pt", e).str());
      EXPECT_EQ(keysOf(distrib, "0.0.(torch.bfloat16, torch.float32)."), e ? 0 : 3);
      EXPECT_EQ(keysOf(distrib, "1.0.(torch.bfloat16, torch.float32)."), 3);
      EXPECT_EQ(llvm::StringRef(distrib.meta).starts_with("[null,"), e == 1) << distrib.meta;
    }
  }
  // A dense model's optimizer stays one dict.
  dims.experts = 0;
  auto one = megatronShards(withStates(llama(2, 8, 4, 4, 32, 24, 250)), dims, ckpt::MegatronNaming::MCore, 1, 1, {2}, "");
  ASSERT_TRUE(bool(one)) << llvm::toString(one.takeError());
  EXPECT_GT(keysOf((*one)[0], "optimizer.fp32_from_fp16_params.0."), 0);
  EXPECT_EQ(keysOf((*one)[0], "optimizer.0."), 0);
}

/// Experts on their own tensor-parallel ranks (etp): only the folders Megatron's
/// writing ranks write, each with its writer's expert piece and the distributed
/// optimizer's states where the writer is that optimizer's data-parallel rank 0.
TEST(MegatronShards, ExpertTensorParallelism) {
  std::vector<FullTensor> fulls = withStates(mixtral(2, 4, 24));
  ckpt::MegatronDims dims = mixtralDims();
  MegatronDistOpt distOpt;
  auto paths = [](const std::vector<ShardFile> &files) {
    std::vector<std::string> out;
    for (const ShardFile &f : files)
      out.push_back(f.path);
    return out;
  };
  // tp=2 etp=1 ep=2: ranks 0 and 1 write mp_rank_00_000 and mp_rank_01_001, each with
  // its experts whole and both optimizers' states.
  auto files = megatronShards(fulls, dims, ckpt::MegatronNaming::MCore, 2, 1, {2}, "",
                              &distOpt, nullptr, 2, 1);
  ASSERT_TRUE(bool(files)) << llvm::toString(files.takeError());
  EXPECT_EQ(paths(*files), (std::vector<std::string>{
                               "mp_rank_00_000/model_optim_rng.pt",
                               "mp_rank_01_001/model_optim_rng.pt",
                               "mp_rank_00_000/distrib_optim.pt",
                               "mp_rank_01_001/distrib_optim.pt"}));
  for (const ShardFile &f : *files)
    for (const LocalTensor &t : f.tensors)
      if (llvm::StringRef(t.key).ends_with("local_experts.0.linear_fc2.weight"))
        EXPECT_EQ(t.shape, (llvm::SmallVector<int64_t, 4>{32, 24})) << f.path;
  Layout layout;
  layout.fulls = fulls;
  layout.files = *files;
  llvm::Error err = checkLayout(layout, "etp");
  EXPECT_FALSE(bool(err)) << llvm::toString(std::move(err));
  // tp=2 etp=1 ep=1: rank 1 is not the experts' data-parallel rank 0.
  files = megatronShards(fulls, dims, ckpt::MegatronNaming::MCore, 2, 1, {2}, "", &distOpt,
                         nullptr, 1, 1);
  ASSERT_TRUE(bool(files)) << llvm::toString(files.takeError());
  ASSERT_EQ(files->size(), 4u);
  EXPECT_FALSE(llvm::StringRef((*files)[2].meta).ends_with("null]")) << (*files)[2].meta;
  EXPECT_TRUE(llvm::StringRef((*files)[3].meta).ends_with("null]")) << (*files)[3].meta;
  // tp=2 etp=1 ep=4: ranks 2 and 3 are not the dense optimizer's.
  files = megatronShards(fulls, dims, ckpt::MegatronNaming::MCore, 2, 1, {2}, "", &distOpt,
                         nullptr, 4, 1);
  ASSERT_TRUE(bool(files)) << llvm::toString(files.takeError());
  ASSERT_EQ(files->size(), 8u);
  EXPECT_EQ((*files)[5].path, "mp_rank_00_002/distrib_optim.pt");
  EXPECT_TRUE(llvm::StringRef((*files)[5].meta).starts_with("[null,")) << (*files)[5].meta;
  // etp > tp: several ranks would write one folder.
  auto refused = megatronShards(fulls, dims, ckpt::MegatronNaming::MCore, 1, 1, {2}, "",
                                nullptr, nullptr, 2, 2);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(llvm::StringRef(llvm::toString(refused.takeError())).starts_with("etp=2 > tp=1"));
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
  std::vector<FullTensor> fulls = withStates(llama(2, 2, 2, 4, 8, 12, 100));
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
  // mcore registers linear_proj before linear_qkv and its fused norm, so in
  // reverse the output projection comes last.
  EXPECT_EQ(starts[l1 + "self_attn.q_proj.weight"], 1472);
  EXPECT_EQ(starts[l1 + "input_layernorm.weight"], 1664);
  EXPECT_EQ(starts[l1 + "self_attn.o_proj.weight"], 1728);
  EXPECT_EQ(numel, 1792);
  // Buckets of 1030 elements, on the first stage only: the first closes after the
  // final norm of a one-stage model at 1032, off the grid, and the next starts there.
  MegatronDistOpt buckets;
  buckets.bucketSize = 1030;
  std::tie(starts, numel) = place(1, buckets, 0);
  EXPECT_EQ(starts["model.norm.weight"], 1024);
  EXPECT_EQ(starts[l1 + "mlp.down_proj.weight"], 1032);
  EXPECT_EQ(starts[l1 + "mlp.gate_proj.weight"], 1160);
  // The buckets' sizes (a torch_dist dp_reshardable checkpoint's tensors): one list
  // per distrib_optim.pt and grad buffer, adding up to the buffer.
  std::vector<std::vector<std::vector<int64_t>>> bucketNumels;
  auto oneStage = megatronShards(fulls, dims, ckpt::MegatronNaming::MCore, 1, 1, {2}, "",
                                 &buckets, &bucketNumels);
  ASSERT_TRUE(bool(oneStage)) << llvm::toString(oneStage.takeError());
  ASSERT_EQ(bucketNumels.size(), 1u);
  ASSERT_EQ(bucketNumels[0].size(), 1u);
  EXPECT_EQ(bucketNumels[0][0], (std::vector<int64_t>{1032, 1032, 1344}));
  EXPECT_EQ(numel, 1032 + 1032 + 1344);
  std::tie(starts, numel) = place(2, buckets, 1);
  EXPECT_EQ(starts[l1 + "mlp.down_proj.weight"], 1088);
  // Tied (no lm_head): the last of two stages holds the word embeddings' copy as its
  // output layer, in a bucket of its own; with a vocabulary padded to 100 rows it ends
  // off the grid, and the norm follows at once.
  dims.paddedVocab = 100;
  llvm::erase_if(fulls, [](const FullTensor &f) {
    return llvm::StringRef(f.name).starts_with("lm_head.weight");
  });
  MegatronDistOpt tied;
  tied.sharedEmbedding = true;
  std::tie(starts, numel) = place(2, tied, 1);
  EXPECT_EQ(starts["model.embed_tokens.weight"], 0);
  EXPECT_EQ(starts["model.norm.weight"], 800);
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
      layout.files = std::move(files->files);
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
        ASSERT_EQ(files->files.size(), tp * (dp + 1));
        EXPECT_EQ(files->files.back().path,
                  llvm::formatv("{0}zero_pp_rank_{1}_mp_rank_{2:d2}_optim_states.pt",
                                bf16 ? "bf16_" : "", dp - 1, tp - 1)
                      .str());
        Layout layout;
        layout.fulls = fulls;
        layout.files = std::move(files->files);
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

TEST(DeepSpeedShards, ExpertNames) {
  auto expert = deepspeedExpertOf(
      "language_model.encoder.layers.3.mlp.deepspeed_moe.experts.deepspeed_experts.12."
      "dense_h_to_4h.weight");
  ASSERT_TRUE(expert.has_value());
  EXPECT_EQ(expert->module, "language_model.encoder.layers.3.mlp");
  EXPECT_EQ(expert->expert, 12);
  EXPECT_EQ(expert->rest, "dense_h_to_4h.weight");
  expert->expert = 2;
  EXPECT_EQ(expert->name(), "language_model.encoder.layers.3.mlp.deepspeed_moe.experts."
                            "deepspeed_experts.2.dense_h_to_4h.weight");
  EXPECT_FALSE(deepspeedExpertOf("language_model.encoder.layers.3.mlp.deepspeed_moe.gate.wg."
                                 "weight"));
  EXPECT_FALSE(deepspeedExpertOf("x.deepspeed_moe.experts.deepspeed_experts.a.weight"));
  EXPECT_FALSE(deepspeedExpertOf("x.deepspeed_moe.experts.deepspeed_experts.1"));
}

/// DeepSpeed's MoE: the experts' groups on dp rank r hold expert-parallel rank r % ep's
/// experts under their local names, partitioned over the dp / ep ranks of r's
/// expert-data-parallel group, where r is rank r / ep; every state covered once.
TEST(DeepSpeedShards, ExpertsOverExpertDataParallelGroups) {
  const std::string moe = "layers.1.mlp.deepspeed_moe.";
  std::vector<std::pair<std::string, llvm::SmallVector<int64_t, 4>>> params = {
      {"embed.weight", {10, 4}}, {moe + "gate.wg.weight", {4, 4}}};
  for (int e = 0; e < 4; ++e) {
    std::string prefix = moe + "experts.deepspeed_experts." + std::to_string(e) + ".";
    params.push_back({prefix + "fc.weight", {3, 4}});
    params.push_back({prefix + "fc.bias", {3}});
  }
  std::vector<FullTensor> fulls;
  std::vector<std::vector<std::string>> groups(3);
  for (const auto &[name, shape] : params) {
    bool expert = deepspeedExpertOf(name).has_value();
    groups[expert ? 1 + (shape.size() == 1) : 0].push_back(name);
    fulls.push_back({name, ckpt::DType::BFloat16, shape});
    for (const char *state : {"#fp32", "#exp_avg", "#exp_avg_sq"})
      fulls.push_back({name + state, ckpt::DType::Float32, shape});
  }
  for (unsigned ep : {1u, 2u, 4u})
    for (unsigned dp : {4u, 8u}) {
      DeepSpeedConfig config;
      config.dp = dp;
      config.ep = ep;
      auto shards = deepspeedShards(fulls, groups, config, "");
      ASSERT_TRUE(bool(shards)) << llvm::toString(shards.takeError());
      EXPECT_EQ(shards->numExperts, (std::vector<int64_t>{4}));
      EXPECT_EQ(shards->partitionCounts, (std::vector<int64_t>{dp, dp / ep, dp / ep}));
      ASSERT_EQ(shards->files.size(), 1 + 4 + dp + ep);
      EXPECT_EQ(shards->files[shards->expertFiles[3]].path,
                "layer_0_expert_3_mp_rank_00_model_states.pt");
      EXPECT_EQ(shards->files[shards->exppFiles.back()].path,
                llvm::formatv("expp_rank_{0}_mp_rank_00_optim_states.pt", ep - 1).str());
      EXPECT_EQ(shards->files[shards->modelFiles[0]].tensors.size(), 2u); // no expert
      // Rank 1's first weight fragment of the experts' group: the first of its experts,
      // under local index 0, at the start of its partition when its group has one rank.
      const auto &fragments = shards->sliceMappings[1][1];
      ASSERT_FALSE(fragments.empty());
      if (dp / ep == 1)
        EXPECT_EQ(fragments.front().param, moe + "experts.deepspeed_experts.0.fc.weight");
      for (const DeepSpeedShards::Fragment &f : fragments)
        EXPECT_LT(deepspeedExpertOf(f.param)->expert, int64_t(4 / ep)) << f.param;
      Layout layout;
      layout.fulls = fulls;
      layout.files = std::move(shards->files);
      llvm::Error err = checkLayout(layout, "deepspeed-moe");
      EXPECT_FALSE(bool(err)) << "ep=" << ep << " dp=" << dp << ": "
                              << llvm::toString(std::move(err));
    }
  DeepSpeedConfig config;
  config.dp = 6;
  config.ep = 3;
  auto shards = deepspeedShards(fulls, groups, config, "");
  ASSERT_FALSE(bool(shards));
  EXPECT_EQ(llvm::toString(shards.takeError()),
            "layers.1.mlp: 4 experts do not divide over ep=3 (DeepSpeed's MoE needs "
            "num_experts % ep_size == 0)");
}

/// DeepSpeed's partition_balanced over GPTModelPipe's layer list, against what the
/// Python original (deepspeed/runtime/utils.py, run with numpy) gives for `layers`
/// transformer layers in a 16-bit model (a layer list of layers + 5).
TEST(DeepSpeedPipe, PartitionBalancedAsDeepSpeed) {
  struct Case {
    int64_t layers;
    unsigned pp;
    std::vector<int64_t> parts;
  };
  for (const Case &c : std::vector<Case>{{1, 2, {0, 5, 6}},
                                         {1, 8, {0, 1, 2, 3, 4, 5, 6, 6, 6}},
                                         {2, 3, {0, 3, 6, 7}},
                                         {3, 2, {0, 4, 8}},
                                         {4, 2, {0, 4, 9}},
                                         {4, 3, {0, 4, 5, 9}},
                                         {5, 3, {0, 4, 6, 10}},
                                         {7, 4, {0, 4, 6, 8, 12}},
                                         {12, 8, {0, 4, 6, 8, 10, 11, 12, 13, 17}},
                                         {24, 3, {0, 10, 18, 29}},
                                         {24, 8, {0, 5, 8, 11, 14, 17, 20, 23, 29}}})
    EXPECT_EQ(gptPipeParts(c.layers, c.pp, /*halfPrecision=*/true), c.parts)
        << c.layers << " layers, pp=" << c.pp;
  // Without float16_to_fp32 the list is one shorter.
  EXPECT_EQ(gptPipeParts(4, 2, /*halfPrecision=*/false), (std::vector<int64_t>{0, 4, 8}));
}

/// GPTModelPipe's names and GPTModel's map onto each other.
TEST(DeepSpeedPipe, NamesRoundTrip) {
  struct Case {
    const char *gpt;
    bool tied;
    const char *pipe;
    int64_t layer;
    const char *key;
  };
  for (const Case &c : std::vector<Case>{
           {"language_model.embedding.word_embeddings.weight", true,
            "tied_modules.embed.word_embeddings.weight", 1, "word_embeddings.weight"},
           {"language_model.embedding.position_embeddings.weight", false,
            "1.position_embeddings.weight", 1, "position_embeddings.weight"},
           {"language_model.encoder.layers.3.mlp.dense_h_to_4h.weight", true,
            "5.mlp.dense_h_to_4h.weight", 5, "mlp.dense_h_to_4h.weight"},
           {"language_model.encoder.final_layernorm.bias", true, "6.bias", 6, "bias"},
           {"language_model.output_layer.weight", false, "7.lm_head.weight", 7,
            "lm_head.weight"}}) {
    auto pipe = gptPipeName(c.gpt, /*layers=*/4, c.tied);
    ASSERT_TRUE(pipe) << c.gpt;
    EXPECT_EQ(pipe->name, c.pipe);
    EXPECT_EQ(pipe->layer, c.layer);
    EXPECT_EQ(pipe->key, c.key);
    EXPECT_EQ(gptNameOfPipe(c.pipe), std::optional<std::string>(c.gpt));
  }
  EXPECT_FALSE(gptPipeName("language_model.encoder.layers.4.input_layernorm.weight", 4, true));
  EXPECT_FALSE(gptPipeName("language_model.output_layer.weight", 4, /*tiedHead=*/true));
  EXPECT_FALSE(gptPipeName("head.weight", 4, true));
  EXPECT_FALSE(gptNameOfPipe("0.weight"));
  EXPECT_FALSE(gptNameOfPipe("embed.weight"));
}

/// A tied GPT over pp=2, tp=2: layer files per layer and tp rank, mp rank =
/// stage·tp + tp rank, the last stage's groups led by its copies of the tied
/// embedding; written, every state is covered, the copies too.
TEST(DeepSpeedShards, PipelineStagesAndTiedCopies) {
  std::vector<FullTensor> fulls;
  std::vector<std::vector<std::string>> groups(2);
  auto add = [&](const std::string &name, llvm::SmallVector<int64_t, 4> shape) {
    groups[shape.size() == 1].push_back(name);
    fulls.push_back({name, ckpt::DType::BFloat16, shape});
    for (const char *state : {"#fp32", "#exp_avg", "#exp_avg_sq"})
      fulls.push_back({name + state, ckpt::DType::Float32, shape});
  };
  add("language_model.embedding.word_embeddings.weight", {16, 4});
  add("language_model.embedding.position_embeddings.weight", {5, 4});
  for (int n = 0; n < 3; ++n) {
    std::string layer = "language_model.encoder.layers." + std::to_string(n) + ".";
    add(layer + "input_layernorm.weight", {4});
    add(layer + "self_attention.query_key_value.weight", {12, 4});
    add(layer + "mlp.dense_4h_to_h.weight", {4, 8});
  }
  add("language_model.encoder.final_layernorm.weight", {4});
  DeepSpeedConfig config;
  config.dp = 2;
  config.tp = 2;
  config.pipeline = true;
  config.pp = 2;
  auto shards = deepspeedShards(fulls, groups, config, "");
  ASSERT_TRUE(bool(shards)) << llvm::toString(shards.takeError());
  ASSERT_EQ(shards->paramShapes.size(), 4u);
  // Stage 0 holds the embedding and layers 0, 1 (3 layers over 2 stages: 2 and 1).
  EXPECT_EQ(shards->paramShapes[1][0][0].first, "tied_modules.embed.word_embeddings.weight");
  EXPECT_EQ(shards->paramShapes[1][0][0].second, (llvm::SmallVector<int64_t, 4>{8, 4}));
  // Stage 1 (mp ranks 2, 3): the tied copies first, then layer 2 (index 4), the norm (5).
  const auto &last = shards->paramShapes[3];
  EXPECT_EQ(last[0][0].first, "tied_modules.embed.word_embeddings.weight");
  EXPECT_EQ(last[0][1].first, "tied_modules.embed.position_embeddings.weight");
  EXPECT_EQ(last[0][2].first, "4.self_attention.query_key_value.weight");
  EXPECT_EQ(last[1].back().first, "5.weight");
  std::vector<std::string> layerPaths;
  for (size_t i : shards->layerFiles)
    layerPaths.push_back(shards->files[i].path);
  EXPECT_EQ(layerPaths, (std::vector<std::string>{
                            "layer_01-model_00-model_states.pt", "layer_02-model_00-model_states.pt",
                            "layer_03-model_00-model_states.pt", "layer_01-model_01-model_states.pt",
                            "layer_02-model_01-model_states.pt", "layer_03-model_01-model_states.pt",
                            "layer_04-model_00-model_states.pt", "layer_05-model_00-model_states.pt",
                            "layer_04-model_01-model_states.pt", "layer_05-model_01-model_states.pt"}));
  EXPECT_EQ(shards->files[shards->optimFiles.back()].path,
            "zero_pp_rank_1_mp_rank_03_optim_states.pt");
  Layout layout;
  layout.fulls = fulls;
  layout.files = std::move(shards->files);
  llvm::Error err = checkLayout(layout, "pipeline", /*source=*/false);
  EXPECT_FALSE(bool(err)) << llvm::toString(std::move(err));
  // Read, the copies keep their places in the partitions but get no pieces.
  auto read = deepspeedShards(fulls, groups, config, "", /*tiedCopies=*/false);
  ASSERT_TRUE(bool(read));
  EXPECT_EQ(read->sliceMappings, shards->sliceMappings);
}

/// SwiGLU's dense_h_to_4h: tp rank r's slice is [gate rows of r; up rows of r] of the
/// full [all gates; all ups]; without args.swiglu the cut is refused.
TEST(DeepSpeedShards, SwigluSlicesHoldGateAndUp) {
  std::string fc1 = "language_model.encoder.layers.0.mlp.dense_h_to_4h.weight";
  std::vector<FullTensor> fulls{{fc1, ckpt::DType::BFloat16, {8, 3}}};
  for (const char *state : {"#fp32", "#exp_avg", "#exp_avg_sq"})
    fulls.push_back({fc1 + state, ckpt::DType::Float32, {8, 3}});
  DeepSpeedConfig config;
  config.tp = 2;
  config.dp = 3;
  auto unknown = deepspeedShards(fulls, {{fc1}}, config, "");
  ASSERT_FALSE(bool(unknown));
  EXPECT_NE(llvm::toString(unknown.takeError()).find("args.swiglu"), std::string::npos);
  config.swiglu = true;
  auto shards = deepspeedShards(fulls, {{fc1}}, config, "");
  ASSERT_TRUE(bool(shards)) << llvm::toString(shards.takeError());
  const LocalTensor &slice = shards->files[1].tensors[0]; // mp rank 1's module
  EXPECT_EQ(slice.shape, (llvm::SmallVector<int64_t, 4>{4, 3}));
  ASSERT_EQ(slice.pieces.size(), 2u);
  EXPECT_EQ(slice.pieces[0].fullBox.offsets, (llvm::SmallVector<int64_t, 4>{2, 0}));
  EXPECT_EQ(slice.pieces[1].fullBox.offsets, (llvm::SmallVector<int64_t, 4>{6, 0}));
  EXPECT_EQ(slice.pieces[1].localOffsets, (llvm::SmallVector<int64_t, 4>{2, 0}));
  Layout layout;
  layout.fulls = fulls;
  layout.files = std::move(shards->files);
  llvm::Error err = checkLayout(layout, "swiglu");
  EXPECT_FALSE(bool(err)) << llvm::toString(std::move(err));
  // 8 rows cut in [gate; up] over tp=3 do not divide.
  config.tp = 3;
  auto odd = deepspeedShards(fulls, {{fc1}}, config, "");
  ASSERT_FALSE(bool(odd));
  EXPECT_NE(llvm::toString(odd.takeError())
                .find("SwiGLU's [gate; up] column-parallel over tp=3, but its shape [8, 3] has no "
                      "dimension 0 that divides by 6"),
            std::string::npos);
}
} // namespace

/// --to megatron:...,format=torch_dist: the iteration folder as one DCP output whose
/// stacked keys are declared row by row (each layer's parameters and states), then
/// common.pt and metadata.json in it, and the tracker file; with optimizer=distributed
/// the same keys with the master under the fully_reshardable form's
/// optimizer.state.param., which common.pt names.
TEST(MegatronTarget, TorchDistStacksLayersForEitherOptimizer) {
  auto spec = parseTargetSpec("megatron:tp=2,pp=2,format=torch_dist");
  ASSERT_TRUE(bool(spec)) << llvm::toString(spec.takeError());
  EXPECT_TRUE(spec->torchDist);
  Layout source;
  source.format = "hf-safetensors";
  source.iteration = 7;
  source.optimizerStep = 7;
  source.dims = ModelDims{4, 32, 8, 4, 4, 48, 250, true};
  source.fulls = llama(4, 8, 4, 4, 32, 48, 250);
  for (size_t f = 0, n = source.fulls.size(); f < n; ++f)
    for (const char *state : {"#fp32", "#exp_avg", "#exp_avg_sq"})
      source.fulls.push_back(
          {source.fulls[f].name + state, ckpt::DType::Float32, source.fulls[f].shape});
  auto target = targetLayout(source, *spec);
  ASSERT_TRUE(bool(target)) << llvm::toString(target.takeError());
  std::vector<std::string> paths;
  for (const ShardFile &file : target->files)
    paths.push_back(file.path + " " + file.format);
  EXPECT_EQ(paths, (std::vector<std::string>{
                       "iter_0000007 dcp", "iter_0000007/common.pt torch-tree",
                       "iter_0000007/metadata.json text",
                       "latest_checkpointed_iteration.txt text"}));
  const ShardFile &dcp = target->files.front();
  std::map<std::string, int64_t> keys;
  for (const LocalTensor &t : dcp.tensors)
    keys[t.key] = t.shape.empty() ? 0 : t.shape[0];
  // Each layer's fused QKV at its row, tp=1's [q; k; v] per group; its states beside it.
  EXPECT_EQ(keys["decoder.layers.self_attention.linear_qkv.weight[3]"], (8 + 2 * 4) * 4);
  EXPECT_TRUE(keys.count("optimizer.state.fp32_param.decoder.layers.mlp.linear_fc1.weight[0]"));
  EXPECT_EQ(keys["embedding.word_embeddings.weight"], 256); // padded to 128·tp
  EXPECT_EQ(keys.size(), (3 + 4 * 6) * 4u);
  auto meta = llvm::json::parse(dcp.meta);
  ASSERT_TRUE(bool(meta));
  const llvm::json::Object *stacked = meta->getAsObject()->getObject("stacked");
  ASSERT_TRUE(stacked);
  EXPECT_EQ(stacked->size(), 6u * 4u);
  const llvm::json::Array *axes =
      stacked->getArray("optimizer.state.exp_avg.decoder.layers.mlp.linear_fc2.weight");
  ASSERT_TRUE(axes);
  EXPECT_EQ(*axes, llvm::json::Array{4});

  auto distributed = parseTargetSpec("megatron:tp=2,format=torch_dist,optimizer=distributed");
  ASSERT_TRUE(bool(distributed));
  auto distTarget = targetLayout(source, *distributed);
  ASSERT_TRUE(bool(distTarget)) << llvm::toString(distTarget.takeError());
  std::set<std::string> distKeys;
  for (const LocalTensor &t : distTarget->files.front().tensors)
    distKeys.insert(t.key);
  EXPECT_EQ(distKeys.size(), keys.size());
  EXPECT_TRUE(distKeys.count("optimizer.state.param.decoder.layers.mlp.linear_fc1.weight[0]"));
  EXPECT_TRUE(distKeys.count("optimizer.state.exp_avg.decoder.layers.mlp.linear_fc1.weight[0]"));
  EXPECT_FALSE(llvm::any_of(distKeys, [](const std::string &key) {
    return llvm::StringRef(key).starts_with("optimizer.state.fp32_param.");
  }));
  const std::string &common = distTarget->files[1].meta;
  EXPECT_NE(common.find("\"param_state_sharding_type\",\"fully_reshardable\""),
            std::string::npos)
      << common;
  EXPECT_NE(common.find("\"distrib_optim_sharding_type\",\"fully_reshardable\""),
            std::string::npos)
      << common;
  EXPECT_EQ(common.find("common_step"), std::string::npos) << common;
}

/// --to megatron:...,format=torch_dist of a mixture of experts: each routed expert's
/// linear_fc1 and linear_fc2 at its (layer, expert) row of one key, whatever the ep and
/// the expert module (mcore keys SequentialMLP's and TEGroupedMLP's alike); the
/// router and the norm before it stacked per layer.
/// mixtral(2, 4, 24) as an HF source at iteration 5, laid out as Megatron's
/// torch_dist at tp=2 ep=2 (with Adam's states when `states`).
llvm::Expected<Layout> mixtralTorchDist(bool states) {
  Layout source;
  source.format = "hf-safetensors";
  source.iteration = 5;
  source.dims = ModelDims{2, 32, 8, 4, 4, 24, 250, true, 4, 24, 2};
  source.fulls = states ? withStates(mixtral(2, 4, 24)) : mixtral(2, 4, 24);
  if (states)
    source.optimizerStep = 5;
  auto spec = parseTargetSpec("megatron:tp=2,ep=2,format=torch_dist");
  if (!spec)
    return spec.takeError();
  return targetLayout(source, *spec);
}

/// Each tensor's shape by key.
std::map<std::string, llvm::SmallVector<int64_t, 4>> keyShapes(const ShardFile &file) {
  std::map<std::string, llvm::SmallVector<int64_t, 4>> keys;
  for (const LocalTensor &t : file.tensors)
    keys[t.key] = t.shape;
  return keys;
}

TEST(MegatronTarget, TorchDistStacksExpertsOnTheirOwnAxis) {
  auto target = mixtralTorchDist(/*states=*/false);
  ASSERT_TRUE(bool(target)) << llvm::toString(target.takeError());
  const ShardFile &dcp = target->files.front();
  auto keys = keyShapes(dcp);
  // Expert 3 of layer 1: [gate; up] of 24 rows each, and its down projection.
  EXPECT_EQ(keys["decoder.layers.mlp.experts.experts.linear_fc1.weight[1][3]"],
            (llvm::SmallVector<int64_t, 4>{48, 32}));
  EXPECT_EQ(keys["decoder.layers.mlp.experts.experts.linear_fc2.weight[1][3]"],
            (llvm::SmallVector<int64_t, 4>{32, 24}));
  EXPECT_EQ(keys["decoder.layers.mlp.router.weight[0]"], (llvm::SmallVector<int64_t, 4>{4, 32}));
  EXPECT_TRUE(keys.count("decoder.layers.pre_mlp_layernorm.weight[1]"));
  EXPECT_EQ(keys.size(), 3u + 2 * (3 + 2 + 2 * 4)); // attention, norm and router, experts
  auto meta = llvm::json::parse(dcp.meta);
  ASSERT_TRUE(bool(meta));
  const llvm::json::Object *stacked = meta->getAsObject()->getObject("stacked");
  ASSERT_TRUE(stacked);
  const llvm::json::Array *experts =
      stacked->getArray("decoder.layers.mlp.experts.experts.linear_fc1.weight");
  ASSERT_TRUE(experts);
  EXPECT_EQ(*experts, (llvm::json::Array{2, 4}));
  const llvm::json::Array *router = stacked->getArray("decoder.layers.mlp.router.weight");
  ASSERT_TRUE(router);
  EXPECT_EQ(*router, llvm::json::Array{2});
}

/// A mixture of experts' optimizer states in torch_dist: every parameter's fp32 master
/// and moments keyed as a dense model's (an expert's at its (layer, expert) row of the
/// stacked key, without a chained_<i>. prefix), and common.pt's optimizer the
/// ChainedOptimizer's {0: the dense optimizer's two groups, 1: the experts' one}.
TEST(MegatronTarget, TorchDistKeepsAChainedOptimizersStates) {
  auto target = mixtralTorchDist(/*states=*/true);
  ASSERT_TRUE(bool(target)) << llvm::toString(target.takeError());
  const ShardFile &dcp = target->files.front();
  auto keys = keyShapes(dcp);
  EXPECT_EQ(
      keys["optimizer.state.exp_avg.decoder.layers.mlp.experts.experts.linear_fc1.weight[1][3]"],
      (llvm::SmallVector<int64_t, 4>{48, 32}));
  EXPECT_TRUE(keys.count("optimizer.state.fp32_param.decoder.layers.mlp.router.weight[0]"));
  EXPECT_EQ(keys.size(), 4 * (3u + 2 * (3 + 2 + 2 * 4)));
  EXPECT_TRUE(llvm::none_of(keys, [](const auto &k) {
    return llvm::StringRef(k.first).starts_with("chained_");
  }));
  auto meta = llvm::json::parse(dcp.meta);
  ASSERT_TRUE(bool(meta));
  const llvm::json::Array *axes = meta->getAsObject()->getObject("stacked")->getArray(
      "optimizer.state.exp_avg_sq.decoder.layers.mlp.experts.experts.linear_fc2.weight");
  ASSERT_TRUE(axes);
  EXPECT_EQ(*axes, (llvm::json::Array{2, 4}));

  // common.pt: {"optimizer": {0: {"optimizer": {..., "param_groups": [2]}}, 1: [1]}}.
  auto common = llvm::find_if(target->files, [](const ShardFile &f) {
    return llvm::StringRef(f.path).ends_with("/common.pt");
  });
  ASSERT_NE(common, target->files.end());
  auto tree = llvm::json::parse(common->meta);
  ASSERT_TRUE(bool(tree));
  auto entry = [](const llvm::json::Value &dict, const llvm::json::Value &key) {
    const llvm::json::Value *found = nullptr;
    if (const llvm::json::Array *entries = dict.getAsObject()->getArray("$dict"))
      for (const llvm::json::Value &e : *entries)
        if ((*e.getAsArray())[0] == key)
          found = &(*e.getAsArray())[1];
    return found;
  };
  const llvm::json::Value *optimizer = entry(*tree, "optimizer");
  ASSERT_TRUE(optimizer);
  for (auto [part, groups] : {std::pair{0, 2u}, std::pair{1, 1u}}) {
    const llvm::json::Value *inner = entry(*optimizer, int64_t(part));
    ASSERT_TRUE(inner) << part;
    const llvm::json::Value *torchState = entry(*inner, "optimizer");
    ASSERT_TRUE(torchState);
    const llvm::json::Value *paramGroups = entry(*torchState, "param_groups");
    ASSERT_TRUE(paramGroups && paramGroups->getAsArray());
    EXPECT_EQ(paramGroups->getAsArray()->size(), groups) << part;
  }
}

/// Dense layers between MoE layers make mcore's layers non-homogeneous
/// (TransformerBlock.sharded_state_dict): every layer is keyed on its own,
/// decoder.layers.<N>.<suffix> without the stacked axis, a MoE layer's experts at their
/// row of decoder.layers.<N>.mlp.experts.experts.<suffix>, their biases too.
TEST(MegatronTarget, TorchDistKeysMixedLayersOneByOne) {
  auto spec = parseTargetSpec("megatron:tp=2,ep=2,format=torch_dist");
  ASSERT_TRUE(bool(spec)) << llvm::toString(spec.takeError());
  Layout source;
  source.format = "hf-safetensors";
  source.iteration = 5;
  source.dims = ModelDims{2, 32, 8, 4, 4, 48, 250, true, 4, 24, 2};
  // Layer 1 dense (Llama's MLP of 48 rows); layer 0's experts with biases.
  for (FullTensor &f : mixtral(2, 4, 24)) {
    llvm::StringRef name = f.name;
    if (!name.starts_with("model.layers.1.block_sparse_moe."))
      source.fulls.push_back(f);
    if (name.starts_with("model.layers.0.block_sparse_moe.experts."))
      source.fulls.push_back({(name.drop_back(llvm::StringRef(".weight").size()) + ".bias").str(),
                              f.dtype, {f.shape[0]}});
  }
  for (FullTensor &f : llama(2, 8, 4, 4, 32, 48, 250))
    if (llvm::StringRef(f.name).starts_with("model.layers.1.mlp."))
      source.fulls.push_back(f);
  auto target = targetLayout(source, *spec);
  ASSERT_TRUE(bool(target)) << llvm::toString(target.takeError());
  const ShardFile &dcp = target->files.front();
  auto keys = keyShapes(dcp);
  EXPECT_EQ(keys["decoder.layers.0.mlp.experts.experts.linear_fc1.weight[3]"],
            (llvm::SmallVector<int64_t, 4>{48, 32}));
  EXPECT_EQ(keys["decoder.layers.0.mlp.experts.experts.linear_fc1.bias[3]"],
            (llvm::SmallVector<int64_t, 4>{48}));
  EXPECT_EQ(keys["decoder.layers.0.mlp.experts.experts.linear_fc2.bias[3]"],
            (llvm::SmallVector<int64_t, 4>{32}));
  EXPECT_EQ(keys["decoder.layers.1.mlp.linear_fc1.weight"],
            (llvm::SmallVector<int64_t, 4>{96, 32}));
  EXPECT_TRUE(keys.count("decoder.layers.0.mlp.router.weight"));
  EXPECT_TRUE(keys.count("decoder.layers.1.self_attention.linear_qkv.weight"));
  EXPECT_TRUE(llvm::none_of(keys, [](const auto &k) {
    return llvm::StringRef(k.first).starts_with("decoder.layers.mlp") ||
           llvm::StringRef(k.first).starts_with("decoder.layers.self_attention");
  }));
  auto meta = llvm::json::parse(dcp.meta);
  ASSERT_TRUE(bool(meta));
  const llvm::json::Object *stacked = meta->getAsObject()->getObject("stacked");
  ASSERT_TRUE(stacked);
  const llvm::json::Array *experts =
      stacked->getArray("decoder.layers.0.mlp.experts.experts.linear_fc2.bias");
  ASSERT_TRUE(experts);
  EXPECT_EQ(*experts, llvm::json::Array{4});
  EXPECT_EQ(stacked->size(), 4u); // the experts' fc1 and fc2, weights and biases
}
