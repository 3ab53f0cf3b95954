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

} // namespace kiln::fuzz

#endif
