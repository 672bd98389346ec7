//===- CheckpointTesting.h - fixtures made by torch at test time -*- C++ -*-===//
#ifndef LOOM_TEST_UNIT_CHECKPOINT_CHECKPOINTTESTING_H
#define LOOM_TEST_UNIT_CHECKPOINT_CHECKPOINTTESTING_H

#include "loom/Checkpoint/Value.h"

#include "llvm/Support/JSON.h"

#include <string>
#include <vector>

namespace loom::ckpt::testutil {

/// Runs /usr/bin/python3 (Debian's, with torch) on a script in test/Checkpoint;
/// returns its exit code and puts stdout+stderr in `output`.
int runScript(const std::string &script, const std::vector<std::string> &args,
              std::string *output = nullptr);

/// A fresh empty directory under the build tree for one test.
std::string scratchDir(const std::string &name);

/// The directory make_fixtures.py wrote into (generated once per test binary).
const std::string &fixtures();

/// The parsed JSON file at `path` (fails the test if unreadable).
llvm::json::Value readJson(const std::string &path);

/// Hex SHA-256 of the tensor's row-major bytes, as the manifests record it.
std::string sha256(const Tensor &tensor);

/// Checks `tensors` against a manifest written by make_fixtures.py: same names in
/// the same order, dtypes, shapes, strides, offsets and bytes.
void expectMatchesManifest(const std::vector<NamedTensor> &tensors,
                           const llvm::json::Value &manifest, bool checkLayout = true);

/// A canonical text form of a value tree for equality checks: Python-like literals,
/// opaque objects with their recorded arguments and state, tensors as
/// dtype/shape/strides/offset and a hash of their bytes.
std::string render(const Value &value);

/// The one-line message of an error (consumes it).
std::string message(llvm::Error error);

/// This process's resident pages (/proc/self/statm), mapped files included; 0
/// where there is no /proc.
size_t residentPages();

} // namespace loom::ckpt::testutil

#endif // LOOM_TEST_UNIT_CHECKPOINT_CHECKPOINTTESTING_H
