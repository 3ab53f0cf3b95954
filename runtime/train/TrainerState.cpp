//===- TrainerState.cpp - a checkpoint's trainer_state.json ---------------===//
#include "runtime/TrainerState.h"

#include "runtime/File.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include <sys/stat.h>

using namespace kiln::runtime;

bool kiln::runtime::parseDecimal(const std::string &text, uint64_t &value) {
  if (text.empty() || text.size() > 20)
    return false;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9')
      return false;
    unsigned d = static_cast<unsigned>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10)
      return false;
    v = v * 10 + d;
  }
  value = v;
  return true;
}

bool kiln::runtime::parseDecimal(const std::string &text, int64_t &value) {
  bool negative = !text.empty() && text[0] == '-';
  uint64_t magnitude;
  if (!parseDecimal(negative ? text.substr(1) : text, magnitude))
    return false;
  constexpr uint64_t kMax = std::numeric_limits<int64_t>::max();
  if (magnitude > kMax + (negative ? 1 : 0))
    return false;
  value = negative ? static_cast<int64_t>(0 - magnitude)
                   : static_cast<int64_t>(magnitude);
  return true;
}

std::optional<std::string> TrainerState::field(const char *key) const {
  const JsonValue *v = json.get(key);
  if (!v)
    return std::nullopt;
  if (v->isString())
    return v->string;
  if (v->kind == JsonValue::Kind::Number) {
    if (v->isInteger)
      return std::to_string(v->integer);
    if (!std::isfinite(v->number) || std::fabs(v->number) > 1e30)
      return std::string("a number out of range");
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.0f", v->number);
    return std::string(buf);
  }
  return std::string(v->kindName());
}

Status kiln::runtime::readTrainerState(const std::string &dir,
                                       TrainerState &state) {
  TrainerState s;
  s.dir = dir;
  s.path = dir + "/trainer_state.json";
  if (Status st = readJsonFile(s.path, s.json, kMaxTrainerStateBytes); !st)
    return st;
  if (!s.json.isObject())
    return Status::error(s.path + ": should be a JSON object, got " +
                         s.json.kindName());
  // Integers exactly: a decimal string or a number written as an integer
  // (never a rounded fraction).
  auto exact = [&](const char *key) -> std::optional<std::string> {
    const JsonValue *v = s.json.get(key);
    if (v && v->kind == JsonValue::Kind::Number && !v->isInteger)
      return std::nullopt;
    return s.field(key);
  };
  auto stepText = exact("step"), rngText = exact("data_rng");
  if (!stepText || !rngText || !parseDecimal(*stepText, s.step) ||
      !parseDecimal(*rngText, s.dataRng) || s.step < 0)
    return Status::error(
        s.path + ": missing or invalid 'step' or 'data_rng'" +
        (s.field("written_by") == "python"
             ? " (a Python checkpoint records the data position when "
               "save_checkpoint is given data=TextDataset)"
             : ""));
  if (const JsonValue *v = s.json.get("settings"); v && !v->isObject())
    return Status::error(s.path + ": 'settings' should be an object, got " +
                         v->kindName());
  state = std::move(s);
  return Status::ok();
}

Status kiln::runtime::readLatestTrainerState(const std::string &parent,
                                             TrainerState &state, bool &found) {
  found = false;
  struct stat st;
  std::string latest = parent + "/latest";
  if (lstat(latest.c_str(), &st) != 0) {
    if (errno == ENOENT)
      return Status::ok();
    return Status::error(latest +
                         ": cannot examine it: " + std::strerror(errno));
  }
  std::string dir;
  if (Status s = latestCheckpoint(parent, dir); !s)
    return s;
  if (Status s = readTrainerState(dir, state); !s)
    return s;
  found = true;
  return Status::ok();
}
