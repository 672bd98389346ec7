//===- PickleReduce.cpp - modelled constructors of the pickle VM ----------===//
//
// The only place where a GLOBAL name changes what the VM builds. Each entry checks
// its arguments as strictly as the Python function would before it could succeed,
// so a malformed tensor rebuild is an error, not a tensor reading outside its storage.
//
//===----------------------------------------------------------------------===//
#include "PickleReduce.h"

#include "llvm/Support/ConvertUTF.h"
#include "llvm/Support/FormatVariadic.h"

using namespace loom::ckpt;
using llvm::formatv;

namespace {
llvm::Error argError(const GlobalValue &callable, const llvm::Twine &what) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 callable.qualified() + ": " + what);
}

bool is(const GlobalValue &g, llvm::StringRef module, llvm::StringRef name) {
  return g.module == module && g.name == name;
}

llvm::Expected<llvm::SmallVector<int64_t, 4>> intTuple(const GlobalValue &callable,
                                                       const Value &value,
                                                       llvm::StringRef what) {
  const auto *items = value.sequence();
  if (!items)
    return argError(callable, what + " is a " + describe(value) + ", not a tuple");
  llvm::SmallVector<int64_t, 4> out;
  for (const ValuePtr &item : *items) {
    const auto *i = item->get<int64_t>();
    if (!i)
      return argError(callable, what + " holds a " + describe(*item));
    out.push_back(*i);
  }
  return out;
}

/// torch._utils._rebuild_tensor[_v2](storage, offset, size, stride, ...).
llvm::Expected<ValuePtr> rebuildTensor(const GlobalValue &callable,
                                       const std::vector<ValuePtr> &args, size_t minArgs) {
  if (args.size() < minArgs || args.size() > 7)
    return argError(callable, formatv("takes {0}-7 arguments, got {1}", minArgs, args.size()));
  const auto *storage = args[0]->get<StorageValue>();
  if (!storage)
    return argError(callable, "storage argument is a " + describe(*args[0]));
  const auto *offset = args[1]->get<int64_t>();
  if (!offset)
    return argError(callable, "offset is a " + describe(*args[1]));
  auto shape = intTuple(callable, *args[2], "size");
  if (!shape)
    return shape.takeError();
  auto strides = intTuple(callable, *args[3], "stride");
  if (!strides)
    return strides.takeError();
  TensorValue out;
  out.tensor.dtype = storage->dtype;
  out.tensor.shape = std::move(*shape);
  out.tensor.strides = std::move(*strides);
  out.tensor.offset = *offset;
  out.tensor.storage = storage->data;
  if (std::optional<std::string> bad = out.tensor.checkView())
    return argError(callable, "tensor view: " + *bad);
  if (args.size() > 4) {
    const auto *requiresGrad = args[4]->get<bool>();
    if (!requiresGrad)
      return argError(callable, "requires_grad is a " + describe(*args[4]));
    out.requiresGrad = *requiresGrad;
  }
  return Value::make(std::move(out));
}

/// torch._utils._rebuild_parameter(data, requires_grad, backward_hooks).
llvm::Expected<ValuePtr> rebuildParameter(const GlobalValue &callable,
                                          const std::vector<ValuePtr> &args) {
  if (args.size() != 3)
    return argError(callable, formatv("takes 3 arguments, got {0}", args.size()));
  const auto *data = args[0]->get<TensorValue>();
  const auto *requiresGrad = args[1]->get<bool>();
  if (!data || !requiresGrad)
    return argError(callable, "expects (tensor, bool, hooks)");
  TensorValue out = *data;
  out.parameter = true;
  out.requiresGrad = *requiresGrad;
  return Value::make(std::move(out));
}

/// Protocol 2 writes bytes as _codecs.encode(<str of code points < 256>, 'latin1').
llvm::Expected<ValuePtr> latin1Bytes(const GlobalValue &callable,
                                     const std::vector<ValuePtr> &args) {
  const auto *text = args.size() == 2 ? args[0]->get<std::string>() : nullptr;
  const auto *encoding = args.size() == 2 ? args[1]->get<std::string>() : nullptr;
  if (!text || !encoding || (*encoding != "latin1" && *encoding != "latin-1"))
    return argError(callable, "only (str, 'latin1') is modelled");
  BytesValue out;
  const char *at = text->data();
  const char *end = at + text->size();
  while (at < end) {
    llvm::UTF32 codePoint;
    if (llvm::convertUTF8Sequence(reinterpret_cast<const llvm::UTF8 **>(&at),
                                  reinterpret_cast<const llvm::UTF8 *>(end), &codePoint,
                                  llvm::strictConversion) != llvm::conversionOK ||
        codePoint > 0xff)
      return argError(callable, "string is not latin-1");
    out.data.push_back(static_cast<char>(codePoint));
  }
  return Value::make(std::move(out));
}

ValuePtr opaque(const GlobalValue &callable, const ValuePtr &args) {
  ObjectValue object;
  object.type = callable;
  object.args = args;
  return Value::make(std::move(object));
}
} // namespace

bool loom::ckpt::detail::isSetType(const GlobalValue &type) {
  // Protocol 2 spells the builtins module "__builtin__" (Python 2's name).
  return (type.module == "builtins" || type.module == "__builtin__") &&
         (type.name == "set" || type.name == "frozenset");
}

llvm::Expected<ValuePtr> loom::ckpt::detail::reduce(const GlobalValue &callable,
                                                    const ValuePtr &argsValue) {
  const auto *tuple = argsValue->get<TupleValue>();
  if (!tuple)
    return argError(callable, "arguments are a " + describe(*argsValue) + ", not a tuple");
  const std::vector<ValuePtr> &args = tuple->items;

  if (is(callable, "collections", "OrderedDict") && args.empty()) {
    DictValue dict;
    dict.ordered = true;
    return Value::make(std::move(dict));
  }
  if (is(callable, "torch", "Size") && args.size() == 1) {
    auto dims = intTuple(callable, *args[0], "size");
    if (!dims)
      return dims.takeError();
    TupleValue size;
    size.items = args[0]->sequence() ? *args[0]->sequence() : std::vector<ValuePtr>{};
    size.torchSize = true;
    return Value::make(std::move(size));
  }
  if (is(callable, "torch._utils", "_rebuild_tensor_v2"))
    return rebuildTensor(callable, args, 6);
  if (is(callable, "torch._utils", "_rebuild_tensor"))
    return rebuildTensor(callable, args, 4);
  if (is(callable, "torch._utils", "_rebuild_parameter"))
    return rebuildParameter(callable, args);
  if (is(callable, "_codecs", "encode"))
    return latin1Bytes(callable, args);
  // Protocol 2 writes set(items) as REDUCE(builtins.set, ([items],)); keep the same
  // shape EMPTY_SET/ADDITEMS build so both spellings read alike.
  if (isSetType(callable) && args.size() == 1 && args[0]->get<ListValue>()) {
    ObjectValue set;
    set.type = callable;
    set.args = Value::make(TupleValue{});
    set.listItems = args[0]->get<ListValue>()->items;
    return Value::make(std::move(set));
  }
  return opaque(callable, argsValue);
}
