//===- File.h - durable file writes -----------------------------*- C++ -*-===//
#ifndef KILN_RUNTIME_FILE_H
#define KILN_RUNTIME_FILE_H

#include "runtime/Tensor.h"

#include <cstdint>
#include <fstream>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace kiln::runtime {

/// Writes the chunks, in order, to a temporary file beside `path`, fsyncs it
/// and renames it over `path`: readers see the old file or the complete new
/// one, never a torn write, even if the process dies midway. A symbolic link
/// stays a link (the file it names is replaced); a device, FIFO or socket
/// (`-o /dev/null`, a pipe) is written into directly, never replaced.
Status
writeFileAtomically(const std::string &path,
                    const std::vector<std::pair<const void *, size_t>> &chunks);

/// Checkpoint directories. A checkpoint is written into a fresh temporary
/// directory inside `parent` (`beginCheckpoint`), whose files the caller
/// writes with writeFileAtomically; `commitCheckpoint` fsyncs it, renames it
/// to `parent/name`, fsyncs `parent`, points `parent/latest` at it (itself
/// an atomic write) and removes all but the newest `keep` checkpoints. A
/// process killed at any point leaves `latest` naming a complete checkpoint
/// (or absent), never a partial one.
Status beginCheckpoint(const std::string &parent, std::string &tmpDir);
Status commitCheckpoint(const std::string &parent, const std::string &tmpDir,
                        const std::string &name, int keep);
/// The directory `parent/latest` names; an error if there is none.
Status latestCheckpoint(const std::string &parent, std::string &dir);

/// Whether `path` is a regular file (false for a directory, a missing path
/// or one that cannot be examined; never throws).
bool isRegularFile(const std::string &path);

/// A name read from an input (a tensor, a shard, a key), shortened to 80
/// characters for an error message.
std::string clipName(const std::string &name);

/// Opens `path` for reading, which every reader of kiln's inputs does
/// through here: a directory, device, FIFO or socket is an error naming the
/// path (opening a directory "succeeds" with an absurd size; a FIFO blocks
/// forever). `size` receives the file's size.
Status openInput(const std::string &path, std::ifstream &f, uint64_t &size);

/// The whole file as bytes, refused before anything is allocated when it
/// is larger than `maxBytes` (the error says the file should be a `what`).
Status readFile(const std::string &path, std::string &out,
                uint64_t maxBytes = UINT64_MAX,
                const std::string &what = "file");
Status readFile(const std::string &path, std::vector<uint8_t> &out,
                uint64_t maxBytes, const std::string &what);
/// The same into memory the caller provides: `place(size, at)` points `at`
/// at room for the file's `size` bytes (or fails, and the read with it).
/// How a large file is read once, straight to where it stays.
Status
readFile(const std::string &path, uint64_t maxBytes, const std::string &what,
         const std::function<Status(uint64_t size, uint8_t *&at)> &place);

} // namespace kiln::runtime

#endif
