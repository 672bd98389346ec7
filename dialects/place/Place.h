//===- Place.h - the placement-semantics dialect ----------------*- C++ -*-===//
//
// IR only: the dialect, its attributes, the layer interface and the ops. The
// algorithms that read this IR (estimates, search) live in lib/.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_DIALECTS_PLACE_PLACE_H
#define LOOM_DIALECTS_PLACE_PLACE_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/Hashing.h"

#include "place/PlaceEnums.h.inc"

namespace loom::place {

/// One `axis: mode(dim)` entry of a state's placement.
struct AxisMode {
  mlir::StringAttr axis;
  Mode mode = Mode::replicated;
  Dim dim = Dim::none;
  bool operator==(const AxisMode &o) const {
    return axis == o.axis && mode == o.mode && dim == o.dim;
  }
};
inline llvm::hash_code hash_value(const AxisMode &m) {
  return llvm::hash_combine(m.axis, m.mode, m.dim);
}

/// Where each of the four states lives between uses.
struct StateStorage {
  Storage params = Storage::resident, optim = Storage::resident,
          grads = Storage::resident, acts = Storage::resident;
  bool operator==(const StateStorage &o) const {
    return params == o.params && optim == o.optim && grads == o.grads &&
           acts == o.acts;
  }
};
inline llvm::hash_code hash_value(const StateStorage &s) {
  return llvm::hash_combine(s.params, s.optim, s.grads, s.acts);
}

/// True for modes under which every rank uses the whole parameter.
inline bool isWholeForCompute(Mode m) {
  return m == Mode::replicated || m == Mode::sharded_with_gather;
}

} // namespace loom::place

#include "place/PlaceDialect.h.inc"
#define GET_ATTRDEF_CLASSES
#include "place/PlaceAttrs.h.inc"

namespace loom::place {
class PlacementAttr;
} // namespace loom::place
#include "place/PlaceInterfaces.h.inc"

#define GET_OP_CLASSES
#include "place/PlaceOps.h.inc"

#endif // LOOM_DIALECTS_PLACE_PLACE_H
