//===- AtomicFile.h - never leave a half-written file -----------*- C++ -*-===//
#ifndef LOOM_SUPPORT_ATOMICFILE_H
#define LOOM_SUPPORT_ATOMICFILE_H

#include <string>
#include <string_view>

namespace loom {

/// Writes `content` to a temporary sibling of `path`, fsyncs it, renames it over
/// `path` and fsyncs the directory. On failure returns a one-line reason (and
/// removes the temporary); on success returns an empty string.
std::string writeFileAtomic(const std::string &path, std::string_view content);

} // namespace loom

#endif // LOOM_SUPPORT_ATOMICFILE_H
