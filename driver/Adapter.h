//===- Adapter.h - reading a PEFT LoRA adapter ------------------*- C++ -*-===//
//
// `kiln compile --adapter=DIR` (and Python's adapter=): a directory holding
// PEFT's adapter_config.json and adapter_model.safetensors, as
// Model::saveAdapter (runtime/Model.h) and PEFT's save_pretrained write
// them. The config gives the rank and alpha; the tensors' names give the
// targets (base_model.model.X.lora_A.weight adapts X.weight).
//
//===----------------------------------------------------------------------===//
#ifndef KILN_DRIVER_ADAPTER_H
#define KILN_DRIVER_ADAPTER_H

#include "runtime/Safetensors.h"
#include "runtime/lora/LoraSpec.h"

#include <string>

namespace kiln {

/// Reads the adapter in `dir`: `spec` gets its rank, alpha and targets (the
/// adapted weights, by exact name), `tensors` the adapters under kiln's
/// parameter names. Errors name the file and the field or tensor.
runtime::Status readAdapter(const std::string &dir,
                            runtime::lora::LoraSpec &spec,
                            runtime::NamedTensors &tensors);

} // namespace kiln

#endif
