//===- MegatronTest.cpp - Megatron-LM tp=2 pp=2 checkpoints unsharded -----===//
#include "CheckpointTesting.h"
#include "loom/Checkpoint/Megatron.h"
#include "loom/Checkpoint/TorchZip.h"

#include "llvm/Support/FileSystem.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>

using namespace loom::ckpt;
using namespace loom::ckpt::testutil;

namespace {
/// make_megatron.py's fixtures with `flags`, made in scratch folder `name`.
std::string makeFixtures(const std::string &name, std::vector<std::string> flags) {
  std::string dir = scratchDir(name);
  flags.insert(flags.begin(), dir);
  std::string output;
  EXPECT_EQ(runScript("make_megatron.py", flags, &output), 0) << output;
  return dir;
}

// Each made once per test run.
const std::string &megatronFixtures() {
  static const std::string dir = makeFixtures("megatron", {});
  return dir;
}

const std::string &moeFixtures() {
  static const std::string dir = makeFixtures("megatron-moe", {"--moe"});
  return dir;
}

const std::string &sharedExpertFixtures() {
  static const std::string dir =
      makeFixtures("megatron-moe-shared", {"--moe", "--shared-experts"});
  return dir;
}

const std::string &moeOptimFixtures() {
  static const std::string dir = makeFixtures("megatron-moe-optim", {"--moe", "--optim"});
  return dir;
}

/// The model tensor `key` of a Megatron shard's `root`.
Tensor *modelTensor(const Value &root, llvm::StringRef key) {
  const DictValue *top = root.get<DictValue>();
  ValuePtr model = top ? top->find("model") : nullptr;
  ValuePtr value = model && model->get<DictValue>() ? model->get<DictValue>()->find(key) : nullptr;
  return value && value->get<TensorValue>() ? &value->get<TensorValue>()->tensor : nullptr;
}

/// Saves Megatron shard `file` again with the first element of its model tensor `key`
/// negated, as torch.save of a changed tensor would: every CRC holds.
void negateFirstElement(const std::string &file, llvm::StringRef key) {
  auto root = readTorchZip(file);
  ASSERT_TRUE(bool(root)) << message(root.takeError());
  Tensor *tensor = modelTensor(**root, key);
  ASSERT_TRUE(tensor) << key.str();
  std::vector<uint8_t> bytes = tensor->toBytes();
  bytes[dtypeSize(tensor->dtype) - 1] ^= 0x80; // little-endian: the sign bit
  *tensor = Tensor::contiguous(tensor->dtype, tensor->shape,
                               std::make_shared<Storage>(std::move(bytes)));
  llvm::Error err = writeTorchZip(file, **root);
  ASSERT_FALSE(bool(err)) << message(std::move(err));
}

/// Flips a bit of the record of model tensor `key` in Megatron shard `file` in place,
/// leaving the CRC-32 torch recorded for it.
void flipRecordBit(const std::string &file, llvm::StringRef key) {
  uint64_t at = 0;
  {
    auto archive = llvm::cantFail(ZipArchive::open(file));
    ValuePtr root = llvm::cantFail(readTorchZip(archive, {/*verifyChecksums=*/false, {}}));
    Tensor *tensor = modelTensor(*root, key);
    ASSERT_TRUE(tensor) << key.str();
    const ZipEntry *entry = archive.entryAt(tensor->storage->bytes().data());
    ASSERT_TRUE(entry) << key.str();
    at = entry->dataOffset + 1;
  }
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  char byte = char(f.get() ^ 0x80);
  f.seekp(at);
  f.put(byte);
  ASSERT_TRUE(f.good()) << file;
}

const MegatronParam *findParam(const MegatronLayout &layout, llvm::StringRef localName,
                               unsigned stage) {
  for (const MegatronParam &p : layout.params)
    if (p.localName == localName && p.stage == stage)
      return &p;
  return nullptr;
}
} // namespace

TEST(Megatron, McoreUnshardsToTheFullTensorsBitExactly) {
  std::string root = megatronFixtures() + "/mcore";
  EXPECT_TRUE(isMegatronCheckpoint(root));
  auto ckpt = readMegatron(root);
  ASSERT_TRUE(bool(ckpt)) << message(ckpt.takeError());
  expectMatchesManifest(ckpt->tensors, readJson(megatronFixtures() + "/mcore.json"),
                        /*checkLayout=*/false);
  const MegatronLayout &layout = ckpt->layout;
  EXPECT_EQ(layout.naming, MegatronNaming::MCore);
  EXPECT_EQ(layout.tp, 2u);
  EXPECT_EQ(layout.pp, 2u);
  EXPECT_EQ(layout.iteration, 100);
  EXPECT_EQ(layout.layersPerStage, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(layout.dims.queryGroups, 2);
  EXPECT_EQ(layout.dims.vocab, 250);
  EXPECT_EQ(layout.dims.paddedVocab, 256);
  // Stage 1's local layer 1 is global layer 3.
  const MegatronParam *fc1 = findParam(layout, "decoder.layers.1.mlp.linear_fc1.weight", 1);
  ASSERT_TRUE(fc1);
  EXPECT_EQ(fc1->layer, 3);
  EXPECT_EQ(fc1->split, MegatronSplit::FusedGateUp);
  EXPECT_EQ(fc1->fullNames, (std::vector<std::string>{"model.layers.3.mlp.gate_proj.weight",
                                                      "model.layers.3.mlp.up_proj.weight"}));
  const MegatronParam *qkv = findParam(layout, "decoder.layers.0.self_attention.linear_qkv.weight", 0);
  ASSERT_TRUE(qkv);
  EXPECT_EQ(qkv->split, MegatronSplit::FusedQKV);
  EXPECT_EQ(findParam(layout, "output_layer.weight", 1)->split, MegatronSplit::Vocab);
  EXPECT_EQ(findParam(layout, "decoder.layers.0.self_attention.linear_proj.weight", 0)->split,
            MegatronSplit::Row);
}

TEST(Megatron, LegacyUnshardsToTheFullTensorsBitExactly) {
  // The tracker file is optional: the iteration directory itself is accepted too.
  auto ckpt = readMegatron(megatronFixtures() + "/legacy/iter_0000100");
  ASSERT_TRUE(bool(ckpt)) << message(ckpt.takeError());
  expectMatchesManifest(ckpt->tensors, readJson(megatronFixtures() + "/legacy.json"),
                        /*checkLayout=*/false);
  EXPECT_EQ(ckpt->layout.naming, MegatronNaming::Legacy);
  EXPECT_EQ(ckpt->layout.dims.queryGroups, ckpt->layout.dims.heads);
  const MegatronParam *bias =
      findParam(ckpt->layout, "encoder.layers.1.self_attention.dense.bias", 0);
  ASSERT_TRUE(bias);
  EXPECT_EQ(bias->split, MegatronSplit::Replicated);
  EXPECT_EQ(bias->fullNames[0], "model.layers.1.self_attn.o_proj.bias");
}

TEST(Megatron, MissingShardIsOneError) {
  std::string dir = scratchDir("megatron-missing");
  std::string output;
  ASSERT_EQ(runScript("make_megatron.py", {dir}, &output), 0) << output;
  llvm::sys::fs::remove_directories(dir + "/mcore/iter_0000100/mp_rank_00_001");
  std::string error = message(readMegatron(dir + "/mcore").takeError());
  EXPECT_NE(error.find("iter_0000100: missing shard mp_rank_00_001 (tp=2, pp=2)"),
            std::string::npos)
      << error;
  std::error_code ec = llvm::sys::fs::remove(dir + "/legacy/iter_0000100/mp_rank_01_000/model_optim_rng.pt");
  ASSERT_FALSE(ec);
  error = message(readMegatron(dir + "/legacy").takeError());
  EXPECT_NE(error.find("mp_rank_01_000/model_optim_rng.pt"), std::string::npos) << error;
}

/// The folders Megatron's ranks write when the experts have a tensor parallelism of
/// their own: rank r < max(tp, etp·ep) writes (r % tp, (r / etp) % ep).
TEST(MegatronFolderWriter, FollowsTheWritingRanks) {
  // etp = tp: every (t, e) folder, by rank t + tp·e.
  for (unsigned t = 0; t < 2; ++t)
    for (unsigned e = 0; e < 2; ++e)
      EXPECT_EQ(megatronFolderWriter(t, e, 2, 2, 2), t + 2 * e);
  // tp=2 etp=1 ep=2: ranks 0 and 1 only, one folder each.
  EXPECT_EQ(megatronFolderWriter(0, 0, 2, 2, 1), 0u);
  EXPECT_EQ(megatronFolderWriter(1, 1, 2, 2, 1), 1u);
  EXPECT_FALSE(megatronFolderWriter(0, 1, 2, 2, 1));
  EXPECT_FALSE(megatronFolderWriter(1, 0, 2, 2, 1));
  // tp=2 etp=1 ep=4: ranks 2 and 3 (expert-data-parallel rank 0, dense DP rank 1)
  // write ep ranks 2 and 3.
  EXPECT_EQ(megatronFolderWriter(0, 2, 2, 4, 1), 2u);
  EXPECT_EQ(megatronFolderWriter(1, 3, 2, 4, 1), 3u);
  EXPECT_FALSE(megatronFolderWriter(0, 1, 2, 4, 1));
  // tp=2 etp=1 ep=1: both TP ranks' folders, rank 1 holding expert piece 0 too.
  EXPECT_EQ(megatronFolderWriter(1, 0, 2, 1, 1), 1u);
  // Every writer below max(tp, etp·ep) has a folder of its own when etp <= tp.
  for (unsigned tp : {1u, 2u, 3u, 4u})
    for (unsigned etp = 1; etp <= tp; ++etp)
      for (unsigned ep : {1u, 2u, 3u, 4u}) {
        std::set<unsigned> writers;
        for (unsigned t = 0; t < tp; ++t)
          for (unsigned e = 0; e < ep; ++e)
            if (auto r = megatronFolderWriter(t, e, tp, ep, etp)) {
              EXPECT_EQ(*r % tp, t);
              EXPECT_EQ(*r / etp % ep, e);
              EXPECT_TRUE(writers.insert(*r).second);
            }
        EXPECT_EQ(writers.size(), std::max(tp, etp * ep)) << tp << " " << etp << " " << ep;
      }
}

TEST(MegatronSplitOfName, ReadsLegacyMCoreAndMegatronDeepSpeedNames) {
  std::string ds = "language_model.encoder.layers.11.";
  for (auto [name, split] : std::initializer_list<std::pair<std::string, MegatronSplit>>{
           {ds + "self_attention.query_key_value.weight", MegatronSplit::FusedQKV},
           {ds + "self_attention.dense.weight", MegatronSplit::Row},
           {ds + "self_attention.dense.bias", MegatronSplit::Replicated},
           {ds + "input_layernorm.weight", MegatronSplit::Replicated},
           {ds + "post_attention_layernorm.bias", MegatronSplit::Replicated},
           {ds + "mlp.dense_h_to_4h.bias", MegatronSplit::Column},
           {ds + "mlp.dense_4h_to_h.weight", MegatronSplit::Row},
           {"language_model.embedding.word_embeddings.weight", MegatronSplit::Vocab},
           {"language_model.embedding.position_embeddings.weight", MegatronSplit::Replicated},
           {"language_model.encoder.final_layernorm.weight", MegatronSplit::Replicated},
           {"language_model.output_layer.weight", MegatronSplit::Vocab},
           {"model.language_model.encoder.layers.0.input_norm.weight", MegatronSplit::Replicated},
           {"decoder.layers.3.mlp.linear_fc2.weight", MegatronSplit::Row},
           {"module.decoder.layers.3.self_attention.linear_qkv.weight", MegatronSplit::FusedQKV}}) {
    auto got = megatronSplitOfName(name);
    ASSERT_TRUE(got.has_value()) << name;
    EXPECT_EQ(megatronSplitName(*got), megatronSplitName(split)) << name;
  }
  for (const char *name :
       {"head.weight", "language_model.encoder.ln_f.weight",
        "mylayers.0.self_attention.dense.weight", "encoder.layers.x.self_attention.dense.weight"})
    EXPECT_FALSE(megatronSplitOfName(name).has_value()) << name;
}

TEST(Megatron, MoEWithExpertParallelismUnshardsToMixtralTensors) {
  // tp=1 ep=2: mp_rank_00_001 is an expert-parallel rank, as the args say.
  for (const char *name : {"moe-tp1ep2", "moe-tp2pp2ep2"}) {
    auto ckpt = readMegatron(moeFixtures() + "/" + name);
    ASSERT_TRUE(bool(ckpt)) << message(ckpt.takeError());
    expectMatchesManifest(ckpt->tensors, readJson(moeFixtures() + "/moe.json"),
                          /*checkLayout=*/false);
    const MegatronLayout &layout = ckpt->layout;
    bool grouped = llvm::StringRef(name) == "moe-tp2pp2ep2";
    EXPECT_EQ(layout.ep, 2u);
    EXPECT_EQ(layout.pp, grouped ? 2u : 1u);
    EXPECT_EQ(layout.dims.experts, 4);
    EXPECT_EQ(layout.dims.topK, 2);
    EXPECT_EQ(layout.dims.groupedGemm, grouped);
    // Local expert 1 of ep rank 1 is global expert 3.
    const MegatronParam *fc1 = findParam(
        layout,
        grouped ? "decoder.layers.1.mlp.experts.linear_fc1.weight1"
                : "decoder.layers.1.mlp.experts.local_experts.1.linear_fc1.weight",
        grouped ? 1 : 0);
    ASSERT_TRUE(fc1);
    const MegatronParam *mine = nullptr;
    for (const MegatronParam &p : layout.params)
      if (p.localName == fc1->localName && p.stage == fc1->stage && p.epRank == 1)
        mine = &p;
    ASSERT_TRUE(mine);
    EXPECT_EQ(mine->expert, 3);
    EXPECT_EQ(mine->split, MegatronSplit::FusedGateUp);
    std::string layer = grouped ? "3" : "1";
    EXPECT_EQ(mine->fullNames,
              (std::vector<std::string>{"model.layers." + layer + ".block_sparse_moe.experts.3.w1.weight",
                                        "model.layers." + layer + ".block_sparse_moe.experts.3.w3.weight"}));
  }
}

/// Every expert-parallel rank's folder holds its TP piece of the dense parameters;
/// copies that differ from the one read are named, piece by piece.
TEST(Megatron, DenseCopiesDifferingBetweenExpertParallelRanksAreNamed) {
  std::string dir = makeFixtures("megatron-moe-ep-copies", {"--moe"});
  for (const char *name : {"moe-tp1ep2", "moe-tp2pp2ep2"}) {
    auto sound = readMegatronLayout(dir + "/" + name);
    ASSERT_TRUE(bool(sound)) << message(sound.takeError());
    EXPECT_TRUE(sound->divergentReplicas.empty()) << name;
  }

  // tp=2 pp=2 ep=2: stage 1's row-parallel piece 1 changed in EP rank 1's folder. The
  // reader still unshards EP rank 0's copies, so the tensors are the truth.
  std::string grouped = dir + "/moe-tp2pp2ep2";
  negateFirstElement(grouped + "/iter_0000100/mp_rank_01_001_001/model_optim_rng.pt",
                     "decoder.layers.1.self_attention.linear_proj.weight");
  auto ckpt = readMegatron(grouped);
  ASSERT_TRUE(bool(ckpt)) << message(ckpt.takeError());
  expectMatchesManifest(ckpt->tensors, readJson(dir + "/moe.json"), /*checkLayout=*/false);
  ASSERT_EQ(ckpt->layout.divergentReplicas.size(), 1u);
  const DivergentReplica &replica = ckpt->layout.divergentReplicas[0];
  EXPECT_NE(replica.what.find("iter_0000100: stage 1: decoder.layers.1.self_attention."
                              "linear_proj.weight, which every expert-parallel rank holds: "
                              "TP piece 1: EP rank 1's copy differs from EP rank 0's "
                              "(largest difference "),
            std::string::npos)
      << replica.what;
  EXPECT_EQ(replica.kept, "EP rank 0's copy");

  // tp=1 ep=2: a bit flipped in EP rank 1's record, its CRC-32 left as saved. Read
  // without verifying, the records' equal CRCs say the copies were saved equal and
  // the copy is not read; read verifying, the record fails its CRC.
  std::string flat = dir + "/moe-tp1ep2";
  flipRecordBit(flat + "/iter_0000100/mp_rank_00_001/model_optim_rng.pt",
                "decoder.layers.0.self_attention.linear_qkv.weight");
  auto layout = readMegatronLayout(flat);
  ASSERT_TRUE(bool(layout)) << message(layout.takeError());
  EXPECT_TRUE(layout->divergentReplicas.empty());
  std::string error = message(readMegatron(flat).takeError());
  EXPECT_NE(error.find("mp_rank_00_001/model_optim_rng.pt: entry "), std::string::npos) << error;
  EXPECT_NE(error.find("CRC32"), std::string::npos) << error;
}

TEST(Megatron, SharedExpertsUnshardToQwen2MoENames) {
  // tp=2 ep=2 with the gate: every ep rank's file holds the shared experts, fc1 as
  // [gate; up] of its TP rank's rows.
  auto ckpt = readMegatron(sharedExpertFixtures() + "/moe-shared-tp2ep2");
  ASSERT_TRUE(bool(ckpt)) << message(ckpt.takeError());
  expectMatchesManifest(ckpt->tensors, readJson(sharedExpertFixtures() + "/moe-shared.json"),
                        /*checkLayout=*/false);
  const MegatronLayout &layout = ckpt->layout;
  EXPECT_EQ(layout.dims.sharedFfn, 40);
  EXPECT_TRUE(layout.dims.sharedGate);
  const MegatronParam *fc1 =
      findParam(layout, "decoder.layers.1.mlp.shared_experts.linear_fc1.weight", 0);
  ASSERT_TRUE(fc1);
  EXPECT_EQ(fc1->expert, -1);
  EXPECT_EQ(fc1->split, MegatronSplit::FusedGateUp);
  EXPECT_EQ(fc1->localShape, (llvm::SmallVector<int64_t, 4>{40, 32}));
  EXPECT_EQ(fc1->fullNames,
            (std::vector<std::string>{"model.layers.1.mlp.shared_expert.gate_proj.weight",
                                      "model.layers.1.mlp.shared_expert.up_proj.weight"}));
  const MegatronParam *gate =
      findParam(layout, "decoder.layers.1.mlp.shared_experts.gate_weight", 0);
  ASSERT_TRUE(gate);
  EXPECT_EQ(gate->split, MegatronSplit::Replicated);
  EXPECT_EQ(gate->fullNames,
            (std::vector<std::string>{"model.layers.1.mlp.shared_expert_gate.weight"}));

  // Without the gate, pp=2 and TEGroupedMLP: the args' gate and the files must agree.
  auto nogate = readMegatron(sharedExpertFixtures() + "/moe-shared-nogate-tp1pp2ep2");
  ASSERT_TRUE(bool(nogate)) << message(nogate.takeError());
  EXPECT_FALSE(nogate->layout.dims.sharedGate);
  EXPECT_FALSE(llvm::any_of(nogate->tensors, [](const NamedTensor &t) {
    return llvm::StringRef(t.name).contains("shared_expert_gate");
  }));
  EXPECT_EQ(llvm::count_if(nogate->tensors, [](const NamedTensor &t) {
              return llvm::StringRef(t.name).contains(".mlp.shared_expert.");
            }),
            3 * 4);
}

TEST(Megatron, ChainedOptimizerOfExpertsHasTwoOptimizers) {
  // The mixed-precision optimizer at tp=2 ep=2: each expert-parallel rank's file
  // lists the dense optimizer's state (the same everywhere), then its experts'.
  auto mixed = readMegatronLayout(moeOptimFixtures() + "/moe-adam-tp2ep2");
  ASSERT_TRUE(bool(mixed)) << message(mixed.takeError());
  ASSERT_TRUE(mixed->optimizer);
  const MegatronOptimizer &m = *mixed->optimizer;
  EXPECT_TRUE(m.chained);
  EXPECT_FALSE(m.distributed);
  EXPECT_EQ(m.step, 3);
  // Both dense groups, then the experts' one, whose weights all decay.
  auto groups = llvm::json::parse(m.groupsJson);
  ASSERT_TRUE(bool(groups)) << llvm::toString(groups.takeError());
  ASSERT_EQ(groups->getAsArray()->size(), 3u);
  EXPECT_EQ((*groups->getAsArray())[2].getAsObject()->getNumber("weight_decay"), 0.1);
  ASSERT_EQ(m.stageShapes.size(), 2u); // stage 0's two expert-parallel ranks
  for (const auto &shapes : m.stageShapes) {
    EXPECT_TRUE(shapes.count("optimizer.0.fp32_from_fp16_params.1.0"));
    // 4 layers of 2 local experts, linear_fc1 ([gate; up] of 12 rows each) and fc2.
    EXPECT_EQ(shapes.at("optimizer.1.fp32_from_fp16_params.0.0"),
              (llvm::SmallVector<int64_t, 4>{24, 32}));
    EXPECT_TRUE(shapes.count("optimizer.1.optimizer.state.15.exp_avg_sq"));
    EXPECT_FALSE(shapes.count("optimizer.1.optimizer.state.16.exp_avg_sq"));
    EXPECT_FALSE(shapes.count("optimizer.1.fp32_from_fp16_params.1.0"));
  }

  // The distributed optimizer at tp=2 pp=2 ep=2: distrib_optim.pt of expert-parallel
  // rank 0 holds the dense buffer and the experts', the others the experts' alone.
  auto dist = readMegatronLayout(moeOptimFixtures() + "/moe-distopt-tp2pp2ep2");
  ASSERT_TRUE(bool(dist)) << message(dist.takeError());
  const MegatronOptimizer &d = *dist->optimizer;
  EXPECT_TRUE(d.chained);
  EXPECT_TRUE(d.distributed);
  ASSERT_EQ(d.stageBuffers.size(), 4u);
  for (size_t slot = 0; slot < 4; ++slot) {
    EXPECT_EQ(d.stageBuffers[slot].size(), slot % 2 ? 1u : 2u) << slot;
    EXPECT_EQ(d.stageShapes[slot].count("0.0.(torch.bfloat16, torch.float32).param"),
              slot % 2 ? 0u : 1u);
    // The experts' buffer: 2 layers of 2 experts of 12x32 + 12x32 + 32x12 elements.
    EXPECT_EQ(d.stageShapes[slot].at("1.0.(torch.bfloat16, torch.float32).exp_avg"),
              (llvm::SmallVector<int64_t, 4>{4608}));
  }
}
