//===- Plot.h - loss curves as PNG images -----------------------*- C++ -*-===//
#ifndef KILN_TOOLS_PLOT_H
#define KILN_TOOLS_PLOT_H

#include <string>
#include <utility>
#include <vector>

namespace kiln::tools {

using Series = std::vector<std::pair<double, double>>; // (x, y) points

/// Draws the training loss (blue) and, if any, the evaluation loss (orange,
/// with dots) against the step, with labelled axes, and writes a PNG.
/// Returns false with `error` set when the file cannot be written.
bool writeLossPlot(const std::string &path, const Series &train,
                   const Series &eval, std::string &error);

} // namespace kiln::tools

#endif
