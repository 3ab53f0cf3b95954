//===- Model.cpp - load a .kart artifact; the Model API -------------------===//
#include "runtime/Model.h"
#include "runtime/File.h"
#include "runtime/Kernels.h"
#include "runtime/Memory.h"
#include "runtime/Safetensors.h"
#include "runtime/attention/KartPattern.h"
#include "runtime/core/FunctionState.h"

#include <flatbuffers/flatbuffers.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>

using namespace kiln;
using namespace kiln::runtime;
using kart::Op;

Model::~Model() = default;

Status Model::load(const std::string &path, std::unique_ptr<Model> &out,
                   const LoadOptions &options) {
  std::vector<uint8_t> bytes;
  if (Status s = readFile(path, bytes, FLATBUFFERS_MAX_BUFFER_SIZE - 1,
                          ".kart artifact");
      !s)
    return s;
  size_t slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  Status s = fromBytes(std::move(bytes), out, dir.empty() ? "/" : dir, options);
  if (!s)
    return Status::error(path + ": " + s.message());
  return s;
}

Status Model::fromBytes(std::vector<uint8_t> bytes, std::unique_ptr<Model> &out,
                        const std::string &dir, const LoadOptions &options) {
  std::unique_ptr<Model> m(new Model());
  // Keep the buffer 64-byte aligned so weights and the FlatBuffers tables
  // are aligned as the writer laid them out.
  m->bytes_.resize(bytes.size() + kAlign);
  size_t shift = alignUp(reinterpret_cast<uintptr_t>(m->bytes_.data())) -
                 reinterpret_cast<uintptr_t>(m->bytes_.data());
  if (!bytes.empty())
    std::memcpy(m->bytes_.data() + shift, bytes.data(), bytes.size());
  m->bytes_.resize(shift + bytes.size());
  m->base_ = shift;
  if (Status s = m->init(dir, options); !s)
    return s;
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
  const uint8_t *data = bytes_.data() + base_;
  size_t size = bytes_.size() - base_;
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
  if (p->executables() && p->executables()->size()) {
    const kart::Executable *e = p->executables()->Get(0);
    return Status::error(
        "the artifact holds " + std::to_string(p->executables()->size()) +
        " backend executable(s) (the first for device " +
        (e->device() <= kart::Device::MAX ? kart::EnumNameDevice(e->device())
                                          : "unknown") +
        "); this runtime runs the CPU only — compile the model for the CPU");
  }
  if (!p->functions() || !p->parameters() || !p->weights() || !p->model())
    return Status::error("the artifact is missing its functions, parameters "
                         "or weights");
  model_ = p->model()->str();
  if (p->tokenizer() || p->vocab()) {
    std::vector<std::string> pieces;
    if (p->vocab())
      for (const flatbuffers::String *piece : *p->vocab())
        pieces.push_back(piece->str());
    std::vector<float> scores;
    if (p->vocab_scores())
      scores.assign(p->vocab_scores()->begin(), p->vocab_scores()->end());
    if (Status s = Tokenizer::fromParts(
            p->tokenizer() ? p->tokenizer()->str() : "", std::move(pieces),
            std::move(scores), p->bos_id(), p->eos_id(), tokenizer_);
        !s)
      return Status::error("the artifact's tokenizer is invalid: " +
                           s.message());
  }
  if (p->hparams())
    for (const kart::HParam *h : *p->hparams())
      if (h && h->name())
        hparams_.emplace_back(h->name()->str(), h->value());
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
      return Status::error("external weights: " + s.message());
    for (auto &[name, t] : tensors)
      externalWeights_.push_back(std::move(t));
    for (size_t i = 0; i < tensors.size(); ++i)
      external[tensors[i].first] = &externalWeights_[i];
  } else if (!options.weightsFile.empty()) {
    return Status::error("the artifact embeds its weights; a weights file "
                         "applies to artifacts compiled with "
                         "--external-weights");
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
    if (const kart::Storage *st = pr->storage()) {
      if (st->type() != kart::StorageType::F32)
        return bad(std::string("is stored as ") +
                   (st->type() <= kart::StorageType::MAX
                        ? kart::EnumNameStorageType(st->type())
                        : "an unknown type") +
                   (st->block_size() > 0
                        ? " in blocks of " + std::to_string(st->block_size())
                        : std::string()) +
                   "; this runtime reads dense f32 parameters only");
      if (st->block_size() != 0 || st->axis() != -1 || st->scales() != -1 ||
          st->zero_points() != -1 || st->second_level_scales() != -1)
        return bad("is dense f32 but names quantization blocks, scales or "
                   "zero points");
    }
    if (!computable(pr->dtype()))
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
  if (!external.empty())
    return Status::error("external weights " + wfile +
                         " hold tensors the artifact does not use, e.g. '" +
                         external.begin()->first + "'");
  paramVersion_.assign(paramData_.size(), 0);
  packed_ = std::make_unique<PackedWeights>();
  for (const kart::Function *f : *p->functions()) {
    if (!f)
      return Status::error("the artifact has an empty function entry");
    auto st = std::make_unique<FunctionState>(*p, *f, paramData_, optimizer_,
                                              paramVersion_, *packed_);
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
      info.plan.push_back(line);
    }
    for (size_t i = 0; i < f->inputs()->size(); ++i)
      info.inputs.push_back(
          arg(f->inputs()->Get(i), f->input_names()->Get(i)->str()));
    for (size_t i = 0; i < f->outputs()->size(); ++i)
      info.outputs.push_back(
          arg(f->outputs()->Get(i), "result" + std::to_string(i)));
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
  tokenizerChanged_ = true;
  return Status::ok();
}

Status Model::saveArtifact(const std::string &path) const {
  if (!externalWeights_.empty())
    return Status::error(path + ": the artifact keeps its weights in a "
                                "separate file; save them with saveWeights");
  std::shared_lock<std::shared_mutex> reading(paramsMutex_);
  if (!tokenizerChanged_)
    return writeFileAtomically(
        path, {{bytes_.data() + base_, bytes_.size() - base_}});
  // The tokenizer differs from the loaded one: serialize the program again
  // with it (the weights keep their 64-byte alignment, see kart.fbs).
  std::unique_ptr<kart::ProgramT> program(
      kart::GetProgram(bytes_.data() + base_)->UnPack());
  program->tokenizer = tokenizer_.kind();
  program->vocab = tokenizer_.pieces();
  program->vocab_scores = tokenizer_.scores();
  program->bos_id = tokenizer_.bos();
  program->eos_id = tokenizer_.eos();
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
    std::memcpy(parameterData(i), source[i]->data(), source[i]->bytes());
  return Status::ok();
}

float *Model::parameterData(size_t i) {
  // The caller may write: packed copies of this parameter are stale.
  ++paramVersion_.at(i);
  // The bytes live in bytes_ or externalWeights_, both owned by the model.
  return reinterpret_cast<float *>(const_cast<uint8_t *>(paramData_.at(i)));
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
    if (pool.writesParameters) {
      std::unique_lock<std::shared_mutex> writing(paramsMutex_);
      return state->run(inputs, outputs, options);
    }
    std::shared_lock<std::shared_mutex> reading(paramsMutex_);
    return state->run(inputs, outputs, options);
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

std::unique_ptr<FunctionState> Model::newState(const StatePool &pool) {
  return std::make_unique<FunctionState>(*pool.program, *pool.function,
                                         paramData_, optimizer_,
                                         paramVersion_, *packed_);
}

Status Model::parameter(const std::string &name, Tensor &out) const {
  std::shared_lock<std::shared_mutex> reading(paramsMutex_);
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].name == name) {
      out = Tensor(params_[i].dtype, params_[i].shape);
      std::memcpy(out.data(), paramData_[i], out.bytes());
      return Status::ok();
    }
  return Status::error("the model has no parameter '" + name + "'");
}

Status Model::saveWeights(const std::string &path) const {
  NamedTensors tensors;
  for (const ParameterInfo &p : params_) {
    Tensor t;
    if (Status s = parameter(p.name, t); !s)
      return s;
    tensors.emplace_back(p.name, std::move(t));
  }
  return writeSafetensors(path, tensors);
}
