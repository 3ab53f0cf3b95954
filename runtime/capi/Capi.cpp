//===- Capi.cpp - the C API over the C++ runtime --------------------------===//
//
// Every entry point checks its pointers, turns a failed Status into a
// kiln_status and catches what C++ throws (std::bad_alloc above all), so
// nothing but a kiln_status crosses into C.
//
//===----------------------------------------------------------------------===//
#include <kiln/kiln.h>

#include "runtime/Generate.h"
#include "runtime/Model.h"
#include "runtime/Safetensors.h"
#include "runtime/quant/Serialize.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

using namespace kiln;
using namespace kiln::runtime;

struct kiln_status {
  kiln_code code;
  std::string message;
  bool fixed = false; // the one status made without memory: never freed
};

struct kiln_model {
  std::unique_ptr<Model> model;
  // kiln_arg's dims, per function: inputs then outputs, as C strings.
  std::map<std::string, std::vector<std::vector<const char *>>> dims;
};

struct kiln_call {
  kiln_model *model = nullptr;
  std::string function;
  const FunctionInfo *info = nullptr;
  std::map<std::string, Tensor> inputs; // views of the caller's buffers
  std::vector<Tensor> outputs;
  std::vector<std::vector<int64_t>> shapes; // the outputs', for kiln_tensor
};

namespace {

kiln_status *failure(kiln_code code, std::string message) {
  try {
    return new kiln_status{code, std::move(message), false};
  } catch (...) {
    // No memory for the message either: a fixed status.
    static kiln_status outOfMemory{KILN_OUT_OF_MEMORY, "out of memory", true};
    return &outOfMemory;
  }
}

kiln_status *fromStatus(const Status &s) {
  return s ? nullptr : failure(KILN_ERROR, s.message());
}

kiln_status *nullArgument(const char *function, const char *argument) {
  return failure(KILN_INVALID_ARGUMENT,
                 std::string(function) + ": " + argument + " is NULL");
}

/// Runs `f`, turning exceptions into statuses.
template <typename F> kiln_status *guarded(F &&f) {
  try {
    return f();
  } catch (const std::bad_alloc &) {
    return failure(KILN_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception &e) {
    return failure(KILN_ERROR, e.what());
  } catch (...) {
    return failure(KILN_ERROR, "unknown error");
  }
}

const FunctionInfo *findFunction(const Model &m, const char *name) {
  for (const FunctionInfo &f : m.functions())
    if (f.name == name)
      return &f;
  return nullptr;
}

kiln_status *unknownFunction(const Model &m, const char *name) {
  std::string names;
  for (const FunctionInfo &f : m.functions())
    names += (names.empty() ? "" : ", ") + f.name;
  return failure(KILN_INVALID_ARGUMENT, std::string("the model has no "
                                                    "function '") +
                                            name + "'; it has: " + names);
}

/// Fills `arg` from input or output `index` of `function`.
kiln_status *describe(const kiln_model *model, const char *function,
                      size_t index, size_t *count, kiln_arg *arg, bool input) {
  const char *api = input ? "kiln_model_input" : "kiln_model_output";
  if (!model || !function)
    return nullArgument(api, !model ? "model" : "function");
  const FunctionInfo *f = findFunction(*model->model, function);
  if (!f)
    return unknownFunction(*model->model, function);
  const std::vector<ArgInfo> &args = input ? f->inputs : f->outputs;
  if (count)
    *count = args.size();
  if (!arg)
    return nullptr;
  if (index >= args.size())
    return failure(KILN_INVALID_ARGUMENT,
                   std::string(api) + ": '" + function + "' has " +
                       std::to_string(args.size()) +
                       (input ? " inputs" : " outputs") + ", not " +
                       std::to_string(index + 1));
  const auto &dims =
      model->dims.at(f->name)[(input ? 0 : f->inputs.size()) + index];
  arg->name = args[index].name.c_str();
  arg->dtype = static_cast<kiln_dtype>(args[index].dtype);
  arg->rank = args[index].dims.size();
  arg->dims = dims.data();
  return nullptr;
}

kiln_status *open(std::unique_ptr<Model> model, kiln_model **out) {
  auto m = std::make_unique<kiln_model>();
  m->model = std::move(model);
  for (const FunctionInfo &f : m->model->functions()) {
    auto &all = m->dims[f.name];
    for (const auto *args : {&f.inputs, &f.outputs})
      for (const ArgInfo &a : *args) {
        all.emplace_back();
        for (const std::string &d : a.dims)
          all.back().push_back(d.c_str());
      }
  }
  *out = m.release();
  return nullptr;
}

bool validDtype(kiln_dtype t) {
  return static_cast<int>(t) >= KILN_F32 && static_cast<int>(t) <= KILN_I8;
}

} // namespace

extern "C" {

int kiln_abi_version(void) { return KILN_ABI_VERSION; }

kiln_code kiln_status_code(const kiln_status *status) {
  return status ? status->code : KILN_OK;
}

const char *kiln_status_message(const kiln_status *status) {
  return status ? status->message.c_str() : "";
}

void kiln_status_free(kiln_status *status) {
  if (status && !status->fixed)
    delete status;
}

kiln_status *kiln_model_open(const char *path, kiln_model **out) {
  if (!path || !out)
    return nullArgument("kiln_model_open", !path ? "path" : "out");
  *out = nullptr;
  return guarded([&]() -> kiln_status * {
    std::unique_ptr<Model> model;
    if (Status s = Model::load(path, model); !s)
      return failure(KILN_ERROR, std::string(path) + ": " + s.message());
    return open(std::move(model), out);
  });
}

kiln_status *kiln_model_open_memory(const void *data, size_t size,
                                    kiln_model **out) {
  if (!data || !out)
    return nullArgument("kiln_model_open_memory", !data ? "data" : "out");
  *out = nullptr;
  return guarded([&]() -> kiln_status * {
    const auto *bytes = static_cast<const uint8_t *>(data);
    std::unique_ptr<Model> model;
    if (Status s =
            Model::fromBytes(std::vector<uint8_t>(bytes, bytes + size), model);
        !s)
      return failure(KILN_ERROR, "the artifact in memory (" +
                                     std::to_string(size) +
                                     " bytes): " + s.message());
    return open(std::move(model), out);
  });
}

void kiln_model_free(kiln_model *model) { delete model; }

void kiln_model_set_threads(kiln_model *model, int threads) {
  if (model)
    model->model->setThreads(threads);
}

size_t kiln_model_function_count(const kiln_model *model) {
  return model ? model->model->functions().size() : 0;
}

const char *kiln_model_function_name(const kiln_model *model, size_t index) {
  if (!model || index >= model->model->functions().size())
    return nullptr;
  return model->model->functions()[index].name.c_str();
}

kiln_status *kiln_model_input(const kiln_model *model, const char *function,
                              size_t index, size_t *count, kiln_arg *arg) {
  return guarded(
      [&] { return describe(model, function, index, count, arg, true); });
}

kiln_status *kiln_model_output(const kiln_model *model, const char *function,
                               size_t index, size_t *count, kiln_arg *arg) {
  return guarded(
      [&] { return describe(model, function, index, count, arg, false); });
}

kiln_status *kiln_call_create(kiln_model *model, const char *function,
                              kiln_call **out) {
  if (!model || !function || !out)
    return nullArgument("kiln_call_create", !model      ? "model"
                                            : !function ? "function"
                                                        : "out");
  *out = nullptr;
  return guarded([&]() -> kiln_status * {
    const FunctionInfo *f = findFunction(*model->model, function);
    if (!f)
      return unknownFunction(*model->model, function);
    auto call = std::make_unique<kiln_call>();
    call->model = model;
    call->function = function;
    call->info = f;
    *out = call.release();
    return nullptr;
  });
}

kiln_status *kiln_call_bind(kiln_call *call, const char *name, kiln_dtype dtype,
                            const int64_t *shape, size_t rank,
                            const void *data) {
  if (!call || !name || (!shape && rank) || !data)
    return nullArgument("kiln_call_bind", !call   ? "call"
                                          : !name ? "name"
                                          : !data ? "data"
                                                  : "shape");
  return guarded([&]() -> kiln_status * {
    bool known = false;
    for (const ArgInfo &a : call->info->inputs)
      known |= a.name == name;
    if (!known)
      return failure(KILN_INVALID_ARGUMENT,
                     "kiln_call_bind: '" + call->function + "' has no input '" +
                         name + "'");
    if (!validDtype(dtype))
      return failure(
          KILN_INVALID_ARGUMENT,
          "kiln_call_bind: input '" + std::string(name) + "': element type " +
              std::to_string(static_cast<int>(dtype)) + " is not a kiln_dtype");
    if (rank > 8)
      return failure(KILN_INVALID_ARGUMENT,
                     "kiln_call_bind: input '" + std::string(name) +
                         "' has rank " + std::to_string(rank) +
                         "; kiln's tensors have at most 8 dimensions");
    std::vector<int64_t> dims(shape, shape + rank);
    for (size_t d = 0; d < rank; ++d)
      if (dims[d] < 0)
        return failure(KILN_INVALID_ARGUMENT,
                       "kiln_call_bind: input '" + std::string(name) +
                           "' has size " + std::to_string(dims[d]) +
                           " in dimension " + std::to_string(d));
    // The runtime reads it only; the view's pointer is not const.
    call->inputs[name] = Tensor::view(
        static_cast<DType>(dtype), std::move(dims), const_cast<void *>(data));
    return nullptr;
  });
}

kiln_status *kiln_call_run(kiln_call *call) {
  if (!call)
    return nullArgument("kiln_call_run", "call");
  return guarded([&]() -> kiln_status * {
    if (Status s = call->model->model->run(call->function, call->inputs,
                                           call->outputs);
        !s)
      return failure(KILN_ERROR, call->function + ": " + s.message());
    call->shapes.clear();
    for (const Tensor &t : call->outputs)
      call->shapes.push_back(t.shape());
    return nullptr;
  });
}

size_t kiln_call_output_count(const kiln_call *call) {
  return call ? call->outputs.size() : 0;
}

kiln_status *kiln_call_output(const kiln_call *call, size_t index,
                              kiln_tensor *out) {
  if (!call || !out)
    return nullArgument("kiln_call_output", !call ? "call" : "out");
  if (index >= call->outputs.size())
    return failure(
        KILN_INVALID_ARGUMENT,
        "kiln_call_output: result " + std::to_string(index) + " of " +
            std::to_string(call->outputs.size()) +
            (call->outputs.empty() ? " (the call has not run)" : ""));
  const Tensor &t = call->outputs[index];
  out->dtype = static_cast<kiln_dtype>(t.dtype());
  out->rank = t.shape().size();
  out->shape = call->shapes[index].data();
  out->data = t.data();
  out->bytes = t.bytes();
  return nullptr;
}

void kiln_call_free(kiln_call *call) { delete call; }

kiln_status *kiln_model_load_weights(kiln_model *model, const char *path) {
  if (!model || !path)
    return nullArgument("kiln_model_load_weights", !model ? "model" : "path");
  return guarded([&]() -> kiln_status * {
    NamedTensors t;
    if (Status s = readSafetensors(path, t,
                                   model->model->parameters().size() *
                                       quant::kMaxTensorsPerWeight);
        !s)
      return fromStatus(s);
    if (Status s = model->model->setParameters(t); !s)
      return failure(KILN_ERROR, std::string(path) + ": " + s.message());
    return nullptr;
  });
}

kiln_status *kiln_model_save_weights(const kiln_model *model,
                                     const char *path) {
  if (!model || !path)
    return nullArgument("kiln_model_save_weights", !model ? "model" : "path");
  return guarded([&] { return fromStatus(model->model->saveWeights(path)); });
}

void kiln_generate_options_init(kiln_generate_options *options) {
  if (!options)
    return;
  std::memset(options, 0, sizeof *options);
  options->struct_size = sizeof *options;
  options->max_tokens = 16;
  options->temperature = 1.0;
  options->top_p = 1.0;
}

kiln_status *kiln_generate(kiln_model *model, const int32_t *prompt,
                           size_t prompt_length,
                           const kiln_generate_options *options, int32_t *out,
                           size_t capacity, size_t *produced) {
  if (!model || (!prompt && prompt_length) || !options || (!out && capacity) ||
      !produced)
    return nullArgument("kiln_generate", !model      ? "model"
                                         : !options  ? "options"
                                         : !produced ? "produced"
                                         : !out      ? "out"
                                                     : "prompt");
  *produced = 0;
  if (options->struct_size != sizeof(kiln_generate_options))
    return failure(KILN_INVALID_ARGUMENT,
                   "kiln_generate: options->struct_size is " +
                       std::to_string(options->struct_size) +
                       "; initialize the options with "
                       "kiln_generate_options_init");
  if (options->max_tokens < 0)
    return failure(KILN_INVALID_ARGUMENT,
                   "kiln_generate: max_tokens is negative");
  return guarded([&]() -> kiln_status * {
    GenerateOptions o;
    o.maxTokens =
        std::min<int64_t>(options->max_tokens, static_cast<int64_t>(capacity));
    o.temperature = options->temperature;
    o.topK = options->top_k;
    o.topP = options->top_p;
    o.seed = options->seed;
    o.stopTokens = stopTokens(model->model->tokenizer());
    std::vector<int32_t> ids(prompt, prompt + prompt_length), result;
    if (Status s = generate(*model->model, ids, o, result); !s)
      return failure(KILN_ERROR, "kiln_generate: " + s.message());
    size_t n = std::min(result.size(), capacity);
    std::copy(result.begin(), result.begin() + static_cast<ptrdiff_t>(n), out);
    *produced = n;
    return nullptr;
  });
}

kiln_status *kiln_encode(const kiln_model *model, const char *text,
                         int32_t *ids, size_t capacity, size_t *needed) {
  if (!model || !text || (!ids && capacity) || !needed)
    return nullArgument("kiln_encode", !model    ? "model"
                                       : !text   ? "text"
                                       : !needed ? "needed"
                                                 : "ids");
  return guarded([&]() -> kiln_status * {
    const Tokenizer &tok = model->model->tokenizer();
    if (tok.empty())
      return failure(KILN_ERROR, "kiln_encode: the artifact has no tokenizer");
    std::vector<int32_t> v;
    if (Status s = tok.encode(text, v); !s)
      return failure(KILN_ERROR, "kiln_encode: " + s.message());
    *needed = v.size();
    std::copy(v.begin(),
              v.begin() + static_cast<ptrdiff_t>(std::min(v.size(), capacity)),
              ids);
    return nullptr;
  });
}

kiln_status *kiln_decode(const kiln_model *model, const int32_t *ids,
                         size_t count, char *text, size_t capacity,
                         size_t *needed) {
  if (!model || (!ids && count) || (!text && capacity) || !needed)
    return nullArgument("kiln_decode", !model    ? "model"
                                       : !needed ? "needed"
                                       : !text   ? "text"
                                                 : "ids");
  return guarded([&]() -> kiln_status * {
    const Tokenizer &tok = model->model->tokenizer();
    if (tok.empty())
      return failure(KILN_ERROR, "kiln_decode: the artifact has no tokenizer");
    int64_t vocab = static_cast<int64_t>(tok.size());
    for (size_t i = 0; i < count; ++i)
      if (ids[i] < 0 || ids[i] >= vocab)
        return failure(KILN_INVALID_ARGUMENT,
                       "kiln_decode: id " + std::to_string(ids[i]) + " at " +
                           std::to_string(i) + " is outside the tokenizer's " +
                           std::to_string(vocab) + " tokens");
    std::string s = tok.decode(std::vector<int32_t>(ids, ids + count));
    *needed = s.size();
    if (capacity) {
      size_t n = std::min(s.size(), capacity - 1);
      std::memcpy(text, s.data(), n);
      text[n] = 0;
    }
    return nullptr;
  });
}

} // extern "C"
