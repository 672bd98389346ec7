//===- BoundedJson.h - JSON parsing with a nesting bound --------*- C++ -*-===//
//
// Internal to lib/Checkpoint. llvm::json's parser recurses once per nesting level,
// so a header of a million '[' would overflow the stack; checkpoint headers and
// indexes nest only a few levels, so deeper input is refused before parsing.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_LIB_CHECKPOINT_BOUNDEDJSON_H
#define LOOM_LIB_CHECKPOINT_BOUNDEDJSON_H

#include "llvm/Support/JSON.h"

namespace loom::ckpt::detail {

/// Parses `text` as JSON nesting at most `maxDepth` levels; errors name `file`.
llvm::Expected<llvm::json::Value> parseBoundedJson(llvm::StringRef text, unsigned maxDepth,
                                                   llvm::StringRef file);

} // namespace loom::ckpt::detail

#endif // LOOM_LIB_CHECKPOINT_BOUNDEDJSON_H
