//===- Catalog.cpp - `loom catalog` ---------------------------------------===//

#include "Driver.h"

#include "loom/Spec/Spec.h"
#include "loom/Support/Table.h"

#include <nlohmann/json.hpp>

using namespace loom;
using namespace loom::cli;

void loom::cli::addCatalogCommand(CLI::App &app) {
  auto *cmd = app.add_subcommand(
      "catalog", "List the built-in models, GPU types, link tiers and cluster forms.\n"
                 "Every figure in the catalog has its source; --json shows them.");
  auto kind = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("--kind", *kind, "only this kind")
      ->check(CLI::IsMember({"model", "gpu", "link", "cluster"}));
  cmd->add_flag("--json", *json, "machine-readable output");
  cmd->callback([kind, json] {
    std::vector<spec::CatalogEntry> entries;
    for (auto &e : spec::catalogEntries())
      if (kind->empty() || e.kind == *kind)
        entries.push_back(e);
    if (*json) {
      nlohmann::json out = nlohmann::json::array();
      for (auto &e : entries)
        out.push_back({{"name", e.name}, {"kind", e.kind}, {"summary", e.summary},
                       {"source", e.source}});
      writeOutput("", out.dump(2) + "\n");
      return;
    }
    std::string text;
    for (const char *k : {"model", "gpu", "link", "cluster"}) {
      Table table({"name", "summary"});
      for (auto &e : entries)
        if (e.kind == k)
          table.addRow({e.name, e.summary});
      if (kind->empty() || *kind == k)
        text += std::string(k) + "s:\n" + table.render() + "\n";
    }
    if (kind->empty() || *kind == "cluster")
      text += "cluster forms: nodes counts all nodes, split evenly over dcs datacenters;\n"
              "wan-gbps is each node's WAN bandwidth per direction (default 100, so two\n"
              "datacenters of n nodes each are joined by n x wan-gbps); wan-ms is the one-way\n"
              "WAN latency (default 10)\n";
    writeOutput("", text);
  });
}
