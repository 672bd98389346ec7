//===- Layout.cpp - layouts of full tensors over files ---------------------===//
#include "loom/Reshard/Layout.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"

#include <array>
#include <map>
#include <numeric>

using namespace loom;
using namespace loom::reshard;
using ckpt::MegatronSplit;

uint64_t Box::volume() const {
  uint64_t v = 1;
  for (int64_t s : sizes)
    v *= uint64_t(s);
  return v;
}

void Box::subtract(const Box &other, std::vector<Box> &out) const {
  auto common = intersect(other);
  if (!common) {
    out.push_back(*this);
    return;
  }
  Box rest = *this;
  for (size_t d = 0; d < sizes.size(); ++d) {
    int64_t lo = common->offsets[d], hi = lo + common->sizes[d];
    int64_t end = rest.offsets[d] + rest.sizes[d];
    if (lo > rest.offsets[d]) {
      Box below = rest;
      below.sizes[d] = lo - rest.offsets[d];
      out.push_back(below);
    }
    if (hi < end) {
      Box above = rest;
      above.offsets[d] = hi;
      above.sizes[d] = end - hi;
      out.push_back(above);
    }
    rest.offsets[d] = lo;
    rest.sizes[d] = hi - lo;
  }
}

std::optional<Box> Box::intersect(const Box &other) const {
  Box out;
  for (size_t d = 0; d < offsets.size(); ++d) {
    int64_t lo = std::max(offsets[d], other.offsets[d]);
    int64_t hi = std::min(offsets[d] + sizes[d], other.offsets[d] + other.sizes[d]);
    if (hi <= lo)
      return std::nullopt;
    out.offsets.push_back(lo);
    out.sizes.push_back(hi - lo);
  }
  return out;
}

Box Box::whole(llvm::ArrayRef<int64_t> shape) {
  Box box;
  box.offsets.assign(shape.size(), 0);
  box.sizes.assign(shape.begin(), shape.end());
  return box;
}

int64_t reshard::linearIndex(llvm::ArrayRef<int64_t> shape, llvm::ArrayRef<int64_t> offsets) {
  int64_t index = 0;
  for (size_t d = 0; d < shape.size(); ++d)
    index = index * shape[d] + offsets[d];
  return index;
}

std::vector<Box> reshard::flatRuns(llvm::ArrayRef<int64_t> shape, int64_t begin, int64_t end) {
  std::vector<Box> out;
  size_t rank = shape.size();
  llvm::SmallVector<int64_t, 4> strides(rank, 1);
  for (size_t d = rank; d-- > 1;)
    strides[d - 1] = strides[d] * shape[d];
  while (begin < end) {
    // The largest aligned block at `begin` that fits: grow through the inner
    // dimensions while `begin` sits on their boundary and a whole block fits.
    size_t d = rank;
    while (d > 0 && begin % (strides[d - 1] * shape[d - 1]) == 0 &&
           begin + strides[d - 1] * shape[d - 1] <= end)
      --d;
    // Dimensions >= d are whole; take as many steps of dimension d - 1 as fit.
    Box box;
    int64_t rest = begin;
    for (size_t i = 0; i < rank; ++i) {
      box.offsets.push_back(rest / strides[i]);
      rest %= strides[i];
      box.sizes.push_back(i >= d ? shape[i] : 1);
    }
    if (d > 0) {
      int64_t step = strides[d - 1];
      int64_t room = shape[d - 1] - box.offsets[d - 1];
      box.sizes[d - 1] = std::min(room, (end - begin) / step);
    } else {
      box.sizes.assign(shape.begin(), shape.end());
    }
    begin += box.volume();
    out.push_back(std::move(box));
  }
  return out;
}

const FullTensor *Layout::findFull(llvm::StringRef name) const {
  for (const FullTensor &f : fulls)
    if (f.name == name)
      return &f;
  return nullptr;
}

static bool boxesOverlap(const Box &a, const Box &b) { return a.intersect(b).has_value(); }

llvm::Error reshard::checkLayout(const Layout &layout, llvm::StringRef what, bool source) {
  std::vector<uint64_t> covered(layout.fulls.size(), 0);
  std::vector<std::vector<Box>> fullBoxes(layout.fulls.size());
  for (const ShardFile &file : layout.files)
    for (const LocalTensor &local : file.tensors) {
      std::vector<Box> localBoxes;
      for (const Piece &piece : local.pieces) {
        auto fail = [&](const llvm::Twine &why) {
          return llvm::createStringError(what + ": " + file.path + ": " + local.key + ": " + why);
        };
        if (piece.full >= layout.fulls.size())
          return fail("a piece of an unknown tensor");
        const FullTensor &full = layout.fulls[piece.full];
        if (full.dtype != local.dtype)
          return fail("dtype differs from " + full.name + "'s");
        const Box &b = piece.fullBox;
        if (b.offsets.size() != full.shape.size() || b.sizes.size() != full.shape.size() ||
            piece.localOffsets.size() != local.shape.size() ||
            (!piece.flat && b.sizes.size() != local.shape.size()) ||
            (piece.flat && local.shape.size() != 1))
          return fail("a piece of " + full.name + " has the wrong rank");
        // The whole of an empty tensor: nothing to place (its declaration stands
        // for it when written).
        if (b.volume() == 0 && llvm::ArrayRef<int64_t>(b.sizes) == llvm::ArrayRef<int64_t>(full.shape) &&
            llvm::all_of(b.offsets, [](int64_t o) { return o == 0; }))
          continue;
        if (piece.flat) {
          for (size_t d = 0; d < b.sizes.size(); ++d)
            if (b.offsets[d] < 0 || b.sizes[d] <= 0 || b.offsets[d] + b.sizes[d] > full.shape[d])
              return fail("a piece of " + full.name + " lies outside it");
          Box inLocal{piece.localOffsets, {int64_t(b.volume())}};
          if (inLocal.offsets[0] < 0 || inLocal.offsets[0] + inLocal.sizes[0] > local.shape[0])
            return fail("a flat piece of " + full.name + " lies outside the local tensor");
          for (const Box &other : localBoxes)
            if (boxesOverlap(other, inLocal))
              return fail("two pieces overlap");
          localBoxes.push_back(inLocal);
          covered[piece.full] += b.volume();
          fullBoxes[piece.full].push_back(b);
          continue;
        }
        Box inLocal{piece.localOffsets, b.sizes};
        for (size_t d = 0; d < b.sizes.size(); ++d)
          if (b.offsets[d] < 0 || b.sizes[d] <= 0 || b.offsets[d] + b.sizes[d] > full.shape[d] ||
              inLocal.offsets[d] < 0 || inLocal.offsets[d] + b.sizes[d] > local.shape[d])
            return fail("a piece of " + full.name + " lies outside it or outside the local tensor");
        for (const Box &other : localBoxes)
          if (boxesOverlap(other, inLocal))
            return fail("two pieces overlap");
        localBoxes.push_back(inLocal);
        covered[piece.full] += b.volume();
        fullBoxes[piece.full].push_back(b);
      }
    }
  for (size_t f = 0; f < layout.fulls.size(); ++f) {
    auto numel = ckpt::checkedNumel(layout.fulls[f].shape);
    // Replicated tensors are stored several times: count the boxes' union. A source's
    // replicas must be the same boxes (a program reads one of them); a target may cut
    // them differently (each is written).
    std::vector<Box> distinct;
    uint64_t volume = 0;
    for (const Box &b : fullBoxes[f]) {
      bool same = false, clash = false;
      for (const Box &d : distinct) {
        if (d.offsets == b.offsets && d.sizes == b.sizes)
          same = true;
        else if (boxesOverlap(d, b))
          clash = true;
      }
      if (clash && source)
        return llvm::createStringError(what + ": the pieces of " + layout.fulls[f].name +
                                       " overlap without being copies");
      if (same)
        continue;
      std::vector<Box> fresh{b};
      for (const Box &d : distinct) {
        std::vector<Box> left;
        for (const Box &part : fresh)
          part.subtract(d, left);
        fresh = std::move(left);
      }
      for (Box &part : fresh) {
        volume += part.volume();
        distinct.push_back(std::move(part));
      }
    }
    if (!numel || volume != *numel)
      return llvm::createStringError(what + ": " + layout.fulls[f].name + ": pieces cover " +
                                     llvm::Twine(volume) + " of " +
                                     llvm::Twine(numel.value_or(0)) + " elements");
  }
  return llvm::Error::success();
}

std::optional<uint64_t> reshard::parseByteSize(llvm::StringRef text) {
  uint64_t scale = 1;
  for (auto [suffix, factor] : {std::pair{"GiB", 1ull << 30}, std::pair{"MiB", 1ull << 20},
                                std::pair{"KiB", 1ull << 10}})
    if (text.consume_back(suffix)) {
      scale = factor;
      break;
    }
  uint64_t n = 0;
  if (text.getAsInteger(10, n) || n > UINT64_MAX / scale)
    return std::nullopt;
  return n * scale;
}

llvm::Expected<TargetSpec> reshard::parseTargetSpec(llvm::StringRef text) {
  auto [format, options] = text.split(':');
  TargetSpec spec;
  spec.format = format.str();
  if (!llvm::is_contained({"megatron", "deepspeed", "deepspeed-universal", "hf-safetensors",
                           "torch", "dcp", "universal"},
                          format))
    return llvm::createStringError(
        "--to: unknown format '" + format.str() +
        "' (expected megatron, deepspeed, deepspeed-universal, hf-safetensors, torch, dcp or "
        "universal)");
  llvm::SmallVector<llvm::StringRef> items;
  options.split(items, ',', -1, false);
  for (llvm::StringRef item : items) {
    auto [key, value] = item.split('=');
    if (llvm::is_contained(spec.given, key))
      return llvm::createStringError("--to: '" + item.str() + "' repeats " + key.str() +
                                     "; give each option once");
    spec.given.push_back(key.str());
    auto bad = [&](const char *want) {
      return llvm::createStringError("--to: " + key.str() + "=" + value.str() + ": " + want);
    };
    if (format == "megatron" && llvm::is_contained({"tp", "pp", "ep", "etp"}, key)) {
      unsigned n = 0;
      if (value.getAsInteger(10, n) || n == 0 || n > 4096)
        return bad("expected an integer from 1 to 4096");
      (key == "tp" ? spec.tp : key == "pp" ? spec.pp : key == "ep" ? spec.ep : spec.etp) = n;
    } else if (format == "megatron" && (key == "first" || key == "last")) {
      unsigned n = 0;
      if (value.getAsInteger(10, n) || n == 0 || n > (1u << 20))
        return bad("expected the stage's number of layers, from 1");
      (key == "first" ? spec.firstLayers : spec.lastLayers) = n;
    } else if (format == "megatron" && key == "optimizer") {
      if (value != "mixed" && value != "distributed")
        return bad("expected mixed (the mixed-precision optimizer's states in "
                   "model_optim_rng.pt) or distributed (--use-distributed-optimizer's "
                   "distrib_optim.pt)");
      spec.distributedOptimizer = value == "distributed";
    } else if (format == "megatron" && key == "format") {
      if (value != "torch" && value != "torch_dist")
        return bad("expected torch (mp_rank_TT_PPP/model_optim_rng.pt files) or torch_dist "
                   "(Megatron-core's distributed checkpoint, --ckpt-format torch_dist)");
      spec.torchDist = value == "torch_dist";
    } else if (format == "deepspeed" && llvm::is_contained({"zero", "dp", "tp", "pp", "ep"}, key)) {
      unsigned n = 0;
      if (key == "zero" ? value.getAsInteger(10, n) || n < 1 || n > 3
                        : value.getAsInteger(10, n) || n == 0 || n > 65536)
        return bad(key == "zero" ? "expected 1, 2 or 3" : "expected an integer from 1 to 65536");
      (key == "zero" ? spec.zero
       : key == "dp" ? spec.dp
       : key == "tp" ? spec.tp
       : key == "ep" ? spec.ep
                     : spec.pp) = n;
      spec.pipeline |= key == "pp";
    } else if (format == "deepspeed" && key == "optimizer") {
      if (value != "zero" && value != "bf16")
        return bad("expected zero (ZeRO's optimizer) or bf16 (DeepSpeed's BF16_Optimizer)");
      spec.bf16Optimizer = value == "bf16";
    } else if (format == "dcp" && key == "ranks") {
      unsigned n = 0;
      if (value.getAsInteger(10, n) || n == 0 || n > 65536)
        return bad("expected an integer from 1 to 65536");
      spec.ranks = n;
    } else if (format == "hf-safetensors" && key == "shard") {
      std::optional<uint64_t> n = parseByteSize(value);
      if (!n || *n == 0)
        return bad("expected a size such as 2GiB, 500MiB or 1048576");
      spec.shardBytes = *n;
    } else {
      return llvm::createStringError(
          "--to: '" + item.str() + "' is not an option of " + format.str() +
          (format == "megatron"
               ? " (tp=N, pp=N, ep=N, etp=N, first=N, last=N, optimizer=mixed|distributed, "
                 "format=torch|torch_dist)"
           : format == "deepspeed" ? " (zero=1|2|3, dp=N, tp=N, pp=N, ep=N, optimizer=zero|bf16)"
           : format == "hf-safetensors" ? " (shard=SIZE)"
           : format == "dcp"            ? " (ranks=N)"
                                        : " (it takes none)"));
    }
  }
  if (spec.bf16Optimizer && spec.zero != 1)
    return llvm::createStringError("--to: optimizer=bf16 with zero=" + llvm::Twine(spec.zero) +
                                   ": DeepSpeed's BF16_Optimizer partitions as ZeRO-1 does; "
                                   "leave zero out or give zero=1");
  if (spec.pipeline && spec.zero > 1)
    return llvm::createStringError(
        "--to: pp with zero=" + llvm::Twine(spec.zero) +
        ": DeepSpeed's PipelineEngine refuses ZeRO-2 and ZeRO-3 (\"ZeRO-2 and ZeRO-3 are "
        "incompatible with pipeline parallelism\"); give zero=1 or optimizer=bf16");
  return spec;
}

MegatronDistOpt reshard::megatronDistOptFromArgs(const llvm::json::Object &args, unsigned pp) {
  MegatronDistOpt distOpt;
  auto flag = [&](llvm::StringRef key) { return args.getBoolean(key).value_or(false); };
  // resolve_ddp_bucket_size and the per-chunk bucket sizes of get_model
  // (megatron/training/training.py): buckets only with --overlap-grad-reduce, and
  // not when the parameter gather overlaps the optimizer step.
  if (flag("overlap_grad_reduce") && !flag("overlap_param_gather_with_optimizer_step")) {
    if (auto n = args.getInteger("ddp_num_buckets"); n && *n > 0)
      distOpt.numBuckets = *n;
    else if (auto size = args.getInteger("ddp_bucket_size"); size && *size > 0)
      distOpt.bucketSize = *size;
    else
      distOpt.bucketSize = std::max<int64_t>(
          40000000, 1000000 * args.getInteger("data_parallel_size").value_or(1) *
                        args.getInteger("context_parallel_size").value_or(1));
  }
  distOpt.gradReduceInFp32 = args.getBoolean("accumulate_allreduce_grads_in_fp32");
  distOpt.sharedEmbedding = pp > 1 && args.getBoolean("untie_embeddings_and_output_weights") == false;
  return distOpt;
}

namespace {
/// The local tensor `key` of `param`'s states named by `suffix` in the folder of
/// `writer` (the rank within its stage that writes it, ckpt::megatronFolderWriter).
using CutFn = llvm::function_ref<llvm::Expected<LocalTensor>(
    const ckpt::MegatronParam &, unsigned writer, const std::string &key, llvm::StringRef suffix)>;

/// Where Megatron's distributed optimizer puts parameters of `numels` elements (in
/// registration order) in their grad buffer as distrib_optim.pt keeps it, and the
/// buffer's size there. DistributedOptimizer._compute_per_buffer_param_layout
/// (megatron/core/optimizer/distrib_optimizer.py) walks the parameters in reverse,
/// starts each at a multiple of 64 elements (pad_param_start, param_layout.py),
/// closes a bucket once it holds `bucketSize` elements, and gives a shared embedding
/// a bucket of its own; every bucket ends padded to lcm(dp, 128) (pad_bucket_end),
/// and get_parameter_state_dp_zero keeps each bucket without that padding, back to
/// back. So offsets count from the bucket's kept start, and dp drops out.
/// Returns the offsets and each bucket's kept size (its numel_unpadded).
std::pair<std::vector<int64_t>, std::vector<int64_t>>
distOptOffsets(llvm::ArrayRef<int64_t> numels, llvm::ArrayRef<bool> ownBucket,
               std::optional<int64_t> bucketSize) {
  std::vector<int64_t> offsets(numels.size()), buckets;
  int64_t kept = 0; // elements of the closed buckets
  int64_t next = 0; // next free element of the open bucket, from its start
  bool open = false;
  auto close = [&](int64_t end) {
    kept += end;
    buckets.push_back(end);
    next = 0;
    open = false;
  };
  for (size_t i = numels.size(); i-- > 0;) {
    next = llvm::alignTo(next, 64);
    if (ownBucket[i] && open)
      close(next);
    offsets[i] = kept + next;
    next += numels[i];
    open = true;
    if ((bucketSize && next >= *bucketSize) || ownBucket[i])
      close(next);
  }
  if (open)
    close(next);
  return {std::move(offsets), std::move(buckets)};
}

/// One optimizer's part of distrib_optim.pt of the folder rank `rank` writes on `stage`
/// (get_parameter_state_dp_zero's dict): its parameters `params` (registration order,
/// cut by `cut`) grouped into one buffer per dtype in order of first appearance
/// (group_params_for_buffers, param_and_grad_buffer.py), each buffer's "param" (the
/// fp32 masters), "exp_avg" and "exp_avg_sq" a flat fp32 tensor in which every
/// parameter's local shard lies whole at its offset. The tensors, keyed by their
/// collectTensors paths after `prefix`, are appended to `tensors`; the dict's
/// torch-tree skeleton is returned. Each buffer's buckets' sizes are appended to
/// `bucketNumels`.
llvm::Expected<llvm::json::Value>
distribOptimState(llvm::ArrayRef<const ckpt::MegatronParam *> params, unsigned stage,
                  unsigned rank, unsigned pp, const MegatronDistOpt &distOpt, CutFn cut,
                  llvm::StringRef prefix, std::vector<LocalTensor> &tensors,
                  std::vector<std::vector<int64_t>> &bucketNumels) {
  struct Buffer {
    ckpt::DType dtype;
    std::vector<const ckpt::MegatronParam *> params;
    std::vector<int64_t> numels;
    llvm::SmallVector<bool, 32> ownBucket;
  };
  std::vector<Buffer> buffers;
  int64_t stageNumel = 0;
  for (const ckpt::MegatronParam *param : params) {
    auto local = cut(*param, rank, "", "");
    if (!local)
      return local.takeError();
    auto buffer = llvm::find_if(buffers, [&](const Buffer &b) { return b.dtype == local->dtype; });
    if (buffer == buffers.end())
      buffer = buffers.insert(buffers.end(), Buffer{local->dtype, {}, {}, {}});
    int64_t numel = int64_t(*ckpt::checkedNumel(local->shape));
    buffer->params.push_back(param);
    buffer->numels.push_back(numel);
    buffer->ownBucket.push_back(
        distOpt.sharedEmbedding &&
        ((stage == 0 && param->localName == "embedding.word_embeddings.weight") ||
         param->tiedCopy));
    stageNumel += numel;
  }
  // Buckets on the first stage only (get_model disables them on the others).
  std::optional<int64_t> bucketSize;
  if (stage == 0 && distOpt.numBuckets > 0)
    bucketSize = stageNumel / distOpt.numBuckets;
  else if (stage == 0 && distOpt.bucketSize > 0)
    bucketSize = distOpt.bucketSize;

  llvm::json::Array root{llvm::json::Array{"buckets_coalesced", true}};
  static constexpr std::pair<const char *, const char *> kStates[] = {
      {"param", "#fp32"}, {"exp_avg", "#exp_avg"}, {"exp_avg_sq", "#exp_avg_sq"}};
  for (unsigned b = 0; b < buffers.size(); ++b) {
    const Buffer &buffer = buffers[b];
    ckpt::DType grad = distOpt.gradReduceInFp32.value_or(buffer.dtype == ckpt::DType::BFloat16)
                           ? ckpt::DType::Float32
                           : buffer.dtype;
    std::string path = prefix.str() + ckpt::megatronDistBufferPath(b, buffer.dtype, grad);
    auto [offsets, buckets] = distOptOffsets(buffer.numels, buffer.ownBucket, bucketSize);
    int64_t numel = std::accumulate(buckets.begin(), buckets.end(), int64_t(0));
    bucketNumels.push_back(std::move(buckets));
    llvm::json::Array entries;
    for (auto [name, suffix] : kStates) {
      LocalTensor flat{path + "." + name, ckpt::DType::Float32, {numel}, {}};
      for (size_t i = 0; i < buffer.params.size(); ++i) {
        auto local = cut(*buffer.params[i], rank, flat.key, suffix);
        if (!local)
          return local.takeError();
        // Each piece of the local shard is a run of its row-major elements (rows of
        // the full tensor, or a row-parallel slice whole): so it is at the buffer.
        for (Piece &piece : local->pieces) {
          int64_t begin = linearIndex(local->shape, piece.localOffsets);
          auto runs = flatRuns(local->shape, begin, begin + int64_t(piece.fullBox.volume()));
          if (runs.size() != 1 || runs[0].sizes != piece.fullBox.sizes)
            return llvm::createStringError(buffer.params[i]->fullNames[0] +
                                           ": a piece of its shard is not contiguous in it");
          piece.localOffsets = {offsets[i] + begin};
          piece.flat = true;
          flat.pieces.push_back(std::move(piece));
        }
      }
      entries.push_back(llvm::json::Array{name, llvm::json::Object{{"$tensor", flat.key}}});
      tensors.push_back(std::move(flat));
    }
    entries.push_back(llvm::json::Array{"numel_unpadded", numel});
    llvm::json::Object dtypes{
        {"$tuple", llvm::json::Array{
                       llvm::json::Object{{"$global", ("torch." + ckpt::torchDTypeName(buffer.dtype)).str()}},
                       llvm::json::Object{{"$global", ("torch." + ckpt::torchDTypeName(grad)).str()}}}}};
    root.push_back(llvm::json::Array{
        int64_t(b),
        llvm::json::Object{{"$dict", llvm::json::Array{llvm::json::Array{
                                         std::move(dtypes),
                                         llvm::json::Object{{"$dict", std::move(entries)}}}}}}});
  }
  return llvm::json::Object{{"$dict", std::move(root)}};
}

/// What one of a rank's optimizers holds: its parameters in registration order and
/// as Megatron's _get_param_groups groups them, weight-decayed ones first.
struct HeldParams {
  std::vector<const ckpt::MegatronParam *> params, groups[2];
};

/// distrib_optim.pt of the folder rank `rank` writes on `stage`: the one optimizer's
/// dict (distribOptimState) or, with two (a ChainedOptimizer's), save_parameter_state's
/// list [the dense optimizer's, the experts'], each None unless `rank` is that
/// optimizer's data-parallel rank 0 (`saves`; see ckpt::megatronFolderWriter).
llvm::Expected<ShardFile> distribOptimFile(llvm::ArrayRef<HeldParams> held, unsigned stage,
                                           unsigned rank, std::array<bool, 2> saves, unsigned pp,
                                           const MegatronDistOpt &distOpt, CutFn cut,
                                           std::vector<std::vector<int64_t>> &bucketNumels) {
  ShardFile file;
  file.format = "torch-tree";
  bool chained = held.size() > 1;
  llvm::json::Array parts;
  for (unsigned o = 0; o < held.size(); ++o) {
    if (chained && !saves[o]) {
      parts.push_back(nullptr);
      continue;
    }
    auto state = distribOptimState(held[o].params, stage, rank, pp, distOpt, cut,
                                   chained ? llvm::formatv("{0}.", o).str() : "", file.tensors,
                                   bucketNumels);
    if (!state)
      return state.takeError();
    parts.push_back(std::move(*state));
  }
  llvm::json::Value root = chained ? llvm::json::Value(std::move(parts)) : std::move(parts[0]);
  file.meta = llvm::formatv("{0}", root);
  return file;
}

/// The mixed-precision optimizer's tensors in model_optim_rng.pt of the folder `rank` writes
/// (Float16OptimizerWithFloat16Params.state_dict, at collectTensors path `prefix`):
/// fp32_from_fp16_params group by group, and torch's state indices counting through
/// the groups.
llvm::Error mixedOptimizerTensors(const HeldParams &held, unsigned rank, CutFn cut,
                                  llvm::StringRef prefix, std::vector<LocalTensor> &tensors) {
  int64_t stateIndex = 0;
  for (int g = 0; g < 2; ++g)
    for (size_t i = 0; i < held.groups[g].size(); ++i, ++stateIndex) {
      std::string state = llvm::formatv("{0}optimizer.state.{1}.", prefix, stateIndex).str();
      for (auto [key, suffix] :
           {std::pair{llvm::formatv("{0}fp32_from_fp16_params.{1}.{2}", prefix, g, i).str(), "#fp32"},
            std::pair{state + "exp_avg", "#exp_avg"},
            std::pair{state + "exp_avg_sq", "#exp_avg_sq"}}) {
        auto local = cut(*held.groups[g][i], rank, key, suffix);
        if (!local)
          return local.takeError();
        tensors.push_back(std::move(*local));
      }
    }
  return llvm::Error::success();
}
} // namespace

llvm::Expected<std::vector<ShardFile>>
reshard::megatronShards(llvm::ArrayRef<FullTensor> fulls, const ckpt::MegatronDims &dims,
                        ckpt::MegatronNaming naming, unsigned tp, unsigned pp,
                        llvm::ArrayRef<int64_t> layersPerStage, llvm::StringRef dirPrefix,
                        const MegatronDistOpt *distOpt,
                        std::vector<std::vector<std::vector<int64_t>>> *bucketNumels, unsigned ep,
                        unsigned etp) {
  if (!etp)
    etp = tp;
  if (etp > tp)
    return llvm::createStringError(
        llvm::formatv("etp={0} > tp={1}: in Megatron's torch format several ranks would write "
                      "one mp_rank folder with other pieces of the experts, the last write "
                      "winning; give etp <= tp (or format=torch_dist, whose experts are whole)",
                      etp, tp)
            .str());
  // Parameters are the names without '#'; optimizer states ride along with them.
  std::vector<std::string> names;
  llvm::StringMap<unsigned> index;
  for (unsigned i = 0; i < fulls.size(); ++i) {
    index[fulls[i].name] = i;
    if (fulls[i].name.find('#') == std::string::npos)
      names.push_back(fulls[i].name);
  }
  auto params = ckpt::megatronParamsFor(names, dims, naming, layersPerStage, ep);
  if (!params)
    return params.takeError();
  if (ep > 1 && llvm::none_of(*params, [](const auto &p) { return p.expert >= 0; }))
    return llvm::createStringError(
        llvm::formatv("ep={0} asks for expert parallelism, and the model has no experts", ep)
            .str());
  // Megatron keeps every parameter's states or none.
  static constexpr const char *kStates[] = {"#fp32", "#exp_avg", "#exp_avg_sq"};
  auto hasStates = [&](const ckpt::MegatronParam &param) {
    for (const std::string &n : param.fullNames)
      for (const char *state : kStates)
        if (!index.count(n + state))
          return false;
    return true;
  };
  bool withStates = !params->empty() && hasStates(params->front());
  for (const ckpt::MegatronParam &param : *params)
    if (hasStates(param) != withStates)
      return llvm::createStringError(
          "Megatron's optimizer keeps fp32, exp_avg and exp_avg_sq for every parameter or "
          "for none; the source has them for " +
          (withStates ? params->front().fullNames[0] : param.fullNames[0]) + " but not for " +
          (withStates ? param.fullNames[0] : params->front().fullNames[0]));

  /// The local tensor `key` in the folder `writer` writes holding `param`'s full
  /// tensors with names suffixed by `suffix` ("" for the parameter, "#exp_avg", ...):
  /// its TP rank's slice, a routed expert's expert-TP piece.
  auto cut = [&](const ckpt::MegatronParam &param, unsigned writer, const std::string &key,
                 llvm::StringRef suffix) -> llvm::Expected<LocalTensor> {
    bool expert = param.expert >= 0;
    unsigned parts = expert ? etp : tp, rank = writer % parts;
    auto full = [&](size_t i) { return index[param.fullNames[i] + suffix.str()]; };
    LocalTensor local;
    local.key = key;
    unsigned f0 = full(0);
    const FullTensor &first = fulls[f0];
    local.dtype = first.dtype;
    local.shape = first.shape;
    auto fail = [&](const llvm::Twine &why) {
      return llvm::createStringError(param.fullNames[0] + " (" +
                                     ckpt::megatronSplitName(param.split) + "-split over " +
                                     (expert ? "etp=" : "tp=") + llvm::Twine(parts) + "): " + why);
    };
    // Rows [begin, begin + count) of full tensor f at local row `at`.
    auto rows = [&](unsigned f, int64_t begin, int64_t count, int64_t at) {
      Piece piece;
      piece.full = f;
      piece.fullBox = Box::whole(fulls[f].shape);
      piece.fullBox.offsets[0] = begin;
      piece.fullBox.sizes[0] = count;
      piece.localOffsets.assign(local.shape.size(), 0);
      piece.localOffsets[0] = at;
      local.pieces.push_back(std::move(piece));
    };
    if (first.shape.empty() && param.split != MegatronSplit::Replicated)
      return fail("a scalar cannot be split");
    int64_t rowsTotal = first.shape.empty() ? 0 : first.shape[0];
    switch (param.split) {
    case MegatronSplit::Replicated:
      local.pieces.push_back({f0, Box::whole(first.shape),
                              llvm::SmallVector<int64_t, 4>(first.shape.size(), 0)});
      break;
    case MegatronSplit::Column: {
      if (rowsTotal % parts)
        return fail(llvm::Twine(rowsTotal) + " rows do not divide by " +
                    (expert ? "etp" : "tp"));
      int64_t r = rowsTotal / parts;
      local.shape[0] = r;
      rows(f0, rank * r, r, 0);
      break;
    }
    case MegatronSplit::Row: {
      if (first.shape.size() != 2 || first.shape[1] % parts)
        return fail(llvm::Twine("expected a matrix whose columns divide by ") +
                    (expert ? "etp" : "tp"));
      int64_t c = first.shape[1] / parts;
      local.shape[1] = c;
      local.pieces.push_back({f0, Box{{0, rank * c}, {first.shape[0], c}}, {0, 0}});
      break;
    }
    case MegatronSplit::Vocab: {
      int64_t padded = dims.paddedVocab;
      if (padded % parts || rowsTotal > padded)
        return fail(llvm::formatv("{0} rows do not fit {1} padded rows in equal parts",
                                  rowsTotal, padded)
                        .str());
      int64_t r = padded / parts, lo = rank * r, hi = std::min<int64_t>(lo + r, rowsTotal);
      local.shape[0] = r;
      if (hi > lo)
        rows(f0, lo, hi - lo, 0);
      break;
    }
    case MegatronSplit::FusedQKV: {
      int64_t hd = dims.headDim, groups = dims.queryGroups;
      if (param.fullNames.size() != 3 || groups <= 0 || dims.heads % groups || groups % parts)
        return fail(llvm::formatv("{0} query groups do not divide by tp", groups).str());
      unsigned fk = full(1), fv = full(2);
      int64_t qpg = dims.heads / groups, gpr = groups / parts, groupRows = (qpg + 2) * hd;
      if (rowsTotal != dims.heads * hd || fulls[fk].shape[0] != groups * hd ||
          fulls[fv].shape[0] != groups * hd)
        return fail(llvm::formatv("q/k/v rows {0}/{1}/{2} do not match {3} heads, {4} "
                                  "groups of {5}",
                                  rowsTotal, fulls[fk].shape[0], fulls[fv].shape[0], dims.heads,
                                  groups, hd)
                        .str());
      local.shape[0] = gpr * groupRows;
      for (int64_t g = 0; g < gpr; ++g) {
        int64_t group = rank * gpr + g, at = g * groupRows;
        rows(f0, group * qpg * hd, qpg * hd, at);
        rows(fk, group * hd, hd, at + qpg * hd);
        rows(fv, group * hd, hd, at + (qpg + 1) * hd);
      }
      break;
    }
    case MegatronSplit::FusedGateUp: {
      unsigned fu = full(1);
      if (rowsTotal % parts || fulls[fu].shape[0] != rowsTotal)
        return fail(llvm::Twine("gate and up must have equal rows that divide by ") +
                    (expert ? "etp" : "tp"));
      int64_t r = rowsTotal / parts;
      local.shape[0] = 2 * r;
      rows(f0, rank * r, r, 0);
      rows(fu, rank * r, r, r);
      break;
    }
    }
    return local;
  };

  // A mixture of experts' states are a ChainedOptimizer's: the dense parameters'
  // optimizer, then the experts' (see ckpt::MegatronOptimizer).
  bool chained = withStates && llvm::any_of(*params, [](const auto &p) { return p.expert >= 0; });
  // With dense layers between MoE layers a stage may hold no experts; Megatron still
  // builds it an experts' optimizer (the groups are gathered over all ranks,
  // _get_param_groups), one of no parameters, which loom does not lay out.
  for (unsigned stage = 0; chained && stage < pp; ++stage)
    if (llvm::none_of(*params, [&](const auto &p) { return p.stage == stage && p.expert >= 0; }))
      return llvm::createStringError(
          llvm::formatv("pipeline stage {0} of {1} holds no MoE layer, so its ChainedOptimizer's "
                        "experts' optimizer would hold no parameters; pick a pp whose every "
                        "stage holds one, or add --weights-only",
                        stage, pp)
              .str());
  if (withStates && !distOpt)
    for (const ckpt::MegatronParam &param : *params)
      if (fulls[index[param.fullNames[0]]].dtype == ckpt::DType::Float32)
        return llvm::createStringError(
            param.fullNames[0] + " is fp32: Megatron's mixed-precision optimizer keeps fp32 "
                                 "masters of 16-bit parameters only; add --weights-only");

  auto shardPath = [&](unsigned rank, unsigned stage, unsigned epRank, llvm::StringRef name) {
    return (dirPrefix + ckpt::megatronRankDir(rank, stage, epRank, pp, ep) + "/" + name).str();
  };
  std::vector<ShardFile> files, distribFiles;
  for (unsigned stage = 0; stage < pp; ++stage)
    for (unsigned rank = 0; rank < tp; ++rank) {
      for (unsigned epRank = 0; epRank < ep; ++epRank) {
        // The folders Megatron writes, each by one rank (ckpt::megatronFolderWriter).
        std::optional<unsigned> writer = ckpt::megatronFolderWriter(rank, epRank, tp, ep, etp);
        if (!writer)
          continue;
        ShardFile file;
        file.path = shardPath(rank, stage, epRank, "model_optim_rng.pt");
        file.format = "torch-tree";
        HeldParams held[2]; // the dense parameters' optimizer, the experts'
        for (const ckpt::MegatronParam &param : *params) {
          if (param.stage != stage || (param.expert >= 0 && param.epRank != epRank))
            continue;
          auto local = cut(param, *writer, ckpt::megatronKey(naming, param), "");
          if (!local)
            return local.takeError();
          HeldParams &mine = held[chained && param.expert >= 0];
          mine.params.push_back(&param);
          mine.groups[ckpt::megatronNoWeightDecay(param.localName, local->shape.size())]
              .push_back(&param);
          file.tensors.push_back(std::move(*local));
        }
        llvm::ArrayRef<HeldParams> optimizers(held, chained ? 2 : 1);
        if (withStates && distOpt) {
          std::vector<std::vector<int64_t>> buckets;
          auto distrib = distribOptimFile(optimizers, stage, *writer,
                                          {*writer < tp, *writer < etp * ep}, pp, *distOpt, cut,
                                          buckets);
          if (!distrib)
            return distrib.takeError();
          distrib->path = shardPath(rank, stage, epRank, "distrib_optim.pt");
          if (bucketNumels)
            bucketNumels->push_back(std::move(buckets));
          distribFiles.push_back(std::move(*distrib));
        }
        if (withStates && !distOpt)
          for (unsigned o = 0; o < optimizers.size(); ++o)
            if (llvm::Error err = mixedOptimizerTensors(
                    optimizers[o], *writer, cut,
                    chained ? llvm::formatv("optimizer.{0}.", o).str() : "optimizer.",
                    file.tensors))
              return std::move(err);
        files.push_back(std::move(file));
      }
    }
  for (ShardFile &file : distribFiles)
    files.push_back(std::move(file));
  return files;
}
