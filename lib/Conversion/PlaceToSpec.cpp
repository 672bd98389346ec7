//===- PlaceToSpec.cpp - reading specs back from place IR -----------------===//

#include "loom/Conversion/PlaceToSpec.h"

#include "place/Place.h"

#include "llvm/ADT/StringExtras.h"

#include <numeric>

using namespace mlir;
using namespace loom;
using namespace loom::place;

namespace {

spec::Activation activationOf(StringRef name) {
  spec::Activation a = spec::ACTIVATION_UNSPECIFIED;
  spec::Activation_Parse(llvm::StringRef(name).upper(), &a);
  return a;
}

spec::DType dtypeOf(StringRef name) {
  spec::DType d = spec::BF16;
  spec::DType_Parse(llvm::StringRef(name).upper(), &d);
  return d;
}

/// One transformer layer's attention and FFN, as a block of count 1.
spec::Block blockOf(AttentionOp attn, Operation *ffn) {
  spec::Block block;
  block.set_count(1);
  spec::Attention *a = block.mutable_attention();
  a->set_heads(attn.getHeads());
  a->set_kv_heads(attn.getKvHeads());
  if (attn.getKvLoraRank()) { // MLA: head_dim is the non-rotary query/key width
    a->set_q_lora_rank(attn.getQLoraRank().value_or(0));
    a->set_kv_lora_rank(*attn.getKvLoraRank());
    a->set_qk_rope_head_dim(attn.getRopeHeadDim().value_or(0));
    a->set_qk_nope_head_dim(attn.getHeadDim());
    a->set_v_head_dim(attn.getVHeadDim().value_or(attn.getHeadDim()));
  } else {
    a->set_head_dim(attn.getHeadDim());
  }
  a->set_qkv_bias(attn.getQkvBias());
  a->set_out_bias(attn.getOutBias());
  if (auto moe = dyn_cast<MoeOp>(ffn)) {
    spec::Moe *m = block.mutable_moe();
    m->set_experts(moe.getExperts());
    m->set_top_k(moe.getTopK());
    m->set_shared_experts(moe.getSharedExperts());
    m->set_expert_ffn_hidden(moe.getFfn());
    m->set_activation(activationOf(moe.getActivation()));
    m->set_capacity_factor(moe.getCapacityFactor() ? moe.getCapacityFactor()->convertToDouble()
                                                   : 0.0);
    m->set_bias(moe.getBias());
  } else {
    auto mlp = cast<MlpOp>(ffn);
    block.mutable_mlp()->set_ffn_hidden(mlp.getFfn());
    block.mutable_mlp()->set_activation(activationOf(mlp.getActivation()));
    block.mutable_mlp()->set_bias(mlp.getBias());
  }
  return block;
}

bool sameShape(const spec::Block &a, const spec::Block &b) {
  spec::Block x = a, y = b;
  x.set_count(1);
  y.set_count(1);
  return x.SerializeAsString() == y.SerializeAsString();
}

/// The norm kind is in the IR only as parameter counts: pick the one that
/// reproduces them with the ops' bias attributes. IR written without those
/// attributes gets the combination of norm and biases that does (RMSNorm
/// without biases if none does).
void recoverNormAndBiases(spec::Model &model, int64_t attnParams, int64_t ffnParams) {
  auto matches = [&](const spec::Model &trial) {
    const spec::Block &first = trial.blocks(0);
    return int64_t(spec::attentionParameters(trial, first)) == attnParams &&
           int64_t(spec::ffnParameters(trial, first)) == ffnParams;
  };
  for (spec::NormKind norm : {spec::RMSNORM, spec::LAYERNORM}) {
    spec::Model trial = model;
    trial.set_norm(norm);
    if (matches(trial)) {
      model = trial;
      return;
    }
  }
  for (spec::NormKind norm : {spec::RMSNORM, spec::LAYERNORM})
    for (int bias = 0; bias < 8; ++bias) {
      spec::Model trial = model;
      trial.set_norm(norm);
      for (spec::Block &block : *trial.mutable_blocks()) {
        block.mutable_attention()->set_qkv_bias(bias & 1);
        block.mutable_attention()->set_out_bias(bias & 2);
        if (block.has_mlp())
          block.mutable_mlp()->set_bias(bias & 4);
        else
          block.mutable_moe()->set_bias(bias & 4);
      }
      if (matches(trial)) {
        model = trial;
        return;
      }
    }
  model.set_norm(spec::RMSNORM);
}

} // namespace

FailureOr<SpecInputs> loom::specFromPlace(ModuleOp module) {
  auto models = llvm::to_vector(module.getOps<ModelOp>());
  auto clusters = llvm::to_vector(module.getOps<ClusterOp>());
  if (models.size() != 1 || clusters.size() != 1)
    return module.emitError() << "expected one place.model and one place.cluster, found "
                              << models.size() << " and " << clusters.size();
  ModelOp modelOp = models.front();
  ClusterOp clusterOp = clusters.front();
  SymbolTableCollection symbols;
  SpecInputs in;

  // Model: consecutive layers of the same shape form a block.
  spec::Model &model = in.model;
  model.set_name(modelOp.getSymName().str());
  model.set_vocab_size(modelOp.getVocab());
  model.set_hidden_size(modelOp.getHidden());
  model.set_dtype(dtypeOf(modelOp.getDtype()));
  model.set_dropout(modelOp.getDropout());
  model.set_position(spec::ROPE);
  model.set_max_seq_len(modelOp.getSeqLen());
  AttentionOp pending;
  int64_t attnParams = -1, ffnParams = -1;
  for (Operation &op : *modelOp.getBodyBlock()) {
    if (auto embedding = dyn_cast<EmbeddingOp>(op)) {
      // A table beyond vocab x hidden is a learned position embedding.
      int64_t extra = embedding.getParams() - embedding.getVocab() * embedding.getHidden();
      if (extra > 0) {
        model.set_position(spec::LEARNED);
        model.set_max_seq_len(extra / embedding.getHidden());
      }
    } else if (auto attn = dyn_cast<AttentionOp>(op)) {
      pending = attn;
      if (attnParams < 0)
        attnParams = attn.getParams();
    } else if (isa<MlpOp, MoeOp>(op)) {
      if (!pending)
        return op.emitOpError("follows no attention op; place-search needs layers as "
                              "attention + MLP/MoE pairs");
      if (ffnParams < 0)
        ffnParams = cast<LayerOpInterface>(op).getParamCount();
      spec::Block block = blockOf(pending, &op);
      if (model.blocks_size() && sameShape(model.blocks(model.blocks_size() - 1), block))
        model.mutable_blocks(model.blocks_size() - 1)
            ->set_count(model.blocks(model.blocks_size() - 1).count() + 1);
      else
        *model.add_blocks() = block;
      pending = nullptr;
    } else if (auto head = dyn_cast<HeadOp>(op)) {
      model.set_tied_embeddings(head.getTied());
    }
  }
  if (model.blocks_size() == 0)
    return modelOp.emitOpError("has no attention + MLP/MoE layers to plan");
  recoverNormAndBiases(model, attnParams, ffnParams);

  // Cluster: its physical axes are dc (optional), node and gpu. Devices and
  // tiers become catalog entries where the IR names one, else custom ones
  // with the IR's figures.
  spec::Cluster &cluster = in.cluster;
  cluster.set_name(clusterOp.getSymName().str());
  auto gpuOf = [&](FlatSymbolRefAttr ref) {
    auto device = symbols.lookupNearestSymbolFrom<DeviceOp>(clusterOp, ref);
    std::string name = device.getKind() ? device.getKind()->str() : device.getSymName().str();
    if (!spec::findGpu(cluster, name)) {
      spec::GpuType *gpu = cluster.add_gpu_types();
      gpu->set_name(name);
      double peak = device.getPeakTflops().convertToDouble();
      gpu->set_bf16_tflops(peak);
      gpu->set_fp16_tflops(peak);
      gpu->set_fp32_tflops(peak / 16);
      gpu->set_hbm_gib(device.getHbmGib().convertToDouble());
      gpu->set_hbm_gbytes_per_s(device.getHbmGbytesPerS().convertToDouble());
    }
    return name;
  };
  auto linkOf = [&](FlatSymbolRefAttr ref) {
    auto tier = symbols.lookupNearestSymbolFrom<TierOp>(clusterOp, ref);
    std::string name = tier.getSymName().str();
    if (!spec::findLink(cluster, name)) {
      spec::LinkTier *link = cluster.add_links();
      link->set_name(name);
      link->set_bandwidth_gbps(tier.getBandwidthGbps().convertToDouble());
      link->set_latency_us(tier.getLatencyUs().convertToDouble());
      link->set_per_node(tier.getPerNode());
      link->set_efficiency(tier.getEfficiency().convertToDouble());
    }
    return name;
  };
  int64_t dcs = 1, nodes = 1, gpus = 1;
  std::string nodeLink, gpuLink, dcLink;
  for (auto axis : clusterOp.getAxes().getAsRange<AxisAttr>()) {
    std::string tierName = linkOf(axis.getTier());
    StringRef name = axis.getName();
    if (name == "dc") {
      dcs = axis.getSize();
      dcLink = tierName;
    } else if (name == "node") {
      nodes = axis.getSize();
      nodeLink = tierName;
    } else if (name == "gpu") {
      gpus = axis.getSize();
      gpuLink = tierName;
    } else {
      return clusterOp.emitOpError("has axis '")
             << name << "'; place-search reads clusters of dc, node and gpu axes";
    }
  }
  if (gpuLink.empty())
    return clusterOp.emitOpError("has no 'gpu' axis; place-search needs one");
  if (nodeLink.empty())
    nodeLink = gpuLink;
  cluster.set_inter_dc_link(dcLink);
  // Cells of unequal datacenters (cell_dc): a datacenter holds its cells' nodes.
  std::vector<int64_t> cellsPerDc(dcs, 1);
  if (auto cells = clusterOp.getCellDcAttr()) {
    cellsPerDc.assign(cells.asArrayRef().back() + 1, 0);
    for (int32_t d : cells.asArrayRef())
      ++cellsPerDc[d];
  }
  // Node groups in node order, split where a datacenter ends; one kind of
  // node makes one group per datacenter.
  struct Group {
    int64_t count;
    std::string gpu, intra, inter;
  };
  std::vector<Group> groups;
  if (auto groupAttrs = clusterOp.getGroupsAttr())
    for (auto g : groupAttrs.getAsRange<NodeGroupAttr>())
      groups.push_back({g.getCount(), gpuOf(g.getDevice()), linkOf(g.getIntraNode()),
                        linkOf(g.getInterNode())});
  else
    groups.push_back({nodes * std::accumulate(cellsPerDc.begin(), cellsPerDc.end(), int64_t(0)),
                      gpuOf(clusterOp.getDeviceAttr()), gpuLink, nodeLink});
  auto group = groups.begin();
  int64_t groupLeft = group->count;
  for (int64_t cellCount : cellsPerDc) {
    spec::Datacenter *dc = cluster.add_datacenters();
    for (int64_t dcLeft = nodes * cellCount; dcLeft > 0;) {
      if (groupLeft == 0)
        groupLeft = (++group)->count;
      int64_t take = std::min(dcLeft, groupLeft);
      spec::NodeGroup *out = dc->add_node_groups();
      out->set_count(take);
      out->set_gpu(group->gpu);
      out->set_gpus_per_node(gpus);
      out->set_intra_node_link(group->intra);
      out->set_inter_node_link(group->inter);
      dcLeft -= take;
      groupLeft -= take;
    }
  }

  spec::Training &training = in.training;
  training.set_global_batch(modelOp.getGlobalBatch());
  training.set_seq_len(modelOp.getSeqLen());
  training.set_optimizer(modelOp.getOptimizer() == "sgd" ? spec::SGD : spec::ADAM);
  training.set_grad_reduce_in_bf16(modelOp.getGradReduceBf16());
  StringRef dtype = modelOp.getDtype();
  training.set_precision(dtype == "fp32"   ? spec::FP32_FULL
                         : dtype == "fp16" ? spec::FP16_MIXED
                                           : spec::BF16_MIXED);
  return in;
}
