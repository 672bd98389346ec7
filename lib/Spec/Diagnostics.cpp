//===- Diagnostics.cpp - one-line spec errors and did-you-mean ------------===//
//
// Every spec error has the shape "<file>:<line>: <field path>: <message>" so
// that editors can jump to it and users see which key to fix; misspellings get
// the closest valid name.
//
//===----------------------------------------------------------------------===//

#include "SpecInternal.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>

namespace loom::spec::detail {

void fail(std::string_view file, int line, std::string_view path,
          std::string_view what) {
  std::string msg(file);
  if (line > 0)
    msg += fmt::format(":{}", line);
  if (!msg.empty())
    msg += ": ";
  if (!path.empty())
    msg += fmt::format("{}: ", path);
  msg += what;
  throw SpecError(msg);
}

nlohmann::json parseJson(std::string_view text, std::string_view file) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error &e) {
    size_t end = std::min<size_t>(e.byte, text.size());
    int line = 1 + std::count(text.begin(), text.begin() + end, '\n');
    // what() is "[json.exception.parse_error.101] parse error at line L, column
    // C: <reason>"; the line is already in our prefix.
    std::string reason = e.what();
    if (size_t colon = reason.find(": "); colon != std::string::npos)
      reason = reason.substr(colon + 2);
    fail(file, line, "", fmt::format("invalid JSON: {}", reason));
  } catch (const nlohmann::json::exception &e) {
    // Well-formed but unreadable, e.g. "number overflow parsing '1e1520'"
    // (out_of_range.406), which carries no position.
    std::string reason = e.what();
    if (size_t bracket = reason.find("] "); bracket != std::string::npos)
      reason = reason.substr(bracket + 2);
    fail(file, 0, "", fmt::format("invalid JSON: {}", reason));
  }
}

void Locator::fail(std::string_view path, std::string_view what) const {
  int line = 0;
  if (lines) {
    // Walk up "a.b[2].c" -> "a.b[2]" -> "a.b" -> "a" until a recorded field.
    std::string p(path);
    while (!p.empty()) {
      if (auto it = lines->find(p); it != lines->end()) {
        line = it->second;
        break;
      }
      size_t cut = p.find_last_of(".[");
      p.resize(cut == std::string::npos ? 0 : cut);
    }
  }
  detail::fail(where, line, path, what);
}

static size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                  std::tolower(static_cast<unsigned char>(b[j - 1]));
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (same ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

static std::string closest(std::string_view word,
                           const std::vector<std::string> &candidates) {
  std::string best;
  size_t bestDistance = std::string::npos;
  for (const std::string &c : candidates) {
    // A name the user abbreviated ("h100" for "h100-sxm") beats a near miss
    // ("h200") that edit distance alone would pick.
    bool abbreviates = word.size() >= 2 && c.size() > word.size() &&
                       editDistance(word, c.substr(0, word.size())) == 0;
    size_t d = abbreviates ? 0 : editDistance(word, c);
    if (d < bestDistance) {
      bestDistance = d;
      best = c;
    }
  }
  // Close enough to be a typo: two edits, or a third of the word when longer.
  size_t allowed = std::max<size_t>(2, word.size() / 3);
  if (best.empty() || bestDistance > allowed || bestDistance >= word.size())
    return {};
  return best;
}

std::string didYouMean(std::string_view word,
                       const std::vector<std::string> &candidates) {
  std::string best = closest(word, candidates);
  return best.empty() ? std::string()
                      : fmt::format(" (did you mean '{}'?)", best);
}

std::vector<std::string>
enumNames(const google::protobuf::EnumDescriptor *desc) {
  std::vector<std::string> names;
  for (int i = 0; i < desc->value_count(); ++i) {
    std::string name = desc->value(i)->name();
    if (name.find("UNSPECIFIED") != std::string::npos)
      continue;
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    names.push_back(name);
  }
  return names;
}

std::string unknownField(std::string_view name,
                         const google::protobuf::Descriptor *owner) {
  std::vector<std::string> names;
  for (int i = 0; i < owner->field_count(); ++i)
    names.push_back(owner->field(i)->name());
  std::string hint = didYouMean(name, names);
  if (hint.empty())
    hint = fmt::format("; fields are {}", fmt::join(names, ", "));
  return fmt::format("unknown field '{}' in {}{}", name, owner->name(), hint);
}

} // namespace loom::spec::detail
