//===- HuggingFace.cpp - Hugging Face model directories -------------------===//
//
// Finding and reading a directory's files: config.json, model.safetensors or
// its shards. The per-architecture name and layout mapping lives in
// HuggingFaceLayouts.cpp.
//
//===----------------------------------------------------------------------===//
#include "runtime/HuggingFace.h"
#include "runtime/File.h"
#include "runtime/io/HuggingFaceLayouts.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

using namespace kiln::runtime;
namespace fs = std::filesystem;

namespace {

/// config.json and the shard index are small; anything larger is not one.
constexpr uint64_t kMaxConfigBytes = 16u << 20;

float halfToFloat(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) { // inf or nan
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else { // subnormal: normalize
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while (!(mant & 0x400));
    bits = sign | (uint32_t(112 - e) << 23) | ((mant & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bfloat16ToFloat(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// Reads one safetensors file of the directory into `out` (appending).
Status readShard(const fs::path &path, NamedTensors &out, size_t maxTensors) {
  NamedTensors part;
  if (Status s = readSafetensors(path.string(), part, maxTensors); !s)
    return s;
  for (auto &named : part)
    out.push_back(std::move(named));
  return Status::ok();
}

/// model.safetensors.index.json: {"weight_map": {tensor: shard file}}.
Status readSharded(const fs::path &dir, NamedTensors &out, size_t maxTensors) {
  fs::path indexPath = dir / "model.safetensors.index.json";
  std::string where = indexPath.string();
  JsonValue index;
  if (Status s = readJsonFile(where, index, kMaxConfigBytes); !s)
    return s;
  const JsonValue *map = index.get("weight_map");
  if (!map || !map->isObject())
    return Status::error(where + ": no \"weight_map\" object naming the shard "
                                 "of each tensor");
  if (map->members.size() > maxTensors)
    return Status::error(
        where + ": \"weight_map\" lists " +
        std::to_string(map->members.size()) + " tensors, more than the " +
        std::to_string(maxTensors) + " a checkpoint of this model holds");
  std::map<std::string, std::string> shardOf;
  std::vector<std::string> shards; // in first-mention order
  for (const auto &[name, file] : map->members) {
    std::string at = where + ": \"weight_map\" entry '" + clipName(name) + "'";
    if (!file.isString())
      return Status::error(at + " must name a file, not " + file.kindName());
    const std::string &f = file.string;
    // The index is an input: its file names must stay inside the directory.
    if (f.empty() || f == "." || f == ".." ||
        f.find_first_of("/\\") != std::string::npos ||
        f.find('\0') != std::string::npos)
      return Status::error(at + " names '" + clipName(f) +
                           "'; shards must be plain file names in " +
                           dir.string());
    if (!shardOf.emplace(name, f).second)
      return Status::error(at + " appears twice");
    if (std::find(shards.begin(), shards.end(), f) == shards.end())
      shards.push_back(f);
  }
  std::set<std::string> seen;
  for (const std::string &shard : shards) {
    fs::path path = dir / shard;
    if (!isRegularFile(path.string()))
      return Status::error(where + " lists shard '" + clipName(shard) +
                           "', which is not a file in " + dir.string());
    size_t before = out.size();
    if (Status s = readShard(path, out, maxTensors); !s)
      return s;
    for (size_t i = before; i < out.size(); ++i) {
      const std::string &name = out[i].first;
      auto it = shardOf.find(name);
      if (it == shardOf.end())
        return Status::error(path.string() + ": tensor '" + clipName(name) +
                             "' is not in " + where + "'s \"weight_map\"");
      if (it->second != shard)
        return Status::error(path.string() + ": tensor '" + clipName(name) +
                             "' is listed in " + where + " as in '" +
                             clipName(it->second) + "'");
      if (!seen.insert(name).second)
        return Status::error(path.string() + ": tensor '" + clipName(name) +
                             "' appears in two shards");
    }
  }
  for (const auto &[name, shard] : shardOf)
    if (!seen.count(name))
      return Status::error(where + " lists tensor '" + clipName(name) +
                           "' in '" + clipName(shard) +
                           "', which does not hold it");
  return Status::ok();
}

} // namespace

bool HuggingFaceConfig::scalar(const std::string &key,
                               std::string &text) const {
  const JsonValue *v = json.get(key);
  if (!v) {
    if (const hf::Layout *layout = hf::findLayout(modelType))
      for (const hf::Layout::Default &d : layout->defaults)
        if (key == d.key) {
          text = d.value;
          return true;
        }
    return false;
  }
  if (v->kind == JsonValue::Kind::Bool) {
    text = v->boolean ? "true" : "false";
    return true;
  }
  if (v->kind != JsonValue::Kind::Number)
    return false;
  if (v->isInteger) {
    text = std::to_string(v->integer);
    return true;
  }
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v->number);
  text = buf;
  return true;
}

int64_t HuggingFaceConfig::integer(const std::string &key,
                                   int64_t fallback) const {
  const JsonValue *v = json.get(key);
  return v && v->isInteger ? v->integer : fallback;
}

bool kiln::runtime::isDirectory(const std::string &path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

std::string kiln::runtime::huggingFaceModelTypes() { return hf::layoutNames(); }

Status kiln::runtime::readHuggingFaceConfig(const std::string &dir,
                                            HuggingFaceConfig &out) {
  out = HuggingFaceConfig();
  out.dir = dir;
  fs::path path = fs::path(dir) / "config.json";
  if (!isRegularFile(path.string()))
    return Status::error(dir +
                         ": no config.json; a Hugging Face model directory "
                         "holds config.json and model.safetensors");
  if (Status s = readJsonFile(path.string(), out.json, kMaxConfigBytes); !s)
    return s;
  if (!out.json.isObject())
    return Status::error(path.string() + ": must be a JSON object, not " +
                         out.json.kindName());
  const JsonValue *type = out.json.get("model_type");
  if (!type || !type->isString())
    return Status::error(path.string() +
                         ": no \"model_type\" string saying the architecture");
  out.modelType = type->string;
  const hf::Layout *layout = hf::findLayout(out.modelType);
  if (!layout)
    return Status::error(path.string() + ": model_type '" +
                         clipName(out.modelType) + "' is not one kiln maps (" +
                         hf::layoutNames() + ")");
  return layout->check(out, path.string());
}

Status kiln::runtime::readHuggingFace(const HuggingFaceConfig &config,
                                      NamedTensors &out, size_t maxTensors) {
  out.clear();
  fs::path dir(config.dir);
  const hf::Layout *layout = hf::findLayout(config.modelType);
  if (!layout)
    return Status::error(config.dir + ": model_type '" +
                         clipName(config.modelType) + "' is not one kiln maps");
  Status s = Status::ok();
  if (isRegularFile((dir / "model.safetensors").string())) {
    s = readShard(dir / "model.safetensors", out, maxTensors);
  } else if (isRegularFile((dir / "model.safetensors.index.json").string())) {
    s = readSharded(dir, out, maxTensors);
  } else if (isRegularFile((dir / "pytorch_model.bin").string()) ||
             isRegularFile((dir / "pytorch_model.bin.index.json").string())) {
    return Status::error(
        config.dir +
        ": holds pytorch_model.bin, a pickled PyTorch checkpoint, which kiln "
        "does not read (loading a pickle can run arbitrary code). Convert it "
        "to safetensors first, e.g. in Python: "
        "safetensors.torch.save_file(torch.load('pytorch_model.bin'), "
        "'model.safetensors')");
  } else {
    return Status::error(config.dir +
                         ": no model.safetensors or "
                         "model.safetensors.index.json with the weights");
  }
  if (!s)
    return s;
  widenHalfTensors(out);
  return layout->map(config, out);
}

void kiln::runtime::widenHalfTensors(NamedTensors &tensors) {
  for (auto &[name, t] : tensors) {
    if (t.dtype() != DType::F16 && t.dtype() != DType::BF16)
      continue;
    Tensor wide = Tensor::uninitialized(DType::F32, t.shape());
    const uint16_t *src = t.as<uint16_t>();
    float *dst = wide.as<float>();
    int64_t n = t.numel();
    if (t.dtype() == DType::F16)
      for (int64_t i = 0; i < n; ++i)
        dst[i] = halfToFloat(src[i]);
    else
      for (int64_t i = 0; i < n; ++i)
        dst[i] = bfloat16ToFloat(src[i]);
    t = std::move(wide);
  }
}
