//===- Table.cpp - aligned text tables for the CLI ------------------------===//

#include "loom/Support/Table.h"

#include <fmt/format.h>

#include <algorithm>

using namespace loom;

Table::Table(std::vector<std::string> headers) {
  for (std::string &h : headers) {
    bool right = !h.empty() && h[0] == '>';
    rightAligned_.push_back(right);
    headers_.push_back(right ? h.substr(1) : h);
  }
}

void Table::addRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::render() const {
  std::vector<size_t> width(headers_.size());
  for (size_t c = 0; c < headers_.size(); ++c) {
    width[c] = headers_[c].size();
    for (const auto &row : rows_)
      width[c] = std::max(width[c], row[c].size());
  }
  auto line = [&](const std::vector<std::string> &cells) {
    std::string out;
    for (size_t c = 0; c < cells.size(); ++c) {
      if (c)
        out += "  ";
      out += rightAligned_[c] ? fmt::format("{:>{}}", cells[c], width[c])
                              : fmt::format("{:<{}}", cells[c], width[c]);
    }
    while (!out.empty() && out.back() == ' ')
      out.pop_back();
    return out + "\n";
  };
  std::string out = line(headers_);
  std::vector<std::string> rule;
  for (size_t w : width)
    rule.push_back(std::string(w, '-'));
  out += line(rule);
  for (const auto &row : rows_)
    out += line(row);
  return out;
}

std::string loom::humanCount(double n) {
  const char *units[] = {"", "K", "M", "B", "T"};
  int u = 0;
  while (n >= 1000 && u < 4) {
    n /= 1000;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f}", n) : fmt::format("{:.{}f}{}", n, n < 100 ? 2 : 1, units[u]);
}

std::string loom::gib(double bytes, int decimals) {
  return fmt::format("{:.{}f}", bytes / double(1ull << 30), decimals);
}

std::string loom::humanBytes(double bytes) {
  const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (bytes >= 1024 && u < 5) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, units[u]);
}
