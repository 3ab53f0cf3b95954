//===- Adapter.cpp - a model's LoRA adapters as PEFT's files --------------===//
//
// Model::saveAdapter writes adapter_model.safetensors (each adapter parameter P
// as base_model.model.P) and adapter_config.json, the files PEFT's
// save_pretrained writes and PeftModel.from_pretrained reads; kiln reads
// them back with --adapter (driver/Adapter.h). Model::mergeAdapters folds
// them into the base weights (kiln merge).
//
//===----------------------------------------------------------------------===//
#include "runtime/File.h"
#include "runtime/Model.h"
#include "runtime/Safetensors.h"
#include "runtime/quant/QuantView.h"
#include "runtime/quant/Serialize.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <shared_mutex>
#include <sys/stat.h>

using namespace kiln::runtime;

namespace {

/// A JSON string literal.
std::string quoted(const std::string &s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

/// A double as JSON (integers without a fraction, as PEFT writes r).
std::string number(double v) {
  char buf[32];
  if (v == static_cast<double>(static_cast<int64_t>(v)))
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
  else
    std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

} // namespace

Status Model::saveAdapter(const std::string &dir) const {
  if (!lora_)
    return Status::error(
        "the model has no LoRA adapters to save (compile it with " +
        optionRef("--lora=rank=8", "lora=\"rank=8\"") + ")");
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    return Status::error(
        dir + ": cannot create the adapter directory: " + std::strerror(errno));
  NamedTensors tensors;
  std::string modules;
  for (const std::string &target : lora_->targets) {
    for (const std::string &name : {lora::loraA(target), lora::loraB(target)}) {
      Tensor t;
      if (Status s = parameter(name, t); !s)
        return s;
      tensors.emplace_back(lora::kPeftPrefix + name, std::move(t));
    }
    modules += (modules.empty() ? "" : ", ") + quoted(lora::loraModule(target));
  }
  if (Status s = writeSafetensors(dir + "/" + lora::kPeftWeights, tensors); !s)
    return s;
  std::string config = "{\n"
                       "  \"peft_type\": \"LORA\",\n"
                       "  \"task_type\": \"CAUSAL_LM\",\n"
                       "  \"base_model_name_or_path\": " +
                       quoted(model_) +
                       ",\n"
                       "  \"r\": " +
                       number(static_cast<double>(lora_->rank)) +
                       ",\n"
                       "  \"lora_alpha\": " +
                       number(lora_->alpha) +
                       ",\n"
                       "  \"lora_dropout\": 0.0,\n"
                       "  \"bias\": \"none\",\n"
                       "  \"fan_in_fan_out\": false,\n"
                       "  \"inference_mode\": true,\n"
                       "  \"target_modules\": [" +
                       modules + "]\n}\n";
  return writeFileAtomically(dir + "/" + lora::kPeftConfig,
                             {{config.data(), config.size()}});
}

Status Model::mergeAdapters(NamedTensors &out,
                            const quant::QuantSpec *requantize) const {
  out.clear();
  if (!lora_)
    return Status::error(
        "the model has no LoRA adapters to merge (compile it with " +
        optionRef("--lora=rank=8", "lora=\"rank=8\"") + ")");
  std::set<std::string> adapters,
      targets(lora_->targets.begin(), lora_->targets.end());
  for (const std::string &t : lora_->targets) {
    adapters.insert(lora::loraA(t));
    adapters.insert(lora::loraB(t));
  }
  const double scale = lora_->scale();
  for (const ParameterInfo &p : params_) {
    if (adapters.count(p.name))
      continue;
    if (!targets.count(p.name)) { // as saveWeights writes it
      if (Status s = appendStored(p, out); !s)
        return s;
      continue;
    }
    // W + (alpha / r) B A, summed in double.
    Tensor w, a, b;
    for (auto [name, into] : {std::pair<std::string, Tensor *>{p.name, &w},
                              {lora::loraA(p.name), &a},
                              {lora::loraB(p.name), &b}})
      if (Status s = parameter(name, *into); !s)
        return s;
    const int64_t rows = p.shape[0], cols = p.shape[1], r = lora_->rank;
    float *wd = w.as<float>();
    const float *ad = a.as<float>(), *bd = b.as<float>();
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        double d = 0;
        for (int64_t k = 0; k < r; ++k)
          d += static_cast<double>(bd[i * r + k]) * ad[k * cols + j];
        wd[i * cols + j] = static_cast<float>(
            static_cast<double>(wd[i * cols + j]) + scale * d);
      }
    if (!requantize) {
      out.emplace_back(p.name, std::move(w));
      continue;
    }
    quant::QuantizedWeight qw;
    if (Status s = quant::quantize(w, *requantize, qw); !s)
      return Status::error("parameter '" + p.name + "': " + s.text());
    quant::appendTensors(p.name, qw, out);
  }
  return Status::ok();
}
