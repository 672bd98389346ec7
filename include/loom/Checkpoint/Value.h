//===- Value.h - the object tree a checkpoint pickle describes --*- C++ -*-===//
//
// What loom's pickle VM builds instead of Python objects: scalars, strings, bytes,
// containers, torch tensors and storages, and, for every class or function the
// pickle names that loom does not model, an *opaque* Object that records the name
// and the arguments/state the pickle would have passed to it. Nothing is ever
// imported or called; an Object is data that can be inspected or written back.
//
// Values are shared (a pickle memo can reference one object from several places),
// so the tree is a DAG of shared_ptrs. The unpickler refuses cycles.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_VALUE_H
#define LOOM_CHECKPOINT_VALUE_H

#include "loom/Checkpoint/Tensor.h"

#include "llvm/Support/JSON.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace loom::ckpt {

class Value;
using ValuePtr = std::shared_ptr<Value>;

struct NoneValue {};

struct BytesValue {
  std::string data;
};

struct ListValue {
  std::vector<ValuePtr> items;
};

struct TupleValue {
  std::vector<ValuePtr> items;
  /// Built by torch.Size(...); written back as one.
  bool torchSize = false;
};

struct DictValue {
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;
  /// Built by collections.OrderedDict(); written back as one.
  bool ordered = false;
  /// Instance attributes BUILD set on an OrderedDict (Module.state_dict() keeps its
  /// `_metadata` there), else null.
  ValuePtr state;

  /// The value under a string key, or null.
  ValuePtr find(llvm::StringRef key) const;
};

/// A module-qualified name from GLOBAL/STACK_GLOBAL, e.g. {"argparse", "Namespace"}.
struct GlobalValue {
  std::string module;
  std::string name;
  std::string qualified() const { return module + "." + name; }
};

/// A torch storage from a persistent id: typed bytes, possibly shared by tensors.
struct StorageValue {
  DType dtype = DType::UInt8;
  /// Elements, as the persistent id declares them.
  uint64_t numel = 0;
  /// Device the storage was saved from ("cpu", "cuda:0"); informative only.
  std::string location;
  std::shared_ptr<const Storage> data;
};

/// A tensor as torch pickles it: the view plus what _rebuild_tensor_v2 and
/// _rebuild_parameter carry besides it.
struct TensorValue {
  Tensor tensor;
  bool requiresGrad = false;
  bool parameter = false;
};

/// Anything the pickle constructs from a GLOBAL loom does not model: Megatron's
/// argparse.Namespace, enums, DeepSpeed's classes, numpy arrays — or os.system.
struct ObjectValue {
  GlobalValue type;
  /// NEWOBJ (cls.__new__(cls, *args)) rather than REDUCE (type(*args)).
  bool newObj = false;
  /// The argument tuple.
  ValuePtr args;
  /// NEWOBJ_EX keyword arguments, else null.
  ValuePtr kwargs;
  /// BUILD state (usually the instance __dict__), else null.
  ValuePtr state;
  /// APPEND(S)/SETITEM(S) applied to the object (list and dict subclasses).
  std::vector<ValuePtr> listItems;
  std::vector<std::pair<ValuePtr, ValuePtr>> dictItems;
};

class Value {
public:
  enum class Kind { None, Bool, Int, Float, Str, Bytes, List, Tuple, Dict, Global, Storage, Tensor, Object };
  // Alternatives in Kind's order, so kind() is the variant index.
  using Payload = std::variant<NoneValue, bool, int64_t, double, std::string, BytesValue,
                               ListValue, TupleValue, DictValue, GlobalValue, StorageValue,
                               TensorValue, ObjectValue>;

  explicit Value(Payload payload) : payload(std::move(payload)) {}
  template <typename T> static ValuePtr make(T &&alternative) {
    return std::make_shared<Value>(Payload(std::forward<T>(alternative)));
  }

  Kind kind() const { return static_cast<Kind>(payload.index()); }
  template <typename T> T *get() { return std::get_if<T>(&payload); }
  template <typename T> const T *get() const { return std::get_if<T>(&payload); }
  /// Items of a list or tuple, else null.
  const std::vector<ValuePtr> *sequence() const;

  Payload payload;
};

/// Calls `visit` on every value `value` refers to directly.
void forEachChild(const Value &value, llvm::function_ref<void(const ValuePtr &)> visit);

/// "int", "OrderedDict", "argparse.Namespace", ... for messages and listings.
std::string describe(const Value &value);

/// Every tensor reachable through dicts, lists and tuples, named by the path of
/// keys and indices joined with '.', in pickle order ("model.decoder.0.weight"); a
/// tuple key of globals, ints or strings is spelled as Python prints it
/// ("0.(torch.bfloat16, torch.float32).param").
/// Tensors inside opaque objects are not listed: their meaning is the class's.
std::vector<NamedTensor> collectTensors(const Value &root);

/// An int, or an object built from one int (numpy scalars); nullopt otherwise.
std::optional<int64_t> integerOf(const ValuePtr &value);
/// An optimizer's step count: integerOf, a whole float (Megatron's distributed
/// optimizer saves the step tensor's .item()), or a one-element int64/float tensor
/// (torch's Adam keeps `step` as a float tensor since 1.12).
std::optional<int64_t> stepNumber(const ValuePtr &value);

/// A plain value as JSON: None, ints, floats, bools, strings, and lists and tuples of
/// them; nullopt for anything else (tensors, objects, dicts). Tuples are
/// {"$tuple": [...]} and whole floats {"$float": x}, as reshard's skeletons spell them,
/// so that writing them back keeps their Python types.
std::optional<llvm::json::Value> plainJson(const Value &value);

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_VALUE_H
