//===- Model.cpp - load a .kart artifact; the Model API -------------------===//
#include "runtime/Model.h"
#include "runtime/File.h"
#include "runtime/Kernels.h"
#include "runtime/Memory.h"
#include "runtime/Safetensors.h"
#include "runtime/attention/KartPattern.h"
#include "runtime/core/FunctionState.h"
#include "runtime/core/KartTokenizer.h"
#include "runtime/cuda/Driver.h"
#include "runtime/cuda/Executable.h"
#include "runtime/cuda/Gpu.h"
#include "runtime/quant/Formats.h"
#include "runtime/quant/Serialize.h"

#include <flatbuffers/flatbuffers.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <set>

using namespace kiln;
using namespace kiln::runtime;
using kart::Op;

Model::~Model() = default;

Status Model::Bytes::allocate(size_t n) {
  storage.reset(new (std::nothrow) uint8_t[n + kAlign]);
  if (!storage)
    return Status::error("cannot allocate " + std::to_string(n) +
                         " bytes for the artifact: out of memory");
  auto at = reinterpret_cast<uintptr_t>(storage.get());
  data = storage.get() + (alignUp(at) - at);
  size = n;
  return Status::ok();
}

// The file is read once, straight into the model's aligned buffer: one
// copy of the artifact in memory at any time, however large it is.
Status Model::load(const std::string &path, std::unique_ptr<Model> &out,
                   const LoadOptions &options) {
  std::unique_ptr<Model> m(new Model());
  if (Status s =
          readFile(path, FLATBUFFERS_MAX_BUFFER_SIZE - 1, ".kart artifact",
                   [&](uint64_t size, uint8_t *&at) {
                     Status st = m->bytes_.allocate(size);
                     at = m->bytes_.data;
                     return st;
                   });
      !s)
    return s;
  size_t slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  Status s = finishLoad(std::move(m), out, dir.empty() ? "/" : dir, options);
  if (!s)
    return Status::error(path + ": " + s.text());
  return s;
}

Status Model::fromBytes(std::vector<uint8_t> bytes, std::unique_ptr<Model> &out,
                        const std::string &dir, const LoadOptions &options) {
  std::unique_ptr<Model> m(new Model());
  if (Status s = m->bytes_.allocate(bytes.size()); !s)
    return s;
  if (!bytes.empty())
    std::memcpy(m->bytes_.data, bytes.data(), bytes.size());
  std::vector<uint8_t>().swap(bytes); // one copy held from here on
  return finishLoad(std::move(m), out, dir, options);
}

Status kiln::runtime::openLoadDevice(const LoadOptions &options,
                                     std::shared_ptr<cuda::Driver> &driver) {
  driver.reset();
  const std::string &d = options.device;
  if (d.empty() || d == "cpu")
    return Status::ok();
  std::string ref = optionRef("--device=" + d, "device=\"" + d + "\"");
  int ordinal = 0;
  bool ok = d == "cuda";
  if (!ok && d.rfind("cuda:", 0) == 0 && d.size() > 5 && d.size() < 9 &&
      d.find_first_not_of("0123456789", 5) == std::string::npos) {
    ordinal = std::stoi(d.substr(5));
    ok = true;
  }
  if (!ok)
    return Status::error(ref + ": a device is cpu, cuda or cuda:N");
  if (Status s = cuda::openCudaDriver(ordinal, driver); !s)
    return Status::error(ref + ": " + s.text());
  return Status::ok();
}

Status Model::finishLoad(std::unique_ptr<Model> m, std::unique_ptr<Model> &out,
                         const std::string &dir, const LoadOptions &options) {
  if (Status s = m->init(dir, options); !s)
    return s;
  std::shared_ptr<cuda::Driver> driver;
  if (Status s = openLoadDevice(options, driver); !s)
    return s;
  if (driver)
    if (Status s = m->useCuda(std::move(driver)); !s)
      return Status::error(optionRef("--device=" + options.device,
                                     "device=\"" + options.device + "\"") +
                           ": " + s.text());
  out = std::move(m);
  return Status::ok();
}

// The FlatBuffers verifier checks the alignment of scalars and of vector
// lengths but not of 8-byte vector elements, which a damaged file can leave
// misaligned; reading them would be undefined behaviour.
static Status checkWideVectorAlignment(const kart::Program *p,
                                       const uint8_t *base) {
  auto check = [&](const auto *vec, const std::string &what) -> Status {
    if (!vec || vec->size() == 0)
      return Status::ok();
    size_t at = reinterpret_cast<const uint8_t *>(vec->data()) - base;
    if (at % 8)
      return Status::error("the artifact is corrupted: " + what +
                           " is misaligned at byte offset " +
                           std::to_string(at));
    return Status::ok();
  };
  if (p->functions())
    for (const kart::Function *fn : *p->functions()) {
      if (!fn)
        continue;
      std::string name = fn->name() ? fn->name()->str() : "?";
      if (fn->kernels())
        for (size_t i = 0; i < fn->kernels()->size(); ++i) {
          const kart::Kernel *k = fn->kernels()->Get(i);
          std::string where =
              "function '" + name + "' kernel " + std::to_string(i);
          if (!k)
            continue;
          Status s = Status::ok();
          if (const auto *a = k->attrs_as_TransposeAttrs())
            s = check(a->perm(), where + " perm");
          else if (const auto *a = k->attrs_as_ReduceAttrs())
            s = check(a->axes(), where + " axes");
          else if (const auto *a = k->attrs_as_ReduceGradAttrs())
            s = check(a->axes(), where + " axes");
          else if (const auto *a = k->attrs_as_ElementwiseProgram())
            s = check(a->constants(), where + " constants");
          if (!s)
            return s;
        }
      if (fn->constants())
        for (size_t i = 0; i < fn->constants()->size(); ++i)
          if (Status s = check(fn->constants()->Get(i)->shape(),
                               "function '" + name + "' constant " +
                                   std::to_string(i) + " shape");
              !s)
            return s;
    }
  if (p->parameters())
    for (size_t i = 0; i < p->parameters()->size(); ++i)
      if (Status s = check(p->parameters()->Get(i)->shape(),
                           "parameter " + std::to_string(i) + " shape");
          !s)
        return s;
  return Status::ok();
}

Status Model::init(const std::string &dir, const LoadOptions &options) {
  const uint8_t *data = bytes_.data;
  size_t size = bytes_.size;
  if (size < 8)
    return Status::error("the file is " + std::to_string(size) +
                         " bytes, too short to be a .kart artifact");
  if (!kart::ProgramBufferHasIdentifier(data))
    return Status::error("not a .kart artifact (bytes 4-7 should be 'KART')");
  if (size >= FLATBUFFERS_MAX_BUFFER_SIZE)
    return Status::error("the file is " + std::to_string(size) +
                         " bytes; .kart artifacts are limited to 2 GiB");
  flatbuffers::Verifier::Options opts;
  opts.max_tables = 100000000;
  flatbuffers::Verifier verifier(data, size, opts);
  if (!kart::VerifyProgramBuffer(verifier))
    return Status::error("the artifact is corrupted: its FlatBuffers tables "
                         "do not verify (truncated or damaged file)");
  const kart::Program *p = kart::GetProgram(data);
  if (p->version() != kFormatVersion)
    return Status::error(
        "artifact format version " + std::to_string(p->version()) +
        (p->version() > kFormatVersion ? " is newer than" : " is not") +
        " the version this runtime reads (" + std::to_string(kFormatVersion) +
        "); recompile the model with this "
        "kiln");
  if (Status s = checkWideVectorAlignment(p, data); !s)
    return s;
  if (Status s = cuda::checkExecutables(*p); !s)
    return s;
  if (int e = cuda::cudaExecutable(*p); e >= 0) {
    const kart::Executable *x = p->executables()->Get(e);
    CudaExecutableInfo info;
    info.bytes = x->data()->size();
    if (x->architectures())
      for (const flatbuffers::String *a : *x->architectures())
        info.architectures.push_back(a ? a->str() : "");
    info.entries = x->entries()->size();
    info.only = p->functions() && cuda::cudaOnly(*p);
    cudaExecutable_ = info;
  }
  if (!p->functions() || !p->parameters() || !p->weights() || !p->model())
    return Status::error("the artifact is missing its functions, parameters "
                         "or weights");
  model_ = p->model()->str();
  if (p->history()) {
    // Read into memory as strings: bounded like everything an input holds.
    if (p->history()->size() > kMaxHistory)
      return Status::error(
          "the artifact's history has " + std::to_string(p->history()->size()) +
          " entries, more than " + std::to_string(kMaxHistory));
    for (const flatbuffers::String *line : *p->history()) {
      if (!line || line->size() > kMaxHistoryLine)
        return Status::error("the artifact's history has an entry longer "
                             "than " +
                             std::to_string(kMaxHistoryLine) + " bytes");
      history_.push_back(line->str());
    }
  }
  if (const kart::TokenizerData *t = p->tokenizer_data())
    if (Status s = tokenizerFromKart(*t, tokenizer_); !s)
      return Status::error("the artifact's tokenizer is invalid: " + s.text());
  if (p->hparams())
    for (const kart::HParam *h : *p->hparams())
      if (h && h->name()) {
        hparams_.emplace_back(h->name()->str(), h->value());
        hparamKinds_.push_back(h->is_bool()      ? HParamKind::Boolean
                               : h->is_integer() ? HParamKind::Integer
                                                 : HParamKind::Number);
      }
  const uint8_t *weights = p->weights()->data();
  size_t wsize = p->weights()->size();
  // External weights: read and validate the file, then match by name.
  std::map<std::string, Tensor *> external;
  std::string wfile;
  if (p->weights_file() && p->weights_file()->size()) {
    // The artifact names a file beside itself and nothing else: a path
    // from the file would let an artifact make kiln open any file.
    std::string name = p->weights_file()->str();
    if (name.size() > 255 || name == "." || name == ".." ||
        name.find_first_of(std::string("/\0", 2)) != std::string::npos)
      return Status::error(
          "the artifact's weights_file '" +
          (name.size() > 80 ? name.substr(0, 77) + "..." : name) +
          "' is not a file name; an artifact's external weights lie beside "
          "it (or load it with an explicit weights file)");
    wfile =
        options.weightsFile.empty() ? dir + "/" + name : options.weightsFile;
    NamedTensors tensors;
    if (Status s = readSafetensors(wfile, tensors, p->parameters()->size()); !s)
      return Status::error("external weights: " + s.text());
    for (auto &[name, t] : tensors)
      externalWeights_.push_back(std::move(t));
    for (size_t i = 0; i < tensors.size(); ++i)
      external[tensors[i].first] = &externalWeights_[i];
  } else if (!options.weightsFile.empty()) {
    return Status::error("the artifact embeds its weights; a weights file "
                         "applies to artifacts compiled with " +
                         optionRef("--external-weights", "external_weights="));
  }
  for (size_t i = 0; i < p->parameters()->size(); ++i) {
    const kart::Parameter *pr = p->parameters()->Get(i);
    std::string name = pr->name() ? pr->name()->str() : "";
    auto bad = [&](const std::string &msg) {
      return Status::error("parameter " + std::to_string(i) + " ('" + name +
                           "'): " + msg);
    };
    if (name.empty() || !pr->shape())
      return bad("is missing its name or shape");
    const kart::Storage *st = pr->storage();
    bool quantized = st && st->type() != kart::StorageType::F32;
    if (quantized && st->type() != kart::StorageType::Int8 &&
        st->type() != kart::StorageType::Int4 &&
        st->type() != kart::StorageType::NF4)
      return bad(std::string("is stored as ") +
                 (st->type() <= kart::StorageType::MAX
                      ? kart::EnumNameStorageType(st->type())
                      : "an unknown type") +
                 "; this runtime reads f32, int8, int4 and nf4 parameters");
    if (st && !quantized &&
        (st->block_size() != 0 || st->axis() != -1 || st->scales() != -1 ||
         st->zero_points() != -1 || st->second_level_scales() != -1 ||
         st->second_level_map() != -1))
      return bad("is dense f32 but names quantization blocks, scales or "
                 "zero points");
    if (quantized &&
        (pr->dtype() != kart::DType::F32 || !wfile.empty() || pr->trainable()))
      return bad("is quantized, so it must stand for f32 values, be frozen "
                 "and be embedded in the artifact");
    if (!computable(pr->dtype()) && pr->dtype() != kart::DType::U8 &&
        pr->dtype() != kart::DType::I8)
      return bad("has an element type the CPU runtime does not compute in");
    uint64_t n = 1;
    for (int64_t d : *pr->shape()) {
      if (d <= 0 || d > (int64_t(1) << 40))
        return bad("has an invalid dimension " + std::to_string(d));
      n *= static_cast<uint64_t>(d);
      if (n > (uint64_t(1) << 40))
        return bad("is too large");
    }
    uint64_t want = n * dtypeSize(fromKart(pr->dtype()));
    if (quantized) {
      // The codes only: int8 one byte each, int4 two per byte in rows,
      // nf4 two per byte of the flattened tensor.
      uint64_t rows = pr->shape()->Get(0), cols = n / rows;
      want = st->type() == kart::StorageType::Int8   ? n
             : st->type() == kart::StorageType::Int4 ? rows * ((cols + 1) / 2)
                                                     : (n + 1) / 2;
    }
    if (pr->size() != want)
      return bad("declares " + std::to_string(pr->size()) +
                 " bytes but its shape needs " + std::to_string(want));
    Shape shape(pr->shape()->begin(), pr->shape()->end());
    if (!wfile.empty()) {
      auto it = external.find(name);
      if (it == external.end())
        return bad("is missing from the external weights " + wfile);
      if (it->second->dtype() != fromKart(pr->dtype()) ||
          it->second->shape() != shape)
        return bad("is " + it->second->describe() + " in " + wfile +
                   ", but the artifact expects " +
                   shapeString(fromKart(pr->dtype()), shape));
      paramData_.push_back(static_cast<const uint8_t *>(it->second->data()));
      external.erase(it);
    } else {
      if (pr->offset() % 4 || pr->offset() > wsize ||
          pr->size() > wsize - pr->offset())
        return bad("bytes [" + std::to_string(pr->offset()) + ", " +
                   std::to_string(pr->offset() + pr->size()) +
                   ") are outside the " + std::to_string(wsize) +
                   "-byte weights section");
      paramData_.push_back(weights + pr->offset());
    }
    params_.push_back({name, fromKart(pr->dtype()), shape, pr->trainable()});
  }
  if (Status s = loadQuantized(p); !s)
    return s;
  if (Status s = loadLora(p); !s)
    return s;
  if (!external.empty())
    return Status::error("external weights " + wfile +
                         " hold tensors the artifact does not use, e.g. '" +
                         external.begin()->first + "'");
  paramVersion_.assign(paramData_.size(), 0);
  packed_ = std::make_unique<PackedWeights>();
  for (const kart::Function *f : *p->functions()) {
    if (!f)
      return Status::error("the artifact has an empty function entry");
    auto st = std::make_unique<FunctionState>(
        *p, *f, paramData_, quantViews_, optimizer_, paramVersion_, *packed_);
    if (Status s = st->verify(); !s)
      return s;
    auto pool = std::make_unique<StatePool>();
    pool->program = p;
    pool->function = f;
    for (const kart::Kernel *k : *f->kernels())
      pool->writesParameters |= k->op() == kart::Op::OptimizerUpdate;
    FunctionInfo info;
    info.name = f->name()->str();
    info.kernels = f->kernels()->size();
    info.values = f->values()->size();
    auto arg = [&](int id, std::string name) {
      ArgInfo a;
      a.name = std::move(name);
      const kart::Value *v = f->values()->Get(id);
      a.dtype = fromKart(v->dtype());
      for (const kart::Dim *d : *v->shape())
        a.dims.push_back(dimText(d, *p));
      return a;
    };
    for (const kart::Kernel *k : *f->kernels()) {
      std::string line = kart::EnumNameOp(k->op());
      auto name = [&](int id) {
        if (id < 0)
          return std::string("_");
        const kart::Value *v = f->values()->Get(id);
        std::string n = "%" + std::to_string(id);
        if (v->kind() == kart::ValueKind::Parameter)
          n += "<" + p->parameters()->Get(v->index())->name()->str() + ">";
        return n;
      };
      for (size_t i = 0; i < k->inputs()->size(); ++i)
        line += (i ? ", " : " ") + name(k->inputs()->Get(i));
      line += " ->";
      for (size_t i = 0; i < k->outputs()->size(); ++i)
        line += (i ? ", " : " ") + name(k->outputs()->Get(i));
      if (k->location())
        line += "  " + k->location()->str();
      if (k->op() == kart::Op::Attention) {
        const kart::AttentionAttrs *a = k->attrs_as_AttentionAttrs();
        info.attention.push_back(
            {info.plan.size(), k->location() ? k->location()->str() : "",
             a->heads(), a->kv_heads(), attention::specOf(*a->pattern())});
      }
      if (k->op() == kart::Op::CachedAttention) {
        // Verified: inputs 3 and 4 are two of the function's inputs.
        const kart::AttentionPattern *pt =
            k->attrs_as_AttentionAttrs()->pattern();
        info.caches.push_back({f->values()->Get(k->inputs()->Get(3))->index(),
                               f->values()->Get(k->inputs()->Get(4))->index(),
                               pt->kind() == kart::PatternKind::SlidingWindow
                                   ? pt->window()
                                   : 0});
      }
      info.plan.push_back(line);
    }
    for (size_t i = 0; i < f->inputs()->size(); ++i)
      info.inputs.push_back(
          arg(f->inputs()->Get(i), f->input_names()->Get(i)->str()));
    for (size_t i = 0; i < f->outputs()->size(); ++i)
      info.outputs.push_back(
          arg(f->outputs()->Get(i), f->output_names()
                                        ? f->output_names()->Get(i)->str()
                                        : "result" + std::to_string(i)));
    infos_.push_back(std::move(info));
    pool->idle.push_back(std::move(st));
    pools_.push_back(std::move(pool));
  }
  if (!tokenizer_.empty() && vocabSize() > 0)
    if (Status s = checkTokenizerFits(tokenizer_, vocabSize(),
                                      "the artifact's tokenizer");
        !s)
      return s;
  return Status::ok();
}

int64_t Model::vocabSize() const {
  for (const FunctionInfo &f : infos_) {
    if (f.name != "forward" || f.outputs.size() != 1 ||
        f.outputs[0].dims.empty())
      continue;
    const std::string &last = f.outputs[0].dims.back();
    if (last.empty() ||
        last.find_first_not_of("0123456789") != std::string::npos ||
        last.size() > 12)
      return -1;
    return std::stoll(last);
  }
  return -1;
}

Status Model::setTokenizer(Tokenizer tokenizer) {
  if (int64_t vocab = vocabSize(); vocab > 0)
    if (Status s = checkTokenizerFits(tokenizer, vocab, "the tokenizer"); !s)
      return s;
  tokenizer_ = std::move(tokenizer);
  repack_ = true;
  return Status::ok();
}

void Model::appendHistory(std::string line) {
  if (line.size() > kMaxHistoryLine)
    line.resize(kMaxHistoryLine);
  if (history_.size() >= kMaxHistory)
    history_.erase(history_.begin() + 1); // keep how it was made
  history_.push_back(std::move(line));
  repack_ = true;
}

Status Model::saveArtifact(const std::string &path) const {
  if (!externalWeights_.empty())
    return Status::error(path + ": the artifact keeps its weights in a "
                                "separate file; save them with saveWeights");
  std::shared_lock<std::shared_mutex> reading(paramsMutex_);
  for (size_t i = 0; i < paramData_.size(); ++i)
    if (Status s = syncParameter(i); !s)
      return s;
  if (!repack_)
    return writeFileAtomically(path, {{bytes_.data, bytes_.size}});
  // The tokenizer or the history differ from the loaded ones: serialize the
  // program again with them (the weights keep their 64-byte alignment, see
  // kart.fbs).
  std::unique_ptr<kart::ProgramT> program(
      kart::GetProgram(bytes_.data)->UnPack());
  program->tokenizer_data =
      tokenizer_.empty() ? nullptr : tokenizerToKart(tokenizer_);
  program->history = history_;
  flatbuffers::FlatBufferBuilder fbb;
  kart::FinishProgramBuffer(fbb, kart::Program::Pack(fbb, program.get()));
  return writeFileAtomically(path, {{fbb.GetBufferPointer(), fbb.GetSize()}});
}

Status Model::setParameters(
    const std::vector<std::pair<std::string, Tensor>> &tensors) {
  std::map<std::string, const Tensor *> byName;
  for (const auto &[name, t] : tensors)
    byName[name] = &t;
  std::vector<const Tensor *> source;
  for (const ParameterInfo &p : params_) {
    if (const quant::QuantView *q = quantViews_[&p - params_.data()]) {
      // Frozen: a checkpoint (saveWeights, a training run's) holds the same
      // codes and scales, which are checked and left as they are.
      if (!quant::holdsQuantized(p.name, byName))
        return Status::error("parameter '" + p.name +
                             "' is stored quantized (" + q->spec +
                             ") and frozen; its values are not replaced");
      NamedTensors mine;
      quant::appendTensors(p.name, quant::toQuantizedWeight(*q, p.shape), mine);
      for (const auto &[name, t] : mine) {
        auto it = byName.find(name);
        if (it == byName.end() || it->second->dtype() != t.dtype() ||
            it->second->shape() != t.shape() ||
            std::memcmp(it->second->data(), t.data(), t.bytes()) != 0)
          return Status::error(
              "parameter '" + p.name + "' is stored quantized (" + q->spec +
              ") and frozen, but '" + name + "' differs from the model's");
        byName.erase(it);
      }
      source.push_back(nullptr);
      continue;
    }
    auto it = byName.find(p.name);
    if (it == byName.end())
      return Status::error("missing parameter '" + p.name + "'");
    if (it->second->dtype() != p.dtype || it->second->shape() != p.shape)
      return Status::error("parameter '" + p.name + "' is " +
                           it->second->describe() + ", the model expects " +
                           shapeString(p.dtype, p.shape));
    source.push_back(it->second);
    byName.erase(it);
  }
  if (!byName.empty())
    return Status::error("'" + byName.begin()->first +
                         "' is not a parameter of the model");
  auto writing = lockParameters();
  for (size_t i = 0; i < params_.size(); ++i)
    if (source[i]) {
      if (Status s = syncParameter(i, /*discard=*/true); !s)
        return s;
      ++paramVersion_[i];
      std::memcpy(const_cast<uint8_t *>(paramData_[i]), source[i]->data(),
                  source[i]->bytes());
    }
  return Status::ok();
}

Status Model::parameterData(size_t i, float *&data) {
  if (i >= paramData_.size())
    return Status::error("parameter " + std::to_string(i) + " out of range");
  if (Status s = syncParameter(i); !s)
    return s;
  // The caller may write: packed and device copies of it are stale.
  ++paramVersion_[i];
  // The bytes live in bytes_ or externalWeights_, both owned by the model.
  data = reinterpret_cast<float *>(const_cast<uint8_t *>(paramData_[i]));
  return Status::ok();
}

Status Model::optimizerState(OptimizerState *&state) {
  if (gpu_) {
    std::lock_guard<std::mutex> lock(gpu_->mutex());
    if (Status s = gpu_->syncMoments(optimizer_); !s)
      return s;
  }
  state = &optimizer_;
  return Status::ok();
}

Status Model::syncParameter(size_t i, bool discard) const {
  if (!gpu_)
    return Status::ok();
  std::lock_guard<std::mutex> lock(gpu_->mutex());
  if (!gpu_->parameterNewer(i))
    return Status::ok();
  const kart::Program &p = *kart::GetProgram(bytes_.data);
  if (Status s = gpu_->syncParameter(i, const_cast<uint8_t *>(paramData_[i]),
                                     p.parameters()->Get(i)->size(), discard);
      !s)
    return Status::error("parameter '" + p.parameters()->Get(i)->name()->str() +
                         "': copying it back from the GPU: " + s.message());
  return Status::ok();
}

Status Model::syncAll() {
  for (size_t i = 0; i < paramData_.size(); ++i)
    if (Status s = syncParameter(i); !s)
      return s;
  OptimizerState *state;
  return optimizerState(state);
}

Status Model::run(const std::string &function,
                  const std::map<std::string, Tensor> &inputs,
                  std::vector<Tensor> &outputs, const RunOptions &options) {
  for (size_t i = 0; i < infos_.size(); ++i) {
    if (infos_[i].name != function)
      continue;
    StatePool &pool = *pools_[i];
    Borrowed borrowed(pool);
    FunctionState *state = nullptr;
    if (Status s = borrowed.get([&] { return newState(pool); }, state); !s)
      return s;
    ThreadScope threads(threads_);
    RunOptions run = options;
    std::shared_ptr<Profiler> own; // kept alive for the call
    if (!run.profiler) {
      own = profiler();
      run.profiler = own.get();
    }
    double start = run.profiler ? run.profiler->nowUs() : 0;
    Status status;
    // Under the parameters' lock, which useCuda takes to change the GPU.
    auto call = [&] {
      return gpu_ ? state->runCuda(inputs, outputs, run, *gpu_)
                  : state->run(inputs, outputs, run);
    };
    if (pool.writesParameters) {
      std::unique_lock<std::shared_mutex> writing(paramsMutex_);
      status = call();
    } else {
      std::shared_lock<std::shared_mutex> reading(paramsMutex_);
      status = call();
    }
    if (run.profiler) {
      ProfileSlice call;
      call.kind = ProfileSlice::Kind::Call;
      call.function = call.name = function;
      call.startUs = start;
      call.durationUs = run.profiler->nowUs() - start;
      call.thread = run.profiler->threadIndex();
      run.profiler->record(std::move(call));
    }
    return status;
  }
  std::string names;
  for (const FunctionInfo &f : infos_)
    names += (names.empty() ? "" : ", ") + f.name;
  return Status::error("the model has no function '" + function +
                       "'; it has: " + names);
}

Status Model::memoryReport(const std::string &function,
                           const std::map<std::string, int64_t> &dims,
                           MemoryReport &report) {
  for (size_t i = 0; i < infos_.size(); ++i)
    if (infos_[i].name == function) {
      Borrowed borrowed(*pools_[i]);
      FunctionState *state = nullptr;
      if (Status s = borrowed.get([&] { return newState(*pools_[i]); }, state);
          !s)
        return s;
      if (Status s = state->bindDims(dims); !s)
        return s;
      if (Status s = state->planShapes(); !s)
        return s;
      report = state->memory();
      return Status::ok();
    }
  return Status::error("the model has no function '" + function + "'");
}

Status Model::useCuda(std::shared_ptr<cuda::Driver> driver) {
  auto writing = lockParameters();
  // What train steps left on the current GPU comes home first.
  if (Status s = syncAll(); !s)
    return s;
  if (!driver) {
    gpu_.reset();
    return Status::ok();
  }
  const kart::Program &p = *kart::GetProgram(bytes_.data);
  std::unique_ptr<cuda::Gpu> gpu;
  if (Status s =
          cuda::Gpu::create(std::move(driver), p, paramData_.size(), gpu);
      !s)
    return s;
  gpu_ = std::move(gpu);
  return Status::ok();
}

std::string Model::deviceDescription() const {
  if (!gpu_)
    return std::string();
  const cuda::Driver &d = gpu_->driver();
  std::string blas = d.blas();
  return d.describe() + "; matrix products on " +
         (blas.empty() ? "kiln's kernel (" + d.blasMissing() + ")" : blas);
}

std::unique_ptr<FunctionState> Model::newState(const StatePool &pool) {
  return std::make_unique<FunctionState>(*pool.program, *pool.function,
                                         paramData_, quantViews_, optimizer_,
                                         paramVersion_, *packed_);
}

Status Model::loadQuantized(const void *program) {
  const kart::Program &p = *static_cast<const kart::Program *>(program);
  size_t count = params_.size();
  // For each auxiliary tensor, the quantized parameter it belongs to.
  std::vector<int> owner(count, -1);
  quantOwned_.clear();
  quantViews_.assign(count, nullptr);
  for (size_t i = 0; i < count; ++i) {
    const kart::Parameter *pr = p.parameters()->Get(i);
    const kart::Storage *st = pr->storage();
    if (!st || st->type() == kart::StorageType::F32)
      continue;
    const ParameterInfo &info = params_[i];
    auto bad = [&](const std::string &msg) {
      return Status::error("parameter " + std::to_string(i) + " ('" +
                           info.name + "'): " + msg);
    };
    // One auxiliary tensor, checked for its type and shape.
    auto aux = [&](int index, const char *what, DType dt, Shape shape,
                   const void *&data) -> Status {
      if (index < 0 || static_cast<size_t>(index) >= count ||
          static_cast<size_t>(index) == i)
        return bad(std::string("its ") + what + " name parameter " +
                   std::to_string(index) + ", which is not another parameter");
      if (owner[index] != -1)
        return bad(std::string("its ") + what + " ('" + params_[index].name +
                   "') belong to another weight as well");
      const kart::Parameter *a = p.parameters()->Get(index);
      if ((a->storage() && a->storage()->type() != kart::StorageType::F32) ||
          a->trainable() || params_[index].dtype != dt ||
          params_[index].shape != shape)
        return bad(std::string("its ") + what + " ('" + params_[index].name +
                   "') are " +
                   shapeString(params_[index].dtype, params_[index].shape) +
                   (a->trainable() ? ", trainable" : "") +
                   "; expected frozen " + shapeString(dt, shape));
      owner[index] = static_cast<int>(i);
      data = paramData_[index];
      return Status::ok();
    };
    auto v = std::make_unique<quant::QuantView>();
    int64_t n = 1;
    for (int64_t d : info.shape)
      n *= d;
    v->rows = info.shape[0];
    v->cols = n / v->rows;
    v->codes = paramData_[i];
    const void *data = nullptr;
    quant::QuantSpec spec;
    switch (st->type()) {
    case kart::StorageType::Int8:
      spec.format = v->format = quant::Format::Int8;
      if (info.shape.size() != 2)
        return bad("is int8 but not a matrix");
      if (Status s = aux(st->scales(), "scales", DType::F32, {v->rows}, data);
          !s)
        return s;
      v->scales = static_cast<const float *>(data);
      break;
    case kart::StorageType::Int4: {
      spec.format = v->format = quant::Format::Int4;
      v->block = spec.group = st->block_size();
      if (info.shape.size() != 2)
        return bad("is int4 but not a matrix");
      if (v->block < 2 || v->block > 4096 || v->block % 2)
        return bad("has int4 groups of " + std::to_string(v->block) +
                   "; groups are even, from 2 to 4096");
      int64_t groups = (v->cols + v->block - 1) / v->block;
      if (Status s =
              aux(st->scales(), "scales", DType::F32, {v->rows, groups}, data);
          !s)
        return s;
      v->scales = static_cast<const float *>(data);
      if (Status s = aux(st->zero_points(), "zero points", DType::F32,
                         {v->rows, groups}, data);
          !s)
        return s;
      v->zeros = static_cast<const float *>(data);
      break;
    }
    default: { // NF4, the loop over parameters admitted no other
      spec.format = v->format = quant::Format::NF4;
      v->block = spec.block = st->block_size();
      if (!quant::validNf4BlockSize(v->block))
        return bad("has NF4 blocks of " + std::to_string(v->block) +
                   "; blocks are powers of two from 64 to 4096");
      int64_t blocks = (n + v->block - 1) / v->block;
      spec.doubleQuant = st->second_level_scales() >= 0;
      if (!spec.doubleQuant) {
        if (Status s = aux(st->scales(), "scales", DType::F32, {blocks}, data);
            !s)
          return s;
        v->absmax = v->scales = static_cast<const float *>(data);
        break;
      }
      v->nestedBlock = st->second_level_block_size();
      if (!quant::validNf4BlockSize(v->nestedBlock))
        return bad("has second-level blocks of " +
                   std::to_string(v->nestedBlock) +
                   "; blocks are powers of two from 64 to 4096");
      v->offset = st->second_level_offset();
      if (!std::isfinite(v->offset))
        return bad("has a second-level offset that is not finite");
      int64_t groups = (blocks + v->nestedBlock - 1) / v->nestedBlock;
      if (Status s = aux(st->scales(), "scales", DType::U8, {blocks}, data); !s)
        return s;
      v->absmaxCodes = static_cast<const uint8_t *>(data);
      if (Status s = aux(st->second_level_scales(), "second-level scales",
                         DType::F32, {groups}, data);
          !s)
        return s;
      v->nestedAbsmax = static_cast<const float *>(data);
      if (Status s = aux(st->second_level_map(), "second-level map", DType::F32,
                         {256}, data);
          !s)
        return s;
      v->nestedMap = static_cast<const float *>(data);
      for (int k = 0; k < 256; ++k)
        if (!(v->nestedMap[k] >= -1.0f && v->nestedMap[k] <= 1.0f))
          return bad("has a second-level map value " +
                     std::to_string(v->nestedMap[k]) + " at index " +
                     std::to_string(k) + "; map values lie in [-1, 1]");
      // The block scales, decoded once as bitsandbytes decodes them.
      v->decoded.resize(static_cast<size_t>(blocks));
      for (int64_t b = 0; b < blocks; ++b)
        v->decoded[b] = v->nestedMap[v->absmaxCodes[b]] *
                            v->nestedAbsmax[b / v->nestedBlock] +
                        v->offset;
      v->scales = v->decoded.data();
      break;
    }
    }
    v->spec = quant::formatQuantSpec(spec);
    quantViews_[i] = v.get();
    quantOwned_.push_back(std::move(v));
  }
  // The auxiliary tensors close the table, after every model parameter;
  // tensors of codes and scales are nothing else.
  size_t first = count;
  while (first > 0 && owner[first - 1] != -1)
    --first;
  for (size_t i = 0; i < count; ++i) {
    if (i < first && owner[i] != -1)
      return Status::error("parameter " + std::to_string(i) + " ('" +
                           params_[i].name + "') holds the scales of '" +
                           params_[owner[i]].name +
                           "' but comes before model parameters; an "
                           "artifact lists its model's parameters first");
    if (i < first &&
        (params_[i].dtype == DType::U8 || params_[i].dtype == DType::I8))
      return Status::error("parameter " + std::to_string(i) + " ('" +
                           params_[i].name + "') is " +
                           dtypeName(params_[i].dtype) +
                           ", which only a quantized weight's scales are");
  }
  params_.resize(first);
  quantViews_.resize(first);
  return Status::ok();
}

Status Model::parameter(const std::string &name, Tensor &out) const {
  std::shared_lock<std::shared_mutex> reading(paramsMutex_);
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].name == name) {
      if (Status s = syncParameter(i); !s)
        return s;
      out = Tensor(params_[i].dtype, params_[i].shape);
      if (const quant::QuantView *q = quantViews_[i])
        quant::dequantizeRect(*q, 0, q->rows, 0, q->cols, out.as<float>(),
                              q->cols);
      else
        std::memcpy(out.data(), paramData_[i], out.bytes());
      return Status::ok();
    }
  return Status::error("the model has no parameter '" + name + "'");
}

std::string Model::storage(size_t i) const {
  if (const quant::QuantView *q = quantViews_[i])
    return q->spec;
  return dtypeName(params_[i].dtype);
}

uint64_t Model::storedBytes(size_t i) const {
  const ParameterInfo &p = params_[i];
  uint64_t n = 1;
  for (int64_t d : p.shape)
    n *= static_cast<uint64_t>(d);
  if (const quant::QuantView *q = quantViews_[i]) {
    quant::QuantSpec spec;
    std::string error;
    if (quant::parseQuantSpec(q->spec, spec, error))
      return spec.format == quant::Format::NF4
                 ? quant::storedBytes(spec, 1, n)
                 : quant::storedBytes(spec, q->rows, q->cols);
  }
  return n * dtypeSize(p.dtype);
}

Status Model::loadLora(const void *program) {
  const auto *p = static_cast<const kart::Program *>(program);
  const kart::LoraConfig *c = p->lora();
  if (!c)
    return Status::ok();
  auto bad = [](const std::string &why) {
    return Status::error("the artifact's LoRA record " + why);
  };
  if (c->rank() < 1 || c->rank() > 4096)
    return bad("has rank " + std::to_string(c->rank()) +
               "; expected 1 to 4096");
  if (!(c->alpha() > 0) || !std::isfinite(c->alpha()))
    return bad("has alpha " + std::to_string(c->alpha()) +
               "; expected a positive number");
  if (!c->targets() || c->targets()->size() == 0 ||
      c->targets()->size() > params_.size())
    return bad(
        "names " + std::to_string(c->targets() ? c->targets()->size() : 0) +
        " targets for " + std::to_string(params_.size()) + " parameters");
  std::map<std::string, const ParameterInfo *> byName;
  for (const ParameterInfo &pi : params_)
    byName[pi.name] = &pi;
  lora::LoraSpec spec;
  spec.rank = c->rank();
  spec.alpha = c->alpha();
  for (const flatbuffers::String *t : *c->targets()) {
    std::string target = t ? t->str() : "";
    auto w = byName.find(target);
    if (w == byName.end() || w->second->shape.size() != 2)
      return bad("names '" + target + "', which is not a matrix parameter");
    int64_t out = w->second->shape[0], in = w->second->shape[1];
    for (auto [name, shape] : {std::pair<std::string, std::vector<int64_t>>{
                                   lora::loraA(target), {spec.rank, in}},
                               {lora::loraB(target), {out, spec.rank}}}) {
      auto a = byName.find(name);
      if (a == byName.end() || a->second->dtype != DType::F32 ||
          a->second->shape != shape || !a->second->trainable)
        return bad("adapts '" + target + "', but its adapter '" + name +
                   "' is missing or not a trainable f32 " +
                   shapeString(DType::F32, shape));
    }
    spec.targets.push_back(target);
  }
  lora_ = std::move(spec);
  return Status::ok();
}

Status Model::appendStored(const ParameterInfo &p,
                           NamedTensors &tensors) const {
  if (const quant::QuantView *q = quantViews_[&p - params_.data()]) {
    // As a quantized checkpoint (bitsandbytes' NF4 tensors, kiln's int8 /
    // int4), which --weights reads back.
    std::shared_lock<std::shared_mutex> reading(paramsMutex_);
    quant::appendTensors(p.name, quant::toQuantizedWeight(*q, p.shape),
                         tensors);
    return Status::ok();
  }
  Tensor t;
  if (Status s = parameter(p.name, t); !s)
    return s;
  tensors.emplace_back(p.name, std::move(t));
  return Status::ok();
}

Status Model::saveWeights(const std::string &path) const {
  NamedTensors tensors;
  for (const ParameterInfo &p : params_)
    if (Status s = appendStored(p, tensors); !s)
      return s;
  return writeSafetensors(path, tensors);
}
