//===- PickleReduce.h - the constructors the pickle VM models ---*- C++ -*-===//
//
// Internal to lib/Checkpoint: shared by the unpickler (PickleReader.cpp) and its
// constructor table (PickleReduce.cpp).
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_LIB_CHECKPOINT_PICKLEREDUCE_H
#define LOOM_LIB_CHECKPOINT_PICKLEREDUCE_H

#include "loom/Checkpoint/Value.h"

namespace loom::ckpt::detail {

/// What REDUCE builds from `callable(*args)`: the value for the few constructors
/// checkpoints need (OrderedDict, torch.Size, torch's tensor rebuilds, protocol-2
/// bytes, sets), an opaque ObjectValue for any other name. Never calls anything.
/// Errors (bad arguments to a modelled constructor) carry no location; the VM adds it.
llvm::Expected<ValuePtr> reduce(const GlobalValue &callable, const ValuePtr &args);

/// True for builtins.set and builtins.frozenset, which the VM keeps as objects whose
/// listItems are the members.
bool isSetType(const GlobalValue &type);

} // namespace loom::ckpt::detail

#endif // LOOM_LIB_CHECKPOINT_PICKLEREDUCE_H
