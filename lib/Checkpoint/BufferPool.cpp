//===- BufferPool.cpp - reused buffers for assembling tensors -------------===//
#include "loom/Checkpoint/BufferPool.h"

#include <sys/mman.h>
#include <vector>

using namespace loom::ckpt;

namespace {
/// Buffers are whole huge pages: transparent huge pages, where the kernel gives
/// them, map a fresh buffer 512 pages at a time.
constexpr size_t kHugePage = size_t(2) << 20;

struct Region {
  uint8_t *data = nullptr;
  size_t capacity = 0;
};

void unmap(const Region &r) { ::munmap(r.data, r.capacity); }
} // namespace

/// The idle buffers, shared with the deleters of the buffers in use so that a
/// buffer released after the pool is gone is unmapped instead.
struct BufferPool::Idle {
  std::vector<Region> regions;
  unsigned mapped = 0;
};

BufferPool::BufferPool() : idle(std::make_shared<Idle>()) {}

BufferPool::~BufferPool() {
  for (const Region &r : idle->regions)
    unmap(r);
}

std::shared_ptr<Storage> BufferPool::take(size_t size) {
  if (size < kPooledFrom)
    return Storage::uninitialized(size);
  std::vector<Region> &regions = idle->regions;
  auto best = regions.end();
  for (auto it = regions.begin(); it != regions.end(); ++it)
    if (it->capacity >= size && (best == regions.end() || it->capacity < best->capacity))
      best = it;
  Region region;
  if (best != regions.end()) {
    region = *best;
    regions.erase(best);
  } else {
    // None holds `size`: give the idle ones back first, so that memory does not grow
    // past what the buffers in use and this one need.
    for (const Region &r : regions)
      unmap(r);
    regions.clear();
    size_t capacity = (size + kHugePage - 1) / kHugePage * kHugePage;
    void *address = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (address == MAP_FAILED)
      return Storage::uninitialized(size);
    ::madvise(address, capacity, MADV_HUGEPAGE);
    // Faulted in by one call rather than page by page as the first copy touches it
    // (a kernel before 5.14 refuses; the copy then faults the pages in).
    ::madvise(address, capacity, MADV_POPULATE_WRITE);
    region = {static_cast<uint8_t *>(address), capacity};
    ++idle->mapped;
  }
  std::weak_ptr<Idle> pool = idle;
  std::shared_ptr<const void> owner(region.data, [pool, region](const void *) {
    if (std::shared_ptr<Idle> alive = pool.lock())
      alive->regions.push_back(region);
    else
      unmap(region);
  });
  return Storage::writableView(llvm::MutableArrayRef<uint8_t>(region.data, size),
                               std::move(owner));
}

size_t BufferPool::idleBytes() const {
  size_t bytes = 0;
  for (const Region &r : idle->regions)
    bytes += r.capacity;
  return bytes;
}

unsigned BufferPool::mappedBuffers() const { return idle->mapped; }
