//===- Unpickler.h - the pickle VM's machine state --------------*- C++ -*-===//
//
// Internal to lib/Checkpoint. The VM interprets pickle protocols 2-5 (and the
// mark-based LIST/DICT/TUPLE of older protocols) into a Value tree. Safety rests on
// three rules:
//  * GLOBAL yields a name; REDUCE/NEWOBJ/BUILD only record data (PickleReduce.cpp).
//  * Every length is checked against the input left before anything is allocated,
//    and every allocation is charged against PickleLimits::maxBytes.
//  * Only containers no one else can reach may be mutated. An object gets a second
//    reference only through the memo (GET) or DUP; refusing to mutate such objects
//    rules out cycles (recursive structures, which checkpoints do not contain), and
//    lets each node's tree size and depth be computed once, when it is built.
//
// Unpickler.cpp holds the machine (input, stack, memo, accounting, the compound
// opcodes); PickleOpcodes.cpp decodes opcodes and dispatches to it.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_LIB_CHECKPOINT_UNPICKLER_H
#define LOOM_LIB_CHECKPOINT_UNPICKLER_H

#include "loom/Checkpoint/Pickle.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/Endian.h"

namespace loom::ckpt::detail {

/// CPython's name for an opcode byte, or null for bytes that are no opcode.
const char *opcodeName(uint8_t opcode);

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
  /// "<source>: pickle offset N (OPCODE): what".
  llvm::Error error(const llvm::Twine &what) const;
  /// Executes the opcode at the current position (PickleOpcodes.cpp).
  llvm::Error step();

  // Input.
  llvm::Error need(uint64_t count) const;
  llvm::Expected<llvm::ArrayRef<uint8_t>> take(uint64_t count);
  template <typename T> llvm::Expected<T> readLE() {
    auto bytes = take(sizeof(T));
    if (!bytes)
      return bytes.takeError();
    return llvm::support::endian::read<T, llvm::endianness::little>(bytes->data());
  }
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

} // namespace loom::ckpt::detail

#endif // LOOM_LIB_CHECKPOINT_UNPICKLER_H
