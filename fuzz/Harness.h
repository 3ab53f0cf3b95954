//===- Harness.h - what the fuzz harnesses share ---------------*- C++ -*-===//
//
// The runtime's readers take paths, as kiln's users give them: a harness
// writes each input to a file of its own process and reads it back.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_FUZZ_HARNESS_H
#define KILN_FUZZ_HARNESS_H

#include <cstddef>
#include <cstdint>
#include <string>

namespace kiln::fuzz {

/// A directory of this process's own (made once, removed at exit).
const std::string &scratch();
/// Writes `size` bytes to `name` in scratch() and returns its path.
std::string writeInput(const std::string &name, const uint8_t *data,
                       size_t size);

/// The bound on hostile inputs: no input makes kiln hold more heap
/// than a small multiple of its own size. While one of these lives it
/// measures the most heap bytes held at once (every thread, beyond what
/// was held when it began); past `perByte` x `inputSize` + `slack` it
/// reports the input and aborts, which libFuzzer records as a crash. At
/// exit the process prints the largest multiple it saw
/// ("fuzz-allocation: ..."), which scripts/fuzz.sh reports.
class AllocationBound {
public:
  AllocationBound(size_t inputSize, size_t perByte, size_t slack);
  ~AllocationBound();
  AllocationBound(const AllocationBound &) = delete;
  AllocationBound &operator=(const AllocationBound &) = delete;

private:
  size_t inputSize, limit;
};

} // namespace kiln::fuzz

#endif
