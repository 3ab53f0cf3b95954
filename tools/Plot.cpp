//===- Plot.cpp - loss curves as PNG images -------------------------------===//
//
// A small rasterizer (lines, dots, a 5x7 pixel font for tick labels) and a
// PNG encoder on zlib: enough for a loss curve without a plotting library.
//
//===----------------------------------------------------------------------===//
#include "tools/Plot.h"

#include "runtime/File.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <zlib.h>

using namespace kiln::tools;

namespace {

struct Color {
  uint8_t r, g, b;
};

class Canvas {
public:
  Canvas(int w, int h) : w(w), h(h), px(static_cast<size_t>(w) * h * 3, 255) {}

  void set(int x, int y, Color c) {
    if (x < 0 || y < 0 || x >= w || y >= h)
      return;
    uint8_t *p = &px[(static_cast<size_t>(y) * w + x) * 3];
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }
  void line(double x0, double y0, double x1, double y1, Color c, int thick) {
    int n =
        static_cast<int>(std::max(std::abs(x1 - x0), std::abs(y1 - y0))) + 1;
    for (int i = 0; i <= n; ++i) {
      double t = static_cast<double>(i) / n;
      int x = static_cast<int>(std::lround(x0 + (x1 - x0) * t));
      int y = static_cast<int>(std::lround(y0 + (y1 - y0) * t));
      for (int dx = 0; dx < thick; ++dx)
        for (int dy = 0; dy < thick; ++dy)
          set(x + dx - thick / 2, y + dy - thick / 2, c);
    }
  }
  void dot(double x, double y, int r, Color c) {
    for (int dx = -r; dx <= r; ++dx)
      for (int dy = -r; dy <= r; ++dy)
        if (dx * dx + dy * dy <= r * r)
          set(static_cast<int>(std::lround(x)) + dx,
              static_cast<int>(std::lround(y)) + dy, c);
  }
  /// Text in the 5x7 font, scaled by `s`; (x, y) is the top-left corner.
  void text(int x, int y, const std::string &str, Color c, int s = 2) {
    static const std::map<char, std::array<uint8_t, 7>> font = {
        {'0', {14, 17, 19, 21, 25, 17, 14}},
        {'1', {4, 12, 4, 4, 4, 4, 14}},
        {'2', {14, 17, 1, 2, 4, 8, 31}},
        {'3', {31, 2, 4, 2, 1, 17, 14}},
        {'4', {2, 6, 10, 18, 31, 2, 2}},
        {'5', {31, 16, 30, 1, 1, 17, 14}},
        {'6', {6, 8, 16, 30, 17, 17, 14}},
        {'7', {31, 1, 2, 4, 8, 8, 8}},
        {'8', {14, 17, 17, 14, 17, 17, 14}},
        {'9', {14, 17, 17, 15, 1, 2, 12}},
        {'.', {0, 0, 0, 0, 0, 12, 12}},
        {'-', {0, 0, 0, 31, 0, 0, 0}},
        {'e', {0, 0, 14, 17, 31, 16, 14}},
        {'s', {0, 0, 15, 16, 14, 1, 30}},
        {'t', {8, 8, 28, 8, 8, 9, 6}},
        {'p', {0, 0, 30, 17, 30, 16, 16}},
        {'l', {12, 4, 4, 4, 4, 4, 14}},
        {'o', {0, 0, 14, 17, 17, 17, 14}},
        {'r', {0, 0, 22, 25, 16, 16, 16}},
        {'a', {0, 0, 14, 1, 15, 17, 15}},
        {'i', {4, 0, 12, 4, 4, 4, 14}},
        {'n', {0, 0, 22, 25, 17, 17, 17}},
        {'v', {0, 0, 17, 17, 17, 10, 4}},
        {'k', {16, 16, 18, 20, 24, 20, 18}},
        {'(', {2, 4, 8, 8, 8, 4, 2}},
        {')', {8, 4, 2, 2, 2, 4, 8}},
        {' ', {0, 0, 0, 0, 0, 0, 0}}};
    for (char ch : str) {
      auto it = font.find(ch);
      if (it != font.end())
        for (int row = 0; row < 7; ++row)
          for (int col = 0; col < 5; ++col)
            if (it->second[row] & (16 >> col))
              for (int a = 0; a < s; ++a)
                for (int b = 0; b < s; ++b)
                  set(x + col * s + a, y + row * s + b, c);
      x += 6 * s;
    }
  }
  static int textWidth(const std::string &str, int s = 2) {
    return static_cast<int>(str.size()) * 6 * s;
  }

  bool writePng(const std::string &path, std::string &error) const {
    std::vector<uint8_t> raw;
    raw.reserve(px.size() + h);
    for (int y = 0; y < h; ++y) {
      raw.push_back(0); // filter: none
      raw.insert(raw.end(), px.begin() + static_cast<size_t>(y) * w * 3,
                 px.begin() + static_cast<size_t>(y + 1) * w * 3);
    }
    uLongf zlen = compressBound(raw.size());
    std::vector<uint8_t> z(zlen);
    if (compress2(z.data(), &zlen, raw.data(), raw.size(), 9) != Z_OK) {
      error = "cannot compress the image";
      return false;
    }
    z.resize(zlen);
    std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    auto be32 = [](std::vector<uint8_t> &out, uint32_t v) {
      for (int i = 3; i >= 0; --i)
        out.push_back(static_cast<uint8_t>(v >> (8 * i)));
    };
    auto chunk = [&](const char *type, const std::vector<uint8_t> &data) {
      be32(png, static_cast<uint32_t>(data.size()));
      size_t start = png.size();
      png.insert(png.end(), type, type + 4);
      png.insert(png.end(), data.begin(), data.end());
      be32(png, static_cast<uint32_t>(
                    crc32(0, png.data() + start, png.size() - start)));
    };
    std::vector<uint8_t> ihdr;
    be32(ihdr, w);
    be32(ihdr, h);
    ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0}); // 8-bit RGB
    chunk("IHDR", ihdr);
    chunk("IDAT", z);
    chunk("IEND", {});
    kiln::runtime::Status s =
        kiln::runtime::writeFileAtomically(path, {{png.data(), png.size()}});
    if (!s)
      error = s.message();
    return static_cast<bool>(s);
  }

  int w, h;

private:
  std::vector<uint8_t> px;
};

/// A tick label with as many decimals as the tick spacing needs.
std::string tickLabel(double v, double step) {
  char buf[32];
  if (std::abs(v) >= 1e6)
    std::snprintf(buf, sizeof buf, "%.1e", v);
  else
    std::snprintf(
        buf, sizeof buf, "%.*f",
        std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9))), v);
  return buf;
}

/// About five "nice" tick positions (1, 2 or 5 times a power of ten) in
/// [lo, hi].
std::vector<double> ticks(double lo, double hi) {
  double span = hi - lo, raw = span / 5;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : 5 * mag;
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step)
    t.push_back(std::abs(v) < 1e-12 * span ? 0.0 : v);
  return t;
}

} // namespace

bool kiln::tools::writeLossPlot(const std::string &path, const Series &train,
                                const Series &eval, std::string &error) {
  Canvas c(900, 540);
  const Color axis{60, 60, 60}, grid{225, 225, 225}, blue{31, 119, 180},
      orange{255, 127, 14};
  const int left = 90, right = 30, top = 40, bottom = 70;
  const int pw = c.w - left - right, ph = c.h - top - bottom;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const Series *s : {&train, &eval})
    for (auto [x, y] : *s)
      if (std::isfinite(y)) {
        x0 = std::min(x0, x);
        x1 = std::max(x1, x);
        y0 = std::min(y0, y);
        y1 = std::max(y1, y);
      }
  if (!(x0 <= x1)) {
    x0 = 0;
    x1 = 1;
    y0 = 0;
    y1 = 1;
  }
  if (x1 - x0 < 1)
    x1 = x0 + 1;
  double pad = (y1 - y0) * 0.05 + 1e-6;
  y0 -= pad;
  y1 += pad;
  auto X = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto Y = [&](double y) { return top + (y1 - y) / (y1 - y0) * ph; };
  std::vector<double> yt = ticks(y0, y1), xt = ticks(x0, x1);
  for (double t : yt) {
    c.line(left, Y(t), left + pw, Y(t), grid, 1);
    std::string l = tickLabel(t, yt.size() > 1 ? yt[1] - yt[0] : 1);
    c.text(left - 10 - Canvas::textWidth(l), static_cast<int>(Y(t)) - 7, l,
           axis);
  }
  for (double t : xt) {
    c.line(X(t), top, X(t), top + ph, grid, 1);
    std::string l = tickLabel(t, xt.size() > 1 ? xt[1] - xt[0] : 1);
    c.text(static_cast<int>(X(t)) - Canvas::textWidth(l) / 2, top + ph + 10, l,
           axis);
  }
  c.line(left, top, left, top + ph, axis, 2);
  c.line(left, top + ph, left + pw, top + ph, axis, 2);
  c.text(left + pw / 2 - Canvas::textWidth("step") / 2, c.h - 30, "step", axis);
  c.text(10, top - 30, "loss", axis);
  for (size_t i = 1; i < train.size(); ++i)
    c.line(X(train[i - 1].first), Y(train[i - 1].second), X(train[i].first),
           Y(train[i].second), blue, 2);
  for (size_t i = 0; i < eval.size(); ++i) {
    if (i)
      c.line(X(eval[i - 1].first), Y(eval[i - 1].second), X(eval[i].first),
             Y(eval[i].second), orange, 2);
    c.dot(X(eval[i].first), Y(eval[i].second), 4, orange);
  }
  // Legend.
  int lx = left + pw - 170, ly = top + 10;
  c.line(lx, ly + 7, lx + 30, ly + 7, blue, 3);
  c.text(lx + 40, ly, "train", axis);
  if (!eval.empty()) {
    c.line(lx, ly + 32, lx + 30, ly + 32, orange, 3);
    c.dot(lx + 15, ly + 32, 4, orange);
    c.text(lx + 40, ly + 25, "eval", axis);
  }
  return c.writePng(path, error);
}
