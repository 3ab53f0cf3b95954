//===- Npy.cpp - NumPy .npy files -----------------------------------------===//
#include "runtime/Npy.h"
#include "runtime/File.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>

using namespace kiln::runtime;

namespace {

bool dtypeFromDescr(const std::string &d, DType &t) {
  if (d == "<f4")
    t = DType::F32;
  else if (d == "<f8")
    t = DType::F64;
  else if (d == "<i4")
    t = DType::I32;
  else if (d == "<i8")
    t = DType::I64;
  else if (d == "|b1")
    t = DType::Bool;
  else if (d == "|u1")
    t = DType::U8;
  else if (d == "|i1")
    t = DType::I8;
  else
    return false;
  return true;
}

const char *descrOf(DType t) {
  switch (t) {
  case DType::F32:
    return "<f4";
  case DType::F64:
    return "<f8";
  case DType::I32:
    return "<i4";
  case DType::I64:
    return "<i8";
  case DType::Bool:
    return "|b1";
  case DType::U8:
    return "|u1";
  case DType::I8:
    return "|i1";
  default:
    return nullptr;
  }
}

} // namespace

Status kiln::runtime::readNpy(const std::string &path, Tensor &out) {
  auto bad = [&](const std::string &msg) {
    return Status::error(path + ": " + msg);
  };
  std::ifstream f;
  uint64_t size = 0;
  if (Status s = openInput(path, f, size); !s)
    return s;
  char magic[8];
  if (size < 10 || !f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    return bad("not a .npy file (it must start with \\x93NUMPY)");
  int major = static_cast<unsigned char>(magic[6]);
  if (major < 1 || major > 3)
    return bad("unsupported .npy format version " + std::to_string(major));
  uint32_t headerLen = 0;
  unsigned char lenBytes[4] = {0, 0, 0, 0};
  int lenSize = major == 1 ? 2 : 4;
  if (!f.read(reinterpret_cast<char *>(lenBytes), lenSize))
    return bad("truncated header");
  for (int i = lenSize - 1; i >= 0; --i)
    headerLen = (headerLen << 8) | lenBytes[i];
  std::streamoff dataStart =
      8 + lenSize + static_cast<std::streamoff>(headerLen);
  if (headerLen > 65536 || dataStart > size)
    return bad("header length " + std::to_string(headerLen) +
               " is larger than the file allows");
  std::string header(headerLen, '\0');
  if (!f.read(header.data(), headerLen))
    return bad("truncated header");
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([^']*)'")))
    return bad("header has no 'descr'");
  DType dtype;
  if (!dtypeFromDescr(m[1], dtype))
    return bad("unsupported dtype '" + m[1].str() +
               "'; use little-endian float32, float64, int32, int64 or bool");
  if (!std::regex_search(header, m,
                         std::regex("'fortran_order':\\s*(True|False)")))
    return bad("header has no 'fortran_order'");
  if (m[1] == "True")
    return bad("Fortran-ordered arrays are not supported; save a C-ordered "
               "array (numpy.ascontiguousarray)");
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)")))
    return bad("header has no 'shape'");
  std::vector<int64_t> shape;
  std::string dims = m[1];
  // Every item of the tuple is a non-negative integer; a trailing comma
  // (a 1-tuple) is the only empty item allowed.
  std::vector<std::string> items;
  for (size_t start = 0;;) {
    size_t comma = dims.find(',', start);
    std::string item = dims.substr(start, comma - start);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    items.push_back(item);
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  if (items.size() > 1 && items.back().empty())
    items.pop_back();
  if (items.size() == 1 && items[0].empty())
    items.clear();
  uint64_t count = 1;
  for (const std::string &d : items) {
    if (d.empty() || d.find_first_not_of("0123456789") != std::string::npos)
      return bad("shape (" + dims + ") has an invalid dimension '" + d +
                 "'; dimensions are non-negative integers");
    if (d.size() > 12)
      return bad("dimension " + d + " is too large");
    shape.push_back(std::stoll(d));
    count *= static_cast<uint64_t>(shape.back());
    if (count > (uint64_t(1) << 40))
      return bad("the array is too large");
  }
  uint64_t want = count * dtypeSize(dtype);
  uint64_t have = static_cast<uint64_t>(size - dataStart);
  if (have != want)
    return bad("holds " + std::to_string(have) + " data bytes, but " +
               shapeString(dtype, shape) + " needs " + std::to_string(want));
  Tensor t(dtype, shape);
  if (!f.read(static_cast<char *>(t.data()),
              static_cast<std::streamsize>(want)))
    return bad("truncated data");
  out = std::move(t);
  return Status::ok();
}

Status kiln::runtime::writeNpy(const std::string &path, const Tensor &t) {
  const char *descr = descrOf(t.dtype());
  if (!descr)
    return Status::error(path + ": cannot write element type " +
                         std::string(dtypeName(t.dtype())) + " as .npy");
  std::string shape = "(";
  for (int64_t d : t.shape())
    shape += std::to_string(d) + ",";
  if (t.rank() > 1)
    shape.pop_back();
  shape += ")";
  std::string header = "{'descr': '" + std::string(descr) +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  uint16_t len = static_cast<uint16_t>(header.size());
  char prefix[10] = {'\x93',
                     'N',
                     'U',
                     'M',
                     'P',
                     'Y',
                     1,
                     0,
                     static_cast<char>(len & 0xff),
                     static_cast<char>(len >> 8)};
  return writeFileAtomically(
      path,
      {{prefix, 10}, {header.data(), header.size()}, {t.data(), t.bytes()}});
}
