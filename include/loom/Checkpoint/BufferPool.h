//===- BufferPool.h - reused buffers for assembling tensors -----*- C++ -*-===//
//
// A converter assembles each output tensor in a buffer, writes it out and moves on
// to the next. Mapping a fresh buffer per tensor costs far more than the copy into
// it: every page is faulted in and zeroed, and on a virtual machine each first
// touch of a page also costs the hypervisor's mapping of it (0.6 GiB/s against 14
// GiB/s for a buffer already touched). A pool hands a finished tensor's buffer to
// the next one instead, so after the first few tensors the copies run at memory
// speed.
//
// Memory stays what one buffer per tensor would use: a buffer returns to the pool
// when the last view of it goes, and when no idle buffer is large enough the idle
// ones are unmapped before a new one is mapped.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_CHECKPOINT_BUFFERPOOL_H
#define LOOM_CHECKPOINT_BUFFERPOOL_H

#include "loom/Checkpoint/Tensor.h"

#include <memory>

namespace loom::ckpt {

class BufferPool {
public:
  BufferPool();
  /// Unmaps the idle buffers; buffers still in use are unmapped when released.
  ~BufferPool();
  BufferPool(const BufferPool &) = delete;
  BufferPool &operator=(const BufferPool &) = delete;

  /// A writable storage of `size` bytes with unspecified contents: the smallest idle
  /// buffer that holds it, or a new one. Small sizes come from the heap.
  std::shared_ptr<Storage> take(size_t size);

  /// Bytes of the buffers waiting in the pool (not in use).
  size_t idleBytes() const;
  /// Buffers mapped so far (tests check that they are reused).
  unsigned mappedBuffers() const;

  /// Sizes below this come from Storage::uninitialized().
  static constexpr size_t kPooledFrom = size_t(1) << 20;

private:
  struct Idle;
  std::shared_ptr<Idle> idle;
};

} // namespace loom::ckpt

#endif // LOOM_CHECKPOINT_BUFFERPOOL_H
