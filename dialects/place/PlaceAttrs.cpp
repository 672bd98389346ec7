//===- PlaceAttrs.cpp - place attributes: syntax and constraints ----------===//
//
// The logical-axis and placement attributes have hand-written syntax so that IR
// reads like the strategy it encodes:
//   #place.laxis<dp = dc:2 * node:8>
//   #place.placement<params [tp: sharded(heads)], optim [dp: sharded(flat),
//       tp: sharded(heads)], grads [tp: sharded(heads)], acts [dp: sharded(batch)],
//       reduce [dp]>
//
//===----------------------------------------------------------------------===//

#include "place/Place.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/SmallSet.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace loom::place;

#define GET_ATTRDEF_CLASSES
#include "place/PlaceAttrs.cpp.inc"

void PlaceDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "place/PlaceAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// Shared syntax helpers
//===----------------------------------------------------------------------===//

/// Axis names are printed bare when they are identifiers, quoted otherwise.
static void printName(AsmPrinter &p, StringAttr name) {
  p.printKeywordOrString(name.getValue());
}

static ParseResult parseName(AsmParser &p, StringAttr &name) {
  std::string text;
  if (p.parseKeywordOrString(&text))
    return failure();
  name = StringAttr::get(p.getContext(), text);
  return success();
}

//===----------------------------------------------------------------------===//
// AxisAttr
//===----------------------------------------------------------------------===//

LogicalResult AxisAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               StringAttr name, int64_t size,
                               FlatSymbolRefAttr tier) {
  if (!name || name.getValue().empty())
    return emitError() << "cluster axis needs a non-empty name";
  if (size < 1)
    return emitError() << "cluster axis '" << name.getValue()
                       << "' must have size >= 1, got " << size;
  return success();
}

//===----------------------------------------------------------------------===//
// NodeGroupAttr
//===----------------------------------------------------------------------===//

LogicalResult NodeGroupAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                    int64_t count, FlatSymbolRefAttr device,
                                    int64_t gpusPerNode, FlatSymbolRefAttr intraNode,
                                    FlatSymbolRefAttr interNode) {
  if (count < 1)
    return emitError() << "node group of " << device << " must have count >= 1, got "
                       << count;
  if (gpusPerNode < 1)
    return emitError() << "node group of " << device
                       << " must have gpus_per_node >= 1, got " << gpusPerNode;
  return success();
}

//===----------------------------------------------------------------------===//
// LogicalAxisAttr
//===----------------------------------------------------------------------===//

int64_t LogicalAxisAttr::getSize() const {
  int64_t n = 1;
  for (int64_t s : getSizes())
    n *= s;
  return n;
}

LogicalResult
LogicalAxisAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                        StringAttr name, ArrayRef<StringAttr> physical,
                        ArrayRef<int64_t> sizes) {
  if (!name || name.getValue().empty())
    return emitError() << "mesh axis needs a non-empty name";
  if (physical.empty())
    return emitError() << "mesh axis '" << name.getValue()
                       << "' must take at least one piece of a cluster axis";
  if (physical.size() != sizes.size())
    return emitError() << "mesh axis '" << name.getValue()
                       << "' has mismatched piece names and sizes";
  for (auto [phys, size] : llvm::zip(physical, sizes))
    if (size < 1)
      return emitError() << "mesh axis '" << name.getValue() << "' takes "
                         << size << " ranks of cluster axis '"
                         << phys.getValue() << "'; a piece must be >= 1";
  return success();
}

Attribute LogicalAxisAttr::parse(AsmParser &p, Type) {
  StringAttr name;
  SmallVector<StringAttr> physical;
  SmallVector<int64_t> sizes;
  if (p.parseLess() || parseName(p, name) || p.parseEqual())
    return {};
  do {
    StringAttr phys;
    int64_t size;
    if (parseName(p, phys) || p.parseColon() || p.parseInteger(size))
      return {};
    physical.push_back(phys);
    sizes.push_back(size);
  } while (succeeded(p.parseOptionalStar()));
  if (p.parseGreater())
    return {};
  return p.getChecked<LogicalAxisAttr>(p.getContext(), name, physical, sizes);
}

void LogicalAxisAttr::print(AsmPrinter &p) const {
  p << '<';
  printName(p, getName());
  p << " = ";
  llvm::interleave(
      llvm::zip(getPhysical(), getSizes()), p,
      [&](auto piece) {
        printName(p, std::get<0>(piece));
        p << ':' << std::get<1>(piece);
      },
      " * ");
  p << '>';
}

//===----------------------------------------------------------------------===//
// PlacementAttr
//===----------------------------------------------------------------------===//

using State = PlacementAttr::State;
static constexpr State kStates[] = {State::Params, State::Optim, State::Grads,
                                    State::Acts};

StringRef PlacementAttr::stateName(State state) {
  switch (state) {
  case State::Params:
    return "params";
  case State::Optim:
    return "optim";
  case State::Grads:
    return "grads";
  case State::Acts:
    return "acts";
  }
  llvm_unreachable("unknown state");
}

ArrayRef<AxisMode> PlacementAttr::getState(State state) const {
  switch (state) {
  case State::Params:
    return getParams();
  case State::Optim:
    return getOptim();
  case State::Grads:
    return getGrads();
  case State::Acts:
    return getActs();
  }
  llvm_unreachable("unknown state");
}

AxisMode PlacementAttr::lookup(State state, StringRef axis) const {
  for (const AxisMode &m : getState(state))
    if (m.axis.getValue() == axis)
      return m;
  return AxisMode{StringAttr::get(getContext(), axis), Mode::replicated,
                  Dim::none};
}

/// The field of StateStorage that holds `state`'s storage.
PlacementAttr::AxisRoles PlacementAttr::getAxisRoles() const {
  AxisRoles roles;
  for (const AxisMode &p : getParams()) {
    if (p.mode != Mode::sharded)
      continue;
    if (p.dim == Dim::experts)
      roles.expert.push_back(p.axis);
    else if (p.dim == Dim::heads || p.dim == Dim::ffn || p.dim == Dim::vocab)
      roles.tensor.push_back(p.axis);
  }
  for (const AxisMode &a : getActs()) {
    if (a.mode != Mode::sharded)
      continue;
    if (a.dim == Dim::batch)
      roles.batch.push_back(a.axis);
    else if (a.dim == Dim::seq && lookup(State::Params, a.axis.getValue()).mode == Mode::sharded)
      roles.sequenceParallel = true;
    else if (a.dim == Dim::seq)
      roles.context.push_back(a.axis);
  }
  return roles;
}

int64_t PlacementAttr::getZeroStage() const {
  int64_t zero = 0;
  for (StringAttr axis : getReduce()) {
    StringRef name = axis.getValue();
    if (lookup(State::Params, name).mode == Mode::sharded_with_gather)
      zero = std::max<int64_t>(zero, 3);
    else if (lookup(State::Grads, name).mode == Mode::sharded)
      zero = std::max<int64_t>(zero, 2);
    else if (lookup(State::Optim, name).mode == Mode::sharded)
      zero = std::max<int64_t>(zero, 1);
  }
  return zero;
}

static Storage StateStorage::*storageField(State state) {
  switch (state) {
  case State::Params:
    return &StateStorage::params;
  case State::Optim:
    return &StateStorage::optim;
  case State::Grads:
    return &StateStorage::grads;
  case State::Acts:
    return &StateStorage::acts;
  }
  llvm_unreachable("unknown state");
}

static std::string describe(const AxisMode &m) {
  std::string s = stringifyMode(m.mode).str();
  if (m.dim != Dim::none)
    s += "(" + stringifyDim(m.dim).str() + ")";
  return s;
}

static bool isActivationDim(Dim d) {
  return d == Dim::none || d == Dim::batch || d == Dim::seq || d == Dim::hidden;
}

LogicalResult PlacementAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                    ArrayRef<AxisMode> params,
                                    ArrayRef<AxisMode> optim,
                                    ArrayRef<AxisMode> grads,
                                    ArrayRef<AxisMode> acts,
                                    StateStorage storage,
                                    ArrayRef<StringAttr> reduce) {
  ArrayRef<AxisMode> lists[] = {params, optim, grads, acts};
  for (State state : kStates) {
    StringRef sname = stateName(state);
    llvm::SmallSet<StringRef, 4> seen;
    for (const AxisMode &m : lists[static_cast<int>(state)]) {
      if (!seen.insert(m.axis.getValue()).second)
        return emitError() << sname << " names axis '" << m.axis.getValue()
                           << "' twice; each axis may place a state once";
      if (m.mode == Mode::sharded_with_gather && state != State::Params)
        return emitError() << sname << " along '" << m.axis.getValue()
                           << "' is sharded_with_gather, which only parameters "
                              "may be (gathered whole around each use)";
      bool actDim = isActivationDim(m.dim);
      if (state == State::Acts && !actDim)
        return emitError() << "acts along '" << m.axis.getValue()
                           << "' are sharded by " << stringifyDim(m.dim)
                           << "; activations split by batch, seq or hidden";
      if (state != State::Acts && m.dim != Dim::none &&
          (m.dim == Dim::batch || m.dim == Dim::seq))
        return emitError() << sname << " along '" << m.axis.getValue()
                           << "' are sharded by " << stringifyDim(m.dim)
                           << "; weights split by hidden, heads, ffn, experts, "
                              "vocab or flat";
    }
    Storage st = storage.*storageField(state);
    if ((st == Storage::materialized || st == Storage::selective) &&
        state != State::Acts)
      return emitError() << sname << " cannot be " << stringifyStorage(st)
                         << "; only activations are rebuilt by recomputation";
  }

  llvm::SmallSet<StringRef, 4> reduced;
  for (StringAttr axis : reduce)
    if (!reduced.insert(axis.getValue()).second)
      return emitError() << "reduce names axis '" << axis.getValue() << "' twice";

  // State consistency: the optimizer update of a parameter shard needs the
  // matching gradient shard and optimizer-state shard on the same rank.
  auto find = [](ArrayRef<AxisMode> list, StringAttr axis) {
    for (const AxisMode &m : list)
      if (m.axis == axis)
        return m;
    return AxisMode{axis, Mode::replicated, Dim::none};
  };
  for (const AxisMode &p : params) {
    if (p.mode == Mode::replicated)
      continue;
    for (State state : {State::Optim, State::Grads}) {
      AxisMode o = find(lists[static_cast<int>(state)], p.axis);
      bool ok = p.mode == Mode::sharded
                    ? (o.mode == Mode::sharded && o.dim == p.dim)
                    : o.mode == Mode::sharded;
      if (!ok)
        return emitError() << "state consistency: params are " << describe(p)
                           << " along '" << p.axis.getValue() << "' but "
                           << stateName(state) << " are " << describe(o)
                           << "; they must be sharded"
                           << (p.mode == Mode::sharded ? " the same way" : "")
                           << " so each rank updates the shard it owns";
    }
  }
  for (const AxisMode &g : grads) {
    if (g.mode != Mode::sharded)
      continue;
    AxisMode o = find(optim, g.axis);
    if (o.mode != Mode::sharded)
      return emitError() << "state consistency: grads are sharded along '"
                         << g.axis.getValue() << "' but optim is "
                         << describe(o)
                         << "; a rank holding a gradient shard must own the "
                            "optimizer state for it";
  }
  return success();
}

static ParseResult parseAxisModes(AsmParser &p, SmallVectorImpl<AxisMode> &out) {
  return p.parseCommaSeparatedList(
      AsmParser::Delimiter::Square, [&]() -> ParseResult {
        AxisMode m;
        std::string modeName;
        if (parseName(p, m.axis) || p.parseColon() || p.parseKeywordOrString(&modeName))
          return failure();
        auto mode = symbolizeMode(modeName);
        if (!mode)
          return p.emitError(p.getCurrentLocation(), "unknown placement mode '")
                 << modeName
                 << "'; expected replicated, sharded or sharded_with_gather";
        m.mode = *mode;
        if (succeeded(p.parseOptionalLParen())) {
          std::string dimName;
          if (p.parseKeywordOrString(&dimName))
            return failure();
          auto dim = symbolizeDim(dimName);
          if (!dim)
            return p.emitError(p.getCurrentLocation(), "unknown dimension '")
                   << dimName << "'";
          m.dim = *dim;
          if (p.parseRParen())
            return failure();
        }
        out.push_back(m);
        return success();
      });
}

Attribute PlacementAttr::parse(AsmParser &p, Type) {
  SmallVector<AxisMode> lists[4];
  StateStorage storage;
  SmallVector<StringAttr> reduce;
  if (p.parseLess())
    return {};
  for (State state : kStates) {
    if (p.parseKeyword(stateName(state)) ||
        parseAxisModes(p, lists[static_cast<int>(state)]))
      return {};
    std::string st;
    if (succeeded(p.parseOptionalKeywordOrString(&st))) {
      auto parsed = symbolizeStorage(st);
      if (!parsed) {
        p.emitError(p.getCurrentLocation(), "unknown storage '")
            << st << "'; expected offloaded, materialized or selective";
        return {};
      }
      storage.*storageField(state) = *parsed;
    }
    if (p.parseComma())
      return {};
  }
  if (p.parseKeyword("reduce") ||
      p.parseCommaSeparatedList(AsmParser::Delimiter::Square, [&]() {
        StringAttr axis;
        if (parseName(p, axis))
          return failure();
        reduce.push_back(axis);
        return success();
      }) ||
      p.parseGreater())
    return {};
  return p.getChecked<PlacementAttr>(p.getContext(), lists[0], lists[1],
                                     lists[2], lists[3], storage, reduce);
}

void PlacementAttr::print(AsmPrinter &p) const {
  p << '<';
  for (State state : kStates) {
    p << stateName(state) << " [";
    llvm::interleaveComma(getState(state), p, [&](const AxisMode &m) {
      printName(p, m.axis);
      p << ": " << describe(m);
    });
    p << ']';
    Storage st = getStorage().*storageField(state);
    if (st != Storage::resident)
      p << ' ' << stringifyStorage(st);
    p << ", ";
  }
  p << "reduce [";
  llvm::interleaveComma(getReduce(), p, [&](StringAttr a) { printName(p, a); });
  p << "]>";
}
