//===- TextProto.cpp - textproto specs with field paths and lines ---------===//
//
// protobuf's TextFormat parser does the parsing. What it lacks for loom's error
// style is field paths with lines: its ParseInfoTree keeps one location for a
// whole list ("links: [{...}, {...}]") and nothing when parsing fails. So the
// tokens are replayed with protobuf's own tokenizer: field names open paths and
// braces nest them, which yields every field's line after a successful parse
// and, after a failed one, the field the parser was in.
//
//===----------------------------------------------------------------------===//

#include "SpecInternal.h"

#include <fmt/format.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>

#include <climits>
#include <map>
#include <regex>

namespace loom::spec::detail {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
namespace io = google::protobuf::io;

namespace {

/// Keeps the first error; the parser stops there anyway.
class FirstError : public io::ErrorCollector {
public:
  void AddError(int line, io::ColumnNumber column,
                const std::string &message) override {
    if (this->line >= 0)
      return;
    this->line = line;
    this->column = column;
    this->message = message;
  }
  int line = -1;
  int column = 0;
  std::string message;
};

std::string join(const std::string &path, const std::string &name) {
  return path.empty() ? name : path + "." + name;
}

/// Where the replay stopped: the innermost open field, its 1-based line (0 when
/// between fields) and the message type it belongs to.
struct Site {
  std::string path;
  int line = 0;
  const Descriptor *owner = nullptr;
};

/// Replays the tokens of `text` before (stopLine, stopColumn), both 0-based,
/// recording the line of every field path in `lines`.
Site replay(std::string_view text, const Descriptor *root, LineMap &lines,
            int stopLine = INT_MAX, int stopColumn = 0) {
  struct Frame {
    const Descriptor *desc;
    std::string path;
    std::map<std::string, int> seen = {}; // repeated message fields: next index
    std::string list = {};                // inside "list: [ ... ]"
  };
  io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  FirstError ignored; // the parser has reported the text's errors already
  io::Tokenizer tokenizer(&input, &ignored);
  std::vector<Frame> stack{{root, ""}};
  std::string pendingName; // last field name at the innermost level
  int pendingLine = 0;
  bool expectValue = false; // after ':' an identifier is an enum value
  while (tokenizer.Next()) {
    const io::Tokenizer::Token &tok = tokenizer.current();
    if (tok.line > stopLine ||
        (tok.line == stopLine && tok.column >= stopColumn))
      break;
    Frame &top = stack.back();
    if (tok.type == io::Tokenizer::TYPE_IDENTIFIER && !expectValue &&
        top.list.empty()) {
      pendingName = tok.text;
      pendingLine = tok.line + 1;
      lines.emplace(join(top.path, pendingName), pendingLine);
    } else if (tok.text == ":") {
      expectValue = true;
    } else if (tok.text == "[") {
      top.list = pendingName;
      expectValue = false;
    } else if (tok.text == "]") {
      top.list.clear();
    } else if (tok.text == "{" || tok.text == "<") {
      // A list element starts at its brace, a lone message at its field name.
      const bool inList = !top.list.empty();
      const std::string name = inList ? top.list : pendingName;
      const FieldDescriptor *f =
          top.desc ? top.desc->FindFieldByName(name) : nullptr;
      std::string path = join(top.path, name);
      if (f && f->is_repeated())
        path += fmt::format("[{}]", top.seen[name]++);
      lines[path] = inList ? tok.line + 1 : pendingLine;
      stack.push_back({f ? f->message_type() : nullptr, path});
      pendingName.clear();
      expectValue = false;
    } else if ((tok.text == "}" || tok.text == ">") && stack.size() > 1) {
      stack.pop_back();
      pendingName.clear();
      expectValue = false;
    } else if (tok.text != "-") {
      expectValue = false; // a value (or separator) ends the field
    }
  }
  const Frame &top = stack.back();
  if (pendingName.empty())
    return {top.path, 0, top.desc};
  return {join(top.path, pendingName), pendingLine, top.desc};
}

} // namespace

void parseTextProto(std::string_view text, std::string_view file, Message &msg,
                    LineMap &lines) {
  google::protobuf::TextFormat::Parser parser;
  FirstError error;
  parser.RecordErrorsTo(&error);
  if (parser.ParseFromString(std::string(text), &msg)) {
    replay(text, msg.GetDescriptor(), lines);
    return;
  }
  LineMap ignored;
  Site site =
      replay(text, msg.GetDescriptor(), ignored, error.line, error.column);
  // The one message worth rewording: unknown fields get a suggestion.
  static const std::regex noSuchField(
      R"re(Message type "[\w.]+" has no field named "(\w+)"\.)re");
  std::smatch match;
  int line = site.line ? site.line : error.line + 1;
  if (site.owner && std::regex_match(error.message, match, noSuchField))
    fail(file, line, site.path, unknownField(match[1].str(), site.owner));
  fail(file, line, site.path, error.message);
}

} // namespace loom::spec::detail
