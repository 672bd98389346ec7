//===- Catalog.cpp - built-in models, GPUs, links and cluster forms -------===//
//
// The catalog's figures live in catalog/*.yaml, each beside its source, and are
// compiled into the library (cmake/EmbedFiles.cmake) so `loom` works from any
// directory. They are parsed on first use with the same YAML-to-protobuf
// mapping as user specs. Clusters are templates of one vendor node, turned into
// clusters by parameterised forms such as
// "dgx-h100:nodes=64,dcs=2,wan-gbps=400".
//
//===----------------------------------------------------------------------===//

#include "SpecInternal.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <set>

namespace loom::spec {

/// Defined in the file cmake/EmbedFiles.cmake generates from catalog/*.yaml.
std::string_view embeddedFile(std::string_view basename);

namespace {

struct Catalog {
  std::vector<Model> models;
  std::vector<GpuType> gpus;
  std::vector<LinkTier> links;
  std::vector<Cluster> clusterTemplates;
};

/// Reads the list under `key` of an embedded catalog file, one message per
/// item.
template <typename T>
std::vector<T> loadList(std::string_view file, const std::string &key) {
  std::string_view text = embeddedFile(file);
  if (text.empty())
    throw SpecError(fmt::format("catalog file {} is not built in", file));
  const YAML::Node root = detail::parseYaml(text, file);
  const YAML::Node list = root[key];
  if (!list.IsSequence())
    detail::fail(file, 0, key, "expected a list");
  detail::LineMap lines;
  std::vector<T> items;
  for (const YAML::Node &node : list) {
    T &item = items.emplace_back();
    detail::yamlToMessage(
        node, item, fmt::format("{}[{}]", key, items.size() - 1), file, lines);
  }
  return items;
}

const Catalog &catalog() {
  static const Catalog instance{loadList<Model>("models.yaml", "models"),
                                loadList<GpuType>("gpus.yaml", "gpus"),
                                loadList<LinkTier>("links.yaml", "links"),
                                loadList<Cluster>("clusters.yaml", "clusters")};
  return instance;
}

/// Catalog vectors and a cluster's repeated fields alike.
template <typename Range>
const typename Range::value_type *findByName(const Range &items,
                                             std::string_view name) {
  for (const auto &item : items)
    if (item.name() == name)
      return &item;
  return nullptr;
}

constexpr const char *kFormParameters = "nodes, dcs, wan-gbps, wan-ms";

/// The parameters of a cluster form, with the defaults documented at
/// loadCluster in Spec.h: one datacenter, and a 100 Gb/s, 10 ms WAN when there
/// are more.
struct FormParameters {
  uint32_t nodes = 0; // total over all datacenters; required
  uint32_t dcs = 1;
  double wanGbps = 100; // per node, per direction
  double wanMs = 10;    // one way
};

FormParameters parseFormParameters(std::string_view form,
                                   std::string_view params) {
  auto bad = [&](const std::string &what) -> SpecError {
    return SpecError(fmt::format("cluster '{}': {}", form, what));
  };
  auto positiveInteger = [&](std::string_view key, std::string_view value) {
    uint32_t n = 0;
    auto [end, ec] =
        std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec != std::errc() || end != value.data() + value.size() || n == 0)
      throw bad(
          fmt::format("{} must be a positive integer, got '{}'", key, value));
    return n;
  };
  auto number = [&](std::string_view key, std::string_view value,
                    bool allowZero) {
    double x = 0;
    auto [end, ec] =
        std::from_chars(value.data(), value.data() + value.size(), x);
    if (ec != std::errc() || end != value.data() + value.size() ||
        !std::isfinite(x) || x < 0 || (x == 0 && !allowZero))
      throw bad(fmt::format("{} must be a {} number, got '{}'", key,
                            allowZero ? "non-negative" : "positive", value));
    return x;
  };

  FormParameters result;
  std::set<std::string> given;
  while (!params.empty()) {
    std::string_view item = params.substr(0, params.find(','));
    params.remove_prefix(std::min(params.size(), item.size() + 1));
    size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      throw bad(fmt::format("expected key=value, got '{}' (parameters: {})",
                            item, kFormParameters));
    std::string key(item.substr(0, eq));
    std::string_view value = item.substr(eq + 1);
    if (!given.insert(key).second)
      throw bad(fmt::format("parameter '{}' given twice", key));
    if (key == "nodes")
      result.nodes = positiveInteger(key, value);
    else if (key == "dcs")
      result.dcs = positiveInteger(key, value);
    else if (key == "wan-gbps")
      result.wanGbps = number(key, value, /*allowZero=*/false);
    else if (key == "wan-ms")
      result.wanMs = number(key, value, /*allowZero=*/true);
    else
      throw bad(fmt::format(
          "unknown parameter '{}'{}; allowed: {}", key,
          detail::didYouMean(key, {"nodes", "dcs", "wan-gbps", "wan-ms"}),
          kFormParameters));
  }
  if (!result.nodes)
    throw bad("nodes=N is required (the total number of nodes)");
  if (result.nodes % result.dcs)
    throw bad(fmt::format("nodes={} does not split evenly over dcs={}",
                          result.nodes, result.dcs));
  return result;
}

std::string modelSummary(const Model &model) {
  const Block &first = model.blocks(0);
  AttentionShape attn = attentionShape(model, first);
  std::string kv = attn.kvHeads != attn.heads
                       ? fmt::format(" ({} kv)", attn.kvHeads)
                       : std::string(attn.mla ? " (MLA)" : "");
  std::string moe;
  for (const Block &block : model.blocks())
    if (block.has_moe())
      moe = fmt::format(", {} experts top-{}", block.moe().experts(),
                        block.moe().top_k());
  return fmt::format("{}, {} layers, hidden {}, {} heads{}{}, {:.2f}B params",
                     model.family(), numLayers(model), model.hidden_size(),
                     attn.heads, kv, moe, countParameters(model).total() / 1e9);
}

std::string formSyntax(const Cluster &tmpl) {
  return fmt::format("{}:nodes=N[,dcs=K,wan-gbps=X,wan-ms=Y]", tmpl.name());
}

} // namespace

namespace detail {

const std::vector<GpuType> &catalogGpus() { return catalog().gpus; }
const std::vector<LinkTier> &catalogLinks() { return catalog().links; }

std::vector<std::string> clusterFormNames() {
  std::vector<std::string> names;
  for (const Cluster &tmpl : catalog().clusterTemplates)
    names.push_back(tmpl.name());
  return names;
}

bool clusterFromForm(std::string_view form, Cluster &cluster) {
  size_t colon = form.find(':');
  const Cluster *tmpl =
      findByName(catalog().clusterTemplates, form.substr(0, colon));
  if (!tmpl)
    return false;
  if (colon == std::string_view::npos)
    throw SpecError(fmt::format("cluster '{}' needs its size: {}", form,
                                formSyntax(*tmpl)));
  FormParameters p = parseFormParameters(form, form.substr(colon + 1));

  cluster = *tmpl;
  NodeGroup group = tmpl->datacenters(0).node_groups(0);
  group.set_count(p.nodes / p.dcs);
  cluster.clear_datacenters();
  for (uint32_t d = 0; d < p.dcs; ++d) {
    Datacenter *dc = cluster.add_datacenters();
    dc->set_name(fmt::format("dc{}", d));
    *dc->add_node_groups() = group;
  }
  // The cluster carries the tiers it uses so consumers need not know the
  // catalog.
  for (const std::string &name :
       {group.intra_node_link(), group.inter_node_link()})
    *cluster.add_links() = *findByName(catalog().links, name);
  cluster.set_name(fmt::format("{}:nodes={}", tmpl->name(), p.nodes));
  if (p.dcs > 1) {
    LinkTier *wan = cluster.add_links();
    wan->set_name("wan");
    wan->set_bandwidth_gbps(p.wanGbps);
    wan->set_latency_us(p.wanMs * 1000);
    wan->set_per_node(true);
    wan->set_source("cluster form parameters wan-gbps and wan-ms");
    cluster.set_inter_dc_link("wan");
    cluster.set_name(fmt::format("{},dcs={},wan-gbps={},wan-ms={}",
                                 cluster.name(), p.dcs, p.wanGbps, p.wanMs));
  }
  return true;
}

} // namespace detail

std::vector<CatalogEntry> catalogEntries() {
  const Catalog &c = catalog();
  std::vector<CatalogEntry> entries;
  for (const Model &model : c.models)
    entries.push_back(
        {model.name(), "model", modelSummary(model), model.source()});
  for (const GpuType &gpu : c.gpus)
    entries.push_back(
        {gpu.name(), "gpu",
         fmt::format("{} TFLOP/s bf16 dense, {} GiB HBM at {} GB/s",
                     gpu.bf16_tflops(), gpu.hbm_gib(), gpu.hbm_gbytes_per_s()),
         gpu.source()});
  for (const LinkTier &link : c.links)
    entries.push_back(
        {link.name(), "link",
         fmt::format("{} Gb/s per direction per {}, {} us",
                     link.bandwidth_gbps(), link.per_node() ? "node" : "GPU",
                     link.latency_us()),
         link.source()});
  for (const Cluster &tmpl : c.clusterTemplates) {
    const NodeGroup &node = tmpl.datacenters(0).node_groups(0);
    entries.push_back(
        {tmpl.name(), "cluster",
         fmt::format("{}: {} x {} per node, {} within, {} between nodes",
                     formSyntax(tmpl), node.gpus_per_node(), node.gpu(),
                     node.intra_node_link(), node.inter_node_link()),
         tmpl.source()});
  }
  return entries;
}

const Model *findCatalogModel(std::string_view name) {
  return findByName(catalog().models, name);
}

const GpuType *findCatalogGpu(std::string_view name) {
  return findByName(catalog().gpus, name);
}

const GpuType *findGpu(const Cluster &cluster, std::string_view name) {
  if (const GpuType *gpu = findByName(cluster.gpu_types(), name))
    return gpu;
  return findCatalogGpu(name);
}

const LinkTier *findLink(const Cluster &cluster, std::string_view name) {
  if (const LinkTier *link = findByName(cluster.links(), name))
    return link;
  return findByName(catalog().links, name);
}

} // namespace loom::spec
