//===- LoaderErrorTest.cpp - malformed specs and their exact messages -----===//
//
// Each case is a broken spec and the one line a user would see: file, line of
// the offending field, its path, and what is wrong.
//
//===----------------------------------------------------------------------===//

#include "SpecTesting.h"

#include <gtest/gtest.h>

using namespace loom::spec;
using loom::spec::testing::errorOf;

namespace {

struct BadSpec {
  const char *name;
  Format format;
  const char *text;
  const char *expected;
};

std::string displayName(Format format) {
  switch (format) {
  case Format::Yaml:
    return "bad.yaml";
  case Format::Json:
    return "bad.json";
  case Format::TextProto:
    return "bad.textproto";
  }
  return "";
}

class MalformedSpec : public ::testing::TestWithParam<BadSpec> {};

TEST_P(MalformedSpec, ReportsOneLineWithFileLineAndField) {
  const BadSpec &c = GetParam();
  EXPECT_EQ(
      errorOf([&] { parseSpec(c.text, c.format, displayName(c.format)); }),
      c.expected);
}

const BadSpec kBadSpecs[] = {
    // --- YAML: structure and types ---
    {"YamlUnknownFieldSuggests", Format::Yaml,
     "model:\n"
     "  name: x\n"
     "  hiden_size: 4096\n",
     "bad.yaml:3: model.hiden_size: unknown field 'hiden_size' in Model (did "
     "you mean 'hidden_size'?)"},
    {"YamlUnknownTopLevelSection", Format::Yaml,
     "modle:\n"
     "  name: x\n",
     "bad.yaml:1: modle: unknown field 'modle' in SpecFile (did you mean "
     "'model'?)"},
    {"YamlUnknownFieldListsFields", Format::Yaml,
     "training:\n"
     "  global_batch: 8\n"
     "  warmup: 100\n",
     "bad.yaml:3: training.warmup: unknown field 'warmup' in Training; fields "
     "are global_batch, seq_len, optimizer, precision, micro_batch, "
     "grad_reduce_in_bf16"},
    {"YamlWrongScalarType", Format::Yaml,
     "model:\n"
     "  vocab_size: 32000\n"
     "  hidden_size: big\n",
     "bad.yaml:3: model.hidden_size: expected a non-negative integer, got "
     "'big'"},
    {"YamlNegativeUnsigned", Format::Yaml,
     "training:\n"
     "  global_batch: -8\n",
     "bad.yaml:2: training.global_batch: expected a non-negative integer, got "
     "'-8'"},
    {"YamlListWhereNumberExpected", Format::Yaml,
     "cluster:\n"
     "  links:\n"
     "    - name: ib\n"
     "      bandwidth_gbps: [100, 200]\n",
     "bad.yaml:4: cluster.links[0].bandwidth_gbps: expected a number, got a "
     "list"},
    {"YamlBadEnumSuggests", Format::Yaml,
     "model:\n"
     "  norm: rmsnrom\n",
     "bad.yaml:2: model.norm: expected one of layernorm, rmsnorm, got "
     "'rmsnrom' (did you mean 'rmsnorm'?)"},
    {"YamlMlpAndMoeExcludeEachOther", Format::Yaml,
     "model:\n"
     "  blocks:\n"
     "    - count: 2\n"
     "      mlp: {ffn_hidden: 8, activation: gelu}\n"
     "      moe: {experts: 2, top_k: 1, expert_ffn_hidden: 8, activation: "
     "gelu}\n",
     "bad.yaml:5: model.blocks[0].moe: 'mlp' and 'moe' exclude each other "
     "(give one)"},
    {"YamlDuplicateKey", Format::Yaml,
     "training:\n"
     "  seq_len: 2048\n"
     "  seq_len: 4096\n",
     "bad.yaml:3: training.seq_len: given twice (first on line 2)"},
    {"YamlSyntaxError", Format::Yaml,
     "model:\n"
     "  vocab_size: 32000\n"
     "  blocks: [1, 2\n"
     "  hidden_size: 4096\n",
     "bad.yaml:4: invalid YAML: end of sequence flow not found"},
    {"YamlTopLevelNotAMapping", Format::Yaml,
     "- model\n"
     "- cluster\n",
     "bad.yaml:1: expected a mapping of SpecFile fields, got a list"},

    // --- YAML: semantic checks carry the offending field's line ---
    {"YamlZeroHidden", Format::Yaml,
     "model:\n"
     "  vocab_size: 32000\n"
     "  hidden_size: 0\n",
     "bad.yaml:3: model.hidden_size: must be > 0, got 0"},
    {"YamlMissingNormUsesSectionLine", Format::Yaml,
     "model:\n"
     "  vocab_size: 32000\n"
     "  hidden_size: 4096\n"
     "  max_seq_len: 4096\n"
     "  dtype: bf16\n",
     "bad.yaml:1: model.norm: must be given (one of layernorm, rmsnorm)"},
    {"YamlEmptyBlocks", Format::Yaml,
     "model:\n"
     "  vocab_size: 32000\n"
     "  hidden_size: 4096\n"
     "  max_seq_len: 4096\n"
     "  dtype: bf16\n"
     "  norm: rmsnorm\n"
     "  position: rope\n"
     "  blocks: []\n",
     "bad.yaml:8: model.blocks: must list at least one block of layers"},
    {"YamlBlockWithoutFfn", Format::Yaml,
     "model:\n"
     "  vocab_size: 32000\n"
     "  hidden_size: 4096\n"
     "  max_seq_len: 4096\n"
     "  dtype: bf16\n"
     "  norm: rmsnorm\n"
     "  position: rope\n"
     "  blocks:\n"
     "    - count: 32\n"
     "      attention: {heads: 32}\n",
     "bad.yaml:9: model.blocks[0]: needs an 'mlp' or a 'moe' section"},
    {"YamlTooManyLayersInAll", Format::Yaml,
     // Two blocks whose counts are each allowed (and would overflow a 32-bit
     // layer count together).
     "model:\n"
     "  vocab_size: 32000\n"
     "  hidden_size: 4096\n"
     "  max_seq_len: 4096\n"
     "  dtype: bf16\n"
     "  norm: rmsnorm\n"
     "  position: rope\n"
     "  blocks:\n"
     "    - count: 4294967295\n"
     "      attention: {heads: 32}\n"
     "      mlp: {ffn_hidden: 14336, activation: swiglu}\n"
     "    - count: 2\n"
     "      attention: {heads: 32}\n"
     "      mlp: {ffn_hidden: 14336, activation: swiglu}\n",
     "bad.yaml:8: model.blocks: 4294967297 layers in all; loom takes at most 65536"},
    {"YamlHiddenNotMultipleOfHeads", Format::Yaml,
     "model:\n"
     "  vocab_size: 32000\n"
     "  hidden_size: 4096\n"
     "  max_seq_len: 4096\n"
     "  dtype: bf16\n"
     "  norm: rmsnorm\n"
     "  position: rope\n"
     "  blocks:\n"
     "    - count: 32\n"
     "      attention:\n"
     "        heads: 48\n"
     "      mlp: {ffn_hidden: 14336, activation: swiglu}\n",
     "bad.yaml:11: model.blocks[0].attention.heads: hidden_size (4096) is not "
     "a multiple of heads (48); set head_dim"},
    {"YamlTopKAboveExperts", Format::Yaml,
     "model:\n"
     "  vocab_size: 32000\n"
     "  hidden_size: 4096\n"
     "  max_seq_len: 4096\n"
     "  dtype: bf16\n"
     "  norm: rmsnorm\n"
     "  position: rope\n"
     "  blocks:\n"
     "    - count: 32\n"
     "      attention: {heads: 32, kv_heads: 8}\n"
     "      moe:\n"
     "        experts: 8\n"
     "        top_k: 10\n"
     "        expert_ffn_hidden: 14336\n"
     "        activation: swiglu\n",
     "bad.yaml:13: model.blocks[0].moe.top_k: must be <= experts (8), got 10"},
    {"YamlMlaWithGqaHeads", Format::Yaml,
     "model:\n"
     "  vocab_size: 129280\n"
     "  hidden_size: 7168\n"
     "  max_seq_len: 4096\n"
     "  dtype: bf16\n"
     "  norm: rmsnorm\n"
     "  position: rope\n"
     "  blocks:\n"
     "    - count: 61\n"
     "      attention:\n"
     "        heads: 128\n"
     "        kv_heads: 8\n"
     "        kv_lora_rank: 512\n"
     "        qk_rope_head_dim: 64\n"
     "        qk_nope_head_dim: 128\n"
     "        v_head_dim: 128\n"
     "      mlp: {ffn_hidden: 18432, activation: swiglu}\n",
     "bad.yaml:12: model.blocks[0].attention.kv_heads: latent attention "
     "(kv_lora_rank set) expands keys and values to every head; leave kv_heads "
     "unset or equal to heads (128), got 8"},
    {"YamlNegativeBandwidth", Format::Yaml,
     "cluster:\n"
     "  name: lab\n"
     "  datacenters:\n"
     "    - name: main\n"
     "      node_groups:\n"
     "        - count: 2\n"
     "          gpu: h100-sxm\n"
     "          gpus_per_node: 8\n"
     "          intra_node_link: nvlink4\n"
     "          inter_node_link: roce\n"
     "  links:\n"
     "    - {name: roce, bandwidth_gbps: 100, latency_us: 8}\n"
     "    - name: slow\n"
     "      bandwidth_gbps: -5\n",
     "bad.yaml:14: cluster.links[1].bandwidth_gbps: must be > 0, got -5"},
    {"YamlTwoDatacentersWithoutInterDcLink", Format::Yaml,
     "cluster:\n"
     "  datacenters:\n"
     "    - name: east\n"
     "      node_groups: [{count: 2, gpu: h100-sxm, gpus_per_node: 8, "
     "intra_node_link: nvlink4, inter_node_link: ib-ndr-400}]\n"
     "    - name: west\n"
     "      node_groups: [{count: 2, gpu: h100-sxm, gpus_per_node: 8, "
     "intra_node_link: nvlink4, inter_node_link: ib-ndr-400}]\n",
     "bad.yaml:1: cluster.inter_dc_link: must name the link between "
     "datacenters (there are 2)"},
    {"YamlDuplicateDatacenterName", Format::Yaml,
     "cluster:\n"
     "  datacenters:\n"
     "    - name: east\n"
     "      node_groups: [{count: 2, gpu: h100-sxm, gpus_per_node: 8, "
     "intra_node_link: nvlink4, inter_node_link: ib-ndr-400}]\n"
     "    - name: east\n"
     "      node_groups: [{count: 2, gpu: h100-sxm, gpus_per_node: 8, "
     "intra_node_link: nvlink4, inter_node_link: ib-ndr-400}]\n"
     "  inter_dc_link: ib-ndr-400\n",
     "bad.yaml:5: cluster.datacenters[1].name: 'east' is defined twice"},

    // --- JSON ---
    {"YamlGlobalBatchTooLarge", Format::Yaml,
     "training:\n"
     "  seq_len: 2048\n"
     "  global_batch: 2000000000000\n",
     "bad.yaml:3: training.global_batch: must be at most 1099511627776 sequences, got "
     "2000000000000"},
    {"JsonNumberOverflow", Format::Json,
     // Well-formed JSON that nlohmann cannot hold (it throws out_of_range,
     // not parse_error; found by loom-fuzz-spec).
     "{\"model\": {\"hidden_size\": 1e1520}}",
     "bad.json: invalid JSON: number overflow parsing '1e1520'"},
    {"JsonQuotedNumber", Format::Json,
     "{\"model\": {\n"
     "  \"blocks\": [\n"
     "    {\"count\": 2,\n"
     "     \"attention\": {\"heads\": \"32\"}}]}}\n",
     "bad.json:4: model.blocks[0].attention.heads: expected a non-negative "
     "integer, got the string \"32\""},
    {"JsonKvHeadsNotDividingHeads", Format::Json,
     "{\"model\": {\n"
     "  \"vocab_size\": 32000, \"hidden_size\": 4096, \"max_seq_len\": 4096,\n"
     "  \"dtype\": \"bf16\", \"norm\": \"rmsnorm\", \"position\": \"rope\",\n"
     "  \"blocks\": [{\n"
     "    \"count\": 32,\n"
     "    \"attention\": {\"heads\": 32,\n"
     "                  \"kv_heads\": 5},\n"
     "    \"mlp\": {\"ffn_hidden\": 14336, \"activation\": \"swiglu\"}}]}}\n",
     "bad.json:7: model.blocks[0].attention.kv_heads: must divide heads (32), "
     "got 5"},
    {"JsonUnknownLinkSuggests", Format::Json,
     "{\"cluster\": {\n"
     "  \"datacenters\": [{\"name\": \"main\", \"node_groups\": [{\n"
     "    \"count\": 4, \"gpu\": \"a100-80g\", \"gpus_per_node\": 8,\n"
     "    \"intra_node_link\": \"nvlink3\",\n"
     "    \"inter_node_link\": \"ib-hdr200\"}]}]}}\n",
     "bad.json:5: cluster.datacenters[0].node_groups[0].inter_node_link: "
     "unknown link 'ib-hdr200' (did you mean 'ib-hdr-200'?); known: nvlink3, "
     "nvlink4, nvlink5, infinity-fabric, ib-hdr-200, ib-ndr-400"},
    {"JsonBoolAsString", Format::Json,
     "{\"model\": {\"tied_embeddings\": \"yes\"}}\n",
     "bad.json:1: model.tied_embeddings: expected true or false, got the "
     "string \"yes\""},
    {"JsonZeroGlobalBatch", Format::Json,
     "{\n"
     "  \"training\": {\n"
     "    \"global_batch\": 0,\n"
     "    \"seq_len\": 2048\n"
     "  }\n"
     "}\n",
     "bad.json:3: training.global_batch: must be > 0, got 0"},
    {"JsonSyntaxError", Format::Json,
     "{\n"
     "  \"training\": {\n"
     "    \"global_batch\": 8,\n"
     "  }\n"
     "}\n",
     "bad.json:4: invalid JSON: syntax error while parsing object key - "
     "unexpected '}'; expected string literal"},

    // --- textproto ---
    {"TextProtoUnknownFieldSuggests", Format::TextProto,
     "model {\n"
     "  vocab_size: 32000\n"
     "  hiden_size: 4096\n"
     "}\n",
     "bad.textproto:3: model.hiden_size: unknown field 'hiden_size' in Model "
     "(did you mean 'hidden_size'?)"},
    {"TextProtoUnknownNestedFieldInList", Format::TextProto,
     "cluster {\n"
     "  links: [\n"
     "    { name: \"a\" bandwidth_gbps: 100 },\n"
     "    { name: \"b\" bandwith_gbps: 100 }\n"
     "  ]\n"
     "}\n",
     "bad.textproto:4: cluster.links[1].bandwith_gbps: unknown field "
     "'bandwith_gbps' in LinkTier (did you mean 'bandwidth_gbps'?)"},
    {"TextProtoZeroHeads", Format::TextProto,
     "model {\n"
     "  vocab_size: 32000\n"
     "  hidden_size: 4096\n"
     "  max_seq_len: 4096\n"
     "  dtype: BF16\n"
     "  norm: RMSNORM\n"
     "  position: ROPE\n"
     "  blocks {\n"
     "    count: 32\n"
     "    attention { heads: 0 }\n"
     "    mlp { ffn_hidden: 14336 activation: SWIGLU }\n"
     "  }\n"
     "}\n",
     "bad.textproto:10: model.blocks[0].attention.heads: must be > 0, got 0"},
    {"TextProtoNegativeLatencyInList", Format::TextProto,
     "cluster {\n"
     "  links: [\n"
     "    { name: \"a\" bandwidth_gbps: 100 },\n"
     "    { name: \"b\"\n"
     "      bandwidth_gbps: 100\n"
     "      latency_us: -2 }\n"
     "  ]\n"
     "}\n",
     "bad.textproto:6: cluster.links[1].latency_us: must be >= 0, got -2"},
    {"TextProtoUnknownGpuSuggests", Format::TextProto,
     "cluster {\n"
     "  datacenters {\n"
     "    name: \"main\"\n"
     "    node_groups {\n"
     "      count: 2\n"
     "      gpu: \"h100\"\n"
     "      gpus_per_node: 8\n"
     "      intra_node_link: \"nvlink4\"\n"
     "      inter_node_link: \"ib-ndr-400\"\n"
     "    }\n"
     "  }\n"
     "}\n",
     "bad.textproto:6: cluster.datacenters[0].node_groups[0].gpu: unknown GPU "
     "'h100' (did you mean 'h100-sxm'?); known: a100-40g, a100-80g, h100-sxm, "
     "h200, b200, mi300x"},
    {"TextProtoMicroBatchAboveGlobal", Format::TextProto,
     "training {\n"
     "  global_batch: 8\n"
     "  seq_len: 2048\n"
     "  micro_batch: 16\n"
     "}\n",
     "bad.textproto:4: training.micro_batch: must be <= global_batch (8), got "
     "16"},
    {"TextProtoBf16GradientsInFp16", Format::TextProto,
     "training {\n"
     "  global_batch: 8\n"
     "  seq_len: 2048\n"
     "  precision: FP16_MIXED\n"
     "  grad_reduce_in_bf16: true\n"
     "}\n",
     "bad.textproto:5: training.grad_reduce_in_bf16: needs bf16 or fp8 precision, got fp16"},
    {"TextProtoWrongValueType", Format::TextProto,
     "model {\n"
     "  hidden_size: \"4096\"\n"
     "}\n",
     "bad.textproto:2: model.hidden_size: Expected integer, got: \"4096\""},
    {"TextProtoBadEnum", Format::TextProto,
     "model {\n"
     "  norm: RMS\n"
     "}\n",
     "bad.textproto:2: model.norm: Unknown enumeration value of \"RMS\" for "
     "field \"norm\"."},
    {"TextProtoSyntaxError", Format::TextProto,
     "model {\n"
     "  hidden_size: 4096 }\n"
     "}\n",
     "bad.textproto:3: Expected identifier, got: }"},
};

INSTANTIATE_TEST_SUITE_P(Spec, MalformedSpec, ::testing::ValuesIn(kBadSpecs),
                         [](const auto &info) { return info.param.name; });

//===----------------------------------------------------------------------===//
// Catalog names and cluster forms
//===----------------------------------------------------------------------===//

TEST(CatalogNameErrors, UnknownModelSuggestsAndListsKnown) {
  EXPECT_EQ(
      errorOf([] { loadModel("llama3-7b"); }),
      "unknown model 'llama3-7b' (did you mean 'llama3-8b'?); known: "
      "megatron-1.7b, megatron-3.6b, megatron-7.5b, megatron-18.4b, "
      "megatron-39.1b, megatron-76.1b, megatron-145.6b, megatron-310.1b, "
      "megatron-529.6b, megatron-1t, gpt3-175b, bloom-176b, gpt-neox-20b, llama3-8b, "
      "llama3-70b, llama3-405b, mixtral-8x7b, mixtral-8x22b, deepseek-v3, kimi-k2; or "
      "give a path to a .yaml/.yml, .json or .textproto/.txtpb/.pbtxt spec or "
      "an HF config.json");
}

TEST(CatalogNameErrors, MissingFileIsNotACatalogMiss) {
  EXPECT_EQ(errorOf([] { loadModel("specs/llama.yaml"); }),
            "cannot read 'specs/llama.yaml': no such file");
  EXPECT_EQ(errorOf([] { loadCluster("lab.textproto"); }),
            "cannot read 'lab.textproto': no such file");
}

TEST(CatalogNameErrors, UnknownClusterSuggests) {
  EXPECT_EQ(
      errorOf([] { loadCluster("dgx-h10:nodes=4"); }),
      "unknown cluster 'dgx-h10:nodes=4' (did you mean 'dgx-h100'?); known: "
      "dgx-a100, dgx-h100, dgx-h200, dgx-b200, mi300x, each as <name>:nodes=N; "
      "or give a path to a .yaml/.yml, .json or .textproto/.txtpb/.pbtxt spec");
}

struct BadForm {
  const char *name;
  const char *form;
  const char *expected;
};

class MalformedClusterForm : public ::testing::TestWithParam<BadForm> {};

TEST_P(MalformedClusterForm, NamesTheParameter) {
  EXPECT_EQ(errorOf([] { loadCluster(GetParam().form); }), GetParam().expected);
}

const BadForm kBadForms[] = {
    {"ZeroNodes", "dgx-h100:nodes=0",
     "cluster 'dgx-h100:nodes=0': nodes must be a positive integer, got '0'"},
    {"MisspelledParameter", "dgx-h100:node=4",
     "cluster 'dgx-h100:node=4': unknown parameter 'node' (did you mean "
     "'nodes'?); allowed: nodes, dcs, wan-gbps, wan-ms"},
    {"NoSize", "dgx-h100",
     "cluster 'dgx-h100' needs its size: "
     "dgx-h100:nodes=N[,dcs=K,wan-gbps=X,wan-ms=Y]"},
    {"NodesMissing", "dgx-a100:dcs=2",
     "cluster 'dgx-a100:dcs=2': nodes=N is required (the total number of "
     "nodes)"},
    {"UnevenSplit", "dgx-h100:nodes=5,dcs=2",
     "cluster 'dgx-h100:nodes=5,dcs=2': nodes=5 does not split evenly over "
     "dcs=2"},
    {"NotKeyValue", "dgx-b200:nodes=4,dcs",
     "cluster 'dgx-b200:nodes=4,dcs': expected key=value, got 'dcs' "
     "(parameters: nodes, dcs, wan-gbps, wan-ms)"},
    {"GivenTwice", "mi300x:nodes=4,nodes=8",
     "cluster 'mi300x:nodes=4,nodes=8': parameter 'nodes' given twice"},
    {"WanNotANumber", "dgx-h200:nodes=4,dcs=2,wan-gbps=fast",
     "cluster 'dgx-h200:nodes=4,dcs=2,wan-gbps=fast': wan-gbps must be a "
     "positive number, got 'fast'"},
    {"NegativeWanLatency", "dgx-h200:nodes=4,dcs=2,wan-ms=-1",
     "cluster 'dgx-h200:nodes=4,dcs=2,wan-ms=-1': wan-ms must be a "
     "non-negative number, got '-1'"},
};

INSTANTIATE_TEST_SUITE_P(Spec, MalformedClusterForm,
                         ::testing::ValuesIn(kBadForms),
                         [](const auto &info) { return info.param.name; });

} // namespace
