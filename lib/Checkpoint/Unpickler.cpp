//===- Unpickler.cpp - stack, memo and accounting of the pickle VM --------===//
//
// The machine behind PickleOpcodes.cpp: bounded input reads, the stack with its
// MARK fences, the memo, the measures that enforce PickleLimits, and the opcodes
// that build or mutate containers and objects. See Unpickler.h for the rules.
//
//===----------------------------------------------------------------------===//
#include "Unpickler.h"
#include "PickleReduce.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"

#include <cstring>

using namespace loom::ckpt;
using namespace loom::ckpt::detail;
using llvm::formatv;

llvm::Error Unpickler::error(const llvm::Twine &what) const {
  const char *name = opcodeName(opcode);
  std::string op = name ? name : formatv("opcode 0x{0}", llvm::format_hex_no_prefix(opcode, 2)).str();
  return fileError(source, formatv("pickle offset {0} ({1}): ", opcodeOffset, op) + what);
}

llvm::Error Unpickler::need(uint64_t count) const {
  if (count > input.size() - pos)
    return error(formatv("needs {0} bytes but {1} remain (truncated or bogus length)", count,
                         input.size() - pos));
  return llvm::Error::success();
}

llvm::Expected<llvm::ArrayRef<uint8_t>> Unpickler::take(uint64_t count) {
  if (llvm::Error err = need(count))
    return err;
  llvm::ArrayRef<uint8_t> out = input.slice(pos, count);
  pos += count;
  return out;
}

llvm::Expected<std::string> Unpickler::readLine() {
  const uint8_t *start = input.data() + pos;
  const void *newline = std::memchr(start, '\n', input.size() - pos);
  if (!newline)
    return error("line without a newline");
  size_t length = static_cast<const uint8_t *>(newline) - start;
  if (llvm::Error err = charge(length))
    return err;
  pos += length + 1;
  return std::string(reinterpret_cast<const char *>(start), length);
}

llvm::Expected<std::string> Unpickler::readString(uint64_t length) {
  if (llvm::Error err = need(length))
    return err;
  if (llvm::Error err = charge(length))
    return err;
  auto bytes = take(length);
  return std::string(reinterpret_cast<const char *>(bytes->data()), length);
}

llvm::Error Unpickler::pushString(uint64_t length, bool bytes) {
  auto text = readString(length);
  if (!text)
    return text.takeError();
  if (bytes)
    return pushNew(Value::make(BytesValue{std::move(*text)}));
  return pushNew(Value::make(std::move(*text)));
}

llvm::Error Unpickler::pushLong(uint64_t length) {
  auto bytes = take(length);
  if (!bytes)
    return bytes.takeError();
  // Two's complement, little endian. Wider encodings are fine if the extra bytes
  // only repeat the sign.
  int64_t value = 0;
  if (length > 0) {
    bool negative = (*bytes)[length - 1] & 0x80;
    for (uint64_t i = 8; i < length; ++i)
      if ((*bytes)[i] != (negative ? 0xff : 0x00))
        return error("integer wider than 64 bits");
    if (length > 8 && (((*bytes)[7] & 0x80) != 0) != negative)
      return error("integer wider than 64 bits");
    uint64_t bits = 0;
    for (uint64_t i = 0; i < std::min<uint64_t>(length, 8); ++i)
      bits |= uint64_t((*bytes)[i]) << (8 * i);
    if (length < 8 && negative)
      bits |= ~uint64_t(0) << (8 * length);
    value = static_cast<int64_t>(bits);
  }
  return pushNew(Value::make(value));
}

llvm::Error Unpickler::charge(uint64_t bytes) {
  if (bytes > limits.maxBytes - bytesUsed)
    return error(formatv("allocation limit of {0} bytes exceeded", limits.maxBytes));
  bytesUsed += bytes;
  return llvm::Error::success();
}

llvm::Error Unpickler::push(ValuePtr value) {
  if (llvm::Error err = charge(sizeof(ValuePtr)))
    return err;
  stack.push_back(std::move(value));
  return llvm::Error::success();
}

Measure Unpickler::measureOf(const ValuePtr &value) const {
  auto it = measures.find(value.get());
  return it == measures.end() ? Measure{} : it->second.first;
}

/// Pushes a freshly built value after measuring it from its (already measured)
/// children.
llvm::Error Unpickler::pushNew(ValuePtr value) {
  Measure measure;
  uint64_t children = 0;
  forEachChild(*value, [&](const ValuePtr &child) {
    Measure c = measureOf(child);
    measure.nodes = std::min(measure.nodes + c.nodes, limits.maxTreeNodes + 1);
    measure.depth = std::max(measure.depth, c.depth + 1);
    ++children;
  });
  if (measure.depth > limits.maxDepth)
    return error(formatv("nesting deeper than {0}", limits.maxDepth));
  if (measure.nodes > limits.maxTreeNodes)
    return error(formatv("object tree exceeds {0} nodes (memo bomb?)", limits.maxTreeNodes));
  if (llvm::Error err = charge(sizeof(Value) + children * sizeof(ValuePtr)))
    return err;
  if (children)
    measures[value.get()] = {measure, value};
  return push(std::move(value));
}

llvm::Expected<ValuePtr> Unpickler::pop() {
  size_t floor = marks.empty() ? 0 : marks.back();
  if (stack.size() <= floor)
    return error("stack underflow");
  ValuePtr value = std::move(stack.back());
  stack.pop_back();
  return value;
}

llvm::Expected<ValuePtr *> Unpickler::top() {
  size_t floor = marks.empty() ? 0 : marks.back();
  if (stack.size() <= floor)
    return error("stack underflow");
  return &stack.back();
}

llvm::Expected<std::vector<ValuePtr>> Unpickler::popMark() {
  if (marks.empty())
    return error("no MARK to pop to");
  size_t mark = marks.back();
  marks.pop_back();
  std::vector<ValuePtr> items(std::make_move_iterator(stack.begin() + mark),
                              std::make_move_iterator(stack.end()));
  stack.resize(mark);
  return items;
}

llvm::Expected<ValuePtr> Unpickler::mutable_(ValuePtr value, llvm::StringRef what) {
  if (shared.contains(value.get()))
    return error(what + " on an object the memo already shares (recursive structures are not "
                        "supported)");
  return value;
}

/// Adds `added` under `target`, updating its measure. Only unshared targets get
/// here, so no ancestor's measure goes stale.
llvm::Error Unpickler::grow(const ValuePtr &target, llvm::ArrayRef<ValuePtr> added) {
  Measure measure = measureOf(target);
  for (const ValuePtr &child : added) {
    Measure c = measureOf(child);
    measure.nodes = std::min(measure.nodes + c.nodes, limits.maxTreeNodes + 1);
    measure.depth = std::max(measure.depth, c.depth + 1);
  }
  if (measure.depth > limits.maxDepth)
    return error(formatv("nesting deeper than {0}", limits.maxDepth));
  if (measure.nodes > limits.maxTreeNodes)
    return error(formatv("object tree exceeds {0} nodes (memo bomb?)", limits.maxTreeNodes));
  if (llvm::Error err = charge(added.size() * sizeof(ValuePtr)))
    return err;
  measures[target.get()] = {measure, target};
  return llvm::Error::success();
}

llvm::Error Unpickler::appendItems(std::vector<ValuePtr> items) {
  auto target = top();
  if (!target)
    return target.takeError();
  auto checked = mutable_(**target, "APPEND");
  if (!checked)
    return checked.takeError();
  Value &value = **checked;
  std::vector<ValuePtr> *into = nullptr;
  if (auto *list = value.get<ListValue>())
    into = &list->items;
  else if (auto *object = value.get<ObjectValue>())
    into = &object->listItems;
  else
    return error("cannot append to a " + describe(value));
  if (llvm::Error err = grow(*checked, items))
    return err;
  into->insert(into->end(), std::make_move_iterator(items.begin()),
               std::make_move_iterator(items.end()));
  return llvm::Error::success();
}

llvm::Error Unpickler::setItems(std::vector<ValuePtr> items) {
  if (items.size() % 2)
    return error("odd number of items for key/value pairs");
  auto target = top();
  if (!target)
    return target.takeError();
  auto checked = mutable_(**target, "SETITEM");
  if (!checked)
    return checked.takeError();
  Value &value = **checked;
  std::vector<std::pair<ValuePtr, ValuePtr>> *into = nullptr;
  if (auto *dict = value.get<DictValue>())
    into = &dict->entries;
  else if (auto *object = value.get<ObjectValue>())
    into = &object->dictItems;
  else
    return error("cannot set items on a " + describe(value));
  if (llvm::Error err = grow(*checked, items))
    return err;
  for (size_t i = 0; i < items.size(); i += 2)
    into->emplace_back(std::move(items[i]), std::move(items[i + 1]));
  return llvm::Error::success();
}

llvm::Error Unpickler::memoPut(uint64_t index) {
  auto value = top();
  if (!value)
    return value.takeError();
  if (memo.size() >= limits.maxMemoEntries && !memo.count(index))
    return error(formatv("memo grows past {0} entries", limits.maxMemoEntries));
  if (llvm::Error err = charge(sizeof(ValuePtr) + sizeof(uint64_t)))
    return err;
  memo[index] = **value;
  return llvm::Error::success();
}

llvm::Error Unpickler::memoGet(uint64_t index) {
  auto it = memo.find(index);
  if (it == memo.end())
    return error(formatv("memo entry {0} was never stored", index));
  shared.try_emplace(it->second.get(), it->second);
  return push(it->second);
}

llvm::Error Unpickler::reduce() {
  auto args = pop();
  if (!args)
    return args.takeError();
  auto callable = pop();
  if (!callable)
    return callable.takeError();
  const auto *global = (*callable)->get<GlobalValue>();
  if (!global)
    return error("calls a " + describe(**callable) + "; only named globals are modelled");
  auto result = detail::reduce(*global, *args);
  if (!result)
    return error(llvm::toString(result.takeError()));
  return pushNew(std::move(*result));
}

llvm::Error Unpickler::newObject(bool withKwargs) {
  ValuePtr kwargs;
  if (withKwargs) {
    auto popped = pop();
    if (!popped)
      return popped.takeError();
    kwargs = std::move(*popped);
  }
  auto args = pop();
  if (!args)
    return args.takeError();
  auto cls = pop();
  if (!cls)
    return cls.takeError();
  const auto *type = (*cls)->get<GlobalValue>();
  if (!type)
    return error("instantiates a " + describe(**cls) + "; only named classes are modelled");
  if (!(*args)->get<TupleValue>())
    return error("arguments are a " + describe(**args) + ", not a tuple");
  ObjectValue object;
  object.type = *type;
  object.newObj = true;
  object.args = std::move(*args);
  object.kwargs = std::move(kwargs);
  return pushNew(Value::make(std::move(object)));
}

llvm::Error Unpickler::build() {
  auto state = pop();
  if (!state)
    return state.takeError();
  auto target = top();
  if (!target)
    return target.takeError();
  auto checked = mutable_(**target, "BUILD");
  if (!checked)
    return checked.takeError();
  ValuePtr *slot = nullptr;
  if (auto *object = (*checked)->get<ObjectValue>())
    slot = &object->state;
  else if (auto *dict = (*checked)->get<DictValue>(); dict && dict->ordered)
    slot = &dict->state;
  else
    return error("cannot set state on a " + describe(**checked));
  if (*slot)
    return error("sets state on a " + describe(**checked) + " twice");
  if (llvm::Error err = grow(*checked, *state))
    return err;
  *slot = std::move(*state);
  return llvm::Error::success();
}

llvm::Error Unpickler::persistentLoad() {
  auto pid = pop();
  if (!pid)
    return pid.takeError();
  if (!loader)
    return error("persistent id outside a checkpoint archive");
  auto loaded = loader(**pid);
  if (!loaded)
    return error(llvm::toString(loaded.takeError()));
  return pushNew(std::move(*loaded));
}

llvm::Expected<ValuePtr> Unpickler::run() {
  while (!stopped) {
    if (pos >= input.size()) {
      opcodeOffset = pos;
      opcode = 0;
      return fileError(source, formatv("pickle ends at offset {0} without STOP (truncated)",
                                       pos));
    }
    if (llvm::Error err = step())
      return err;
  }
  return stack.back();
}

