//===- BoundedJson.cpp - JSON nesting check before llvm::json::parse ------===//
#include "BoundedJson.h"
#include "loom/Checkpoint/Tensor.h"

#include "llvm/Support/FormatVariadic.h"

llvm::Expected<llvm::json::Value>
loom::ckpt::detail::parseBoundedJson(llvm::StringRef text, unsigned maxDepth,
                                     llvm::StringRef file) {
  unsigned depth = 0;
  bool inString = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (inString) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        inString = false;
    } else if (c == '"') {
      inString = true;
    } else if (c == '[' || c == '{') {
      if (++depth > maxDepth)
        return fileError(file, llvm::formatv("JSON nests deeper than {0} levels at byte {1}",
                                             maxDepth, i));
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  auto value = llvm::json::parse(text);
  if (!value)
    return fileError(file, "invalid JSON: " + llvm::toString(value.takeError()));
  return value;
}
