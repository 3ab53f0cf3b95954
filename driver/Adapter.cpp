//===- Adapter.cpp - reading a PEFT LoRA adapter --------------------------===//
#include "driver/Adapter.h"
#include "runtime/File.h"

#include "llvm/Support/JSON.h"

#include <map>

using namespace kiln;
using runtime::Status;

namespace {
/// A config is a few hundred bytes; anything past this is not one.
constexpr size_t kMaxConfigBytes = 1 << 20;
/// Two tensors per adapted weight; no model kiln compiles has more.
constexpr size_t kMaxAdapterTensors = 1 << 16;
} // namespace

Status kiln::readAdapter(const std::string &dir, runtime::lora::LoraSpec &spec,
                         runtime::NamedTensors &tensors) {
  namespace lora = runtime::lora;
  spec = lora::LoraSpec();
  tensors.clear();
  const std::string configPath = dir + "/" + lora::kPeftConfig,
                    weightsPath = dir + "/" + lora::kPeftWeights;
  std::string text;
  if (Status s = runtime::readFile(configPath, text, kMaxConfigBytes); !s)
    return s;
  llvm::Expected<llvm::json::Value> parsed = llvm::json::parse(text);
  if (!parsed)
    return Status::error(configPath +
                         ": not JSON: " + llvm::toString(parsed.takeError()));
  const llvm::json::Object *config = parsed->getAsObject();
  if (!config)
    return Status::error(configPath + ": not a JSON object");
  if (std::optional<llvm::StringRef> type = config->getString("peft_type");
      type && *type != "LORA")
    return Status::error(configPath + ": peft_type is '" + type->str() +
                         "', not LORA");
  std::optional<int64_t> r = config->getInteger("r");
  if (!r || *r < 1 || *r > 4096)
    return Status::error(configPath +
                         ": 'r' (the rank) must be a whole number from 1 to "
                         "4096");
  std::optional<double> alpha = config->getNumber("lora_alpha");
  if (!alpha || !(*alpha > 0) || !std::isfinite(*alpha))
    return Status::error(configPath +
                         ": 'lora_alpha' must be a positive number");
  if (std::optional<bool> f = config->getBoolean("fan_in_fan_out"); f && *f)
    return Status::error(configPath +
                         ": fan_in_fan_out is true; kiln's adapters pair "
                         "with [out, in] weights (fan_in_fan_out false)");
  spec.rank = *r;
  spec.alpha = *alpha;

  runtime::NamedTensors file;
  if (Status s =
          runtime::readSafetensors(weightsPath, file, kMaxAdapterTensors);
      !s)
    return s;
  const std::string prefix = lora::kPeftPrefix;
  std::map<std::string, int> halves; // target -> bit 1: A, bit 2: B
  for (auto &[key, t] : file) {
    if (key.compare(0, prefix.size(), prefix) != 0)
      return Status::error(weightsPath + ": tensor '" + key +
                           "' is not named " + prefix +
                           "<module>.lora_A/B."
                           "weight");
    std::string name = key.substr(prefix.size());
    std::string module;
    int half = 0;
    for (auto [suffix, bit] : {std::pair<std::string, int>{".lora_A.weight", 1},
                               {".lora_B.weight", 2}})
      if (name.size() > suffix.size() &&
          name.compare(name.size() - suffix.size(), suffix.size(), suffix) ==
              0) {
        module = name.substr(0, name.size() - suffix.size());
        half = bit;
      }
    if (!half)
      return Status::error(weightsPath + ": tensor '" + key +
                           "' is neither a lora_A nor a lora_B weight");
    if (t.dtype() != runtime::DType::F32 || t.shape().size() != 2 ||
        (half == 1 ? t.shape()[0] : t.shape()[1]) != spec.rank)
      return Status::error(weightsPath + ": tensor '" + key + "' is " +
                           t.describe() + "; expected f32 " +
                           (half == 1 ? "[r, in]" : "[out, r]") +
                           " with r = " + std::to_string(spec.rank));
    halves[module + ".weight"] |= half;
    tensors.emplace_back(name, std::move(t));
  }
  for (const auto &[target, bits] : halves) {
    if (bits != 3)
      return Status::error(weightsPath + ": '" + target + "' has " +
                           (bits == 1 ? "lora_A" : "lora_B") + " but not " +
                           (bits == 1 ? "lora_B" : "lora_A"));
    spec.targets.push_back(target);
  }
  if (spec.targets.empty())
    return Status::error(weightsPath + ": holds no adapter");
  return Status::ok();
}
