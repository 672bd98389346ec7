//===- Pickle.h - a pickle VM that builds data and runs nothing -*- C++ -*-===//
//
// Python's pickle format is a program for a stack machine whose GLOBAL and REDUCE
// opcodes import and call arbitrary functions; loading an untrusted checkpoint with
// pickle runs whatever it names. loom's VM interprets the same opcodes (protocols
// 2-5) but GLOBAL only produces a name and REDUCE/NEWOBJ/BUILD only record their
// arguments: the few constructors checkpoints need (OrderedDict, torch.Size, torch's
// tensor rebuild functions, bytes in protocol 2) are modelled, every other name
// becomes an opaque ObjectValue. Nothing is imported, called or executed.
//
// Every resource the input could inflate is bounded (PickleLimits); exceeding one is
// a one-line error naming the opcode offset.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_PICKLE_H
#define LOOM_CHECKPOINT_PICKLE_H

#include "loom/Checkpoint/Value.h"

#include "llvm/ADT/STLFunctionalExtras.h"

namespace loom::ckpt {

struct PickleLimits {
  /// Nesting of built containers and of MARKs. Writers, printers and destructors
  /// recurse over values, so this also bounds their stack use.
  unsigned maxDepth = 200;
  size_t maxMemoEntries = 1 << 20;
  /// Nodes of the value tree with memo-shared parts counted at every use: what a
  /// consumer walking the tree visits. Stops "billion laughs" memo bombs.
  uint64_t maxTreeNodes = 1 << 24;
  /// Bytes of strings, containers and stack slots the VM may allocate.
  uint64_t maxBytes = 1ull << 30;
};

/// Turns a persistent id (the value BINPERSID pops) into a value; torch's ids are
/// ('storage', <storage class>, key, location, numel) tuples.
using PersistentLoader = llvm::function_ref<llvm::Expected<ValuePtr>(const Value &pid)>;

/// Runs the pickle in `data`; `source` names it in errors ("x.pt: archive/data.pkl").
/// Without a loader, persistent ids are an error.
llvm::Expected<ValuePtr> unpickle(llvm::ArrayRef<uint8_t> data, llvm::StringRef source,
                                  PersistentLoader loader = nullptr,
                                  const PickleLimits &limits = {});

/// How a writer refers to a storage: the persistent id torch expects.
struct StorageId {
  std::string key;
  DType dtype;
  uint64_t numel;
};
using StorageNamer =
    llvm::function_ref<llvm::Expected<StorageId>(const std::shared_ptr<const Storage> &, DType)>;

/// Serialises `root` as torch.save does (protocol 2, storages as persistent ids
/// named by `namer`). A tree holding only tensors, containers, strings, ints and
/// bools loads with torch.load(weights_only=True); opaque objects are written back
/// as the GLOBAL/REDUCE/NEWOBJ/BUILD sequence they were read from.
llvm::Expected<std::string> pickle(const Value &root, StorageNamer namer);

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_PICKLE_H
