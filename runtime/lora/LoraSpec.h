//===- LoraSpec.h - what --lora asks for ------------------------*- C++ -*-===//
//
// The one place LoRA adapters are named and parsed, shared by the CLI,
// Python, the kiln-lora pass, the artifact writer and the runtime's PEFT
// adapter files (header-only, like runtime/quant/QuantSpec.h):
//
//   rank=R,alpha=A,targets=GLOB[,GLOB...]
//
// every key optional: rank 8, alpha 8 (PEFT's defaults), targets every
// matrix read only as a linear layer's weight. A target X.weight ([out,
// in]) gets X.lora_A.weight [R, in] (Kaiming-uniform, as PEFT initializes
// it: uniform in ±1/sqrt(in)) and X.lora_B.weight [out, R] (zeros), and
// each product x Xᵀ becomes x Xᵀ + (A/R) (x Aᵀ) Bᵀ.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_LORA_LORASPEC_H
#define KILN_RUNTIME_LORA_LORASPEC_H

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace kiln::runtime::lora {

struct LoraSpec {
  int64_t rank = 8;
  double alpha = 8;
  /// Globs over parameter paths; empty: every linear layer's weight.
  std::vector<std::string> targets;
  double scale() const { return alpha / static_cast<double>(rank); }
};

/// The module path of a target parameter ("h.0.attn.c_attn" for
/// "h.0.attn.c_attn.weight"), under which its adapters are named.
inline std::string loraModule(const std::string &param) {
  const std::string suffix = ".weight";
  if (param.size() > suffix.size() &&
      param.compare(param.size() - suffix.size(), suffix.size(), suffix) == 0)
    return param.substr(0, param.size() - suffix.size());
  return param;
}

/// The adapter parameters of a target: "X.lora_A.weight", "X.lora_B.weight".
inline std::string loraA(const std::string &param) {
  return loraModule(param) + ".lora_A.weight";
}
inline std::string loraB(const std::string &param) {
  return loraModule(param) + ".lora_B.weight";
}

/// PEFT's files (adapter_model.safetensors, adapter_config.json) name an
/// adapter parameter P as kPeftPrefix + P
/// ("base_model.model.h.0.attn.c_attn.lora_A.weight").
inline const char *const kPeftPrefix = "base_model.model.";
inline const char *const kPeftWeights = "adapter_model.safetensors";
inline const char *const kPeftConfig = "adapter_config.json";

/// Parses "rank=8,alpha=16,targets=GLOB,GLOB" (a part without '=' after
/// targets= is one more glob). False, with `error` saying why, on anything
/// else: unknown keys, a rank outside 1..4096, an alpha not positive and
/// finite, an empty glob.
inline bool parseLoraSpec(const std::string &text, LoraSpec &spec,
                          std::string &error) {
  spec = LoraSpec();
  bool inTargets = false;
  size_t at = 0;
  while (at <= text.size()) {
    size_t comma = text.find(',', at);
    if (comma == std::string::npos)
      comma = text.size();
    std::string part = text.substr(at, comma - at);
    at = comma + 1;
    if (part.empty() && comma == text.size() && text.empty())
      break;
    size_t eq = part.find('=');
    if (eq == std::string::npos) {
      if (!inTargets || part.empty()) {
        error = "'" + part + "' in '" + text +
                "' is not key=value (expected rank=R, alpha=A, targets=GLOB)";
        return false;
      }
      spec.targets.push_back(part);
      continue;
    }
    std::string key = part.substr(0, eq), value = part.substr(eq + 1);
    inTargets = false;
    char *end = nullptr;
    if (key == "rank") {
      long long r = std::strtoll(value.c_str(), &end, 10);
      if (value.empty() || *end || r < 1 || r > 4096) {
        error = "rank=" + value + " in '" + text +
                "' is not a whole number from 1 to 4096";
        return false;
      }
      spec.rank = r;
    } else if (key == "alpha") {
      double a = std::strtod(value.c_str(), &end);
      if (value.empty() || *end || !(a > 0) || !std::isfinite(a)) {
        error =
            "alpha=" + value + " in '" + text + "' is not a positive number";
        return false;
      }
      spec.alpha = a;
    } else if (key == "targets") {
      if (value.empty()) {
        error = "targets= in '" + text + "' names no parameter glob";
        return false;
      }
      spec.targets.push_back(value);
      inTargets = true;
    } else {
      error = "unknown key '" + key + "' in '" + text +
              "' (expected rank, alpha, targets)";
      return false;
    }
  }
  return true;
}

} // namespace kiln::runtime::lora

#endif
