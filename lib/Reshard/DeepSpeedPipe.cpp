//===- DeepSpeedPipe.cpp - Megatron-DeepSpeed's GPTModelPipe names and split -===//
//
// How DeepSpeed's PipelineModule lays out Megatron-DeepSpeed's GPT, read at
// microsoft/Megatron-DeepSpeed f4157bea and microsoft/DeepSpeed 38327e07:
//
//  * GPTModelPipe (megatron/model/gpt_model.py) lists _to_float16 (a function), the
//    embedding (TiedLayerSpec 'embed' of EmbeddingPipe, or LayerSpec(EmbeddingPipe)
//    with --untie-embeddings-and-output-weights), the transformer layers, the final
//    norm, the head (the tied 'embed' spec with forward_fn=_logits_helper, or
//    LMHeadPipe) and, with fp16 or bf16, float16_to_fp32; partition_method
//    'type:transformer'.
//  * PipelineModule (deepspeed/runtime/pipe/module.py) registers its tied modules
//    first, as tied_modules.<key>.<name>, and every other built layer under its index
//    in that list, so parameters are named "tied_modules.embed.word_embeddings.weight",
//    "3.self_attention.dense.weight", "6.weight" (the final norm), "7.lm_head.weight".
//  * _partition_layers splits the list with partition_balanced (deepspeed/runtime/
//    utils.py) over weights 1 for the layers whose class matches 'transformer'.
//
//===----------------------------------------------------------------------===//
#include "loom/Reshard/Layout.h"

#include <limits>

using namespace loom;
using namespace loom::reshard;

static constexpr llvm::StringLiteral kEmbedding = "language_model.embedding.";
static constexpr llvm::StringLiteral kLayers = "language_model.encoder.layers.";
static constexpr llvm::StringLiteral kFinalNorm = "language_model.encoder.final_layernorm.";
static constexpr llvm::StringLiteral kOutputLayer = "language_model.output_layer.weight";
static constexpr llvm::StringLiteral kTied = "tied_modules.embed.";

std::optional<GptPipeName> reshard::gptPipeName(llvm::StringRef gptName, int64_t layers,
                                                bool tiedHead) {
  llvm::StringRef rest = gptName;
  if (rest.consume_front(kEmbedding) && !rest.empty())
    return GptPipeName{
        ((tiedHead ? llvm::StringRef(kTied) : llvm::StringRef("1.")) + rest).str(), 1, rest.str()};
  rest = gptName;
  if (rest.consume_front(kLayers)) {
    auto [index, key] = rest.split('.');
    int64_t n = 0;
    if (index.getAsInteger(10, n) || n < 0 || n >= layers || key.empty())
      return std::nullopt;
    return GptPipeName{(llvm::Twine(n + 2) + "." + key).str(), n + 2, key.str()};
  }
  rest = gptName;
  if (rest.consume_front(kFinalNorm) && (rest == "weight" || rest == "bias"))
    return GptPipeName{(llvm::Twine(layers + 2) + "." + rest).str(), layers + 2, rest.str()};
  if (gptName == kOutputLayer && !tiedHead)
    return GptPipeName{(llvm::Twine(layers + 3) + ".lm_head.weight").str(), layers + 3,
                       "lm_head.weight"};
  return std::nullopt;
}

std::optional<std::string> reshard::gptNameOfPipe(llvm::StringRef pipeName) {
  llvm::StringRef rest = pipeName;
  if (rest.consume_front(kTied))
    return rest.empty() ? std::nullopt : std::optional((kEmbedding + rest).str());
  auto [index, key] = pipeName.split('.');
  int64_t layer = 0;
  if (index.getAsInteger(10, layer) || layer < 1 || key.empty())
    return std::nullopt;
  if (layer == 1)
    return (kEmbedding + key).str();
  if (key == "weight" || key == "bias")
    return (kFinalNorm + key).str();
  if (key == "lm_head.weight")
    return kOutputLayer.str();
  return (kLayers + llvm::Twine(layer - 2) + "." + key).str();
}

/// partition_uniform (deepspeed/runtime/utils.py), which partition_balanced falls back
/// to when there are no more items than parts.
static std::vector<int64_t> partitionUniform(int64_t items, unsigned parts) {
  std::vector<int64_t> bounds(parts + 1);
  if (items <= parts) {
    for (unsigned p = 0; p <= parts; ++p)
      bounds[p] = std::min<int64_t>(p, items);
    return bounds;
  }
  int64_t chunk = items / parts, residual = items - chunk * parts;
  for (unsigned p = 0; p <= parts; ++p)
    bounds[p] = p * chunk + std::min<int64_t>(p, residual);
  return bounds;
}

std::vector<int64_t> reshard::deepspeedPartitionBalanced(llvm::ArrayRef<int64_t> weights,
                                                        unsigned parts) {
  const size_t n = weights.size(), m = parts;
  if (n <= m)
    return partitionUniform(n, parts);
  // The same dynamic program, ties included: a cost no larger than the best so far
  // moves the cut later (`dp_cost[i, j] >= cost`).
  const double inf = std::numeric_limits<double>::infinity();
  auto table = [&](double fill) {
    return std::vector<std::vector<double>>(n + 1, std::vector<double>(m + 1, fill));
  };
  auto dpMax = table(inf), dpMin = table(inf), dpCost = table(inf);
  std::vector<std::vector<size_t>> position(n + 1, std::vector<size_t>(m + 1, 0));
  std::vector<double> prefix(n + 1, 0);
  for (size_t i = 0; i < n; ++i)
    prefix[i + 1] = prefix[i] + double(weights[i]);
  dpMax[0][0] = 0;
  dpCost[0][0] = 0;
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= std::min(i, m); ++j)
      for (size_t k = 0; k < i; ++k) {
        double sum = prefix[i] - prefix[k];
        double maxSum = std::max(dpMax[k][j - 1], sum), minSum = std::min(dpMin[k][j - 1], sum);
        double cost = maxSum - minSum;
        if (dpCost[i][j] >= cost) {
          dpCost[i][j] = cost;
          dpMax[i][j] = maxSum;
          dpMin[i][j] = minSum;
          position[i][j] = k;
        }
      }
  std::vector<int64_t> bounds{int64_t(n)};
  for (size_t i = m; i >= 1; --i)
    bounds.push_back(int64_t(position[size_t(bounds.back())][i]));
  std::reverse(bounds.begin(), bounds.end());
  return bounds;
}

std::vector<int64_t> reshard::gptPipeParts(int64_t layers, unsigned pp, bool halfPrecision) {
  // _to_float16, the embedding, the layers, the final norm, the head[, float16_to_fp32].
  std::vector<int64_t> weights(layers + 4 + (halfPrecision ? 1 : 0), 0);
  for (int64_t n = 0; n < layers; ++n)
    weights[2 + n] = 1;
  return deepspeedPartitionBalanced(weights, pp);
}
