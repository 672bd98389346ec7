//===- EmitInternal.h - helpers the emitters share --------------*- C++ -*-===//
#ifndef LOOM_LIB_EMIT_EMITINTERNAL_H
#define LOOM_LIB_EMIT_EMITINTERNAL_H

#include "loom/Emit/Emit.h"

namespace loom::emit::detail {

/// Three comment lines naming the target, the plan, its model and cluster and
/// the loom versions that planned and emitted; `comment` ("# ") starts each line.
std::string header(const char *comment, const char *target, const spec::Plan &plan,
                   const Provenance &from);

/// "1f1b", "zb-h1", ...: the names `loom plan --schedule` takes.
std::string scheduleName(spec::ScheduleKind kind);

/// Micro-batches per step on each data-parallel rank.
int64_t gradientAccumulation(const spec::Plan &plan);

} // namespace loom::emit::detail

#endif // LOOM_LIB_EMIT_EMITINTERNAL_H
