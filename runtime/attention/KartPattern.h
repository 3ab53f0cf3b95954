//===- KartPattern.h - an artifact's attention pattern ---------*- C++ -*-===//
//
// The AttentionPattern table of an artifact (runtime/schema/kart.fbs) as a
// PatternSpec, for the loader's check and the kernels.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_ATTENTION_KARTPATTERN_H
#define KILN_RUNTIME_ATTENTION_KARTPATTERN_H

#include "runtime/attention/PatternSpec.h"
#include "runtime/kart_generated.h"

namespace kiln::runtime::attention {

inline PatternSpec specOf(const kart::AttentionPattern &p) {
  PatternSpec s;
  s.kind = static_cast<PatternKind>(p.kind());
  s.causal = p.causal();
  s.window = p.window();
  s.block = p.block();
  s.local = p.local();
  s.globalBlocks = p.global_blocks();
  s.random = p.random();
  s.seed = p.seed();
  s.stride = p.stride();
  s.summary = p.summary();
  s.globalTokens = p.global_tokens();
  return s;
}

} // namespace kiln::runtime::attention

#endif
