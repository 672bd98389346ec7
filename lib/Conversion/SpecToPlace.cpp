//===- SpecToPlace.cpp - lowering specs into place IR ---------------------===//

#include "loom/Conversion/SpecToPlace.h"

#include "place/Place.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectRegistry.h"
#include "llvm/ADT/StringSet.h"

#include <fmt/format.h>

using namespace mlir;
using namespace loom;
using namespace loom::place;

void loom::registerSpecToPlaceDialects(DialectRegistry &registry) {
  registry.insert<PlaceDialect>();
}

/// Symbol names are catalog names with characters MLIR would quote replaced.
static std::string symbolName(std::string_view name) {
  std::string out;
  for (char c : name)
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '_') ? c : '_';
  if (out.empty() || std::isdigit(static_cast<unsigned char>(out[0])))
    out = "m_" + out;
  return out;
}

/// Enum names as users write them in specs ("swiglu").
static std::string lowercase(std::string name) {
  for (char &c : name)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

int64_t loom::attentionForwardFlops(const spec::Model &model, const spec::Block &block,
                                    int64_t seqLen) {
  spec::AttentionShape shape = spec::attentionShape(model, block);
  const spec::Attention &a = block.attention();
  int64_t qkDim = shape.mla ? a.qk_nope_head_dim() + a.qk_rope_head_dim() : shape.headDim;
  int64_t vDim = shape.mla ? a.v_head_dim() : shape.headDim;
  int64_t core = 2 * seqLen * shape.heads * (qkDim + vDim);
  return 2 * static_cast<int64_t>(spec::attentionParameters(model, block)) + core;
}

OwningOpRef<ModuleOp> loom::lowerSpecToPlace(MLIRContext *context,
                                             const spec::Model &model,
                                             const spec::Cluster &cluster,
                                             const spec::Training &training,
                                             Location loc) {
  context->getOrLoadDialect<PlaceDialect>();
  std::vector<spec::ClusterLevel> levels = spec::clusterLevels(cluster);
  spec::ClusterSize size = spec::clusterSize(cluster);
  if (!size.shapeRegular) {
    emitError(loc) << "cluster '" << cluster.name()
                   << "' has nodes with different GPU counts; place IR lays one mesh over "
                      "the nodes, so every node needs the same number";
    return nullptr;
  }

  OpBuilder b(context);
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());
  auto symbol = [&](std::string_view name) {
    return FlatSymbolRefAttr::get(context, symbolName(name));
  };

  // Tiers in the order the hierarchy uses them (outermost first), then those
  // only some node groups use, each once.
  llvm::StringSet<> emitted;
  auto addTier = [&](const spec::LinkTier &tier) {
    if (!emitted.insert(tier.name()).second)
      return;
    double efficiency = tier.efficiency() > 0 ? tier.efficiency() : 1.0;
    b.create<TierOp>(loc, symbolName(tier.name()), llvm::APFloat(tier.bandwidth_gbps()),
                     llvm::APFloat(tier.latency_us()), tier.per_node(),
                     llvm::APFloat(efficiency));
  };
  for (const spec::ClusterLevel &level : levels)
    addTier(*level.tier);
  // One kind of node: the cluster names its device. Several: each node group
  // names its own, in the order of the cluster's nodes.
  SmallVector<Attribute> groups;
  if (!size.uniform)
    for (const spec::Datacenter &dc : cluster.datacenters())
      for (const spec::NodeGroup &group : dc.node_groups()) {
        const spec::LinkTier *intra = spec::findLink(cluster, group.intra_node_link());
        const spec::LinkTier *inter = spec::findLink(cluster, group.inter_node_link());
        addTier(*intra);
        addTier(*inter);
        groups.push_back(NodeGroupAttr::get(
            context, group.count(), symbol(spec::findGpu(cluster, group.gpu())->name()),
            group.gpus_per_node(), symbol(intra->name()), symbol(inter->name())));
      }
  spec::NodeTypes types = spec::nodeTypes(cluster);
  for (const spec::GpuType *gpu : types.gpus)
    b.create<DeviceOp>(loc, symbolName(gpu->name()),
                       llvm::APFloat(spec::peakTflops(*gpu, training.precision())),
                       llvm::APFloat(gpu->hbm_gib()), llvm::APFloat(gpu->hbm_gbytes_per_s()),
                       b.getStringAttr(gpu->name()));

  SmallVector<Attribute> axisAttrs;
  for (const spec::ClusterLevel &level : levels)
    axisAttrs.push_back(AxisAttr::get(context, b.getStringAttr(level.name), level.size,
                                      symbol(level.tier->name())));
  // Datacenters of different sizes: the dc axis counts cells.
  DenseI32ArrayAttr cellDc;
  if (!levels.empty() && !levels.front().cellDc.empty())
    cellDc = b.getDenseI32ArrayAttr(levels.front().cellDc);
  FlatSymbolRefAttr device = groups.empty() ? symbol(types.gpus.front()->name()) : nullptr;
  b.create<ClusterOp>(loc, symbolName(cluster.name()), device, b.getArrayAttr(axisAttrs),
                      groups.empty() ? nullptr : b.getArrayAttr(groups), cellDc);

  int64_t seq = training.seq_len();
  int64_t mbs = training.micro_batch() ? training.micro_batch() : 1;
  auto modelOp = b.create<ModelOp>(
      loc, symbolName(model.name()), /*mesh=*/nullptr, /*pipeline_axis=*/nullptr,
      /*pipeline_ranks=*/nullptr, /*pipeline_devices=*/nullptr,
      model.vocab_size(), model.hidden_size(), seq, training.global_batch(), mbs,
      /*virtual_stages=*/1, spec::dtypeName(model.dtype()),
      model.dropout(), training.optimizer() == spec::SGD ? "sgd" : "adam", /*v_shape=*/false,
      /*dual_pipe=*/false, training.grad_reduce_in_bf16());
  modelOp.getBody().emplaceBlock();
  b.setInsertionPointToEnd(modelOp.getBodyBlock());

  spec::ParamCount params = spec::countParameters(model);
  int64_t hidden = model.hidden_size(), vocab = model.vocab_size();
  b.create<EmbeddingOp>(loc, "embedding", params.embedding, /*fwd_flops=*/0,
                        /*stage=*/nullptr, /*placement=*/nullptr, vocab, hidden);
  int64_t layer = 0;
  for (const spec::Block &block : model.blocks()) {
    spec::AttentionShape shape = spec::attentionShape(model, block);
    int64_t attnParams = spec::attentionParameters(model, block);
    int64_t attnFlops = attentionForwardFlops(model, block, seq);
    int64_t ffnParams = spec::ffnParameters(model, block);
    int64_t ffnFlops = 2 * static_cast<int64_t>(spec::ffnActiveParameters(model, block));
    for (uint32_t i = 0; i < block.count(); ++i, ++layer) {
      std::string prefix = fmt::format("layers.{}.", layer);
      const spec::Attention &a = block.attention();
      auto mla = [&](uint32_t v) { return shape.mla && v ? b.getI64IntegerAttr(v) : IntegerAttr(); };
      b.create<AttentionOp>(loc, prefix + "attention", attnParams, attnFlops, nullptr,
                            nullptr, layer, shape.heads, shape.kvHeads,
                            shape.mla ? a.qk_nope_head_dim() : shape.headDim,
                            mla(a.q_lora_rank()), mla(a.kv_lora_rank()),
                            mla(a.qk_rope_head_dim()), mla(a.v_head_dim()), a.qkv_bias(),
                            a.out_bias());
      if (block.has_moe()) {
        const spec::Moe &moe = block.moe();
        b.create<MoeOp>(loc, prefix + "moe", ffnParams, ffnFlops, nullptr, nullptr,
                        layer, moe.experts(), moe.top_k(), moe.shared_experts(),
                        moe.expert_ffn_hidden(),
                        lowercase(spec::Activation_Name(moe.activation())),
                        b.getI64IntegerAttr(spec::routedExpertParameters(model, block)),
                        moe.capacity_factor() > 0 ? b.getF64FloatAttr(moe.capacity_factor())
                                                  : FloatAttr(),
                        moe.bias());
      } else {
        const spec::Mlp &mlp = block.mlp();
        b.create<MlpOp>(loc, prefix + "mlp", ffnParams, ffnFlops, nullptr, nullptr,
                        layer, mlp.ffn_hidden(), lowercase(spec::Activation_Name(mlp.activation())),
                        mlp.bias());
      }
    }
  }
  b.create<HeadOp>(loc, "head", params.lmHead + params.finalNorm, 2 * vocab * hidden,
                   nullptr, nullptr, vocab, hidden, model.tied_embeddings());
  return module;
}
