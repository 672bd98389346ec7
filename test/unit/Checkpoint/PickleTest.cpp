//===- PickleTest.cpp - the pickle VM on hand-written programs ------------===//
//
// The byte strings are what CPython's pickle.dumps writes for the objects named in
// each test (checked with pickletools when the test was written).
//
//===----------------------------------------------------------------------===//
#include "CheckpointTesting.h"
#include "loom/Checkpoint/Pickle.h"

#include <gtest/gtest.h>

using namespace loom::ckpt;
using namespace loom::ckpt::testutil;

namespace {
llvm::ArrayRef<uint8_t> bytesOf(llvm::StringRef s) {
  return {reinterpret_cast<const uint8_t *>(s.data()), s.size()};
}

std::string load(llvm::StringRef pickleBytes, const PickleLimits &limits = {}) {
  auto value = unpickle(bytesOf(pickleBytes), "test.pkl", nullptr, limits);
  if (!value)
    return "error: " + message(value.takeError());
  return render(**value);
}

/// pickle() then unpickle(): the writer must reproduce what the reader built.
std::string roundTrip(llvm::StringRef pickleBytes) {
  auto value = unpickle(bytesOf(pickleBytes), "test.pkl");
  if (!value)
    return "error: " + message(value.takeError());
  auto written = pickle(**value, [](const std::shared_ptr<const Storage> &, DType)
                                     -> llvm::Expected<StorageId> {
    return llvm::createStringError(llvm::inconvertibleErrorCode(), "no storages here");
  });
  if (!written)
    return "error: " + message(written.takeError());
  return load(*written);
}

#define PICKLE(s) llvm::StringRef(s, sizeof(s) - 1)

// pickle.dumps([-7, 2**40, -2**63, 300, 70000, -1, 1.5], protocol=2)
const llvm::StringRef kNumbers = PICKLE(
    "\x80\x02]q\x00(J\xf9\xff\xff\xff\x8a\x06\x00\x00\x00\x00\x00\x01\x8a\x08\x00\x00\x00\x00"
    "\x00\x00\x00\x80M,\x01Jp\x11\x01\x00J\xff\xff\xff\xffG?\xf8\x00\x00\x00\x00\x00\x00" "e.");
// pickle.dumps(argparse.Namespace(lr=0.5, name='gpt'), protocol=2)
const llvm::StringRef kNamespace = PICKLE(
    "\x80\x02" "cargparse\nNamespace\nq\x00)\x81q\x01}q\x02(X\x02\x00\x00\x00lrq\x03G?\xe0\x00\x00"
    "\x00\x00\x00\x00X\x04\x00\x00\x00nameq\x04X\x03\x00\x00\x00gptq\x05ub.");
// pickle.dumps({'a': {1, 2}, 'f': frozenset([3])}, protocol=4)
const llvm::StringRef kSets = PICKLE(
    "\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01" "a\x94\x8f\x94(K\x01K\x02\x90"
    "\x8c\x01" "f\x94(K\x03\x91\x94u.");
// pickle.dumps(b'\x00\xffab', protocol=2)
const llvm::StringRef kBytes = PICKLE(
    "\x80\x02" "c_codecs\nencode\nq\x00X\x05\x00\x00\x00\x00\xc3\xbf" "abq\x01X\x06\x00\x00\x00"
    "latin1q\x02\x86q\x03Rq\x04.");
// OrderedDict(a=1) with _metadata = {'': {'version': 1}}, protocol 2
const llvm::StringRef kOrderedWithMetadata = PICKLE(
    "\x80\x02" "ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00" "aq\x02K\x01s}q\x03X\t"
    "\x00\x00\x00_metadataq\x04}q\x05X\x00\x00\x00\x00q\x06}q\x07X\x07\x00\x00\x00versionq\x08"
    "K\x01sssb.");
// pickle.dumps(Call(os.system, ('true',)), protocol=2)
const llvm::StringRef kSystem = PICKLE(
    "\x80\x02" "cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.");
} // namespace

TEST(Pickle, Numbers) {
  EXPECT_EQ(load(kNumbers), "[-7, 1099511627776, -9223372036854775808, 300, 70000, -1, 1.50]");
}

TEST(Pickle, NamespaceIsAnOpaqueObjectWithItsState) {
  EXPECT_EQ(load(kNamespace), "argparse.Namespace.__new__(()) state {'lr': 0.50, 'name': 'gpt'}");
}

TEST(Pickle, SetsFromProtocol4Opcodes) {
  EXPECT_EQ(load(kSets), "{'a': builtins.set(()) items [1, 2], 'f': builtins.frozenset(()) items [3]}");
}

TEST(Pickle, Protocol2BytesAreBytes) { EXPECT_EQ(load(kBytes), "b'00ff6162'"); }

TEST(Pickle, OrderedDictKeepsItsMetadataAttribute) {
  EXPECT_EQ(load(kOrderedWithMetadata),
            "OrderedDict{'a': 1} with {'_metadata': {'': {'version': 1}}}");
}

TEST(Pickle, CallsAreRecordedNotMade) {
  EXPECT_EQ(load(kSystem), "posix.system(('true'))");
}

TEST(Pickle, WriterReproducesWhatTheReaderBuilt) {
  for (llvm::StringRef input :
       {kNumbers, kNamespace, kSets, kBytes, kOrderedWithMetadata, kSystem})
    EXPECT_EQ(roundTrip(input), load(input));
}

TEST(Pickle, WriterKeepsSharedValuesShared) {
  // [x, x] where x = [1]: a DAG, written with BINGET for the second use.
  auto value = unpickle(bytesOf(PICKLE("\x80\x02](]q\x00K\x01" "ah\x00" "e.")), "t");
  ASSERT_TRUE(bool(value));
  const auto &items = (*value)->get<ListValue>()->items;
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0], items[1]);
  auto written = pickle(**value, nullptr);
  ASSERT_TRUE(bool(written));
  auto again = unpickle(bytesOf(*written), "t");
  ASSERT_TRUE(bool(again));
  const auto &itemsAgain = (*again)->get<ListValue>()->items;
  EXPECT_EQ(itemsAgain[0], itemsAgain[1]);
}

TEST(Pickle, LimitsAreOneLineErrors) {
  PickleLimits tiny;
  tiny.maxTreeNodes = 3;
  EXPECT_EQ(load(kNumbers, tiny),
            "error: test.pkl: pickle offset 51 (APPENDS): object tree exceeds 3 nodes (memo bomb?)");
  PickleLimits small;
  small.maxBytes = 1000;
  EXPECT_TRUE(llvm::StringRef(load(kNamespace, small))
                  .ends_with("allocation limit of 1000 bytes exceeded"));
  PickleLimits shallow;
  shallow.maxDepth = 2;
  EXPECT_EQ(load(PICKLE("\x80\x02]]]aa."), shallow),
            "error: test.pkl: pickle offset 6 (APPEND): nesting deeper than 2");
  PickleLimits fewMemo;
  fewMemo.maxMemoEntries = 2;
  EXPECT_EQ(load(kNamespace, fewMemo),
            "error: test.pkl: pickle offset 29 (BINPUT): memo grows past 2 entries");
}

TEST(Pickle, WriterRefusesNamesThatWouldInjectOpcodes) {
  ObjectValue object;
  object.type = {"os", "system\ncposix"};
  object.args = Value::make(TupleValue{});
  auto written = pickle(*Value::make(std::move(object)), nullptr);
  ASSERT_FALSE(bool(written));
  EXPECT_EQ(message(written.takeError()), "global name with a newline cannot be pickled");
}

TEST(Pickle, RefusesToMutateSharedObjects) {
  // l = []; l.append(l) as CPython writes it.
  EXPECT_EQ(load(PICKLE("\x80\x02]q\x00h\x00" "a.")),
            "error: test.pkl: pickle offset 7 (APPEND): APPEND on an object the memo already "
            "shares (recursive structures are not supported)");
}
