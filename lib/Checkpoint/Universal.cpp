//===- Universal.cpp - loom's universal checkpoint format (HDF5) -----------===//
//
// File layout (docs/checkpoints.md, "Universal format"):
//   /                       attributes loom_format, format_version, model_config,
//                           source_format, source_layout, name_mapping, iteration,
//                           tokens_seen
//   /params/<name>          the parameter; attributes dtype, xxh3_64
//   /optimizer/<name>/      group with attribute step; datasets fp32, exp_avg,
//                           exp_avg_sq (each with dtype, xxh3_64)
//
//===----------------------------------------------------------------------===//
#include "loom/Checkpoint/Universal.h"

#include "Hdf5.h"
#include "loom/Checkpoint/Mpi.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/xxhash.h"

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#ifdef LOOM_HAVE_MPI
#include <mpi.h>
#endif

using namespace loom::ckpt;
using namespace loom::ckpt::hdf5;

static constexpr llvm::StringLiteral kFormatName = "loom-universal";
static constexpr int64_t kFormatVersion = 1;
/// Chunks of about 1 MiB: small enough that a row-range read touches little more than
/// it asks for, large enough that per-chunk overhead (index, Fletcher-32) is noise.
static constexpr uint64_t kChunkBytes = 1 << 20;

static constexpr UniversalState kOptimizerStates[] = {UniversalState::Fp32, UniversalState::ExpAvg,
                                                      UniversalState::ExpAvgSq};

llvm::StringRef loom::ckpt::universalStateName(UniversalState state) {
  switch (state) {
  case UniversalState::Param:
    return "param";
  case UniversalState::Fp32:
    return "fp32";
  case UniversalState::ExpAvg:
    return "exp_avg";
  case UniversalState::ExpAvgSq:
    return "exp_avg_sq";
  }
  return "";
}

static std::string datasetPath(llvm::StringRef name, UniversalState state) {
  if (state == UniversalState::Param)
    return ("params/" + name).str();
  return ("optimizer/" + name + "/" + universalStateName(state)).str();
}

static std::string checksumText(llvm::ArrayRef<uint8_t> bytes) {
  return llvm::utohexstr(llvm::xxh3_64bits(bytes), /*LowerCase=*/true, /*Width=*/16);
}


//===----------------------------------------------------------------------===//
// Writing
//===----------------------------------------------------------------------===//

/// HDF5's Fletcher-32 as its checksum filter computes it, by its closed form. HDF5
/// sums the big-endian 16-bit words w_1..w_n (an odd last byte is the high half of a
/// word) into low = sum w_i and high = sum (n - i + 1) w_i, folding both with
/// x -> (x & 0xffff) + (x >> 16) as it goes, and appends (high << 16) | low
/// little-endian. Folding keeps x mod 65535 and never turns a nonzero x into 0, so
/// each half is its sum mod 65535, except 0xffff where that is 0 and the data is not
/// all zeros. Computed in blocks of 128 words with 32-bit sums (sum j*w_j < 2^30),
/// which vectorise; an AVX2 clone is chosen at load time where the CPU has it.
__attribute__((target_clones("avx2", "default"))) static uint32_t
hdf5Fletcher32(const uint8_t *data, size_t size) {
  uint64_t low = 0, high = 0; // mod 65535
  bool nonzero = false;
  for (size_t words = size / 2; words;) {
    size_t m = std::min<size_t>(words, 128);
    uint32_t sum = 0, weighted = 0; // sum w_j, sum j * w_j for j = 0..m-1
    for (uint32_t j = 0; j < m; ++j) {
      uint32_t w = (uint32_t(data[2 * j]) << 8) | data[2 * j + 1];
      sum += w;
      weighted += j * w;
    }
    // The block's words add m * low (earlier words, once per word) and
    // sum (m - j) w_j to high.
    high = (high + m * low + (uint64_t(m) * sum - weighted)) % 65535;
    low = (low + sum) % 65535;
    nonzero |= sum != 0;
    data += 2 * m;
    words -= m;
  }
  if (size % 2) {
    uint32_t w = uint32_t(*data) << 8;
    low = (low + w) % 65535;
    high = (high + low) % 65535;
    nonzero |= w != 0;
  }
  if (nonzero && low == 0)
    low = 0xffff;
  if (nonzero && high == 0)
    high = 0xffff;
  return uint32_t(high << 16 | low);
}

/// A dataset chunked in blocks of whole rows (chunk = full trailing dimensions),
/// as writeDataset lays out every tensor whose row fits in a chunk. Whole reads of
/// such datasets use direct chunk I/O, bypassing HDF5's filter pipeline, which
/// allocates and frees a buffer per chunk: fresh pages whose first touch costs more
/// than the I/O.
struct RowChunks {
  uint64_t rowBytes = 0, rows = 0, chunkRows = 0;
  uint64_t chunkBytes() const { return chunkRows * rowBytes; }
  static std::optional<RowChunks> of(const std::vector<hsize_t> &dims,
                                     const std::vector<hsize_t> &chunk, size_t elementSize) {
    if (dims.empty() || chunk.size() != dims.size() || chunk[0] == 0)
      return std::nullopt;
    RowChunks rc{elementSize, dims[0], chunk[0]};
    for (size_t i = 1; i < dims.size(); ++i) {
      if (chunk[i] != dims[i])
        return std::nullopt;
      rc.rowBytes *= dims[i];
    }
    return rc;
  }
};

static llvm::Error chunkError(uint64_t row, const llvm::Twine &what) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 "chunk at row " + llvm::Twine(row) + ": " + what);
}

/// Writes `bytes` (row-major, the whole dataset of `dims`) chunk by chunk with
/// H5Dwrite_chunk: each chunk gathered row-major from its box of the tensor, edge
/// chunks zero-padded to full size (as HDF5 stores them), and followed by its
/// Fletcher-32 as the filter would store it. Independent of HDF5's filter pipeline,
/// which allocates a buffer per chunk, and the only way a parallel file takes
/// filtered chunks outside collective calls.
static llvm::Error writeChunksDirectly(hid_t dataset, const std::vector<hsize_t> &dims,
                                       const std::vector<hsize_t> &chunk, size_t elementSize,
                                       llvm::ArrayRef<uint8_t> bytes,
                                       llvm::function_ref<void(uint64_t)> wrote) {
  const size_t rank = dims.size();
  uint64_t chunkBytes = elementSize;
  for (hsize_t c : chunk)
    chunkBytes *= c;
  std::shared_ptr<Storage> bounce = Storage::uninitialized(chunkBytes + 4);
  uint8_t *buffer = bounce->mutableData();
  // Row-major strides (bytes) of the tensor and of a chunk.
  std::vector<uint64_t> stride(rank), chunkStride(rank);
  for (size_t d = rank; d-- > 0;) {
    stride[d] = d + 1 < rank ? stride[d + 1] * dims[d + 1] : elementSize;
    chunkStride[d] = d + 1 < rank ? chunkStride[d + 1] * chunk[d + 1] : elementSize;
  }
  std::vector<hsize_t> offset(rank, 0), extent(rank), at(rank);
  for (;;) {
    // The chunk at `offset`: its box, copied run by run along the last dimension.
    bool partial = false;
    for (size_t d = 0; d < rank; ++d) {
      extent[d] = std::min<hsize_t>(chunk[d], dims[d] - offset[d]);
      partial |= extent[d] != chunk[d];
    }
    if (partial)
      std::memset(buffer, 0, chunkBytes);
    uint64_t run = extent[rank - 1] * elementSize;
    std::fill(at.begin(), at.end(), 0);
    for (;;) {
      uint64_t from = 0, to = 0;
      for (size_t d = 0; d < rank; ++d) {
        from += (offset[d] + at[d]) * stride[d];
        to += at[d] * chunkStride[d];
      }
      std::memcpy(buffer + to, bytes.data() + from, run);
      size_t d = rank - 1;
      while (d-- > 0 && ++at[d] == extent[d])
        at[d] = 0;
      if (d == size_t(-1))
        break;
    }
    uint32_t sum = hdf5Fletcher32(buffer, chunkBytes);
    for (int i = 0; i < 4; ++i)
      buffer[chunkBytes + i] = uint8_t(sum >> (8 * i));
    if (H5Dwrite_chunk(dataset, H5P_DEFAULT, 0, offset.data(), chunkBytes + 4, buffer) < 0)
      return chunkError(offset[0], "write failed: " + lastError());
    wrote(chunkBytes + 4);
    // The next chunk, last dimension fastest.
    size_t d = rank;
    while (d-- > 0) {
      offset[d] += chunk[d];
      if (offset[d] < dims[d])
        break;
      offset[d] = 0;
    }
    if (d == size_t(-1))
      return llvm::Error::success();
  }
}

namespace {
/// Starts the disk on the file's dirty pages every 64 MiB of data written
/// (Linux's sync_file_range, without waiting), as OutputFile::startWriteback
/// does: the writeback then overlaps the writing, the page cache's dirty-page
/// throttling does not pace HDF5's buffered writes, and the final fsync finds
/// little left. Elsewhere, or if the file cannot be opened again, nothing. With
/// the direct driver (Hdf5Direct.cpp) this covers what still goes through the
/// cache: metadata, small datasets, the unaligned ends of each run, and every byte
/// where O_DIRECT is refused or LOOM_DIRECT_IO=0.
class Writeback {
public:
  explicit Writeback(const std::string &path)
      : fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~Writeback() {
    if (fd >= 0)
      ::close(fd);
  }
  Writeback(const Writeback &) = delete;
  Writeback &operator=(const Writeback &) = delete;

  void wrote(uint64_t bytes) {
    if ((pending += bytes) < kEvery || fd < 0)
      return;
    pending = 0;
#ifdef __linux__
    (void)::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE); // advisory; fsync checks
#endif
  }

private:
  static constexpr uint64_t kEvery = 64u << 20;
  int fd;
  uint64_t pending = 0;
};

class Writer {
public:
  Writer(std::string finalPath, hid_t file, const std::string &tempPath)
      : finalPath(std::move(finalPath)), file(file), writeback(tempPath) {}

  llvm::Error error(const llvm::Twine &message) { return fileError(finalPath, message); }

  llvm::Error writeDataset(hid_t parent, const char *leaf, const llvm::Twine &what,
                           const Tensor &tensor) {
    if (auto reason = tensor.checkView())
      return error(what + ": " + *reason);
    std::vector<hsize_t> dims(tensor.shape.begin(), tensor.shape.end());
    auto dataset = createDataset(parent, leaf, what, tensor.dtype, dims);
    if (!dataset)
      return dataset.takeError();
    std::vector<uint8_t> gathered;
    llvm::ArrayRef<uint8_t> bytes = rowMajor(tensor, gathered);
    if (auto err = writeData(dataset->get(), what, tensor.dtype, dims, bytes))
      return err;
    if (auto err = describeDataset(dataset->get(), what, tensor.dtype))
      return err;
    return writeChecksum(dataset->get(), what, llvm::xxh3_64bits(bytes));
  }

  /// A dataset's bytes: chunked ones chunk by chunk (writeChunksDirectly), a
  /// scalar by H5Dwrite (it has no chunks), an empty one not at all.
  llvm::Error writeData(hid_t dataset, const llvm::Twine &what, DType dtype,
                        const std::vector<hsize_t> &dims, llvm::ArrayRef<uint8_t> bytes) {
    if (bytes.empty())
      return llvm::Error::success();
    if (dims.empty()) {
      if (H5Dwrite(dataset, fileType(dtype).get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()) < 0)
        return error(what + ": cannot write: " + lastError());
      return llvm::Error::success();
    }
    if (auto err = writeChunksDirectly(dataset, dims, chunkShape(dims, dtypeSize(dtype)),
                                       dtypeSize(dtype), bytes,
                                       [&](uint64_t n) { writeback.wrote(n); }))
      return error(what + ": " + llvm::toString(std::move(err)));
    return llvm::Error::success();
  }

  llvm::Error writeMetadata(const UniversalMetadata &meta) {
    llvm::json::Object mapping;
    for (const auto &[universal, source] : meta.nameMapping)
      mapping[universal] = source;
    std::string mappingText = llvm::formatv("{0}", llvm::json::Value(std::move(mapping))).str();
    for (auto [attribute, json] : {std::pair{"model_config", &meta.modelConfig},
                                   std::pair{"source_layout", &meta.sourceLayout}})
      if (auto parsed = llvm::json::parse(*json); !parsed)
        return error(llvm::Twine(attribute) + " is not JSON: " + llvm::toString(parsed.takeError()));
    llvm::Error err = llvm::joinErrors(writeString(file, "loom_format", kFormatName),
                                       writeInt(file, "format_version", kFormatVersion));
    err = llvm::joinErrors(std::move(err), writeString(file, "model_config", meta.modelConfig));
    err = llvm::joinErrors(std::move(err), writeString(file, "source_format", meta.sourceFormat));
    err = llvm::joinErrors(std::move(err), writeString(file, "source_layout", meta.sourceLayout));
    err = llvm::joinErrors(std::move(err), writeString(file, "name_mapping", mappingText));
    err = llvm::joinErrors(std::move(err), writeInt(file, "iteration", meta.iteration));
    err = llvm::joinErrors(std::move(err), writeInt(file, "tokens_seen", meta.tokensSeen));
    if (err)
      return error(llvm::toString(std::move(err)));
    return llvm::Error::success();
  }

  /// The dataset `leaf` of `dims` under `parent`: chunked with Fletcher-32 unless it
  /// is a scalar or empty. `early`: every chunk allocated now at its filtered size
  /// (zeros and their Fletcher-32), as a parallel file needs: its ranks then write
  /// their chunks in place, each on its own, which changes no metadata.
  llvm::Expected<Handle> createDataset(hid_t parent, const char *leaf, const llvm::Twine &what,
                                       DType dtype, const std::vector<hsize_t> &dims,
                                       bool early = false) {
    Handle space(dims.empty() ? H5Screate(H5S_SCALAR)
                              : H5Screate_simple(int(dims.size()), dims.data(), nullptr),
                 H5Sclose);
    Handle create(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    bool empty = llvm::is_contained(dims, hsize_t(0));
    if (!dims.empty() && !empty) {
      std::vector<hsize_t> chunk = chunkShape(dims, dtypeSize(dtype));
      if (H5Pset_chunk(create.get(), int(chunk.size()), chunk.data()) < 0 ||
          H5Pset_fletcher32(create.get()) < 0)
        return error(what + ": cannot set up chunks: " + lastError());
    }
    if (early && (H5Pset_alloc_time(create.get(), H5D_ALLOC_TIME_EARLY) < 0 ||
                  H5Pset_fill_time(create.get(), H5D_FILL_TIME_ALLOC) < 0))
      return error(what + ": cannot allocate early: " + lastError());
    Handle dataset(H5Dcreate2(parent, leaf, fileType(dtype).get(), space.get(), H5P_DEFAULT,
                              create.get(), H5P_DEFAULT),
                   H5Dclose);
    if (!dataset)
      return error(what + ": cannot create dataset: " + lastError());
    return std::move(dataset);
  }

  /// A tensor's row-major bytes: contiguous tensors go to HDF5 straight from their
  /// (mapped) storage; views are gathered once into `gathered`, since HDF5 and the
  /// checksum both want row-major bytes.
  static llvm::ArrayRef<uint8_t> rowMajor(const Tensor &tensor, std::vector<uint8_t> &gathered) {
    if (tensor.isContiguous())
      return tensor.contiguousBytes();
    gathered = tensor.toBytes();
    return gathered;
  }

  /// The attributes every dataset carries: its torch dtype, and the XXH3-64 of its
  /// row-major bytes.
  llvm::Error describeDataset(hid_t dataset, const llvm::Twine &what, DType dtype) {
    if (auto err = writeString(dataset, "dtype", torchDTypeName(dtype)))
      return error(what + ": " + llvm::toString(std::move(err)));
    return llvm::Error::success();
  }
  llvm::Error writeChecksum(hid_t dataset, const llvm::Twine &what, uint64_t checksum) {
    std::string text = llvm::utohexstr(checksum, /*LowerCase=*/true, /*Width=*/16);
    if (auto err = writeString(dataset, "xxh3_64", text))
      return error(what + ": " + llvm::toString(std::move(err)));
    return llvm::Error::success();
  }

private:
  /// Full trailing dimensions, cut along the leading ones until a chunk is about
  /// kChunkBytes (HDF5 also caps a chunk at 4 GiB).
  static std::vector<hsize_t> chunkShape(const std::vector<hsize_t> &dims, uint64_t elementSize) {
    std::vector<hsize_t> chunk = dims;
    auto bytes = [&] {
      uint64_t total = elementSize;
      for (hsize_t d : chunk)
        total *= d;
      return total;
    };
    for (size_t i = 0; i < chunk.size() && bytes() > kChunkBytes; ++i) {
      uint64_t rest = bytes() / chunk[i];
      chunk[i] = std::max<uint64_t>(1, kChunkBytes / std::max<uint64_t>(rest, 1));
    }
    return chunk;
  }

  std::string finalPath;
  hid_t file;
  Writeback writeback;
};
} // namespace

struct UniversalStream::Impl {
  std::string finalPath;
  llvm::SmallString<256> tempPath;
  Handle file, params, optimizer;
  std::unique_ptr<Writer> writer;
  llvm::StringMap<Handle> groups;
  llvm::StringMap<llvm::SmallVector<int64_t, 4>> paramShapes;
  /// (name, state) of each optimizer state written, with its shape.
  std::vector<std::tuple<std::string, UniversalState, llvm::SmallVector<int64_t, 4>>> states;
  bool finished = false;
  /// Open on every rank of an MPI job (createParallel): its datasets, created up
  /// front and kept open; this rank's checksums of the ones it wrote (0 elsewhere).
  bool parallel = false;
  std::vector<UniversalDataset> declared;
  std::vector<Handle> datasets;
  llvm::StringMap<size_t> index; ///< datasetPath -> position in declared
  std::vector<uint64_t> checksums, written;

  llvm::Error fail(llvm::Error err) {
    if (parallel) {
      // Closing is collective and the other ranks may never get there: leave the
      // handles to the abort that follows; rank 0 removes the temporary.
      for (Handle &dataset : datasets)
        dataset.release();
      for (auto &entry : groups)
        entry.second.release();
      params.release();
      optimizer.release();
      file.release();
    }
    datasets.clear();
    groups.clear();
    params.reset();
    optimizer.reset();
    writer.reset();
    if (file)
      abandonDirectWrites(file.get());
    file.reset();
    if (mpi::rank() == 0)
      llvm::sys::fs::remove(tempPath);
    finished = true;
    return err;
  }
  /// Bookkeeping before a dataset is created: the name is a link name, a
  /// parameter is there once; optimizer states are checked at finish().
  llvm::Error admit(llvm::StringRef name, UniversalState state, llvm::ArrayRef<int64_t> shape) {
    // A '/' would make HDF5 create intermediate groups: the name would not read back.
    if (name.empty() || name.contains('/') || name == "." || name == "..")
      return writer->error("parameter name '" + name + "' cannot be an HDF5 link name");
    if (state == UniversalState::Param) {
      if (!paramShapes.try_emplace(name, llvm::SmallVector<int64_t, 4>(shape)).second)
        return writer->error("params/" + name + " written twice");
    } else {
      states.emplace_back(name.str(), state, llvm::SmallVector<int64_t, 4>(shape));
    }
    return llvm::Error::success();
  }
  /// The group a dataset goes in, and its name there.
  llvm::Expected<std::pair<hid_t, std::string>> parentOf(llvm::StringRef name,
                                                         UniversalState state) {
    if (state == UniversalState::Param)
      return std::pair{params.get(), name.str()};
    auto group = groupOf(name);
    if (!group)
      return group.takeError();
    return std::pair{*group, universalStateName(state).str()};
  }
  llvm::Expected<hid_t> groupOf(llvm::StringRef name) {
    auto &group = groups[name];
    if (!group) {
      group = Handle(H5Gcreate2(optimizer.get(), name.str().c_str(), H5P_DEFAULT, H5P_DEFAULT,
                                H5P_DEFAULT),
                     H5Gclose);
      if (!group)
        return fileError(finalPath, "optimizer/" + name + ": cannot create group: " + lastError());
    }
    return group.get();
  }
};

UniversalStream::UniversalStream(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}

UniversalStream::~UniversalStream() {
  if (impl && !impl->finished)
    llvm::consumeError(impl->fail(llvm::Error::success()));
}

llvm::Expected<std::unique_ptr<UniversalStream>>
UniversalStream::create(const llvm::Twine &path, const UniversalMetadata &metadata) {
  return open(path, metadata, /*parallel=*/false);
}

llvm::Expected<std::unique_ptr<UniversalStream>>
UniversalStream::createParallel(const llvm::Twine &path, const UniversalMetadata &metadata,
                                llvm::ArrayRef<UniversalDataset> datasets) {
#ifdef LOOM_HAVE_MPI
  if (!mpi::active())
    return fileError(path, "a parallel universal file needs MPI initialized (--mpi)");
  auto stream = open(path, metadata, /*parallel=*/true);
  if (!stream)
    return stream.takeError();
  // Every dataset, created by every rank in the same order (metadata changes are
  // collective), with its chunks allocated; the dtype attribute now, the checksum
  // at finish() once the owner is known.
  Quiet quiet;
  Impl &impl = *(*stream)->impl;
  for (const UniversalDataset &d : datasets) {
    std::string what = datasetPath(d.name, d.state);
    if (auto err = impl.admit(d.name, d.state, d.shape))
      return impl.fail(std::move(err));
    auto parent = impl.parentOf(d.name, d.state);
    if (!parent)
      return impl.fail(parent.takeError());
    std::vector<hsize_t> dims(d.shape.begin(), d.shape.end());
    auto dataset = impl.writer->createDataset(parent->first, parent->second.c_str(), what, d.dtype,
                                              dims, /*early=*/true);
    if (!dataset)
      return impl.fail(dataset.takeError());
    if (auto err = impl.writer->describeDataset(dataset->get(), what, d.dtype))
      return impl.fail(std::move(err));
    impl.index[what] = impl.declared.size();
    impl.declared.push_back(d);
    impl.datasets.push_back(std::move(*dataset));
  }
  impl.checksums.assign(impl.declared.size(), 0);
  impl.written.assign(impl.declared.size(), 0);
  return stream;
#else
  (void)datasets;
  return fileError(path, llvm::toString(mpi::init(nullptr, nullptr)));
#endif
}

llvm::Expected<std::unique_ptr<UniversalStream>>
UniversalStream::open(const llvm::Twine &path, const UniversalMetadata &metadata, bool parallel) {
  Quiet quiet;
  auto impl = std::make_unique<Impl>();
  impl->finalPath = path.str();
  impl->parallel = parallel;
  // One writer: its chunks around the page cache (Hdf5Direct.cpp); MPI-IO below.
  Handle access = parallel ? Handle(H5Pcreate(H5P_FILE_ACCESS), H5Pclose)
                           : directWriteAccess(impl->finalPath);
  std::string createError;
  if (mpi::rank() == 0) {
    int fd = -1;
    if (std::error_code ec = llvm::sys::fs::createUniqueFile(impl->finalPath + ".tmp-%%%%%%", fd,
                                                             impl->tempPath))
      createError = "cannot create a temporary file: " + ec.message();
    else
      llvm::sys::Process::SafelyCloseFileDescriptor(fd);
  }
#ifdef LOOM_HAVE_MPI
  if (parallel) {
    // Rank 0 names the temporary; every rank opens it through MPI-IO.
    char name[4096] = {};
    if (createError.empty())
      std::strncpy(name, impl->tempPath.c_str(), sizeof(name) - 1);
    MPI_Bcast(name, sizeof(name), MPI_CHAR, 0, MPI_COMM_WORLD);
    impl->tempPath = name;
    if (impl->tempPath.empty())
      return fileError(impl->finalPath, createError.empty() ? "rank 0 cannot create a temporary file"
                                                            : createError);
    H5Pset_fapl_mpio(access.get(), MPI_COMM_WORLD, MPI_INFO_NULL);
  }
#endif
  if (!createError.empty())
    return fileError(impl->finalPath, createError);
  if (!access)
    return impl->fail(fileError(impl->finalPath, "cannot set up file access: " + lastError()));
  impl->file = Handle(H5Fcreate(impl->tempPath.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access.get()),
                      H5Fclose);
  if (!impl->file)
    return impl->fail(fileError(impl->finalPath, "cannot create HDF5 file: " + lastError()));
  impl->writer = std::make_unique<Writer>(impl->finalPath, impl->file.get(), impl->tempPath.str().str());
  impl->params = Handle(H5Gcreate2(impl->file.get(), "params", H5P_DEFAULT, H5P_DEFAULT,
                                   H5P_DEFAULT),
                        H5Gclose);
  impl->optimizer = Handle(H5Gcreate2(impl->file.get(), "optimizer", H5P_DEFAULT, H5P_DEFAULT,
                                      H5P_DEFAULT),
                           H5Gclose);
  if (!impl->params || !impl->optimizer)
    return impl->fail(fileError(impl->finalPath, "cannot create groups: " + lastError()));
  if (auto err = impl->writer->writeMetadata(metadata))
    return impl->fail(std::move(err));
  return std::unique_ptr<UniversalStream>(new UniversalStream(std::move(impl)));
}

llvm::Error UniversalStream::write(llvm::StringRef name, UniversalState state,
                                   const Tensor &tensor) {
  Quiet quiet;
  if (impl->finished)
    return fileError(impl->finalPath, "written after finish");
  std::string what = datasetPath(name, state);
  if (impl->parallel) {
    // One of the declared datasets, written by this rank alone into its chunks.
    auto found = impl->index.find(what);
    if (found == impl->index.end())
      return impl->fail(impl->writer->error(what + " was not declared when the file was created"));
    size_t i = found->second;
    const UniversalDataset &d = impl->declared[i];
    if (tensor.dtype != d.dtype || tensor.shape != d.shape)
      return impl->fail(impl->writer->error(what + ": not the declared dtype and shape"));
    if (auto reason = tensor.checkView())
      return impl->fail(impl->writer->error(what + ": " + *reason));
    std::vector<uint8_t> gathered;
    llvm::ArrayRef<uint8_t> bytes = Writer::rowMajor(tensor, gathered);
    std::vector<hsize_t> dims(d.shape.begin(), d.shape.end());
    if (auto err = impl->writer->writeData(impl->datasets[i].get(), what, d.dtype, dims, bytes))
      return impl->fail(std::move(err));
    impl->checksums[i] = llvm::xxh3_64bits(bytes);
    impl->written[i] += 1;
    return llvm::Error::success();
  }
  if (auto err = impl->admit(name, state, tensor.shape))
    return impl->fail(std::move(err));
  auto parent = impl->parentOf(name, state);
  if (!parent)
    return impl->fail(parent.takeError());
  if (auto err = impl->writer->writeDataset(parent->first, parent->second.c_str(), what, tensor))
    return impl->fail(std::move(err));
  return llvm::Error::success();
}

llvm::Error UniversalStream::setStep(llvm::StringRef name, int64_t step) {
  Quiet quiet;
  auto group = impl->groupOf(name);
  if (!group)
    return impl->fail(group.takeError());
  if (auto err = writeInt(*group, "step", step))
    return impl->fail(impl->writer->error("optimizer/" + name + ": " + llvm::toString(std::move(err))));
  return llvm::Error::success();
}

llvm::Error UniversalStream::finish() {
  Quiet quiet;
  if (impl->finished)
    return fileError(impl->finalPath, "finished twice");
  for (const auto &[name, state, shape] : impl->states) {
    auto param = impl->paramShapes.find(name);
    if (param == impl->paramShapes.end())
      return impl->fail(impl->writer->error(datasetPath(name, state) + ": optimizer state of no parameter"));
    if (param->second != shape)
      return impl->fail(impl->writer->error(datasetPath(name, state) + ": shape differs from the parameter's"));
  }
  for (const auto &entry : impl->groups)
    if (!impl->paramShapes.count(entry.getKey()))
      return impl->fail(impl->writer->error("optimizer/" + entry.getKey() + ": optimizer state of no parameter"));
#ifdef LOOM_HAVE_MPI
  if (impl->parallel) {
    // Every non-empty dataset written by exactly one rank; its checksum from that
    // rank (the others hold 0) to every rank, which write the attribute alike.
    size_t n = impl->declared.size();
    std::vector<uint64_t> sums(n), counts(n);
    MPI_Allreduce(impl->checksums.data(), sums.data(), int(n), MPI_UINT64_T, MPI_BXOR, MPI_COMM_WORLD);
    MPI_Allreduce(impl->written.data(), counts.data(), int(n), MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    for (size_t i = 0; i < n; ++i) {
      const UniversalDataset &d = impl->declared[i];
      std::string what = datasetPath(d.name, d.state);
      uint64_t numel = *checkedNumel(d.shape);
      if (numel == 0)
        sums[i] = llvm::xxh3_64bits(llvm::ArrayRef<uint8_t>());
      else if (counts[i] != 1)
        return impl->fail(impl->writer->error(what + llvm::formatv(" was written by {0} ranks", counts[i])));
      if (auto err = impl->writer->writeChecksum(impl->datasets[i].get(), what, sums[i]))
        return impl->fail(std::move(err));
    }
    impl->datasets.clear();
  }
#endif
  impl->groups.clear();
  impl->params.reset();
  impl->optimizer.reset();
  impl->writer.reset();
  if (!impl->parallel) {
    if (H5Fflush(impl->file.get(), H5F_SCOPE_LOCAL) < 0)
      return impl->fail(fileError(impl->finalPath, "cannot flush HDF5 file: " + lastError()));
    if (auto err = finishDirectWrites(impl->file.get()))
      return impl->fail(std::move(err));
  }
  if (!impl->file.reset())
    return impl->fail(fileError(impl->finalPath, "cannot close HDF5 file: " + lastError()));
  // Durable before visible, as OutputFile does; in an MPI job rank 0 does it
  // once every rank has closed the file, and tells the others how it went.
  std::string failure;
  if (mpi::rank() == 0) {
    if (int fd = ::open(impl->tempPath.c_str(), O_RDONLY); fd >= 0) {
      int synced = ::fsync(fd);
      ::close(fd);
      if (synced != 0)
        failure = "fsync failed";
    }
    if (failure.empty())
      if (std::error_code ec = llvm::sys::fs::rename(impl->tempPath, impl->finalPath))
        failure = "cannot rename the temporary file: " + ec.message();
  }
#ifdef LOOM_HAVE_MPI
  if (impl->parallel) {
    int failed = !failure.empty();
    MPI_Bcast(&failed, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (failed && failure.empty())
      failure = "rank 0 could not put the file in place";
  }
#endif
  if (!failure.empty()) {
    impl->parallel = false; // nothing collective is left to wait for
    return impl->fail(fileError(impl->finalPath, failure));
  }
  impl->finished = true;
  return llvm::Error::success();
}

llvm::Error loom::ckpt::writeUniversal(const llvm::Twine &path,
                                       const UniversalCheckpoint &checkpoint) {
  auto stream = UniversalStream::create(path, checkpoint.metadata);
  if (!stream)
    return stream.takeError();
  for (const UniversalParam &param : checkpoint.params) {
    if (auto err = (*stream)->write(param.name, UniversalState::Param, param.param))
      return err;
    const std::optional<Tensor> *states[] = {&param.fp32, &param.expAvg, &param.expAvgSq};
    for (auto [state, tensor] : llvm::zip(kOptimizerStates, states))
      if (*tensor)
        if (auto err = (*stream)->write(param.name, state, **tensor))
          return err;
    if (param.step)
      if (auto err = (*stream)->setStep(param.name, *param.step))
        return err;
  }
  return (*stream)->finish();
}

//===----------------------------------------------------------------------===//
// Reading
//===----------------------------------------------------------------------===//

llvm::Expected<std::unique_ptr<UniversalReader>> UniversalReader::open(const llvm::Twine &path) {
  Quiet quiet;
  std::string name = path.str();
  if (!llvm::sys::fs::exists(name))
    return fileError(name, "no such file");
  if (H5Fis_hdf5(name.c_str()) <= 0)
    return fileError(name, "not an HDF5 file");
  hid_t file = H5Fopen(name.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0)
    return fileError(name, "cannot open: " + lastError());
  std::unique_ptr<UniversalReader> reader(new UniversalReader(name, file));
  if (auto err = reader->load())
    return std::move(err);
  return std::move(reader);
}

UniversalReader::~UniversalReader() { H5Fclose(file); }

const UniversalEntry *UniversalReader::find(llvm::StringRef name) const {
  auto it = llvm::partition_point(entryList,
                                  [&](const UniversalEntry &e) { return e.name < name; });
  return it != entryList.end() && it->name == name ? &*it : nullptr;
}

static std::vector<std::string> linkNames(hid_t group) {
  std::vector<std::string> names;
  H5Literate(
      group, H5_INDEX_NAME, H5_ITER_INC, nullptr,
      [](hid_t, const char *name, const H5L_info_t *, void *out) -> herr_t {
        static_cast<std::vector<std::string> *>(out)->push_back(name);
        return 0;
      },
      &names);
  return names;
}

llvm::Error UniversalReader::load() {
  auto format = readString(file, "loom_format");
  if (!format || *format != kFormatName)
    return fileError(path, "not a loom universal checkpoint (no loom_format attribute)");
  auto version = readInt(file, "format_version");
  if (!version || *version != kFormatVersion)
    return fileError(path, "unsupported format_version " +
                               (version ? std::to_string(*version) : std::string("(missing)")));
  auto text = [&](const char *attribute) { return readString(file, attribute).value_or(""); };
  meta.modelConfig = text("model_config");
  meta.sourceFormat = text("source_format");
  meta.sourceLayout = text("source_layout");
  meta.iteration = readInt(file, "iteration").value_or(0);
  meta.tokensSeen = readInt(file, "tokens_seen").value_or(0);
  if (std::string mapping = text("name_mapping"); !mapping.empty()) {
    auto parsed = llvm::json::parse(mapping);
    if (!parsed || !parsed->getAsObject())
      return fileError(path, "attribute name_mapping is not a JSON object");
    for (const auto &[universal, source] : *parsed->getAsObject())
      meta.nameMapping.emplace_back(universal.str(), source.getAsString().value_or("").str());
    llvm::sort(meta.nameMapping);
  }

  Handle params(H5Gopen2(file, "params", H5P_DEFAULT), H5Gclose);
  if (!params)
    return fileError(path, "group 'params' is missing");
  Handle optimizer(H5Gopen2(file, "optimizer", H5P_DEFAULT), H5Gclose);
  for (const std::string &name : linkNames(params.get())) {
    UniversalEntry entry;
    entry.name = name;
    Handle dataset(H5Dopen2(params.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
    if (!dataset)
      return fileError(path, "params/" + name + ": not a dataset");
    auto dtypeName = readString(dataset.get(), "dtype");
    auto dtype = dtypeName ? dtypeFromTorchName(*dtypeName) : std::nullopt;
    if (!dtype)
      return fileError(path, "params/" + name + ": missing or unknown dtype attribute");
    entry.dtype = *dtype;
    Handle space(H5Dget_space(dataset.get()), H5Sclose);
    int rank = H5Sget_simple_extent_ndims(space.get());
    if (rank < 0 || rank > H5S_MAX_RANK)
      return fileError(path, "params/" + name + ": bad dataspace");
    hsize_t dims[H5S_MAX_RANK];
    H5Sget_simple_extent_dims(space.get(), dims, nullptr);
    entry.shape.assign(dims, dims + rank);
    if (optimizer && H5Lexists(optimizer.get(), name.c_str(), H5P_DEFAULT) > 0) {
      Handle group(H5Gopen2(optimizer.get(), name.c_str(), H5P_DEFAULT), H5Gclose);
      if (!group)
        return fileError(path, "optimizer/" + name + ": not a group");
      for (UniversalState state : kOptimizerStates)
        if (H5Lexists(group.get(), universalStateName(state).data(), H5P_DEFAULT) > 0)
          entry.states.push_back(state);
      entry.step = readInt(group.get(), "step");
    }
    entryList.push_back(std::move(entry));
  }
  llvm::sort(entryList, [](const UniversalEntry &a, const UniversalEntry &b) {
    return a.name < b.name;
  });
  return llvm::Error::success();
}

/// Reads a whole dataset laid out as writeDataset lays it out (row chunks,
/// Fletcher-32 the only filter, stored type = memory type) with H5Dread_chunk. The
/// caller checks the whole-dataset XXH3-64, which covers every byte. Returns false,
/// having read nothing, for any other layout: the caller then uses H5Dread.
static llvm::Expected<bool> readChunksDirectly(hid_t dataset, hid_t memType,
                                               const std::vector<hsize_t> &dims,
                                               size_t elementSize, uint8_t *out) {
  Handle stored(H5Dget_type(dataset), H5Tclose);
  if (dims.empty() || H5Tequal(stored.get(), memType) <= 0)
    return false;
  Handle create(H5Dget_create_plist(dataset), H5Pclose);
  if (H5Pget_layout(create.get()) != H5D_CHUNKED || H5Pget_nfilters(create.get()) != 1)
    return false;
  unsigned flags = 0, config = 0;
  size_t values = 0;
  if (H5Pget_filter2(create.get(), 0, &flags, &values, nullptr, 0, nullptr, &config) !=
      H5Z_FILTER_FLETCHER32)
    return false;
  std::vector<hsize_t> chunk(dims.size());
  if (H5Pget_chunk(create.get(), int(chunk.size()), chunk.data()) != int(dims.size()))
    return false;
  auto rc = RowChunks::of(dims, chunk, elementSize);
  if (!rc)
    return false;
  std::vector<hsize_t> offset(dims.size(), 0);
  // Every chunk must be stored whole with its 4-byte checksum, checked before
  // anything is read: a missing chunk (fill values) goes the general way.
  for (uint64_t row = 0; row < rc->rows; row += rc->chunkRows) {
    offset[0] = row;
    hsize_t size = 0;
    if (H5Dget_chunk_storage_size(dataset, offset.data(), &size) < 0 ||
        size != rc->chunkBytes() + 4)
      return false;
  }
  std::shared_ptr<Storage> bounce = Storage::uninitialized(rc->chunkBytes() + 4);
  for (uint64_t row = 0; row < rc->rows; row += rc->chunkRows) {
    offset[0] = row;
    uint32_t mask = 0;
    if (H5Dread_chunk(dataset, H5P_DEFAULT, offset.data(), &mask, bounce->mutableData()) < 0)
      return chunkError(row, "read failed: " + lastError());
    if (mask != 0)
      return chunkError(row, "stored without its checksum filter");
    uint64_t take = std::min(rc->chunkRows, rc->rows - row) * rc->rowBytes;
    std::memcpy(out + row * rc->rowBytes, bounce->bytes().data(), take);
  }
  return true;
}

llvm::Expected<Tensor>
UniversalReader::readSlab(llvm::StringRef name, UniversalState state,
                          std::optional<std::pair<int64_t, int64_t>> rows) {
  Quiet quiet;
  std::string where = datasetPath(name, state);
  const UniversalEntry *entry = find(name);
  if (!entry || (state != UniversalState::Param && !llvm::is_contained(entry->states, state)))
    return fileError(path, "no dataset " + where);
  Handle dataset(H5Dopen2(file, where.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dataset)
    return fileError(path, where + ": cannot open: " + lastError());
  auto dtypeName = readString(dataset.get(), "dtype");
  auto dtype = dtypeName ? dtypeFromTorchName(*dtypeName) : std::nullopt;
  if (!dtype)
    return fileError(path, where + ": missing or unknown dtype attribute");
  Handle type = fileType(*dtype);
  Handle stored(H5Dget_type(dataset.get()), H5Tclose);
  if (H5Tget_size(stored.get()) != dtypeSize(*dtype))
    return fileError(path, where + ": stored element size differs from dtype " + *dtypeName);
  Handle fileSpace(H5Dget_space(dataset.get()), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(fileSpace.get());
  if (rank < 0 || rank > H5S_MAX_RANK)
    return fileError(path, where + ": bad dataspace");
  std::vector<hsize_t> dims(rank);
  H5Sget_simple_extent_dims(fileSpace.get(), dims.data(), nullptr);

  Handle memSpace(H5S_ALL, nullptr);
  if (rows) {
    auto [begin, end] = *rows;
    if (rank == 0 || begin < 0 || begin > end || hsize_t(end) > dims[0])
      return fileError(path, where + ": rows [" + llvm::Twine(begin) + ", " + llvm::Twine(end) +
                                 ") outside dimension 0 of size " +
                                 (rank ? llvm::Twine(dims[0]) : llvm::Twine("(scalar)")));
    std::vector<hsize_t> start(rank, 0);
    start[0] = hsize_t(begin);
    dims[0] = hsize_t(end - begin);
    if (H5Sselect_hyperslab(fileSpace.get(), H5S_SELECT_SET, start.data(), nullptr, dims.data(),
                            nullptr) < 0)
      return fileError(path, where + ": cannot select rows: " + lastError());
    memSpace = Handle(H5Screate_simple(rank, dims.data(), nullptr), H5Sclose);
  }
  llvm::SmallVector<int64_t, 4> shape(dims.begin(), dims.end());
  auto numel = checkedNumel(shape);
  if (!numel || *numel > (uint64_t(1) << 62) / dtypeSize(*dtype))
    return fileError(path, where + ": shape too large");
  std::shared_ptr<Storage> storage = Storage::uninitialized(*numel * dtypeSize(*dtype));
  llvm::ArrayRef<uint8_t> bytes = storage->bytes();
  hid_t fileSelection = rows ? fileSpace.get() : H5S_ALL;
  // A whole read is checked against the dataset's XXH3-64 below, which covers every
  // byte, so HDF5's per-chunk Fletcher-32 (a third of the read time) is skipped;
  // partial reads keep it, being the only check they get.
  bool direct = false;
  if (!rows && !bytes.empty()) {
    auto done = readChunksDirectly(dataset.get(), type.get(), dims, dtypeSize(*dtype),
                                   storage->mutableData());
    if (!done)
      return fileError(path, where + ": " + llvm::toString(done.takeError()));
    direct = *done;
  }
  if (!direct && !bytes.empty()) {
    Handle transfer(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
    if (!rows && H5Pset_edc_check(transfer.get(), H5Z_DISABLE_EDC) < 0)
      return fileError(path, where + ": cannot set up the read: " + lastError());
    if (H5Dread(dataset.get(), type.get(), memSpace.get(), fileSelection, transfer.get(),
                storage->mutableData()) < 0)
      return fileError(path, where + ": read failed: " + lastError());
  }
  if (!rows) {
    auto expected = readString(dataset.get(), "xxh3_64");
    if (!expected)
      return fileError(path, where + ": missing xxh3_64 attribute");
    if (std::string actual = checksumText(bytes); actual != *expected)
      return fileError(path, where + ": checksum mismatch (xxh3_64 " + actual + ", recorded " +
                                 *expected + ")");
  }
  return Tensor::contiguous(*dtype, shape, std::move(storage));
}

llvm::Expected<Tensor> UniversalReader::read(llvm::StringRef name, UniversalState state) {
  return readSlab(name, state, std::nullopt);
}

llvm::Expected<Tensor> UniversalReader::readRows(llvm::StringRef name, UniversalState state,
                                                 int64_t begin, int64_t end) {
  return readSlab(name, state, std::pair{begin, end});
}

llvm::Expected<UniversalCheckpoint> UniversalReader::readAll() {
  UniversalCheckpoint checkpoint{meta, {}};
  for (const UniversalEntry &entry : entryList) {
    UniversalParam param;
    param.name = entry.name;
    auto tensor = read(entry.name);
    if (!tensor)
      return tensor.takeError();
    param.param = std::move(*tensor);
    std::optional<Tensor> *slots[] = {&param.fp32, &param.expAvg, &param.expAvgSq};
    for (auto [state, slot] : llvm::zip(kOptimizerStates, slots)) {
      if (!llvm::is_contained(entry.states, state))
        continue;
      auto stateTensor = read(entry.name, state);
      if (!stateTensor)
        return stateTensor.takeError();
      *slot = std::move(*stateTensor);
    }
    param.step = entry.step;
    checkpoint.params.push_back(std::move(param));
  }
  return checkpoint;
}

llvm::Error UniversalReader::verify() {
  // One dataset at a time: verifying must not need the whole model in memory.
  for (const UniversalEntry &entry : entryList) {
    if (auto tensor = read(entry.name); !tensor)
      return tensor.takeError();
    for (UniversalState state : entry.states)
      if (auto tensor = read(entry.name, state); !tensor)
        return tensor.takeError();
  }
  return llvm::Error::success();
}
