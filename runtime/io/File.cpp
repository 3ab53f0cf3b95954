//===- File.cpp - durable file writes -------------------------------------===//
#include "runtime/File.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace kiln::runtime;

namespace {
bool writeAll(int fd,
              const std::vector<std::pair<const void *, size_t>> &chunks) {
  for (const auto &[data, size] : chunks) {
    const char *p = static_cast<const char *>(data);
    size_t left = size;
    while (left) {
      ssize_t n = write(fd, p, left);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        return false;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  return true;
}
} // namespace

Status kiln::runtime::writeFileAtomically(
    const std::string &path,
    const std::vector<std::pair<const void *, size_t>> &chunks) {
  // A symbolic link stays a link: the file it names is replaced.
  std::string target = path;
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
    if (char *real = realpath(path.c_str(), nullptr)) {
      target = real;
      std::free(real);
    }
  if (stat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    if (S_ISDIR(st.st_mode))
      return Status::error(path + ": is a directory");
    // A device, FIFO or socket (/dev/null, /dev/stdout, a pipe): write into
    // it. Renaming a file over it would replace the device itself.
    int fd = open(target.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
      return Status::error(path +
                           ": cannot write the file: " + std::strerror(errno));
    bool ok = writeAll(fd, chunks);
    std::string msg = ok ? "" : std::strerror(errno);
    if (close(fd) != 0 && ok) {
      ok = false;
      msg = std::strerror(errno);
    }
    return ok ? Status::ok()
              : Status::error(path + ": cannot write the file: " + msg);
  }
  std::string tmp = target + ".tmp-XXXXXX";
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
  if (!writeAll(fd, chunks))
    return fail("cannot write the file");
  if (fchmod(fd, 0644) != 0 || fsync(fd) != 0)
    return fail("cannot flush the file");
  if (close(fd) != 0) {
    std::remove(tmp.c_str());
    return Status::error(path + ": cannot close the file");
  }
  if (std::rename(tmp.c_str(), target.c_str()) != 0) {
    std::string msg = path + ": cannot write the file: " + std::strerror(errno);
    std::remove(tmp.c_str());
    return Status::error(msg);
  }
  return Status::ok();
}

namespace {
Status syncDirectory(const std::string &dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0 || fsync(fd) != 0) {
    std::string msg =
        dir + ": cannot flush the directory: " + std::strerror(errno);
    if (fd >= 0)
      close(fd);
    return Status::error(msg);
  }
  close(fd);
  return Status::ok();
}

void removeTree(const std::string &path) {
  if (DIR *d = opendir(path.c_str())) {
    while (dirent *e = readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..")
        continue;
      std::string child = path + "/" + name;
      struct stat st;
      if (lstat(child.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
        removeTree(child);
      else
        unlink(child.c_str());
    }
    closedir(d);
  }
  rmdir(path.c_str());
}
} // namespace

Status kiln::runtime::beginCheckpoint(const std::string &parent,
                                      std::string &tmpDir) {
  if (mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST)
    return Status::error(parent + ": cannot create the checkpoint directory: " +
                         std::strerror(errno));
  std::string tmpl = parent + "/.incomplete-XXXXXX";
  if (!mkdtemp(tmpl.data()))
    return Status::error(parent + ": cannot create a temporary directory: " +
                         std::strerror(errno));
  tmpDir = tmpl;
  return Status::ok();
}

Status kiln::runtime::commitCheckpoint(const std::string &parent,
                                       const std::string &tmpDir,
                                       const std::string &name, int keep) {
  if (Status s = syncDirectory(tmpDir); !s)
    return s;
  std::string final = parent + "/" + name;
  struct stat st;
  if (stat(final.c_str(), &st) == 0) {
    // Rewriting a step that exists (a rerun): move the old one aside first.
    std::string old = final + ".old";
    removeTree(old);
    if (std::rename(final.c_str(), old.c_str()) != 0)
      return Status::error(
          final + ": cannot replace the checkpoint: " + std::strerror(errno));
  }
  if (std::rename(tmpDir.c_str(), final.c_str()) != 0)
    return Status::error(
        final + ": cannot commit the checkpoint: " + std::strerror(errno));
  if (Status s = syncDirectory(parent); !s)
    return s;
  std::string pointer = name + "\n";
  if (Status s = writeFileAtomically(parent + "/latest",
                                     {{pointer.data(), pointer.size()}});
      !s)
    return s;
  if (Status s = syncDirectory(parent); !s)
    return s;
  // Prune: checkpoints are named so that they sort by step.
  std::vector<std::string> names;
  if (DIR *d = opendir(parent.c_str())) {
    while (dirent *e = readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind("step-", 0) == 0 && n.find('.') == std::string::npos)
        names.push_back(n);
      else if (n.rfind(".incomplete-", 0) == 0 ||
               n.size() > 4 && n.compare(n.size() - 4, 4, ".old") == 0)
        removeTree(parent + "/" + n); // left by an interrupted writer
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  for (size_t i = 0; keep > 0 && i + keep < names.size(); ++i)
    if (names[i] != name)
      removeTree(parent + "/" + names[i]);
  return Status::ok();
}

bool kiln::runtime::isRegularFile(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string kiln::runtime::clipName(const std::string &name) {
  return name.size() <= 80 ? name : name.substr(0, 77) + "...";
}

Status kiln::runtime::openInput(const std::string &path, std::ifstream &f,
                                uint64_t &size) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0)
    return Status::error(path +
                         ": cannot open the file: " + std::strerror(errno));
  if (S_ISDIR(st.st_mode))
    return Status::error(path + ": is a directory, not a file");
  if (!S_ISREG(st.st_mode))
    return Status::error(path + ": is not a regular file (a device, FIFO "
                                "or socket); kiln reads only files");
  size = static_cast<uint64_t>(st.st_size);
  f.open(path, std::ios::binary);
  if (!f)
    return Status::error(path +
                         ": cannot open the file: " + std::strerror(errno));
  return Status::ok();
}

Status kiln::runtime::readFile(
    const std::string &path, uint64_t maxBytes, const std::string &what,
    const std::function<Status(uint64_t size, uint8_t *&at)> &place) {
  std::ifstream f;
  uint64_t size = 0;
  if (Status s = openInput(path, f, size); !s)
    return s;
  if (size > maxBytes)
    return Status::error(path + ": the file is " + std::to_string(size) +
                         " bytes; a " + what + " has at most " +
                         std::to_string(maxBytes) + " bytes");
  uint8_t *at = nullptr;
  if (Status s = place(size, at); !s)
    return Status::error(path + ": " + s.text());
  if (size &&
      !f.read(reinterpret_cast<char *>(at), static_cast<std::streamsize>(size)))
    return Status::error(path + ": cannot read the file");
  return Status::ok();
}

namespace {
template <typename Bytes>
Status readWhole(const std::string &path, Bytes &out, uint64_t maxBytes,
                 const std::string &what) {
  return readFile(path, maxBytes, what, [&](uint64_t size, uint8_t *&at) {
    out.resize(static_cast<size_t>(size));
    at = reinterpret_cast<uint8_t *>(out.data());
    return Status::ok();
  });
}
} // namespace

Status kiln::runtime::readFile(const std::string &path, std::string &out,
                               uint64_t maxBytes, const std::string &what) {
  return readWhole(path, out, maxBytes, what);
}

Status kiln::runtime::readFile(const std::string &path,
                               std::vector<uint8_t> &out, uint64_t maxBytes,
                               const std::string &what) {
  return readWhole(path, out, maxBytes, what);
}

Status kiln::runtime::latestCheckpoint(const std::string &parent,
                                       std::string &dir) {
  std::string name;
  if (Status s = readFile(parent + "/latest", name, 4096, "checkpoint name");
      !s)
    return Status::error(parent + ": no checkpoint to resume from (" +
                         s.text() + ")");
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r'))
    name.pop_back();
  // One entry of `parent`, as commitCheckpoint names them: never a path
  // that leads elsewhere ("..", "/etc"), a hidden or temporary entry, or a
  // name with control bytes.
  bool plain = !name.empty() && name[0] != '.';
  for (char c : name)
    plain =
        plain && c != '/' && static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
  if (!plain)
    return Status::error(parent +
                         "/latest: does not name a checkpoint "
                         "directory of " +
                         parent);
  dir = parent + "/" + name;
  return Status::ok();
}
