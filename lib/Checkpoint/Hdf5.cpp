//===- Hdf5.cpp - small RAII layer over the HDF5 C API ---------------------===//
#include "Hdf5.h"

using namespace loom::ckpt;
using namespace loom::ckpt::hdf5;

Handle &Handle::operator=(Handle &&other) {
  if (this != &other) {
    reset();
    id = other.id;
    closer = other.closer;
    other.id = H5I_INVALID_HID;
  }
  return *this;
}

bool Handle::reset() {
  bool ok = true;
  if (id >= 0 && closer)
    ok = closer(id) >= 0;
  id = H5I_INVALID_HID;
  return ok;
}

Quiet::Quiet() {
  H5Eget_auto2(H5E_DEFAULT, &func, &data);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

Quiet::~Quiet() { H5Eset_auto2(H5E_DEFAULT, func, data); }

std::string hdf5::lastError() {
  std::string description;
  // Upward walks start at the function that detected the error: its message is the
  // cause; the ones above it only say which API call failed.
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned, const H5E_error2_t *entry, void *out) -> herr_t {
        auto &text = *static_cast<std::string *>(out);
        if (text.empty() && entry->desc && *entry->desc)
          text = entry->desc;
        return 0;
      },
      &description);
  return description.empty() ? "unknown HDF5 error" : description;
}

Handle hdf5::fileType(DType dtype) {
  hid_t base = H5I_INVALID_HID;
  switch (dtype) {
  case DType::Bool:
  case DType::UInt8:
    base = H5T_STD_U8LE;
    break;
  case DType::Int8:
    base = H5T_STD_I8LE;
    break;
  case DType::Int16:
    base = H5T_STD_I16LE;
    break;
  case DType::Int32:
    base = H5T_STD_I32LE;
    break;
  case DType::Int64:
    base = H5T_STD_I64LE;
    break;
  case DType::BFloat16:
    base = H5T_STD_U16LE;
    break;
  case DType::Float32:
    base = H5T_IEEE_F32LE;
    break;
  case DType::Float64:
    base = H5T_IEEE_F64LE;
    break;
  case DType::Float16: {
    // IEEE binary16 as h5py defines it: sign bit 15, exponent bits 10-14 (bias 15),
    // mantissa bits 0-9.
    Handle half(H5Tcopy(H5T_IEEE_F32LE), H5Tclose);
    H5Tset_fields(half.get(), 15, 10, 5, 0, 10);
    H5Tset_size(half.get(), 2);
    H5Tset_ebias(half.get(), 15);
    return half;
  }
  }
  return Handle(H5Tcopy(base), H5Tclose);
}

static Handle stringType() {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  return type;
}

static llvm::Error attributeError(const char *name) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 "cannot write attribute '%s': %s", name, lastError().c_str());
}

llvm::Error hdf5::writeString(hid_t object, const char *name, llvm::StringRef value) {
  Handle type = stringType();
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose);
  std::string text = value.str();
  const char *pointer = text.c_str();
  if (!attr || H5Awrite(attr.get(), type.get(), &pointer) < 0)
    return attributeError(name);
  return llvm::Error::success();
}

std::optional<std::string> hdf5::readString(hid_t object, const char *name) {
  if (H5Aexists(object, name) <= 0)
    return std::nullopt;
  Handle attr(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  Handle fileType(H5Aget_type(attr.get()), H5Tclose);
  if (!attr || H5Tget_class(fileType.get()) != H5T_STRING || !H5Tis_variable_str(fileType.get()))
    return std::nullopt;
  Handle type = stringType();
  char *text = nullptr;
  if (H5Aread(attr.get(), type.get(), &text) < 0 || !text)
    return std::nullopt;
  std::string result(text);
  H5free_memory(text);
  return result;
}

llvm::Error hdf5::writeInt(hid_t object, const char *name, int64_t value) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose);
  if (!attr || H5Awrite(attr.get(), H5T_NATIVE_INT64, &value) < 0)
    return attributeError(name);
  return llvm::Error::success();
}

std::optional<int64_t> hdf5::readInt(hid_t object, const char *name) {
  if (H5Aexists(object, name) <= 0)
    return std::nullopt;
  Handle attr(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  int64_t value = 0;
  if (!attr || H5Tget_class(type.get()) != H5T_INTEGER ||
      H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0)
    return std::nullopt;
  return value;
}
