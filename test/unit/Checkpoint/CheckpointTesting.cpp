//===- CheckpointTesting.cpp - fixtures made by torch at test time --------===//
#include "CheckpointTesting.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/SHA256.h"

#include <fstream>
#include <gtest/gtest.h>

using namespace loom::ckpt;

int testutil::runScript(const std::string &script, const std::vector<std::string> &args,
                       std::string *output) {
  llvm::SmallString<128> log;
  llvm::sys::fs::createTemporaryFile("loom-ckpt-script", "log", log);
  std::vector<llvm::StringRef> argv{LOOM_PYTHON};
  std::string scriptPath = std::string(LOOM_CKPT_SCRIPTS) + "/" + script;
  argv.push_back(scriptPath);
  for (const std::string &arg : args)
    argv.push_back(arg);
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, llvm::StringRef(log),
                                                llvm::StringRef(log)};
  std::string error;
  int rc = llvm::sys::ExecuteAndWait(LOOM_PYTHON, argv, std::nullopt, redirects,
                                     /*SecondsToWait=*/300, 0, &error);
  if (auto text = llvm::MemoryBuffer::getFile(log); text && output)
    *output = (*text)->getBuffer().str() + error;
  llvm::sys::fs::remove(log);
  return rc;
}

std::string testutil::scratchDir(const std::string &name) {
  std::string dir = std::string(LOOM_CKPT_WORK) + "/" + name;
  llvm::sys::fs::remove_directories(dir);
  llvm::sys::fs::create_directories(dir);
  return dir;
}

const std::string &testutil::fixtures() {
  static const std::string dir = [] {
    std::string dir = scratchDir("fixtures");
    std::string output;
    int rc = runScript("make_fixtures.py", {dir}, &output);
    EXPECT_EQ(rc, 0) << output;
    return dir;
  }();
  return dir;
}

llvm::json::Value testutil::readJson(const std::string &path) {
  auto text = llvm::MemoryBuffer::getFile(path);
  EXPECT_TRUE(bool(text)) << path;
  if (!text)
    return nullptr;
  auto value = llvm::json::parse((*text)->getBuffer());
  EXPECT_TRUE(bool(value)) << path;
  if (!value) {
    llvm::consumeError(value.takeError());
    return nullptr;
  }
  return std::move(*value);
}

std::string testutil::sha256(const Tensor &tensor) {
  std::vector<uint8_t> bytes = tensor.toBytes();
  std::array<uint8_t, 32> digest = llvm::SHA256::hash(bytes);
  return llvm::toHex(digest, /*LowerCase=*/true);
}

void testutil::expectMatchesManifest(const std::vector<NamedTensor> &tensors,
                                    const llvm::json::Value &manifest, bool checkLayout) {
  const llvm::json::Array *expected = manifest.getAsObject()->getArray("tensors");
  ASSERT_TRUE(expected);
  ASSERT_EQ(tensors.size(), expected->size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const llvm::json::Object &want = *(*expected)[i].getAsObject();
    const NamedTensor &got = tensors[i];
    SCOPED_TRACE(got.name);
    EXPECT_EQ(got.name, *want.getString("name"));
    EXPECT_EQ(safetensorsName(got.tensor.dtype), *want.getString("dtype"));
    std::vector<int64_t> shape, strides;
    for (const llvm::json::Value &dim : *want.getArray("shape"))
      shape.push_back(*dim.getAsInteger());
    for (const llvm::json::Value &dim : *want.getArray("stride"))
      strides.push_back(*dim.getAsInteger());
    EXPECT_EQ(std::vector<int64_t>(got.tensor.shape.begin(), got.tensor.shape.end()), shape);
    if (checkLayout) {
      EXPECT_EQ(std::vector<int64_t>(got.tensor.strides.begin(), got.tensor.strides.end()),
                strides);
      EXPECT_EQ(got.tensor.offset, *want.getInteger("offset"));
    }
    EXPECT_EQ(sha256(got.tensor), *want.getString("sha256"));
  }
}

std::string testutil::message(llvm::Error error) {
  std::string text = llvm::toString(std::move(error));
  EXPECT_EQ(text.find('\n'), std::string::npos) << "not one line: " << text;
  return text;
}

std::string testutil::render(const Value &value) {
  std::string out;
  auto items = [&](const std::vector<ValuePtr> &values) {
    for (size_t i = 0; i < values.size(); ++i)
      out += (i ? ", " : "") + render(*values[i]);
  };
  auto pairs = [&](const std::vector<std::pair<ValuePtr, ValuePtr>> &entries) {
    for (size_t i = 0; i < entries.size(); ++i)
      out += (i ? ", " : "") + render(*entries[i].first) + ": " + render(*entries[i].second);
  };
  switch (value.kind()) {
  case Value::Kind::None:
    return "None";
  case Value::Kind::Bool:
    return *value.get<bool>() ? "True" : "False";
  case Value::Kind::Int:
    return std::to_string(*value.get<int64_t>());
  case Value::Kind::Float:
    return llvm::formatv("{0}", *value.get<double>()).str();
  case Value::Kind::Str:
    return "'" + *value.get<std::string>() + "'";
  case Value::Kind::Bytes:
    return "b'" + llvm::toHex(value.get<BytesValue>()->data, true) + "'";
  case Value::Kind::List:
    out = "[";
    items(value.get<ListValue>()->items);
    return out + "]";
  case Value::Kind::Tuple:
    out = value.get<TupleValue>()->torchSize ? "torch.Size(" : "(";
    items(value.get<TupleValue>()->items);
    return out + ")";
  case Value::Kind::Dict: {
    const auto *dict = value.get<DictValue>();
    out = dict->ordered ? "OrderedDict{" : "{";
    pairs(dict->entries);
    out += "}";
    if (dict->state)
      out += " with " + render(*dict->state);
    return out;
  }
  case Value::Kind::Global:
    return describe(value);
  case Value::Kind::Storage:
    return describe(value) + "[" + std::to_string(value.get<StorageValue>()->numel) + "]";
  case Value::Kind::Tensor: {
    const auto *t = value.get<TensorValue>();
    out = llvm::formatv("{0}tensor({1}, [{2:$[,]}], [{3:$[,]}], {4}, {5}{6})",
                        t->parameter ? "param " : "", safetensorsName(t->tensor.dtype),
                        llvm::make_range(t->tensor.shape.begin(), t->tensor.shape.end()),
                        llvm::make_range(t->tensor.strides.begin(), t->tensor.strides.end()),
                        t->tensor.offset, sha256(t->tensor).substr(0, 12),
                        t->requiresGrad ? ", grad" : "")
              .str();
    return out;
  }
  case Value::Kind::Object: {
    const auto *object = value.get<ObjectValue>();
    out = object->type.qualified() + (object->newObj ? ".__new__" : "") + "(";
    if (object->args)
      out += render(*object->args);
    if (object->kwargs)
      out += ", **" + render(*object->kwargs);
    out += ")";
    if (!object->listItems.empty()) {
      out += " items [";
      items(object->listItems);
      out += "]";
    }
    if (!object->dictItems.empty()) {
      out += " entries {";
      pairs(object->dictItems);
      out += "}";
    }
    if (object->state)
      out += " state " + render(*object->state);
    return out;
  }
  }
  return "?";
}

size_t testutil::residentPages() {
  std::ifstream statm("/proc/self/statm");
  size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident;
}
