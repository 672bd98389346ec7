//===- PickleWriter.cpp - Value trees back into torch.save's pickles ------===//
//
// Emits protocol 2 with the opcodes torch.load(weights_only=True) understands for
// everything it can hold (BINUNICODE strings, BININT*/LONG1 ints, OrderedDict via
// REDUCE, tensors via _rebuild_tensor_v2 over persistent-id storages). Values the
// weights-only loader cannot hold (floats, bytes, opaque objects) use the plain
// pickle opcodes, so a full Megatron checkpoint still round-trips through torch.load.
// Shared values are memoized so a DAG stays a DAG.
//
//===----------------------------------------------------------------------===//
#include "PickleReduce.h"
#include "loom/Checkpoint/Pickle.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Endian.h"

#include <bit>

using namespace loom::ckpt;

namespace {
/// Python's pickler batches APPENDS/SETITEMS by this many items.
constexpr size_t kBatch = 1000;

/// Sets built the usual way are written as set([members]); anything odder about
/// them (NEWOBJ) goes the generic way so that it reads back as it was.
bool writesMembersInline(const ObjectValue &object) {
  return detail::isSetType(object.type) && !object.newObj;
}

class Pickler {
public:
  explicit Pickler(StorageNamer namer) : namer(namer) {}

  llvm::Expected<std::string> run(const Value &root) {
    out += "\x80\x02";
    if (llvm::Error err = write(root))
      return err;
    out += '.';
    return std::move(out);
  }

private:
  void op(char c) { out += c; }
  void u32(uint32_t v) {
    char b[4];
    llvm::support::endian::write32le(b, v);
    out.append(b, 4);
  }
  void u64(uint64_t v) {
    char b[8];
    llvm::support::endian::write64le(b, v);
    out.append(b, 8);
  }
  void integer(int64_t v);
  void string(llvm::StringRef s) {
    op('X');
    u32(s.size());
    out += s;
  }
  void bytes(llvm::StringRef s);
  void global(llvm::StringRef module, llvm::StringRef name);
  llvm::Error globalOf(const GlobalValue &value);
  uint32_t memoize();
  void put(const Value &value) { memo[&value] = memoize(); }
  llvm::Error items(const std::vector<ValuePtr> &values, char terminator);
  llvm::Error entries(const std::vector<std::pair<ValuePtr, ValuePtr>> &pairs);
  llvm::Error persistentId(const std::shared_ptr<const Storage> &storage, DType dtype);
  llvm::Error tensor(const TensorValue &value);
  llvm::Error object(const ObjectValue &value);
  llvm::Error write(const Value &value);

  StorageNamer namer;
  std::string out;
  llvm::DenseMap<const Value *, uint32_t> memo;
  llvm::StringMap<uint32_t> globals;
  uint32_t nextMemo = 0;
};

void Pickler::integer(int64_t v) {
  if (v >= 0 && v < 0x100) {
    op('K');
    out += static_cast<char>(v);
  } else if (v >= 0 && v < 0x10000) {
    op('M');
    out += static_cast<char>(v & 0xff);
    out += static_cast<char>(v >> 8);
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    op('J');
    u32(static_cast<uint32_t>(v));
  } else {
    // LONG1: the shortest little-endian two's complement that keeps the sign.
    std::string digits;
    uint64_t bits = static_cast<uint64_t>(v);
    for (int i = 0; i < 8; ++i)
      digits += static_cast<char>((bits >> (8 * i)) & 0xff);
    while (digits.size() > 1) {
      char last = digits.back(), before = digits[digits.size() - 2];
      bool redundant = (last == 0 && !(before & 0x80)) ||
                       (last == static_cast<char>(0xff) && (before & 0x80));
      if (!redundant)
        break;
      digits.pop_back();
    }
    out += '\x8a';
    out += static_cast<char>(digits.size());
    out += digits;
  }
}

void Pickler::bytes(llvm::StringRef s) {
  if (s.size() < 0x100) {
    op('C');
    out += static_cast<char>(s.size());
  } else if (s.size() <= UINT32_MAX) {
    op('B');
    u32(s.size());
  } else {
    out += '\x8e';
    u64(s.size());
  }
  out += s;
}

/// A global named by the tree (not one of the writer's own constants): GLOBAL spells
/// names as lines, so a newline in one would inject opcodes into the output.
llvm::Error Pickler::globalOf(const GlobalValue &value) {
  if (llvm::StringRef(value.module).contains('\n') || llvm::StringRef(value.name).contains('\n'))
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "global name with a newline cannot be pickled");
  global(value.module, value.name);
  return llvm::Error::success();
}

void Pickler::global(llvm::StringRef module, llvm::StringRef name) {
  std::string key = (module + "\n" + name).str();
  if (auto it = globals.find(key); it != globals.end()) {
    uint32_t index = it->second;
    if (index < 0x100) {
      op('h');
      out += static_cast<char>(index);
    } else {
      op('j');
      u32(index);
    }
    return;
  }
  op('c');
  out += key;
  out += '\n';
  globals[key] = memoize();
}

/// Memoizes whatever was just written under the next index.
uint32_t Pickler::memoize() {
  uint32_t index = nextMemo++;
  if (index < 0x100) {
    op('q');
    out += static_cast<char>(index);
  } else {
    op('r');
    u32(index);
  }
  return index;
}

llvm::Error Pickler::items(const std::vector<ValuePtr> &values, char terminator) {
  for (size_t start = 0; start < values.size(); start += kBatch) {
    op('(');
    for (size_t i = start; i < std::min(values.size(), start + kBatch); ++i)
      if (llvm::Error err = write(*values[i]))
        return err;
    op(terminator);
  }
  return llvm::Error::success();
}

llvm::Error Pickler::entries(const std::vector<std::pair<ValuePtr, ValuePtr>> &pairs) {
  for (size_t start = 0; start < pairs.size(); start += kBatch) {
    op('(');
    for (size_t i = start; i < std::min(pairs.size(), start + kBatch); ++i) {
      if (llvm::Error err = write(*pairs[i].first))
        return err;
      if (llvm::Error err = write(*pairs[i].second))
        return err;
    }
    op('u');
  }
  return llvm::Error::success();
}

llvm::Error Pickler::persistentId(const std::shared_ptr<const Storage> &storage, DType dtype) {
  auto id = namer(storage, dtype);
  if (!id)
    return id.takeError();
  op('(');
  string("storage");
  global("torch", torchStorageName(id->dtype));
  string(id->key);
  // Storages are written for loading anywhere; the source device is not kept.
  string("cpu");
  integer(static_cast<int64_t>(id->numel));
  op('t');
  op('Q');
  return llvm::Error::success();
}

llvm::Error Pickler::tensor(const TensorValue &value) {
  if (value.parameter)
    global("torch._utils", "_rebuild_parameter");
  if (value.parameter)
    op('(');
  const Tensor &t = value.tensor;
  global("torch._utils", "_rebuild_tensor_v2");
  op('(');
  if (llvm::Error err = persistentId(t.storage, t.dtype))
    return err;
  integer(t.offset);
  auto dims = [&](llvm::ArrayRef<int64_t> values) {
    op('(');
    for (int64_t v : values)
      integer(v);
    op('t');
  };
  dims(t.shape);
  dims(t.strides);
  // A parameter's data tensor never requires grad itself; the flag is the parameter's.
  op(value.requiresGrad && !value.parameter ? '\x88' : '\x89');
  global("collections", "OrderedDict");
  op(')');
  op('R');
  op('t');
  op('R');
  if (value.parameter) {
    op(value.requiresGrad ? '\x88' : '\x89');
    global("collections", "OrderedDict");
    op(')');
    op('R');
    op('t');
    op('R');
  }
  return llvm::Error::success();
}

llvm::Error Pickler::object(const ObjectValue &value) {
  if (writesMembersInline(value)) {
    // Protocol 2 spelling: set([items]).
    if (llvm::Error err = globalOf(value.type))
      return err;
    op(']');
    if (llvm::Error err = items(value.listItems, 'e'))
      return err;
    op('\x85');
    op('R');
    return llvm::Error::success();
  }
  if (llvm::Error err = globalOf(value.type))
    return err;
  if (value.args) {
    if (llvm::Error err = write(*value.args))
      return err;
  } else {
    op(')');
  }
  if (value.newObj && value.kwargs) {
    if (llvm::Error err = write(*value.kwargs))
      return err;
    op('\x92');
  } else {
    op(value.newObj ? '\x81' : 'R');
  }
  return llvm::Error::success();
}

llvm::Error Pickler::write(const Value &value) {
  if (auto it = memo.find(&value); it != memo.end()) {
    if (it->second < 0x100) {
      op('h');
      out += static_cast<char>(it->second);
    } else {
      op('j');
      u32(it->second);
    }
    return llvm::Error::success();
  }
  switch (value.kind()) {
  case Value::Kind::None:
    op('N');
    return llvm::Error::success();
  case Value::Kind::Bool:
    op(*value.get<bool>() ? '\x88' : '\x89');
    return llvm::Error::success();
  case Value::Kind::Int:
    integer(*value.get<int64_t>());
    return llvm::Error::success();
  case Value::Kind::Float: {
    op('G');
    char b[8];
    llvm::support::endian::write64be(b, std::bit_cast<uint64_t>(*value.get<double>()));
    out.append(b, 8);
    return llvm::Error::success();
  }
  case Value::Kind::Str:
    string(*value.get<std::string>());
    return llvm::Error::success();
  case Value::Kind::Bytes:
    bytes(value.get<BytesValue>()->data);
    return llvm::Error::success();
  case Value::Kind::Global:
    return globalOf(*value.get<GlobalValue>());
  case Value::Kind::Tuple: {
    const auto *tuple = value.get<TupleValue>();
    if (tuple->torchSize)
      global("torch", "Size");
    size_t n = tuple->items.size();
    if (n == 0) {
      op(')');
    } else {
      if (n > 3)
        op('(');
      for (const ValuePtr &item : tuple->items)
        if (llvm::Error err = write(*item))
          return err;
      op(n > 3 ? 't' : static_cast<char>(0x84 + n));
    }
    if (tuple->torchSize) {
      op('\x85');
      op('R');
    }
    put(value);
    return llvm::Error::success();
  }
  case Value::Kind::List:
    op(']');
    put(value);
    return items(value.get<ListValue>()->items, 'e');
  case Value::Kind::Dict: {
    const auto *dict = value.get<DictValue>();
    if (dict->ordered) {
      global("collections", "OrderedDict");
      op(')');
      op('R');
    } else {
      op('}');
    }
    put(value);
    if (llvm::Error err = entries(dict->entries))
      return err;
    if (dict->state) {
      if (llvm::Error err = write(*dict->state))
        return err;
      op('b');
    }
    return llvm::Error::success();
  }
  case Value::Kind::Storage: {
    const auto *storage = value.get<StorageValue>();
    if (llvm::Error err = persistentId(storage->data, storage->dtype))
      return err;
    put(value);
    return llvm::Error::success();
  }
  case Value::Kind::Tensor:
    if (llvm::Error err = tensor(*value.get<TensorValue>()))
      return err;
    put(value);
    return llvm::Error::success();
  case Value::Kind::Object: {
    const auto *obj = value.get<ObjectValue>();
    if (llvm::Error err = object(*obj))
      return err;
    put(value);
    if (!writesMembersInline(*obj))
      if (llvm::Error err = items(obj->listItems, 'e'))
        return err;
    if (llvm::Error err = entries(obj->dictItems))
      return err;
    if (obj->state) {
      if (llvm::Error err = write(*obj->state))
        return err;
      op('b');
    }
    return llvm::Error::success();
  }
  }
  return llvm::Error::success();
}
} // namespace

llvm::Expected<std::string> loom::ckpt::pickle(const Value &root, StorageNamer namer) {
  return Pickler(namer).run(root);
}
