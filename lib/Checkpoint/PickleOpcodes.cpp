//===- PickleOpcodes.cpp - decoding and dispatch of pickle opcodes --------===//
//
// One case per opcode of protocols 2-5: immediate arguments are read through the
// bounded readers of Unpickler.cpp, values built through pushNew (which measures
// them against the limits), everything else delegated to the machine.
//
//===----------------------------------------------------------------------===//
#include "Unpickler.h"
#include "PickleReduce.h"

#include "llvm/Support/FormatVariadic.h"

#include <bit>

using namespace loom::ckpt;
using namespace loom::ckpt::detail;
using llvm::formatv;

const char *loom::ckpt::detail::opcodeName(uint8_t op) {
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
    // No importable name holds a newline, and GLOBAL spells names as lines: such a
    // name, written back, would turn into other opcodes.
    if (llvm::StringRef(*n).contains('\n') || llvm::StringRef(*m).contains('\n'))
      return error("module or name contains a newline");
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


llvm::Expected<ValuePtr> loom::ckpt::unpickle(llvm::ArrayRef<uint8_t> data,
                                              llvm::StringRef source, PersistentLoader loader,
                                              const PickleLimits &limits) {
  return Unpickler(data, source, loader, limits).run();
}

