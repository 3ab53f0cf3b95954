//===- File.cpp - durable file writes -------------------------------------===//
#include "runtime/File.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace kiln::runtime;

Status kiln::runtime::writeFileAtomically(
    const std::string &path,
    const std::vector<std::pair<const void *, size_t>> &chunks) {
  std::string tmp = path + ".tmp-XXXXXX";
  int fd = mkstemp(tmp.data());
  if (fd < 0)
    return Status::error(path +
                         ": cannot write the file: " + std::strerror(errno));
  auto fail = [&](const char *what) {
    std::string msg = path + ": " + what + ": " + std::strerror(errno);
    close(fd);
    std::remove(tmp.c_str());
    return Status::error(msg);
  };
  for (const auto &[data, size] : chunks) {
    const char *p = static_cast<const char *>(data);
    size_t left = size;
    while (left) {
      ssize_t n = write(fd, p, left);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        return fail("cannot write the file");
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  if (fchmod(fd, 0644) != 0 || fsync(fd) != 0)
    return fail("cannot flush the file");
  if (close(fd) != 0) {
    std::remove(tmp.c_str());
    return Status::error(path + ": cannot close the file");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string msg = path + ": cannot write the file: " + std::strerror(errno);
    std::remove(tmp.c_str());
    return Status::error(msg);
  }
  return Status::ok();
}
