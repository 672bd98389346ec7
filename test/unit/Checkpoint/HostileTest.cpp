//===- HostileTest.cpp - the hostile corpus: errors, never execution ------===//
//
// make_hostile.py writes pickles that name os.system/eval/subprocess.Popen, memo and
// recursion bombs, lying lengths, damaged zips and safetensors headers, and a DCP
// folder whose optimizer setting is a pickled os.system call. Each must give the
// expected one-line error, or for the code-naming pickles load as inert opaque
// objects while the files their payloads would create never appear.
//
//===----------------------------------------------------------------------===//
#include "CheckpointTesting.h"
#include "loom/Checkpoint/Dcp.h"
#include "loom/Checkpoint/Safetensors.h"
#include "loom/Checkpoint/TorchZip.h"

#include "llvm/Support/FileSystem.h"

#include <gtest/gtest.h>

using namespace loom::ckpt;
using namespace loom::ckpt::testutil;

namespace {
struct Corpus {
  std::string dir;
  std::string markers;
  llvm::json::Value manifest = nullptr;
};

const Corpus &corpus() {
  static const Corpus made = [] {
    Corpus c;
    c.dir = scratchDir("hostile");
    c.markers = scratchDir("hostile-markers");
    std::string output;
    EXPECT_EQ(runScript("make_hostile.py", {c.dir, c.markers}, &output), 0) << output;
    c.manifest = readJson(c.dir + "/hostile.json");
    return c;
  }();
  return made;
}

/// Runs the reader a case names; returns the error message, or "" and the value.
std::string runReader(llvm::StringRef reader, const std::string &path, ValuePtr &value) {
  if (reader == "pickle") {
    auto buffer = llvm::cantFail(mapFile(path));
    auto result = unpickle(llvm::ArrayRef<uint8_t>(
                               reinterpret_cast<const uint8_t *>(buffer->getBufferStart()),
                               buffer->getBufferSize()),
                           path);
    if (!result)
      return message(result.takeError());
    value = *result;
    return "";
  }
  if (reader == "torch") {
    auto result = readTorchZip(path);
    if (!result)
      return message(result.takeError());
    value = *result;
    return "";
  }
  if (reader == "dcp") {
    auto dcp = DcpReader::open(path);
    if (!dcp)
      return message(dcp.takeError());
    auto optimizer = readDcpOptimizer(**dcp);
    return optimizer ? "" : message(optimizer.takeError());
  }
  if (reader == "zip") {
    auto archive = ZipArchive::open(path);
    if (!archive)
      return message(archive.takeError());
    for (const ZipEntry &entry : archive->entries())
      if (auto data = archive->read(entry); !data)
        return message(data.takeError());
    return "";
  }
  auto file = readSafetensors(path);
  return file ? "" : message(file.takeError());
}

/// True if an opaque object of `type` is anywhere in the tree.
bool holdsObject(const Value &value, llvm::StringRef type) {
  if (const auto *object = value.get<ObjectValue>(); object && object->type.qualified() == type)
    return true;
  bool found = false;
  forEachChild(value, [&](const ValuePtr &child) { found = found || holdsObject(*child, type); });
  return found;
}
} // namespace

TEST(Hostile, EveryCaseGivesItsOneLineErrorOrStaysInert) {
  const Corpus &c = corpus();
  const llvm::json::Array *cases = c.manifest.getAsArray();
  ASSERT_TRUE(cases);
  EXPECT_GE(cases->size(), 45u);
  for (const llvm::json::Value &entry : *cases) {
    const llvm::json::Object &spec = *entry.getAsObject();
    std::string file = spec.getString("file")->str();
    std::string expectation = spec.getString("expect")->str();
    std::string wanted = spec.getString("message")->str();
    SCOPED_TRACE(file);
    std::string path = c.dir + "/" + file;
    ValuePtr value;
    std::string error = runReader(*spec.getString("reader"), path, value);
    if (expectation == "error") {
      EXPECT_NE(error, "") << "loaded without error";
      EXPECT_NE(error.find(wanted), std::string::npos) << error;
      EXPECT_EQ(error.rfind(path, 0), 0u) << "does not name the file: " << error;
    } else {
      ASSERT_EQ(error, "");
      EXPECT_TRUE(holdsObject(*value, wanted)) << render(*value);
    }
  }
  // Nothing any payload would have created exists.
  std::error_code ec;
  EXPECT_EQ(llvm::sys::fs::directory_iterator(c.markers, ec),
            llvm::sys::fs::directory_iterator());
}

TEST(Hostile, PayloadsAreLiveUnderCPythonsUnpickler) {
  // The control: the same files do run code when Python loads them, so the inertness
  // above is loom's doing, not a dud corpus.
  const Corpus &c = corpus();
  for (const char *file : {"os_system.pkl", "eval.pkl", "dcp_os_system"})
    runScript("unsafe_load.py", {c.dir + "/" + file});
  for (const char *marker : {"/os_system_ran", "/eval_ran", "/dcp_os_system_ran"}) {
    EXPECT_TRUE(llvm::sys::fs::exists(c.markers + marker)) << marker;
    llvm::sys::fs::remove(c.markers + marker);
  }
}
