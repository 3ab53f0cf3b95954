//===- Npy.h - NumPy .npy files ---------------------------------*- C++ -*-===//
#ifndef KILN_RUNTIME_NPY_H
#define KILN_RUNTIME_NPY_H

#include "runtime/Tensor.h"

#include <string>
#include <utility>
#include <vector>

namespace kiln::runtime {

/// Reads a .npy file (format 1.0-3.0, C order, little-endian f32/f64/i32/i64
/// or bool). Malformed headers, unsupported dtypes, Fortran order and data of
/// the wrong length are errors that name the file and what is wrong.
Status readNpy(const std::string &path, Tensor &out);

/// Writes a tensor as a .npy (format 1.0) file, through a temporary file and
/// a rename.
Status writeNpy(const std::string &path, const Tensor &t);

/// Writes named tensors as one .npz archive (NAME.npy members, stored, as
/// numpy.savez writes them; numpy.load reads it), atomically like writeNpy.
/// Archives are zip32: each member and the whole stay under 4 GiB.
Status
writeNpz(const std::string &path,
         const std::vector<std::pair<std::string, const Tensor *>> &arrays);

} // namespace kiln::runtime

#endif
