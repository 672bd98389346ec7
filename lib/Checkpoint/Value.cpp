//===- Value.cpp - pickle value tree helpers ------------------------------===//
#include "loom/Checkpoint/Value.h"

#include <cmath>
#include <cstring>

using namespace loom::ckpt;

ValuePtr DictValue::find(llvm::StringRef key) const {
  for (const auto &[k, v] : entries)
    if (const auto *s = k->get<std::string>(); s && *s == key)
      return v;
  return nullptr;
}

const std::vector<ValuePtr> *Value::sequence() const {
  if (const auto *list = get<ListValue>())
    return &list->items;
  if (const auto *tuple = get<TupleValue>())
    return &tuple->items;
  return nullptr;
}

void loom::ckpt::forEachChild(const Value &value,
                              llvm::function_ref<void(const ValuePtr &)> visit) {
  if (const auto *items = value.sequence()) {
    for (const ValuePtr &item : *items)
      visit(item);
  } else if (const auto *dict = value.get<DictValue>()) {
    for (const auto &[key, item] : dict->entries) {
      visit(key);
      visit(item);
    }
    if (dict->state)
      visit(dict->state);
  } else if (const auto *object = value.get<ObjectValue>()) {
    for (const ValuePtr *part : {&object->args, &object->kwargs, &object->state})
      if (*part)
        visit(*part);
    for (const ValuePtr &item : object->listItems)
      visit(item);
    for (const auto &[key, item] : object->dictItems) {
      visit(key);
      visit(item);
    }
  }
}

std::string loom::ckpt::describe(const Value &value) {
  switch (value.kind()) {
  case Value::Kind::None:
    return "None";
  case Value::Kind::Bool:
    return "bool";
  case Value::Kind::Int:
    return "int";
  case Value::Kind::Float:
    return "float";
  case Value::Kind::Str:
    return "str";
  case Value::Kind::Bytes:
    return "bytes";
  case Value::Kind::List:
    return "list";
  case Value::Kind::Tuple:
    return value.get<TupleValue>()->torchSize ? "torch.Size" : "tuple";
  case Value::Kind::Dict:
    return value.get<DictValue>()->ordered ? "OrderedDict" : "dict";
  case Value::Kind::Global:
    return "global " + value.get<GlobalValue>()->qualified();
  case Value::Kind::Storage:
    return "torch." + torchStorageName(value.get<StorageValue>()->dtype).str();
  case Value::Kind::Tensor:
    return "tensor";
  case Value::Kind::Object:
    return value.get<ObjectValue>()->type.qualified();
  }
  return "?";
}

namespace {
/// A tuple dict key as Python prints it, "(torch.bfloat16, torch.float32)", when its
/// items are globals, ints or strings (Megatron's distrib_optim.pt keys its buffers
/// by (param dtype, grad dtype)); nullopt otherwise.
std::optional<std::string> tupleKeyText(const TupleValue &tuple) {
  std::string text = "(";
  for (size_t i = 0; i < tuple.items.size(); ++i) {
    const Value &item = *tuple.items[i];
    text += i ? ", " : "";
    if (const auto *global = item.get<GlobalValue>())
      text += global->qualified();
    else if (const auto *n = item.get<int64_t>())
      text += std::to_string(*n);
    else if (const auto *s = item.get<std::string>())
      text += "'" + *s + "'";
    else
      return std::nullopt;
  }
  return text + (tuple.items.size() == 1 ? ",)" : ")");
}

void collect(const Value &value, std::string &path, std::vector<NamedTensor> &out) {
  auto visit = [&](llvm::StringRef key, const Value &child) {
    size_t size = path.size();
    if (!path.empty())
      path += '.';
    path += key;
    collect(child, path, out);
    path.resize(size);
  };
  if (const auto *tensor = value.get<TensorValue>()) {
    out.push_back({path, tensor->tensor});
  } else if (const auto *dict = value.get<DictValue>()) {
    for (const auto &[key, child] : dict->entries) {
      if (const auto *s = key->get<std::string>())
        visit(*s, *child);
      else if (const auto *i = key->get<int64_t>())
        visit(std::to_string(*i), *child);
      else if (const auto *tuple = key->get<TupleValue>())
        if (auto text = tupleKeyText(*tuple))
          visit(*text, *child);
    }
  } else if (const auto *items = value.sequence()) {
    for (size_t i = 0; i < items->size(); ++i)
      visit(std::to_string(i), *(*items)[i]);
  }
}
} // namespace

std::vector<NamedTensor> loom::ckpt::collectTensors(const Value &root) {
  std::vector<NamedTensor> out;
  std::string path;
  collect(root, path, out);
  return out;
}

std::optional<int64_t> loom::ckpt::integerOf(const ValuePtr &value) {
  if (!value)
    return std::nullopt;
  if (auto *i = value->get<int64_t>())
    return *i;
  if (auto *object = value->get<ObjectValue>())
    if (object->args)
      if (auto *items = object->args->sequence(); items && items->size() == 1)
        return integerOf((*items)[0]);
  return std::nullopt;
}

std::optional<int64_t> loom::ckpt::stepNumber(const ValuePtr &value) {
  if (auto n = integerOf(value))
    return n;
  if (const double *d = value ? value->get<double>() : nullptr)
    if (*d >= 0 && *d < 9.0e18 && *d == std::trunc(*d))
      return int64_t(*d);
  const TensorValue *t = value ? value->get<TensorValue>() : nullptr;
  if (!t || t->tensor.numel() != 1 || t->tensor.checkView())
    return std::nullopt;
  std::vector<uint8_t> bytes = t->tensor.toBytes();
  switch (t->tensor.dtype) {
  case DType::Int64: {
    int64_t v;
    std::memcpy(&v, bytes.data(), 8);
    return v;
  }
  case DType::Float32: {
    float v;
    std::memcpy(&v, bytes.data(), 4);
    return int64_t(v);
  }
  case DType::Float64: {
    double v;
    std::memcpy(&v, bytes.data(), 8);
    return int64_t(v);
  }
  default:
    return std::nullopt;
  }
}

std::optional<llvm::json::Value> loom::ckpt::plainJson(const Value &value) {
  if (value.get<NoneValue>())
    return llvm::json::Value(nullptr);
  if (auto *i = value.get<int64_t>())
    return llvm::json::Value(*i);
  if (auto *b = value.get<bool>())
    return llvm::json::Value(*b);
  if (auto *d = value.get<double>()) {
    if (std::isfinite(*d) && *d == std::trunc(*d))
      return llvm::json::Value(llvm::json::Object{{"$float", *d}});
    return llvm::json::Value(*d);
  }
  if (auto *str = value.get<std::string>())
    return llvm::json::Value(*str);
  if (auto *items = value.sequence()) {
    llvm::json::Array array;
    for (const ValuePtr &item : *items) {
      auto json = plainJson(*item);
      if (!json)
        return std::nullopt;
      array.push_back(std::move(*json));
    }
    if (value.get<TupleValue>() && !value.get<TupleValue>()->torchSize)
      return llvm::json::Value(llvm::json::Object{{"$tuple", std::move(array)}});
    return llvm::json::Value(std::move(array));
  }
  return std::nullopt;
}
