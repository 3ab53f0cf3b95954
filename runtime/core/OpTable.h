//===- OpTable.h - every runtime op, declared once ---------------*- C++
//-*-===//
//
// One row per kart::Op: how many operands and results it takes, which
// operands may be absent, which result may reuse an operand's storage, its
// flags, the attribute table it carries, and the two rules the loader and
// the executor apply — the load-time check of its operand types and
// attributes, and the run-time shape rule. The artifact writer checks each
// kernel it emits against the same row, so a writer and a runtime cannot
// disagree about an op. docs/contributing.md walks through adding an op.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CORE_OPTABLE_H
#define KILN_RUNTIME_CORE_OPTABLE_H

#include "runtime/Tensor.h"
#include "runtime/kart_generated.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::runtime {

enum OpFlag : uint32_t {
  /// Elementwise with NumPy broadcasting over two operands of one type.
  kBinary = 1u << 0,
  /// Elementwise over one f32 operand.
  kUnary = 1u << 1,
  /// May be an instruction of a FusedElementwise program.
  kFusible = 1u << 2,
  /// Writes a parameter (its one input of kind Parameter) instead of
  /// producing results.
  kWritesParameter = 1u << 3,
};

/// A count range; max = -1 is unbounded.
struct Arity {
  int min, max;
  bool admits(int n) const { return n >= min && (max < 0 || n <= max); }
};

/// What the load-time check of a kernel sees: the kernel (its attribute
/// table already checked to be the op's) and its operand and result
/// values, null for an absent optional operand.
struct KernelOperands {
  const kart::Kernel &kernel;
  std::vector<const kart::Value *> in, out;
  size_t numSymbols = 0;
};

/// Returns why the kernel is invalid, or "" when it is valid.
using CheckRule = std::string (*)(const KernelOperands &);

/// Output shapes from input shapes (null: absent) and the bound symbols,
/// checking the run-time sizes the kernels rely on.
using ShapeRule = Status (*)(const kart::Kernel &,
                             const std::vector<const std::vector<int64_t> *> &,
                             const std::vector<int64_t> &symbols,
                             std::vector<std::vector<int64_t>> &out);

struct OpInfo {
  kart::Op op;
  Arity inputs;
  /// Bit i set: input i may be absent (value id -1).
  uint32_t optionalInputs;
  Arity outputs;
  /// Output `inPlaceOutput` may take over the storage of input
  /// `inPlaceInput` when nothing later reads that input (-1: never).
  int inPlaceInput, inPlaceOutput;
  uint32_t flags;
  /// The attribute table the kernel carries (NONE: none).
  kart::Attrs attrs;
  CheckRule check;
  ShapeRule shapes;

  bool optional(size_t i) const { return i < 32 && (optionalInputs >> i) & 1; }
  bool has(OpFlag f) const { return flags & f; }
};

/// True when `rows` (the op table, a device's kernel registry) has one row
/// per kart::Op, in enum order: the tables index rows by op code.
template <typename Row, size_t N>
constexpr bool oneRowPerOp(const Row (&rows)[N]) {
  if (N != static_cast<size_t>(kart::Op::MAX) + 1)
    return false;
  for (size_t i = 0; i < N; ++i)
    if (static_cast<size_t>(rows[i].op) != i)
      return false;
  return true;
}

/// The op's row, or null for an op code this runtime does not know (an
/// artifact from a newer kiln, or damage).
const OpInfo *findOp(kart::Op op);
/// The row of an op known to exist (the loader has checked every kernel).
const OpInfo &opInfo(kart::Op op);

/// The operands `op` writes in place, as a bit per input (CachedAttention:
/// its key and value caches); 0 for every other op.
uint32_t writtenInputs(kart::Op op);

inline bool isBinary(kart::Op op) {
  const OpInfo *i = findOp(op);
  return i && i->has(kBinary);
}
inline bool isUnary(kart::Op op) {
  const OpInfo *i = findOp(op);
  return i && i->has(kUnary);
}

/// The name of an attribute table type, for messages.
const char *attrsName(kart::Attrs a);

/// Checks a kernel's counts, optional operands and attribute type against
/// its row: what the writer asserts before emitting and the loader checks
/// first. Returns why it does not match, or "".
std::string checkAgainstRow(const kart::Kernel &k);

} // namespace kiln::runtime

#endif
