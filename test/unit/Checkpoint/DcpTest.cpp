//===- DcpTest.cpp - torch DCP checkpoints written by 2 gloo processes ----===//
#include "CheckpointTesting.h"
#include "loom/Checkpoint/Dcp.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <fstream>

using namespace loom::ckpt;
using namespace loom::ckpt::testutil;

namespace {
const std::string &dcpFixtures() {
  static const std::string dir = [] {
    std::string dir = scratchDir("dcp");
    std::string output;
    EXPECT_EQ(runScript("make_dcp.py", {dir}, &output), 0) << output;
    return dir;
  }();
  return dir;
}

std::string readText(const std::string &path) {
  auto buffer = llvm::MemoryBuffer::getFile(path);
  return buffer ? (*buffer)->getBuffer().str() : std::string();
}
} // namespace

TEST(Dcp, ReassemblesTheTensorsTorchWrote) {
  auto ckpt = readDcp(dcpFixtures() + "/dcp");
  ASSERT_TRUE(bool(ckpt)) << message(ckpt.takeError());
  expectMatchesManifest(ckpt->tensors, readJson(dcpFixtures() + "/dcp.json"),
                        /*checkLayout=*/false);
  // layer.weight is a ShardedTensor split 6 + 4 rows over the two ranks' files.
  const DcpEntry *layer = nullptr;
  for (const DcpEntry &e : ckpt->metadata.entries)
    if (e.fqn == "layer.weight")
      layer = &e;
  ASSERT_TRUE(layer);
  ASSERT_EQ(layer->chunks.size(), 2u);
  EXPECT_EQ(layer->chunks[1].offsets, (llvm::SmallVector<int64_t, 4>{6, 0}));
  EXPECT_EQ(layer->chunks[1].sizes, (llvm::SmallVector<int64_t, 4>{4, 6}));
  EXPECT_NE(layer->chunks[0].file, layer->chunks[1].file);
  // The dtype is read from TensorProperties, without touching the chunks.
  EXPECT_EQ(layer->dtype, DType::Float32);
  auto reader = DcpReader::open(dcpFixtures() + "/dcp");
  ASSERT_TRUE(bool(reader));
  for (const DcpEntry &e : (*reader)->metadata().entries)
    if (e.fqn == "embed.weight")
      EXPECT_EQ(e.dtype, DType::BFloat16);
  EXPECT_NE(message((*reader)->read("note").takeError()).find("no tensor 'note'"), std::string::npos);
  EXPECT_TRUE(ckpt->metadata.entries.back().isBytes); // "note"
}

TEST(Dcp, ChunkPastTheEndOfItsFileIsAnError) {
  std::string dir = scratchDir("dcp-truncated");
  std::string source = dcpFixtures() + "/dcp";
  for (const char *file : {".metadata", "__0_0.distcp", "__0_1.distcp", "__0_2.distcp",
                           "__0_3.distcp", "__1_0.distcp", "__1_1.distcp"})
    std::ofstream(dir + "/" + file, std::ios::binary) << readText(source + "/" + file);
  std::string cut = readText(source + "/__1_0.distcp");
  std::ofstream(dir + "/__1_0.distcp", std::ios::binary) << cut.substr(0, cut.size() / 2);
  std::string error = message(readDcp(dir).takeError());
  EXPECT_NE(error.find("__1_0.distcp: chunk of 'layer.weight' at offset 0"), std::string::npos)
      << error;
  EXPECT_NE(error.find("lies past the end"), std::string::npos) << error;
}

TEST(Dcp, MetadataThatIsNotDcpIsAnError) {
  // A pickled plain dict (protocol 2: PROTO 2, EMPTY_DICT, STOP).
  const uint8_t dict[] = {0x80, 0x02, '}', '.'};
  EXPECT_NE(message(parseDcpMetadata(dict, "x/.metadata").takeError())
                .find("x/.metadata: not a DCP Metadata object"),
            std::string::npos);
}

namespace {
Tensor patterned(DType dtype, llvm::ArrayRef<int64_t> shape, unsigned seed) {
  std::vector<uint8_t> bytes(*checkedNumel(shape) * dtypeSize(dtype));
  for (size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = uint8_t((i * 2654435761u + seed * 97) >> 7);
  if (dtype == DType::Float32 || dtype == DType::Float64 || dtype == DType::BFloat16)
    for (size_t i = dtypeSize(dtype) - 1; i < bytes.size(); i += dtypeSize(dtype))
      bytes[i] &= 0x3f; // keep values finite and NaN-free: torch compares them after load
  return Tensor::contiguous(dtype, shape, std::make_shared<Storage>(std::move(bytes)));
}
} // namespace

// loom's DCP writer: 3 ranks' chunk files, read back by loom, and by torch's own
// reader in one process and into 2-rank ShardedTensors split where loom did not.
TEST(Dcp, TorchLoadsWhatLoomWrites) {
  std::string dir = scratchDir("dcp-written");
  std::vector<NamedTensor> tensors{
      {"layer.weight", patterned(DType::Float32, {10, 6}, 1)},
      {"embed.weight", patterned(DType::BFloat16, {8, 4}, 2)},
      {"bias", patterned(DType::Float64, {5}, 3)},
      {"step", patterned(DType::Int64, {}, 4)},
      {"tiny", patterned(DType::Float16, {2, 3}, 5)}};
  // A transposed view too: chunks of views are written contiguous.
  Tensor t = patterned(DType::Float32, {4, 7}, 6);
  t.shape = {7, 4};
  t.strides = {1, 7};
  tensors.push_back({"transposed", t});
  std::vector<DcpShard> shards = dcpRowShards(tensors, 3);
  EXPECT_EQ(llvm::count_if(shards, [](const DcpShard &s) { return s.fqn == "layer.weight"; }), 3);
  ASSERT_FALSE(bool(writeDcp(dir + "/ckpt", shards)));
  // Written in a staging folder renamed into place; a second write is refused.
  std::error_code ec;
  unsigned entries = 0;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
    ++entries;
  EXPECT_EQ(entries, 1u);
  EXPECT_NE(message(writeDcp(dir + "/ckpt", shards)).find("already exists"), std::string::npos);

  auto back = readDcp(dir + "/ckpt");
  ASSERT_TRUE(bool(back)) << message(back.takeError());
  ASSERT_EQ(back->tensors.size(), tensors.size());
  llvm::json::Array manifest;
  for (const NamedTensor &want : tensors) {
    auto got = llvm::find_if(back->tensors, [&](const NamedTensor &n) { return n.name == want.name; });
    ASSERT_NE(got, back->tensors.end()) << want.name;
    EXPECT_EQ(got->tensor.toBytes(), want.tensor.toBytes()) << want.name;
    manifest.push_back(llvm::json::Object{{"name", want.name},
                                          {"dtype", torchDTypeName(want.tensor.dtype)},
                                          {"shape", llvm::json::Array(want.tensor.shape)},
                                          {"sha256", sha256(want.tensor)}});
  }
  {
    std::ofstream os(dir + "/manifest.json");
    std::string text;
    llvm::raw_string_ostream(text) << llvm::json::Value(llvm::json::Object{{"tensors", std::move(manifest)}});
    os << text;
  }
  std::string output;
  EXPECT_EQ(runScript("check_dcp.py", {dir + "/ckpt", dir + "/manifest.json"}, &output), 0)
      << output;
}

TEST(Dcp, WriterRefusesChunksThatDoNotTile) {
  std::string dir = scratchDir("dcp-bad");
  Tensor t = patterned(DType::Float32, {4, 2}, 1);
  auto shards = dcpRowShards({{"w", t}}, 2);
  ASSERT_EQ(shards.size(), 2u);
  std::vector<DcpShard> gap{shards[0]};
  EXPECT_NE(message(writeDcp(dir + "/gap", gap)).find("chunks of 'w' hold 4 elements, the tensor has 8"),
            std::string::npos);
  std::vector<DcpShard> overlap{shards[0], shards[0]};
  EXPECT_NE(message(writeDcp(dir + "/overlap", overlap)).find("chunks of 'w' overlap"),
            std::string::npos);
  std::vector<DcpShard> outside{shards[1]};
  outside[0].offsets[0] = 3;
  EXPECT_NE(message(writeDcp(dir + "/outside", outside)).find("reaches past dimension 0 of size 4"),
            std::string::npos);
  // Nothing was written for any of them.
  EXPECT_FALSE(llvm::sys::fs::exists(dir + "/gap/.metadata"));
  EXPECT_FALSE(llvm::sys::fs::exists(dir + "/overlap"));
}

// make_dcp.py's training run: a model and its Adam after 3 steps, saved by torch's DCP
// writer from 2 gloo processes under the keys torch 2's get_state_dict gives.
TEST(Dcp, ReadsTheOptimizerOfATrainingRun) {
  std::string dir = dcpFixtures() + "/dcp_optim";
  llvm::json::Value manifest = readJson(dcpFixtures() + "/dcp_optim.json");
  auto ckpt = readDcp(dir);
  ASSERT_TRUE(bool(ckpt)) << message(ckpt.takeError());
  expectMatchesManifest(ckpt->tensors, manifest, /*checkLayout=*/false);
  auto reader = DcpReader::open(dir);
  ASSERT_TRUE(bool(reader));
  auto optimizer = readDcpOptimizer(**reader);
  ASSERT_TRUE(bool(optimizer)) << message(optimizer.takeError());
  ASSERT_TRUE(optimizer->has_value());
  const DcpOptimizer &o = **optimizer;
  EXPECT_EQ(o.modelPrefix, "model.");
  EXPECT_EQ(o.optimizerPrefix, "optim.");
  EXPECT_EQ(o.step, manifest.getAsObject()->getInteger("step"));
  std::vector<std::string> fqns;
  for (const DcpOptimizer::Param &p : o.params) {
    fqns.push_back(p.fqn);
    EXPECT_EQ(p.expAvg, "optim.state." + p.fqn + ".exp_avg");
    EXPECT_EQ(p.expAvgSq, "optim.state." + p.fqn + ".exp_avg_sq");
  }
  EXPECT_EQ(fqns, (std::vector<std::string>{"embed.weight", "out.weight", "proj.bias", "proj.weight"}));
  const llvm::json::Array &groups = *manifest.getAsObject()->getArray("groups");
  ASSERT_EQ(o.groups.size(), groups.size());
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t i = 0; i < o.groups[g].size(); ++i)
      EXPECT_EQ(o.groups[g][i], (*groups[g].getAsArray())[i].getAsString()->str());
  // The settings, read through the safe VM: Python's types kept.
  auto settings = llvm::json::parse(o.groupsJson);
  ASSERT_TRUE(bool(settings));
  const llvm::json::Object &first = *(*settings->getAsArray())[0].getAsObject();
  EXPECT_EQ(first.getNumber("lr"), 0.01);
  EXPECT_EQ(first.getNumber("eps"), 1e-6);
  EXPECT_EQ(first.getNumber("weight_decay"), 0.1);
  EXPECT_EQ(first.getBoolean("amsgrad"), false);
  EXPECT_EQ(*first.get("betas"), llvm::json::Value(llvm::json::Object{
                                     {"$tuple", llvm::json::Array{0.9, 0.95}}}));
  EXPECT_FALSE(first.get("params"));
  // The DCP fixture without an optimizer has none.
  auto plain = DcpReader::open(dcpFixtures() + "/dcp");
  ASSERT_TRUE(bool(plain));
  auto none = readDcpOptimizer(**plain);
  ASSERT_TRUE(bool(none));
  EXPECT_FALSE(none->has_value());
}

// Bytes entries loom writes read back as the values written; a tensor is not a bytes
// entry, nor a bytes entry a tensor.
TEST(Dcp, BytesEntriesRoundTrip) {
  std::string dir = scratchDir("dcp-bytes") + "/ckpt";
  auto writer = DcpWriter::create(dir);
  ASSERT_TRUE(bool(writer));
  Tensor w = patterned(DType::Float32, {3, 2}, 7);
  for (const DcpShard &shard : dcpRowShards({{"w", w}}, 2))
    ASSERT_FALSE(bool((*writer)->append(shard)));
  TupleValue betas{{Value::make(0.9), Value::make(0.95)}};
  std::vector<std::pair<std::string, ValuePtr>> values{
      {"lr", Value::make(0.01)},
      {"betas", Value::make(std::move(betas))},
      {"params", Value::make(ListValue{{Value::make(std::string("w"))}})},
      {"foreach", Value::make(NoneValue{})},
      {"amsgrad", Value::make(false)}};
  for (const auto &[key, value] : values)
    ASSERT_FALSE(bool((*writer)->appendBytes(key, *value)));
  ASSERT_FALSE(bool((*writer)->finish()));
  auto reader = DcpReader::open(dir);
  ASSERT_TRUE(bool(reader)) << message(reader.takeError());
  for (const auto &[key, value] : values) {
    auto back = (*reader)->readBytes(key);
    ASSERT_TRUE(bool(back)) << message(back.takeError());
    EXPECT_EQ(plainJson(**back), plainJson(*value)) << key;
  }
  EXPECT_NE(message((*reader)->readBytes("w").takeError()).find("no bytes entry 'w'"), std::string::npos);
  EXPECT_NE(message((*reader)->read("lr").takeError()).find("no tensor 'lr'"), std::string::npos);

  // A bytes entry named as a tensor: refused at finish, nothing left behind.
  std::string clash = scratchDir("dcp-bytes-clash") + "/ckpt";
  auto second = DcpWriter::create(clash);
  ASSERT_TRUE(bool(second));
  ASSERT_FALSE(bool((*second)->append(dcpRowShards({{"w", w}}, 1)[0])));
  ASSERT_FALSE(bool((*second)->appendBytes("w", *Value::make(int64_t(1)))));
  EXPECT_NE(message((*second)->finish()).find("two entries named 'w'"), std::string::npos);
  EXPECT_FALSE(llvm::sys::fs::exists(clash));
}

// A file of the folder's own (a model's config.json) is in the folder once it is in
// place, and not before; a name DCP uses, or one outside the folder, is refused.
TEST(Dcp, WriterAddsAFileOfItsOwn) {
  std::string dir = scratchDir("dcp-config") + "/ckpt";
  auto writer = DcpWriter::create(dir);
  ASSERT_TRUE(bool(writer));
  ASSERT_FALSE(bool((*writer)->append(dcpRowShards({{"w", patterned(DType::Float32, {2}, 1)}}, 1)[0])));
  ASSERT_FALSE(bool((*writer)->addFile("config.json", "{\"hidden_size\": 8}\n")));
  EXPECT_FALSE(llvm::sys::fs::exists(dir + "/config.json"));
  for (const char *name : {".metadata", "__0_0.distcp", "../config.json"})
    EXPECT_NE(message((*writer)->addFile(name, "")).find("cannot hold a file of its own"),
              std::string::npos)
        << name;
  ASSERT_FALSE(bool((*writer)->finish()));
  EXPECT_EQ(readText(dir + "/config.json"), "{\"hidden_size\": 8}\n");
  auto reader = DcpReader::open(dir);
  ASSERT_TRUE(bool(reader)) << message(reader.takeError());
  EXPECT_TRUE(bool((*reader)->read("w")));
}

TEST(Dcp, RowKeysRoundTrip) {
  std::string key = dcpRowKey("decoder.layers.mlp.linear_fc1.weight", 12);
  auto row = parseDcpRowKey(key); // views `key`
  ASSERT_TRUE(row);
  EXPECT_EQ(row->first, "decoder.layers.mlp.linear_fc1.weight");
  EXPECT_EQ(row->second, (llvm::SmallVector<int64_t, 2>{12}));
  // A routed expert's: a row key of a row key, the layer first.
  std::string expert =
      dcpRowKey(dcpRowKey("decoder.layers.mlp.experts.experts.linear_fc2.weight", 3), 7);
  EXPECT_EQ(expert, "decoder.layers.mlp.experts.experts.linear_fc2.weight[3][7]");
  auto rows = parseDcpRowKey(expert);
  ASSERT_TRUE(rows);
  EXPECT_EQ(rows->first, "decoder.layers.mlp.experts.experts.linear_fc2.weight");
  EXPECT_EQ(rows->second, (llvm::SmallVector<int64_t, 2>{3, 7}));
  for (const char *other : {"embedding.weight", "x[]", "x[-1]", "x[1a]", "x1]", "x[1]]", "x[1][]"})
    EXPECT_FALSE(parseDcpRowKey(other)) << other;
}

// Rows of rows: a [layers, experts, rows, columns] tensor cut into chunks along its
// third axis (as mcore's TP ranks save an expert's linear_fc1) reads back expert by
// expert; an index past an axis is an error naming the row.
TEST(Dcp, ReadsRowsOfStackedAxes) {
  std::string dir = scratchDir("dcp-rows") + "/ckpt";
  Tensor t = patterned(DType::BFloat16, {2, 3, 4, 5}, 4);
  std::vector<DcpShard> shards;
  for (int64_t l = 0; l < 2; ++l)
    for (int64_t e = 0; e < 3; ++e)
      for (int64_t half = 0; half < 2; ++half) {
        Tensor chunk = t;
        chunk.shape = {1, 1, 2, 5};
        chunk.offset = t.offset + l * t.strides[0] + e * t.strides[1] + half * 2 * t.strides[2];
        shards.push_back({"w", t.shape, {l, e, half * 2, 0}, chunk, unsigned(half)});
      }
  ASSERT_FALSE(bool(writeDcp(dir, shards)));
  auto reader = DcpReader::open(dir);
  ASSERT_TRUE(bool(reader)) << message(reader.takeError());
  auto row = (*reader)->read("w[1][2]");
  ASSERT_TRUE(bool(row)) << message(row.takeError());
  EXPECT_EQ(row->shape, (llvm::SmallVector<int64_t, 4>{4, 5}));
  std::vector<uint8_t> all = t.toBytes(), want(all.begin() + (1 * 3 + 2) * 20 * 2,
                                               all.begin() + (1 * 3 + 3) * 20 * 2);
  EXPECT_EQ(row->toBytes(), want);
  auto layer = (*reader)->read("w[1]");
  ASSERT_TRUE(bool(layer)) << message(layer.takeError());
  EXPECT_EQ(layer->toBytes(), std::vector<uint8_t>(all.begin() + 60 * 2, all.end()));
  EXPECT_NE(message((*reader)->read("w[1][3]").takeError()).find("'w' has no row [1][3]"),
            std::string::npos);
  EXPECT_NE(message((*reader)->read("w[0][0][0][0][0]").takeError()).find("has no row"),
            std::string::npos);
}
