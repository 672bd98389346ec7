//===- Hdf5.h - small RAII layer over the HDF5 C API ------------*- C++ -*-===//
//
// The universal format talks to HDF5's C API directly (serial or, later, parallel
// HDF5 share it; the C++ API exists only for serial builds). These helpers close
// handles on every path, keep HDF5 from printing its error stack to stderr, and turn
// the innermost message of that stack into the reason of a one-line llvm::Error.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_LIB_CHECKPOINT_HDF5_H
#define LOOM_LIB_CHECKPOINT_HDF5_H

#include "loom/Checkpoint/DType.h"

#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"

#include <hdf5.h>

#include <optional>
#include <string>

namespace loom::ckpt::hdf5 {

/// Owns one HDF5 identifier and closes it with the matching H5?close.
class Handle {
public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer close) : id(id), closer(close) {}
  Handle(Handle &&other) : id(other.id), closer(other.closer) { other.id = H5I_INVALID_HID; }
  Handle &operator=(Handle &&other);
  Handle(const Handle &) = delete;
  ~Handle() { reset(); }

  explicit operator bool() const { return id >= 0; }
  hid_t get() const { return id; }
  /// Closes now; false if HDF5 reported an error (a failed flush on a file).
  bool reset();
  /// Forgets the identifier without closing it (a parallel file whose close would
  /// wait for ranks that are about to be aborted).
  void release() { id = H5I_INVALID_HID; }

private:
  hid_t id = H5I_INVALID_HID;
  Closer closer = nullptr;
};

/// Turns off HDF5's automatic error printing for its lifetime (restored after), so
/// failures reach the user once, as loom's one-line error.
class Quiet {
public:
  Quiet();
  ~Quiet();

private:
  H5E_auto2_t func = nullptr;
  void *data = nullptr;
};

/// The most specific description on HDF5's error stack ("data error detected by
/// Fletcher32 checksum"), or "unknown HDF5 error".
std::string lastError();

/// The file type a dtype is stored as: IEEE little-endian floats, a half-precision
/// float h5py reads as float16, little-endian integers for bool and bfloat16 (HDF5 has
/// no type for them; the dataset's dtype attribute says what the bits mean).
Handle fileType(DType dtype);

/// String attributes (variable-length UTF-8, as h5py writes str).
llvm::Error writeString(hid_t object, const char *name, llvm::StringRef value);
std::optional<std::string> readString(hid_t object, const char *name);
llvm::Error writeInt(hid_t object, const char *name, int64_t value);
std::optional<int64_t> readInt(hid_t object, const char *name);

/// File access for a file that one process writes (Hdf5Direct.cpp): HDF5 lays out
/// the file and writes its metadata as usual, and its raw data (datasets' chunks)
/// is gathered into runs and written around the page cache (O_DIRECT) where the
/// file system allows it, on a helper thread. `displayName` names the file in
/// errors and must outlive the file. An invalid handle if HDF5 refuses the driver.
Handle directWriteAccess(const std::string &displayName);
/// Waits for the raw data writes under way of `file`, flushed (H5Fflush) just
/// before: the first failure among them. Call before closing the file, whose close
/// otherwise reports such a failure only as HDF5's "unable to close file". Nothing
/// for other drivers.
llvm::Error finishDirectWrites(hid_t file);
/// Turns the writes still to come to `file`, a file being discarded, into no-ops:
/// its close then flushes nothing and cannot fail. A close that fails (a full disk)
/// leaves the file's identifier registered after HDF5 1.10 has freed the file, and
/// HDF5's exit handler closes it again and crashes. Nothing for other drivers.
void abandonDirectWrites(hid_t file);
} // namespace loom::ckpt::hdf5

#endif // LOOM_LIB_CHECKPOINT_HDF5_H
