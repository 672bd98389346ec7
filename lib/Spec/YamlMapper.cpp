//===- YamlMapper.cpp - YAML/JSON nodes onto protobuf messages ------------===//
//
// Specs are written in YAML or JSON but held as protobuf messages. Rather than
// a hand-written reader per message, the mapping goes through protobuf
// reflection: keys are field names, nested mappings are messages, lists are
// repeated fields and enums are matched by name without regard to case
// ("swiglu", "bf16"). yaml-cpp parses JSON too and, unlike the JSON libraries,
// keeps the line of every node, so both formats get errors with lines from this
// one walk.
//
//===----------------------------------------------------------------------===//

#include "SpecInternal.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>

namespace loom::spec::detail {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

YAML::Node parseYaml(std::string_view text, std::string_view file) {
  try {
    return YAML::Load(std::string(text));
  } catch (const YAML::Exception &e) {
    fail(file, e.mark.line + 1, "", fmt::format("invalid YAML: {}", e.msg));
  }
}

namespace {

int lineOf(const YAML::Node &node) {
  return node.Mark().is_null() ? 0 : node.Mark().line + 1;
}

/// A scalar as it may be shown on one line of a terminal: control and non-ASCII
/// bytes escaped, at most 40 characters.
std::string printable(const std::string &text) {
  std::string out;
  for (unsigned char c : text) {
    if (out.size() >= 40)
      return out + "...";
    out += (c >= 0x20 && c < 0x7f) ? std::string(1, static_cast<char>(c))
                                   : fmt::format("\\x{:02x}", c);
  }
  return out;
}

/// A value as the user wrote it, for "got ..." in messages. yaml-cpp tags
/// quoted scalars "!", which tells a JSON string "32" from the number 32.
std::string describe(const YAML::Node &node) {
  switch (node.Type()) {
  case YAML::NodeType::Scalar:
    return node.Tag() == "!" ? fmt::format("the string \"{}\"", printable(node.Scalar()))
                             : fmt::format("'{}'", printable(node.Scalar()));
  case YAML::NodeType::Sequence:
    return "a list";
  case YAML::NodeType::Map:
    return "a mapping";
  default:
    return "nothing";
  }
}

std::string expectedKind(const FieldDescriptor *field) {
  switch (field->cpp_type()) {
  case FieldDescriptor::CPPTYPE_INT32:
  case FieldDescriptor::CPPTYPE_INT64:
    return "an integer";
  case FieldDescriptor::CPPTYPE_UINT32:
  case FieldDescriptor::CPPTYPE_UINT64:
    return "a non-negative integer";
  case FieldDescriptor::CPPTYPE_DOUBLE:
  case FieldDescriptor::CPPTYPE_FLOAT:
    return "a number";
  case FieldDescriptor::CPPTYPE_BOOL:
    return "true or false";
  case FieldDescriptor::CPPTYPE_ENUM:
    return fmt::format("one of {}",
                       fmt::join(enumNames(field->enum_type()), ", "));
  case FieldDescriptor::CPPTYPE_STRING:
    return "a string";
  case FieldDescriptor::CPPTYPE_MESSAGE:
    return fmt::format("a mapping of {} fields", field->message_type()->name());
  }
  return "a value";
}

/// A reflection setter or adder: Reflection::SetUInt32, Reflection::AddUInt32,
/// ...
template <typename T>
using Store = void (Reflection::*)(Message *, const FieldDescriptor *, T) const;

/// Reflection has a setter and an adder per type; repeated fields take the
/// adder.
template <typename T>
void put(Message &msg, const FieldDescriptor *f, std::type_identity_t<T> value,
         Store<T> set, Store<T> add) {
  (msg.GetReflection()->*(f->is_repeated() ? add : set))(&msg, f,
                                                         std::move(value));
}

class YamlMapper {
public:
  YamlMapper(std::string_view file, LineMap &lines)
      : file(file), lines(lines) {}

  void message(const YAML::Node &node, Message &msg, const std::string &path);

private:
  void field(const YAML::Node &value, Message &msg, const FieldDescriptor *f,
             const std::string &path);
  void scalar(const YAML::Node &value, Message &msg, const FieldDescriptor *f,
              const std::string &path);
  template <typename T>
  T number(const YAML::Node &value, const FieldDescriptor *f,
           const std::string &path);

  [[noreturn]] void fail(const YAML::Node &at, const std::string &path,
                         const std::string &what) {
    detail::fail(file, lineOf(at), path, what);
  }
  [[noreturn]] void wrongType(const YAML::Node &value, const FieldDescriptor *f,
                              const std::string &path) {
    fail(value, path,
         fmt::format("expected {}, got {}", expectedKind(f), describe(value)));
  }

  std::string_view file;
  LineMap &lines;
};

void YamlMapper::message(const YAML::Node &node, Message &msg,
                         const std::string &path) {
  // "mlp:" with nothing under it: the message is present with default fields.
  if (node.IsNull())
    return;
  const Descriptor *desc = msg.GetDescriptor();
  if (!node.IsMap())
    fail(node, path,
         fmt::format("expected a mapping of {} fields, got {}", desc->name(),
                     describe(node)));
  const auto *reflection = msg.GetReflection();
  for (const auto &entry : node) {
    const YAML::Node &key = entry.first;
    if (!key.IsScalar())
      fail(key, path,
           fmt::format("expected a field name, got {}", describe(key)));
    const std::string &name = key.Scalar();
    std::string fieldPath = path.empty() ? name : path + "." + name;
    const FieldDescriptor *f = desc->FindFieldByName(name);
    if (!f)
      fail(key, fieldPath, unknownField(name, desc));
    auto [it, fresh] = lines.emplace(fieldPath, lineOf(key));
    if (!fresh)
      fail(key, fieldPath,
           fmt::format("given twice (first on line {})", it->second));
    const auto *oneof = f->real_containing_oneof();
    if (oneof && reflection->HasOneof(msg, oneof))
      fail(key, fieldPath,
           fmt::format("'{}' and '{}' exclude each other (give one)",
                       reflection->GetOneofFieldDescriptor(msg, oneof)->name(),
                       name));
    field(entry.second, msg, f, fieldPath);
  }
}

void YamlMapper::field(const YAML::Node &value, Message &msg,
                       const FieldDescriptor *f, const std::string &path) {
  const bool isMessage = f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
  if (!f->is_repeated()) {
    if (isMessage)
      message(value, *msg.GetReflection()->MutableMessage(&msg, f), path);
    else
      scalar(value, msg, f, path);
    return;
  }
  if (!value.IsSequence())
    fail(value, path, fmt::format("expected a list, got {}", describe(value)));
  size_t index = 0;
  for (const YAML::Node &element : value) {
    std::string elementPath = fmt::format("{}[{}]", path, index++);
    lines[elementPath] = lineOf(element);
    if (isMessage)
      message(element, *msg.GetReflection()->AddMessage(&msg, f), elementPath);
    else
      scalar(element, msg, f, elementPath);
  }
}

template <typename T>
T YamlMapper::number(const YAML::Node &value, const FieldDescriptor *f,
                     const std::string &path) {
  // Quoted numbers are strings: JSON "32" is a mistake worth reporting.
  if (value.Tag() == "!")
    wrongType(value, f, path);
  const std::string &text = value.Scalar();
  T result{};
  auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), result);
  if (ec == std::errc::result_out_of_range)
    fail(value, path,
         fmt::format("{} is out of range for this field ({} bits)", text,
                     sizeof(T) * 8));
  if (ec != std::errc() || end != text.data() + text.size())
    wrongType(value, f, path);
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(result))
      wrongType(value, f, path);
  }
  return result;
}

void YamlMapper::scalar(const YAML::Node &value, Message &msg,
                        const FieldDescriptor *f, const std::string &path) {
  if (!value.IsScalar())
    wrongType(value, f, path);
  const std::string &text = value.Scalar();
  switch (f->cpp_type()) {
  case FieldDescriptor::CPPTYPE_INT32:
    return put<int32_t>(msg, f, number<int32_t>(value, f, path),
                        &Reflection::SetInt32, &Reflection::AddInt32);
  case FieldDescriptor::CPPTYPE_INT64:
    return put<int64_t>(msg, f, number<int64_t>(value, f, path),
                        &Reflection::SetInt64, &Reflection::AddInt64);
  case FieldDescriptor::CPPTYPE_UINT32:
    return put<uint32_t>(msg, f, number<uint32_t>(value, f, path),
                         &Reflection::SetUInt32, &Reflection::AddUInt32);
  case FieldDescriptor::CPPTYPE_UINT64:
    return put<uint64_t>(msg, f, number<uint64_t>(value, f, path),
                         &Reflection::SetUInt64, &Reflection::AddUInt64);
  case FieldDescriptor::CPPTYPE_DOUBLE:
    return put<double>(msg, f, number<double>(value, f, path),
                       &Reflection::SetDouble, &Reflection::AddDouble);
  case FieldDescriptor::CPPTYPE_FLOAT:
    return put<float>(msg, f, number<float>(value, f, path),
                      &Reflection::SetFloat, &Reflection::AddFloat);
  case FieldDescriptor::CPPTYPE_BOOL:
    if (value.Tag() == "!" || (text != "true" && text != "false"))
      wrongType(value, f, path);
    return put<bool>(msg, f, text == "true", &Reflection::SetBool,
                     &Reflection::AddBool);
  case FieldDescriptor::CPPTYPE_STRING:
    return put<std::string>(msg, f, text, &Reflection::SetString,
                            &Reflection::AddString);
  case FieldDescriptor::CPPTYPE_ENUM: {
    std::vector<std::string> names = enumNames(f->enum_type());
    std::string lower = text;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (std::find(names.begin(), names.end(), lower) != names.end()) {
      std::string upper = text;
      std::transform(upper.begin(), upper.end(), upper.begin(),
                     [](unsigned char c) { return std::toupper(c); });
      return put<const EnumValueDescriptor *>(
          msg, f, f->enum_type()->FindValueByName(upper), &Reflection::SetEnum,
          &Reflection::AddEnum);
    }
    fail(value, path,
         fmt::format("expected {}, got {}{}", expectedKind(f), describe(value),
                     didYouMean(text, names)));
  }
  case FieldDescriptor::CPPTYPE_MESSAGE:
    break;
  }
  wrongType(value, f, path);
}

} // namespace

void yamlToMessage(const YAML::Node &node, Message &msg,
                   const std::string &path, std::string_view file,
                   LineMap &lines) {
  YamlMapper(file, lines).message(node, msg, path);
}

} // namespace loom::spec::detail
