//===- Npy.cpp - NumPy .npy files -----------------------------------------===//
#include "runtime/Npy.h"
#include "runtime/File.h"

#include <array>
#include <cstdint>
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

namespace {

/// The .npy prefix and header (format 1.0, 64-byte aligned) of `t`; false
/// for an element type .npy files cannot hold.
bool npyHeader(const Tensor &t, std::string &out) {
  const char *descr = descrOf(t.dtype());
  if (!descr)
    return false;
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
  const char prefix[10] = {'\x93',
                           'N',
                           'U',
                           'M',
                           'P',
                           'Y',
                           1,
                           0,
                           static_cast<char>(len & 0xff),
                           static_cast<char>(len >> 8)};
  out.assign(prefix, 10);
  out += header;
  return true;
}

uint32_t crc32Update(uint32_t crc, const void *data, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k)
        c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const auto *p = static_cast<const uint8_t *>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i)
    crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void put16(std::string &s, uint32_t v) {
  s += static_cast<char>(v & 0xff);
  s += static_cast<char>((v >> 8) & 0xff);
}

void put32(std::string &s, uint32_t v) {
  put16(s, v & 0xffff);
  put16(s, v >> 16);
}

} // namespace

Status kiln::runtime::writeNpy(const std::string &path, const Tensor &t) {
  std::string header;
  if (!npyHeader(t, header))
    return Status::error(path + ": cannot write element type " +
                         std::string(dtypeName(t.dtype())) + " as .npy");
  return writeFileAtomically(
      path, {{header.data(), header.size()}, {t.data(), t.bytes()}});
}

Status kiln::runtime::writeNpz(
    const std::string &path,
    const std::vector<std::pair<std::string, const Tensor *>> &arrays) {
  // A zip archive of NAME.npy members, stored (not compressed), as
  // numpy.savez writes it; zip32, so each member and the whole stay under
  // 4 GiB.
  std::vector<std::string> headers(arrays.size()), locals(arrays.size());
  std::string central;
  uint64_t offset = 0;
  for (size_t i = 0; i < arrays.size(); ++i) {
    const auto &[name, t] = arrays[i];
    if (!npyHeader(*t, headers[i]))
      return Status::error(path + ": cannot write element type " +
                           std::string(dtypeName(t->dtype())) + " of '" + name +
                           "' as .npy");
    std::string member = name + ".npy";
    uint64_t size = headers[i].size() + t->bytes();
    if (size >= 0xffffffffu || offset >= 0xffffffffu || member.size() > 0xffff)
      return Status::error(path + ": '" + name +
                           "' does not fit a .npz archive (4 GiB); write "
                           "the results as .npy files instead");
    uint32_t crc = crc32Update(0, headers[i].data(), headers[i].size());
    crc = crc32Update(crc, t->data(), t->bytes());
    std::string &l = locals[i];
    put32(l, 0x04034b50); // local file header
    put16(l, 20);         // version needed
    put16(l, 0);          // flags
    put16(l, 0);          // stored
    put16(l, 0);          // time
    put16(l, 0x21);       // date: 1980-01-01
    put32(l, crc);
    put32(l, static_cast<uint32_t>(size));
    put32(l, static_cast<uint32_t>(size));
    put16(l, static_cast<uint32_t>(member.size()));
    put16(l, 0);
    l += member;
    put32(central, 0x02014b50); // central directory entry
    put16(central, 20);         // made by
    put16(central, 20);         // needed
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0x21);
    put32(central, crc);
    put32(central, static_cast<uint32_t>(size));
    put32(central, static_cast<uint32_t>(size));
    put16(central, static_cast<uint32_t>(member.size()));
    put16(central, 0); // extra
    put16(central, 0); // comment
    put16(central, 0); // disk
    put16(central, 0); // internal attributes
    put32(central, 0); // external attributes
    put32(central, static_cast<uint32_t>(offset));
    central += member;
    offset += l.size() + size;
  }
  if (offset + central.size() >= 0xffffffffu || arrays.size() >= 0xffff)
    return Status::error(path + ": the results do not fit a .npz archive "
                                "(4 GiB); write them as .npy files instead");
  std::string end;
  put32(end, 0x06054b50);
  put16(end, 0);
  put16(end, 0);
  put16(end, static_cast<uint32_t>(arrays.size()));
  put16(end, static_cast<uint32_t>(arrays.size()));
  put32(end, static_cast<uint32_t>(central.size()));
  put32(end, static_cast<uint32_t>(offset));
  put16(end, 0);
  std::vector<std::pair<const void *, size_t>> chunks;
  for (size_t i = 0; i < arrays.size(); ++i) {
    chunks.push_back({locals[i].data(), locals[i].size()});
    chunks.push_back({headers[i].data(), headers[i].size()});
    chunks.push_back({arrays[i].second->data(), arrays[i].second->bytes()});
  }
  chunks.push_back({central.data(), central.size()});
  chunks.push_back({end.data(), end.size()});
  return writeFileAtomically(path, chunks);
}
