//===- PickleReader.cpp - the pickle stack machine, without calls ---------===//
//
// Interprets pickle protocols 2-5 (and the mark-based LIST/DICT/TUPLE of older
// protocols) into a Value tree. Safety rests on three rules:
//  * GLOBAL yields a name; REDUCE/NEWOBJ/BUILD only record data (PickleReduce.cpp).
//  * Every length is checked against the input left before anything is allocated,
//    and every allocation is charged against PickleLimits::maxBytes.
//  * Only containers no one else can reach may be mutated. An object gets a second
//    reference only through the memo (GET) or DUP; refusing to mutate such objects
//    rules out cycles (recursive structures, which checkpoints do not contain), and
//    lets each node's tree size and depth be computed once, when it is built.
//
//===----------------------------------------------------------------------===//
#include "PickleReduce.h"
#include "loom/Checkpoint/Pickle.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"

#include <bit>
#include <cstring>

using namespace loom::ckpt;
using llvm::formatv;

namespace {

const char *opcodeName(uint8_t op) {
  switch (op) {
  case '(': return "MARK";
  case '.': return "STOP";
  case '0': return "POP";
  case '1': return "POP_MARK";
  case '2': return "DUP";
  case 'J': return "BININT";
  case 'K': return "BININT1";
  case 'M': return "BININT2";
  case 0x8a: return "LONG1";
  case 0x8b: return "LONG4";
  case 'G': return "BINFLOAT";
  case 'T': return "BINSTRING";
  case 'U': return "SHORT_BINSTRING";
  case 'X': return "BINUNICODE";
  case 0x8c: return "SHORT_BINUNICODE";
  case 0x8d: return "BINUNICODE8";
  case 'B': return "BINBYTES";
  case 'C': return "SHORT_BINBYTES";
  case 0x8e: return "BINBYTES8";
  case 0x96: return "BYTEARRAY8";
  case 'N': return "NONE";
  case 0x88: return "NEWTRUE";
  case 0x89: return "NEWFALSE";
  case ')': return "EMPTY_TUPLE";
  case 't': return "TUPLE";
  case 0x85: return "TUPLE1";
  case 0x86: return "TUPLE2";
  case 0x87: return "TUPLE3";
  case ']': return "EMPTY_LIST";
  case 'l': return "LIST";
  case 'a': return "APPEND";
  case 'e': return "APPENDS";
  case '}': return "EMPTY_DICT";
  case 'd': return "DICT";
  case 's': return "SETITEM";
  case 'u': return "SETITEMS";
  case 0x8f: return "EMPTY_SET";
  case 0x90: return "ADDITEMS";
  case 0x91: return "FROZENSET";
  case 'h': return "BINGET";
  case 'j': return "LONG_BINGET";
  case 'q': return "BINPUT";
  case 'r': return "LONG_BINPUT";
  case 0x94: return "MEMOIZE";
  case 'c': return "GLOBAL";
  case 0x93: return "STACK_GLOBAL";
  case 'R': return "REDUCE";
  case 'b': return "BUILD";
  case 0x81: return "NEWOBJ";
  case 0x92: return "NEWOBJ_EX";
  case 'Q': return "BINPERSID";
  case 0x80: return "PROTO";
  case 0x95: return "FRAME";
  case 0x97: return "NEXT_BUFFER";
  case 0x98: return "READONLY_BUFFER";
  default: return nullptr;
  }
}

/// Tree size (shared parts counted at every use) and nesting depth of a value.
struct Measure {
  uint64_t nodes = 1;
  uint64_t depth = 1;
};

class Unpickler {
public:
  Unpickler(llvm::ArrayRef<uint8_t> input, llvm::StringRef source, PersistentLoader loader,
            const PickleLimits &limits)
      : input(input), source(source), loader(loader), limits(limits) {}

  llvm::Expected<ValuePtr> run();

private:
  llvm::Error error(const llvm::Twine &what) const {
    const char *name = opcodeName(opcode);
    return fileError(source, formatv("pickle offset {0} ({1}): ", opcodeOffset,
                                     name ? name : formatv("opcode 0x{0}", llvm::format_hex_no_prefix(opcode, 2)).str()) +
                                 what);
  }
  llvm::Error step();

  // Input.
  llvm::Error need(uint64_t count) const;
  llvm::Expected<llvm::ArrayRef<uint8_t>> take(uint64_t count);
  template <typename T> llvm::Expected<T> readLE();
  llvm::Expected<std::string> readLine();
  llvm::Expected<std::string> readString(uint64_t length);
  llvm::Error pushString(uint64_t length, bool bytes);
  llvm::Error pushLong(uint64_t length);

  // Stack and accounting.
  llvm::Error charge(uint64_t bytes);
  llvm::Error push(ValuePtr value);
  llvm::Error pushNew(ValuePtr value);
  llvm::Expected<ValuePtr> pop();
  llvm::Expected<ValuePtr *> top();
  llvm::Expected<std::vector<ValuePtr>> popMark();
  Measure measureOf(const ValuePtr &value) const;
  llvm::Error grow(const ValuePtr &target, llvm::ArrayRef<ValuePtr> added);
  llvm::Expected<ValuePtr> mutable_(ValuePtr value, llvm::StringRef what);

  // Opcodes with more to them than a push.
  llvm::Error appendItems(std::vector<ValuePtr> items);
  llvm::Error setItems(std::vector<ValuePtr> items);
  llvm::Error memoPut(uint64_t index);
  llvm::Error memoGet(uint64_t index);
  llvm::Error reduce();
  llvm::Error newObject(bool withKwargs);
  llvm::Error build();
  llvm::Error persistentLoad();

  llvm::ArrayRef<uint8_t> input;
  uint64_t pos = 0;
  uint64_t opcodeOffset = 0;
  uint8_t opcode = 0;
  llvm::StringRef source;
  PersistentLoader loader;
  const PickleLimits &limits;

  std::vector<ValuePtr> stack;
  std::vector<size_t> marks;
  llvm::DenseMap<uint64_t, ValuePtr> memo;
  // Keyed by address; each entry holds its value alive so that no address is
  // reused by a later value while it is still tracked.
  llvm::DenseMap<const Value *, std::pair<Measure, ValuePtr>> measures;
  llvm::DenseMap<const Value *, ValuePtr> shared;
  uint64_t bytesUsed = 0;
  bool stopped = false;
};

llvm::Error Unpickler::need(uint64_t count) const {
  if (count > input.size() - pos)
    return error(formatv("needs {0} bytes but {1} remain (truncated or bogus length)", count,
                         input.size() - pos));
  return llvm::Error::success();
}

llvm::Expected<llvm::ArrayRef<uint8_t>> Unpickler::take(uint64_t count) {
  if (llvm::Error err = need(count))
    return std::move(err);
  llvm::ArrayRef<uint8_t> out = input.slice(pos, count);
  pos += count;
  return out;
}

template <typename T> llvm::Expected<T> Unpickler::readLE() {
  auto bytes = take(sizeof(T));
  if (!bytes)
    return bytes.takeError();
  return llvm::support::endian::read<T, llvm::endianness::little>(bytes->data());
}

llvm::Expected<std::string> Unpickler::readLine() {
  const uint8_t *start = input.data() + pos;
  const void *newline = std::memchr(start, '\n', input.size() - pos);
  if (!newline)
    return error("line without a newline");
  size_t length = static_cast<const uint8_t *>(newline) - start;
  if (llvm::Error err = charge(length))
    return std::move(err);
  pos += length + 1;
  return std::string(reinterpret_cast<const char *>(start), length);
}

llvm::Expected<std::string> Unpickler::readString(uint64_t length) {
  if (llvm::Error err = need(length))
    return std::move(err);
  if (llvm::Error err = charge(length))
    return std::move(err);
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

llvm::Error Unpickler::step() {
  opcodeOffset = pos;
  opcode = input[pos++];
  switch (opcode) {
  case 0x80: { // PROTO
    auto version = readLE<uint8_t>();
    if (!version)
      return version.takeError();
    if (*version > 5)
      return error(formatv("protocol {0} is newer than 5", *version));
    return llvm::Error::success();
  }
  case 0x95: { // FRAME: framing is advisory; the opcodes inside are read in order.
    auto length = readLE<uint64_t>();
    if (!length)
      return length.takeError();
    return need(*length);
  }
  case '.': {
    auto result = pop();
    if (!result)
      return result.takeError();
    stack.push_back(std::move(*result));
    stopped = true;
    return llvm::Error::success();
  }
  case '(':
    if (marks.size() >= limits.maxDepth)
      return error(formatv("MARKs nest deeper than {0}", limits.maxDepth));
    marks.push_back(stack.size());
    return llvm::Error::success();
  case '0':
    return pop().takeError();
  case '1':
    return popMark().takeError();
  case '2': {
    auto value = top();
    if (!value)
      return value.takeError();
    shared.try_emplace((*value)->get(), **value);
    return push(**value);
  }
  case 'N':
    return pushNew(Value::make(NoneValue{}));
  case 0x88:
    return pushNew(Value::make(true));
  case 0x89:
    return pushNew(Value::make(false));
  case 'J': {
    auto v = readLE<int32_t>();
    return v ? pushNew(Value::make(int64_t(*v))) : v.takeError();
  }
  case 'K': {
    auto v = readLE<uint8_t>();
    return v ? pushNew(Value::make(int64_t(*v))) : v.takeError();
  }
  case 'M': {
    auto v = readLE<uint16_t>();
    return v ? pushNew(Value::make(int64_t(*v))) : v.takeError();
  }
  case 0x8a: {
    auto n = readLE<uint8_t>();
    return n ? pushLong(*n) : n.takeError();
  }
  case 0x8b: {
    auto n = readLE<int32_t>();
    if (!n)
      return n.takeError();
    if (*n < 0)
      return error("negative length");
    return pushLong(*n);
  }
  case 'G': {
    auto bits = take(8);
    if (!bits)
      return bits.takeError();
    uint64_t raw = llvm::support::endian::read64be(bits->data());
    return pushNew(Value::make(std::bit_cast<double>(raw)));
  }
  case 'T': {
    auto n = readLE<int32_t>();
    if (!n)
      return n.takeError();
    if (*n < 0)
      return error("negative length");
    return pushString(*n, false);
  }
  case 'U':
  case 0x8c:
  case 'C': {
    auto n = readLE<uint8_t>();
    return n ? pushString(*n, opcode == 'C') : n.takeError();
  }
  case 'X':
  case 'B': {
    auto n = readLE<uint32_t>();
    return n ? pushString(*n, opcode == 'B') : n.takeError();
  }
  case 0x8d:
  case 0x8e:
  case 0x96: {
    auto n = readLE<uint64_t>();
    return n ? pushString(*n, opcode != 0x8d) : n.takeError();
  }
  case ')':
    return pushNew(Value::make(TupleValue{}));
  case 0x85:
  case 0x86:
  case 0x87: {
    size_t count = opcode - 0x84;
    TupleValue tuple;
    tuple.items.resize(count);
    for (size_t i = count; i-- > 0;) {
      auto item = pop();
      if (!item)
        return item.takeError();
      tuple.items[i] = std::move(*item);
    }
    return pushNew(Value::make(std::move(tuple)));
  }
  case 't': {
    auto items = popMark();
    return items ? pushNew(Value::make(TupleValue{std::move(*items)})) : items.takeError();
  }
  case ']':
    return pushNew(Value::make(ListValue{}));
  case 'l': {
    auto items = popMark();
    return items ? pushNew(Value::make(ListValue{std::move(*items)})) : items.takeError();
  }
  case '}':
    return pushNew(Value::make(DictValue{}));
  case 'd': {
    auto items = popMark();
    if (!items)
      return items.takeError();
    if (llvm::Error err = pushNew(Value::make(DictValue{})))
      return err;
    return setItems(std::move(*items));
  }
  case 'a': {
    auto item = pop();
    return item ? appendItems({std::move(*item)}) : item.takeError();
  }
  case 'e':
  case 0x90: {
    auto items = popMark();
    if (!items)
      return items.takeError();
    if (opcode == 0x90) {
      auto target = top();
      if (!target)
        return target.takeError();
      const auto *set = (**target)->get<ObjectValue>();
      if (!set || !detail::isSetType(set->type) || set->type.name != "set" || set->newObj)
        return error("ADDITEMS to a " + describe(***target));
    }
    return appendItems(std::move(*items));
  }
  case 's': {
    auto value = pop();
    if (!value)
      return value.takeError();
    auto key = pop();
    if (!key)
      return key.takeError();
    return setItems({std::move(*key), std::move(*value)});
  }
  case 'u': {
    auto items = popMark();
    return items ? setItems(std::move(*items)) : items.takeError();
  }
  case 0x8f:
  case 0x91: {
    ObjectValue set;
    set.type = GlobalValue{"builtins", opcode == 0x8f ? "set" : "frozenset"};
    set.args = Value::make(TupleValue{});
    if (opcode == 0x91) {
      auto items = popMark();
      if (!items)
        return items.takeError();
      set.listItems = std::move(*items);
    }
    return pushNew(Value::make(std::move(set)));
  }
  case 'h': {
    auto index = readLE<uint8_t>();
    return index ? memoGet(*index) : index.takeError();
  }
  case 'j': {
    auto index = readLE<uint32_t>();
    return index ? memoGet(*index) : index.takeError();
  }
  case 'q': {
    auto index = readLE<uint8_t>();
    return index ? memoPut(*index) : index.takeError();
  }
  case 'r': {
    auto index = readLE<uint32_t>();
    return index ? memoPut(*index) : index.takeError();
  }
  case 0x94:
    return memoPut(memo.size());
  case 'c': {
    auto module = readLine();
    if (!module)
      return module.takeError();
    auto name = readLine();
    if (!name)
      return name.takeError();
    return pushNew(Value::make(GlobalValue{std::move(*module), std::move(*name)}));
  }
  case 0x93: {
    auto name = pop();
    if (!name)
      return name.takeError();
    auto module = pop();
    if (!module)
      return module.takeError();
    const auto *n = (*name)->get<std::string>();
    const auto *m = (*module)->get<std::string>();
    if (!n || !m)
      return error("module and name must be strings");
    return pushNew(Value::make(GlobalValue{*m, *n}));
  }
  case 'R':
    return reduce();
  case 0x81:
    return newObject(false);
  case 0x92:
    return newObject(true);
  case 'b':
    return build();
  case 'Q':
    return persistentLoad();
  case 0x98: // READONLY_BUFFER: marks the top buffer read-only; loom's bytes are.
    return top().takeError();
  case 0x97:
    return error("out-of-band buffers are not supported");
  case 0x82:
  case 0x83:
  case 0x84:
    return error("extension registry codes are not supported");
  default:
    if (opcodeName(opcode))
      return error("opcode is not supported");
    return error("unknown opcode (protocols 0/1 text opcodes are not supported)");
  }
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
      return std::move(err);
  }
  return stack.back();
}

} // namespace

llvm::Expected<ValuePtr> loom::ckpt::unpickle(llvm::ArrayRef<uint8_t> data,
                                              llvm::StringRef source, PersistentLoader loader,
                                              const PickleLimits &limits) {
  return Unpickler(data, source, loader, limits).run();
}
