//===- SpecTesting.h - helpers shared by the Spec unit tests ----*- C++ -*-===//
#ifndef LOOM_TEST_UNIT_SPEC_SPECTESTING_H
#define LOOM_TEST_UNIT_SPEC_SPECTESTING_H

#include "loom/Spec/Spec.h"

#include <functional>
#include <string>

namespace loom::spec::testing {

/// The SpecError message `fn` throws, or "<no error>" so a missing error shows
/// up in the assertion's diff instead of as a crash.
inline std::string errorOf(const std::function<void()> &fn) {
  try {
    fn();
  } catch (const SpecError &e) {
    return e.what();
  }
  return "<no error>";
}

/// A file under test/Inputs/spec.
inline std::string input(const std::string &name) {
  return std::string(LOOM_SPEC_INPUTS) + "/" + name;
}

} // namespace loom::spec::testing

#endif // LOOM_TEST_UNIT_SPEC_SPECTESTING_H
