//===- File.h - durable file writes -----------------------------*- C++ -*-===//
#ifndef KILN_RUNTIME_FILE_H
#define KILN_RUNTIME_FILE_H

#include "runtime/Tensor.h"

#include <string>
#include <utility>
#include <vector>

namespace kiln::runtime {

/// Writes the chunks, in order, to a temporary file beside `path`, fsyncs it
/// and renames it over `path`: readers see the old file or the complete new
/// one, never a torn write, even if the process dies midway.
Status
writeFileAtomically(const std::string &path,
                    const std::vector<std::pair<const void *, size_t>> &chunks);

} // namespace kiln::runtime

#endif
