//===- KartWriter.cpp - kiln IR to a .kart artifact -----------------------===//
//
// The CPU lowering is a direct walk: kiln ops map one-to-one onto runtime
// kernels (fusion passes will change the IR before this point, not this
// walk). Shapes stay symbolic: inputs carry their dimension names, reshape and
// slice attributes carry dimension expressions, and the runtime infers every
// intermediate shape when a call binds B and T — so one artifact serves every
// batch size and length without recompilation.
//
//===----------------------------------------------------------------------===//
#include "codegen/KartWriter.h"
#include "codegen/KernelEncoding.h"
#include "ir/KilnOps.h"
#include "ir/Locations.h"
#include "runtime/Memory.h"
#include "runtime/Model.h"
#include "runtime/Random.h"
#include "runtime/core/KartTokenizer.h"
#include "runtime/kart_generated.h"
#include "runtime/lora/LoraSpec.h"
#include "runtime/quant/Serialize.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <unistd.h>

using namespace mlir;
using namespace kiln;
namespace fb = flatbuffers;

namespace {

constexpr size_t kAlign = 64;

std::optional<kart::DType> dtypeOf(Type t) {
  if (t.isF32())
    return kart::DType::F32;
  if (t.isF16())
    return kart::DType::F16;
  if (t.isBF16())
    return kart::DType::BF16;
  if (t.isF64())
    return kart::DType::F64;
  if (t.isInteger(32))
    return kart::DType::I32;
  if (t.isInteger(64))
    return kart::DType::I64;
  if (t.isInteger(1))
    return kart::DType::Bool;
  return std::nullopt;
}

class Writer {
public:
  Writer(ModuleOp module, const ArtifactOptions &options)
      : module(module), options(options) {}
  LogicalResult run(std::vector<uint8_t> &out);
  LogicalResult checkWeightsFit(uint64_t bytes);

private:
  LogicalResult symbolsFromModule();
  FailureOr<fb::Offset<kart::Dim>> dimExpr(Attribute a, Location loc);
  fb::Offset<kart::Dim> staticDim(int64_t v);
  LogicalResult writeFunction(func::FuncOp fn,
                              std::vector<fb::Offset<kart::Function>> &out);

  ModuleOp module;
  const ArtifactOptions &options;
  fb::FlatBufferBuilder fbb{1 << 20};
  llvm::StringMap<uint32_t> symbolIndex;
  std::vector<std::string> symbolNames;
  llvm::StringMap<int> paramIndex;
};

LogicalResult Writer::symbolsFromModule() {
  auto dims = module->getAttrOfType<ArrayAttr>("kiln.dims");
  if (!dims)
    return success();
  for (Attribute a : dims) {
    auto s = llvm::dyn_cast<StringAttr>(a);
    if (!s)
      return module.emitError("kiln.dims must list dimension names");
    symbolIndex[s.getValue()] = symbolNames.size();
    symbolNames.push_back(s.str());
  }
  return success();
}

fb::Offset<kart::Dim> Writer::staticDim(int64_t v) {
  return kart::CreateDim(fbb, v);
}

FailureOr<fb::Offset<kart::Dim>> Writer::dimExpr(Attribute a, Location loc) {
  if (auto i = llvm::dyn_cast<IntegerAttr>(a))
    return staticDim(i.getInt());
  auto s = llvm::dyn_cast<StringAttr>(a);
  if (!s)
    return emitError(loc, "a dimension must be an integer or an expression");
  int64_t factor = 1;
  std::vector<uint32_t> syms;
  llvm::SmallVector<StringRef> parts;
  s.getValue().split(parts, '*');
  for (StringRef p : parts) {
    p = p.trim();
    int64_t v;
    if (!p.getAsInteger(10, v)) {
      factor *= v;
      continue;
    }
    auto it = symbolIndex.find(p);
    if (it == symbolIndex.end())
      return emitError(loc, "dimension expression '")
             << s.getValue() << "' names '" << p
             << "', which is not a symbolic dimension of the model";
    syms.push_back(it->second);
  }
  return kart::CreateDimDirect(fbb, factor, &syms);
}

LogicalResult
Writer::writeFunction(func::FuncOp fn,
                      std::vector<fb::Offset<kart::Function>> &out) {
  llvm::DenseMap<Value, int> ids;
  // Value tables are written at the end, once results know their dims.
  struct ValueRecord {
    kart::ValueKind kind;
    kart::DType dtype;
    std::vector<fb::Offset<kart::Dim>> dims;
    int index;
  };
  std::vector<ValueRecord> values;
  std::vector<fb::Offset<kart::Kernel>> kernels;
  std::vector<fb::Offset<kart::Constant>> constants;
  std::vector<int> inputs;
  std::vector<fb::Offset<fb::String>> inputNames;

  auto typeOf = [&](Value v) {
    return llvm::cast<RankedTensorType>(v.getType());
  };
  auto staticShape = [&](RankedTensorType t) {
    std::vector<fb::Offset<kart::Dim>> dims;
    for (int64_t d : t.getShape())
      dims.push_back(staticDim(ShapedType::isDynamic(d) ? 0 : d));
    return dims;
  };
  auto addValue =
      [&](Value v, kart::ValueKind kind, int index,
          std::vector<fb::Offset<kart::Dim>> dims) -> FailureOr<int> {
    auto dt = dtypeOf(typeOf(v).getElementType());
    if (!dt)
      return emitError(v.getLoc(), "unsupported element type");
    int id = values.size();
    ids[v] = id;
    values.push_back({kind, *dt, std::move(dims), index});
    return id;
  };

  Block &body = fn.getBody().front();
  for (auto [i, arg] : llvm::enumerate(body.getArguments())) {
    auto dimsAttr = fn.getArgAttrOfType<ArrayAttr>(i, "kiln.dims");
    std::vector<fb::Offset<kart::Dim>> dims;
    if (dimsAttr) {
      for (Attribute a : dimsAttr) {
        auto d = dimExpr(a, arg.getLoc());
        if (failed(d))
          return failure();
        dims.push_back(*d);
      }
    } else {
      for (int64_t d : typeOf(arg).getShape()) {
        if (ShapedType::isDynamic(d))
          return emitError(arg.getLoc(), "argument ")
                 << i << " has a dynamic size but no kiln.dims names";
        dims.push_back(staticDim(d));
      }
    }
    auto name = fn.getArgAttrOfType<StringAttr>(i, "kiln.name");
    std::string argName = name ? name.str() : "arg" + std::to_string(i);
    if (failed(addValue(arg, kart::ValueKind::Input, i, dims)))
      return failure();
    inputs.push_back(ids[arg]);
    inputNames.push_back(fbb.CreateString(argName));
  }

  // Memory is planned by the runtime when a call binds the symbolic sizes
  // (runtime/core/MemoryPlan.cpp); the artifact records values and kernels.
  std::vector<int> outputs;
  for (Operation &op : body) {
    Location loc = op.getLoc();
    if (auto ret = llvm::dyn_cast<func::ReturnOp>(op)) {
      for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
        int id = ids.at(v);
        outputs.push_back(id);
        // A computed result carries the names of its dimensions, which the
        // runtime checks and reports (f32[B, T, 50257]).
        auto dimsAttr = fn.getResultAttrOfType<ArrayAttr>(i, "kiln.dims");
        if (!dimsAttr || values[id].kind != kart::ValueKind::Intermediate)
          continue;
        std::vector<fb::Offset<kart::Dim>> dims;
        for (Attribute a : dimsAttr) {
          auto d = dimExpr(a, loc);
          if (failed(d))
            return failure();
          dims.push_back(*d);
        }
        values[id].dims = std::move(dims);
      }
      continue;
    }
    if (auto p = llvm::dyn_cast<ParamOp>(op)) {
      auto it = paramIndex.find(p.getName());
      if (it == paramIndex.end())
        return p.emitError("unknown parameter");
      if (failed(addValue(p.getResult(), kart::ValueKind::Parameter, it->second,
                          staticShape(typeOf(p.getResult())))))
        return failure();
      continue;
    }
    if (auto c = llvm::dyn_cast<ConstantOp>(op)) {
      auto attr = llvm::dyn_cast<DenseElementsAttr>(c.getValue());
      auto type = typeOf(c.getResult());
      auto dt = dtypeOf(type.getElementType());
      if (!attr || !dt)
        return c.emitError("only dense constants are supported");
      std::vector<uint8_t> bytes;
      for (int64_t i = 0; i < type.getNumElements(); ++i) {
        auto push = [&](const void *p, size_t n) {
          const uint8_t *b = static_cast<const uint8_t *>(p);
          bytes.insert(bytes.end(), b, b + n);
        };
        if (*dt == kart::DType::F32) {
          float v = attr.getValues<APFloat>()[attr.isSplat() ? 0 : i]
                        .convertToFloat();
          push(&v, 4);
        } else if (*dt == kart::DType::F64) {
          double v = attr.getValues<APFloat>()[attr.isSplat() ? 0 : i]
                         .convertToDouble();
          push(&v, 8);
        } else if (*dt == kart::DType::I32) {
          int32_t v =
              attr.getValues<APInt>()[attr.isSplat() ? 0 : i].getSExtValue();
          push(&v, 4);
        } else if (*dt == kart::DType::I64) {
          int64_t v =
              attr.getValues<APInt>()[attr.isSplat() ? 0 : i].getSExtValue();
          push(&v, 8);
        } else {
          return c.emitError("the CPU runtime has no constants of this type");
        }
      }
      std::vector<int64_t> shape(type.getShape());
      int index = constants.size();
      constants.push_back(kart::CreateConstantDirect(fbb, *dt, &shape, &bytes));
      if (failed(addValue(c.getResult(), kart::ValueKind::Constant, index,
                          staticShape(type))))
        return failure();
      continue;
    }

    // A kernel.
    auto encoded = encodeKernel(
        &op, fbb, [&](Attribute a, Location l) { return dimExpr(a, l); },
        [&](Value v) { return ids.at(v); });
    if (failed(encoded))
      return failure();
    std::vector<int> outIds;

    for (Value r : op.getResults()) {
      auto id = addValue(r, kart::ValueKind::Intermediate, -1,
                         staticShape(typeOf(r)));
      if (failed(id))
        return failure();
      outIds.push_back(*id);
    }
    if (options.annotate)
      op.setAttr("kiln.kernel", StringAttr::get(op.getContext(),
                                                kart::EnumNameOp(encoded->op)));
    // Run-time errors name the user's line as compile-time ones do.
    std::string where = describeLocation(loc);
    kernels.push_back(kart::CreateKernelDirect(
        fbb, encoded->op, &encoded->inputs, &outIds, encoded->attrsType,
        encoded->attrs, where.c_str()));
  }

  std::vector<fb::Offset<kart::Value>> table;
  for (size_t id = 0; id < values.size(); ++id)
    table.push_back(kart::CreateValueDirect(fbb, values[id].kind,
                                            values[id].dtype, &values[id].dims,
                                            values[id].index));
  // The results' names: kiln.name where the frontend or a pass gave one,
  // else "result<i>"; a repeated name (`return x, x`) falls back too, so
  // that the names are unique.
  std::vector<fb::Offset<fb::String>> outputNames;
  std::set<std::string> taken;
  for (unsigned i = 0; i < fn.getNumResults(); ++i) {
    auto attr = fn.getResultAttrOfType<StringAttr>(i, "kiln.name");
    std::string name = attr ? attr.str() : "";
    if (name.empty() || !taken.insert(name).second)
      name = "result" + std::to_string(i);
    outputNames.push_back(fbb.CreateString(name));
  }
  out.push_back(kart::CreateFunctionDirect(
      fbb, fn.getName().str().c_str(), &inputs, &inputNames, &outputs, &table,
      &kernels, &constants, &outputNames));
  return success();
}

} // namespace

size_t kiln::countParameters(ModuleOp module) {
  return static_cast<size_t>(llvm::range_size(module.getOps<ParameterOp>()));
}

namespace {

/// Refuses, with the numbers, weights that cannot be built: more than this
/// machine's memory, or (embedded) more than a FlatBuffers artifact holds.
/// Checked before anything of that size is allocated.
LogicalResult Writer::checkWeightsFit(uint64_t bytes) {
  auto gib = [](uint64_t b) { return runtime::formatBytes(b); };
  uint64_t memory = runtime::physicalMemory();
  if (memory && bytes > memory)
    return module.emitError("the model's parameters need ")
           << gib(bytes) << ", more than this machine's " << gib(memory)
           << " of memory; check the hyperparameters ("
           << runtime::optionRef("-D", "defines=") << ")";
  // The weights, the plan and FlatBuffers' own tables share 2 GiB.
  const uint64_t maxEmbedded = runtime::kMaxEmbeddedWeightBytes;
  if (!options.externalWeights && bytes > maxEmbedded)
    return module.emitError("the model's parameters need ")
           << gib(bytes) << ", but an artifact holds at most "
           << gib(maxEmbedded)
           << " of embedded weights; keep them beside it with "
           << runtime::optionRef("--external-weights=FILE.safetensors",
                                 "external_weights=\"FILE.safetensors\"");
  return success();
}

LogicalResult Writer::run(std::vector<uint8_t> &bytes) {
  if (failed(symbolsFromModule()))
    return failure();
  if (options.tokenizer && !options.tokenizer->empty())
    if (auto forward = module.lookupSymbol<func::FuncOp>("forward"))
      if (forward.getNumResults() == 1)
        if (auto logits = llvm::dyn_cast<RankedTensorType>(
                forward.getResultTypes()[0]);
            logits && logits.getRank() > 0 &&
            !logits.isDynamicDim(logits.getRank() - 1))
          if (runtime::Status s = runtime::checkTokenizerFits(
                  *options.tokenizer, logits.getShape().back(),
                  options.tokenizerSource);
              !s)
            return forward.emitError(s.text());

  // Parameters: the model's, in declaration order (function values index
  // them), then the tensors that go with quantized ones (scales, zero
  // points, second-level scales and map), each a parameter of its own.
  struct Stored {
    std::string name;
    kart::DType dtype = kart::DType::F32;
    std::vector<int64_t> shape;
    size_t offset = 0, size = 0;
  };
  struct Param {
    ParameterOp op;
    size_t offset = 0, size = 0;
    std::optional<runtime::quant::QuantSpec> quant;
    // Indices of its auxiliary tensors in the parameter table.
    int scales = -1, zeros = -1, second = -1, map = -1;
  };
  std::vector<Param> params;
  std::vector<Stored> aux;
  const size_t modelParams = countParameters(module);
  size_t total = 0;
  auto place = [&](size_t size) {
    size_t at = total;
    total += (size + kAlign - 1) / kAlign * kAlign;
    return at;
  };
  for (ParameterOp p : module.getOps<ParameterOp>()) {
    auto type = llvm::cast<RankedTensorType>(p.getType());
    if (!type.getElementType().isF32())
      return p.emitError("the CPU backend stores f32 parameters only");
    Param param{p};
    size_t n = static_cast<size_t>(type.getNumElements());
    param.size = n * sizeof(float);
    if (std::optional<StringRef> q = p.getQuant()) {
      runtime::quant::QuantSpec spec;
      std::string error;
      if (!runtime::quant::parseQuantSpec(q->str(), spec, error))
        return p.emitError(error);
      if (options.externalWeights)
        return p.emitError("parameter '")
               << p.getSymName()
               << "' is quantized; quantized weights are kept in the "
                  "artifact, not in "
               << runtime::optionRef("--external-weights", "external_weights=")
               << " files";
      param.quant = spec;
      int base = static_cast<int>(modelParams + aux.size());
      auto addAux = [&](const char *suffix, kart::DType dt,
                        std::vector<int64_t> shape, size_t bytes) {
        aux.push_back(
            {p.getSymName().str() + suffix, dt, std::move(shape), 0, bytes});
        return base++;
      };
      int64_t rows = type.getDimSize(0), cols = n / rows;
      switch (spec.format) {
      case runtime::quant::Format::Int8:
        param.size = n;
        param.scales = addAux(".scale", kart::DType::F32, {rows}, rows * 4);
        break;
      case runtime::quant::Format::Int4: {
        int64_t groups = (cols + spec.group - 1) / spec.group;
        param.size = rows * ((cols + 1) / 2);
        param.scales = addAux(".scale", kart::DType::F32, {rows, groups},
                              rows * groups * 4);
        param.zeros = addAux(".zero_point", kart::DType::F32, {rows, groups},
                             rows * groups * 4);
        break;
      }
      case runtime::quant::Format::NF4: {
        int64_t blocks = (n + spec.block - 1) / spec.block;
        param.size = (n + 1) / 2;
        if (spec.doubleQuant) {
          int64_t groups = (blocks + 255) / 256;
          param.scales = addAux(".absmax", kart::DType::U8, {blocks}, blocks);
          param.second =
              addAux(".nested_absmax", kart::DType::F32, {groups}, groups * 4);
          param.map =
              addAux(".nested_quant_map", kart::DType::F32, {256}, 256 * 4);
        } else {
          param.scales =
              addAux(".absmax", kart::DType::F32, {blocks}, blocks * 4);
        }
        break;
      }
      }
    }
    param.offset = place(param.size);
    paramIndex[p.getSymName()] = params.size();
    params.push_back(std::move(param));
  }
  for (Stored &a : aux)
    a.offset = place(a.size);
  if (failed(checkWeightsFit(total)))
    return failure();

  // Where each parameter's values come from: a tensor of the weights (f32,
  // or a quantized checkpoint), else its initializer. Quantized parameters
  // are quantized now (their scales go into the parameter table).
  std::map<std::string, const runtime::Tensor *> byName;
  if (options.weights)
    for (const auto &[name, t] : *options.weights)
      byName[name] = &t;
  std::set<std::string> used;
  // LoRA adapters absent from the weights start from their initializers
  // (fine-tuning a pretrained base); present, they are read like the rest.
  std::set<std::string> adapters;
  if (auto lora = module->getAttrOfType<DictionaryAttr>("kiln.lora"))
    for (Attribute t : lora.getAs<ArrayAttr>("targets")) {
      std::string target = llvm::cast<StringAttr>(t).str();
      adapters.insert(runtime::lora::loraA(target));
      adapters.insert(runtime::lora::loraB(target));
    }
  std::map<std::string, const runtime::Tensor *> adapterValues;
  if (options.adapters)
    for (const auto &[name, t] : *options.adapters) {
      if (!adapters.count(name))
        return module.emitError("the adapter holds '")
               << name << "', which is not one of the model's LoRA adapters";
      adapterValues[name] = &t;
    }
  std::vector<runtime::Tensor> f32Of(params.size());
  std::vector<std::optional<runtime::quant::QuantizedWeight>> quantized(
      params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    Param &p = params[i];
    auto type = llvm::cast<RankedTensorType>(p.op.getType());
    std::vector<int64_t> shape(type.getShape());
    std::string name = p.op.getSymName().str();
    runtime::Tensor &f32 = f32Of[i];
    runtime::quant::QuantizedWeight q;
    bool haveQuantized = false;
    if (adapterValues.count(name)) {
      {
        const runtime::Tensor &t = *adapterValues[name];
        if (t.dtype() != runtime::DType::F32 || t.shape() != shape)
          return p.op.emitError("adapter '")
                 << name << "' is " << t.describe()
                 << " in the adapter, but the model declares " << type;
        f32 = runtime::Tensor::view(runtime::DType::F32, shape,
                                    const_cast<void *>(t.data()));
        continue;
      }
    }
    if (options.weights) {
      if (runtime::quant::holdsQuantized(name, byName)) {
        // A quantized checkpoint (bitsandbytes' NF4, kiln's int8 / int4).
        std::vector<std::string> names;
        if (runtime::Status s =
                runtime::quant::readQuantized(name, byName, q, &names);
            !s)
          return p.op.emitError("weight '") << name << "': " << s.text();
        used.insert(names.begin(), names.end());
        if (q.shape != shape)
          return p.op.emitError("weight '")
                 << name << "' is "
                 << runtime::shapeString(runtime::DType::F32, q.shape)
                 << " (quantized) in the weights, but the model declares "
                 << type;
        haveQuantized = true;
      } else {
        auto it = byName.find(name);
        if (it == byName.end() && adapters.count(name))
          continue; // initialized below
        if (it == byName.end())
          return p.op.emitError("the weights have no tensor '")
                 << name << "' for this parameter";
        const runtime::Tensor &t = *it->second;
        if (t.dtype() != runtime::DType::F32 || t.shape() != shape)
          return p.op.emitError("weight '")
                 << name << "' is " << t.describe()
                 << " in the weights, but the model declares " << type;
        used.insert(name);
        f32 = runtime::Tensor::view(runtime::DType::F32, shape,
                                    const_cast<void *>(t.data()));
      }
    }
    // A quantized checkpoint for a parameter kept quantized the same way is
    // stored as it is; otherwise it is dequantized (and requantized).
    bool same = haveQuantized && p.quant && q.format == p.quant->format &&
                (q.format != runtime::quant::Format::Int4 ||
                 q.int4.group == p.quant->group) &&
                (q.format != runtime::quant::Format::NF4 ||
                 (q.nf4.blockSize == p.quant->block &&
                  q.nf4.nested == p.quant->doubleQuant &&
                  (!q.nf4.nested || q.nf4.nestedBlockSize == 256)));
    if (haveQuantized && !same) {
      if (runtime::Status s = runtime::quant::dequantize(q, f32); !s)
        return p.op.emitError("weight '") << name << "': " << s.text();
      haveQuantized = false;
    }
    if (!p.quant)
      continue;
    if (!haveQuantized) {
      if (!f32.allocated()) {
        f32 = runtime::Tensor(runtime::DType::F32, shape);
        initializeParameter(name, p.op.getInit(), p.op.getInitArgs(),
                            options.seed, f32.as<float>(),
                            static_cast<size_t>(f32.numel()));
      }
      if (runtime::Status s = runtime::quant::quantize(f32, *p.quant, q); !s)
        return p.op.emitError("parameter '") << name << "': " << s.text();
      f32 = runtime::Tensor();
    }
    quantized[i] = std::move(q);
  }
  if (options.weights && used.size() != byName.size()) {
    std::string names;
    for (const auto &e : byName)
      if (!used.count(e.first))
        names += (names.empty() ? "" : ", ") + e.first;
    return module.emitError("the weights hold tensors the model does not "
                            "declare: ")
           << names;
  }

  std::vector<fb::Offset<kart::Function>> functions;
  for (func::FuncOp fn : module.getOps<func::FuncOp>())
    if (failed(writeFunction(fn, functions)))
      return failure();

  std::vector<fb::Offset<kart::Parameter>> paramTable;
  for (Param &p : params) {
    auto type = llvm::cast<RankedTensorType>(p.op.getType());
    std::vector<int64_t> shape(type.getShape());
    // Dense f32 storage is the default (no Storage table).
    fb::Offset<kart::Storage> storage = 0;
    if (p.quant) {
      kart::StorageBuilder sb(fbb);
      switch (p.quant->format) {
      case runtime::quant::Format::Int8:
        sb.add_type(kart::StorageType::Int8);
        sb.add_axis(0);
        break;
      case runtime::quant::Format::Int4:
        sb.add_type(kart::StorageType::Int4);
        sb.add_block_size(static_cast<int>(p.quant->group));
        sb.add_axis(1);
        sb.add_zero_points(p.zeros);
        break;
      case runtime::quant::Format::NF4:
        sb.add_type(kart::StorageType::NF4);
        sb.add_block_size(static_cast<int>(p.quant->block));
        if (p.second >= 0) {
          const runtime::quant::Nf4Tensor &t =
              quantized[&p - params.data()]->nf4;
          sb.add_second_level_scales(p.second);
          sb.add_second_level_block_size(static_cast<int>(t.nestedBlockSize));
          sb.add_second_level_offset(t.offset);
          sb.add_second_level_map(p.map);
        }
        break;
      }
      sb.add_scales(p.scales);
      storage = sb.Finish();
    }
    paramTable.push_back(kart::CreateParameterDirect(
        fbb, p.op.getSymName().str().c_str(), kart::DType::F32, &shape,
        p.offset, p.size, storage, /*trainable=*/!p.op.getFrozen()));
  }
  for (Stored &a : aux)
    paramTable.push_back(kart::CreateParameterDirect(
        fbb, a.name.c_str(), a.dtype, &a.shape, a.offset, a.size,
        /*storage=*/0, /*trainable=*/false));
  std::vector<fb::Offset<kart::HParam>> hparams;
  if (auto hp = module->getAttrOfType<DictionaryAttr>("kiln.hparams"))
    for (NamedAttribute a : hp) {
      double v = 0;
      bool isInt = false, isBool = false;
      if (auto b = llvm::dyn_cast<BoolAttr>(a.getValue())) {
        v = b.getValue();
        isInt = isBool = true;
      } else if (auto i = llvm::dyn_cast<IntegerAttr>(a.getValue())) {
        isBool = i.getType().isInteger(1);
        v = isBool ? i.getValue().getZExtValue() : i.getInt();
        isInt = true;
      } else if (auto f = llvm::dyn_cast<FloatAttr>(a.getValue())) {
        v = f.getValueAsDouble();
      }
      hparams.push_back(kart::CreateHParamDirect(fbb, a.getName().str().c_str(),
                                                 v, isInt, isBool));
    }
  std::vector<fb::Offset<fb::String>> symbols;
  for (const std::string &s : symbolNames)
    symbols.push_back(fbb.CreateString(s));

  // External weights are staged in a local buffer and handed back; embedded
  // ones are written in place into the artifact's weights section.
  std::vector<uint8_t> staging;
  uint8_t *weights = nullptr;
  fb::Offset<fb::Vector<uint8_t>> weightsVec;
  if (options.externalWeights) {
    staging.assign(total, 0);
    weights = staging.data();
    weightsVec = fbb.CreateVector(std::vector<uint8_t>());
  } else {
    fbb.ForceVectorAlignment(total, 1, kAlign);
    weightsVec = fbb.CreateUninitializedVector(total, 1, &weights);
    std::memset(weights, 0, total);
  }
  // Each parameter's values, from the weights or its initializer, copied
  // into the section (or the staging buffer); quantized ones were made
  // above.
  for (size_t i = 0; i < params.size(); ++i) {
    Param &p = params[i];
    std::string name = p.op.getSymName().str();
    if (quantized[i]) {
      // The codes in the parameter's own bytes, the rest in its
      // auxiliaries.
      runtime::NamedTensors parts;
      runtime::quant::appendTensors(name, *quantized[i], parts);
      auto copyTo = [&](int index, const runtime::Tensor &t) {
        const Stored &a = aux[index - params.size()];
        std::memcpy(weights + a.offset, t.data(), std::min(a.size, t.bytes()));
      };
      for (auto &[part, t] : parts) {
        llvm::StringRef suffix = llvm::StringRef(part).drop_front(name.size());
        if (suffix.empty())
          std::memcpy(weights + p.offset, t.data(),
                      std::min(p.size, t.bytes()));
        else if (suffix == ".scale" || suffix == ".absmax")
          copyTo(p.scales, t);
        else if (suffix == ".zero_point")
          copyTo(p.zeros, t);
        else if (suffix == ".nested_absmax")
          copyTo(p.second, t);
        else if (suffix == ".nested_quant_map")
          copyTo(p.map, t);
      }
      continue;
    }
    float *dst = reinterpret_cast<float *>(weights + p.offset);
    if (f32Of[i].allocated())
      std::memcpy(dst, f32Of[i].data(), p.size);
    else
      initializeParameter(name, p.op.getInit(), p.op.getInitArgs(),
                          options.seed, dst, p.size / sizeof(float));
  }

  fb::Offset<fb::String> weightsFile;
  if (options.externalWeights) {
    options.externalWeights->clear();
    for (Param &p : params) {
      auto type = llvm::cast<RankedTensorType>(p.op.getType());
      runtime::Tensor t(runtime::DType::F32,
                        std::vector<int64_t>(type.getShape()));
      std::memcpy(t.data(), weights + p.offset, p.size);
      options.externalWeights->emplace_back(p.op.getSymName().str(),
                                            std::move(t));
    }
    weightsFile = fbb.CreateString(options.externalWeightsFile);
  }
  auto name = module->getAttrOfType<StringAttr>("kiln.model");
  const runtime::Tokenizer *tok =
      options.tokenizer && !options.tokenizer->empty() ? options.tokenizer
                                                       : nullptr;
  fb::Offset<kart::LoraConfig> loraConfig = 0;
  if (auto lora = module->getAttrOfType<DictionaryAttr>("kiln.lora")) {
    std::vector<std::string> targets;
    for (Attribute t : lora.getAs<ArrayAttr>("targets"))
      targets.push_back(llvm::cast<StringAttr>(t).str());
    loraConfig = kart::CreateLoraConfig(
        fbb, lora.getAs<IntegerAttr>("rank").getInt(),
        lora.getAs<FloatAttr>("alpha").getValueAsDouble(),
        fbb.CreateVectorOfStrings(targets));
  }
  auto program = kart::CreateProgram(
      fbb, runtime::kFormatVersion,
      fbb.CreateString(name ? name.str() : "model"), fbb.CreateVector(symbols),
      fbb.CreateVector(hparams), fbb.CreateVector(paramTable),
      fbb.CreateVector(functions), weightsVec, weightsFile,
      /*executables=*/0, loraConfig,
      tok ? kart::TokenizerData::Pack(fbb, runtime::tokenizerToKart(*tok).get())
          : 0,
      options.history.empty() ? 0 : fbb.CreateVectorOfStrings(options.history));
  kart::FinishProgramBuffer(fbb, program);
  bytes.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  return success();
}

} // namespace

void kiln::initializeParameter(llvm::StringRef name, llvm::StringRef init,
                               llvm::ArrayRef<double> args, uint64_t seed,
                               float *data, size_t count) {
  // Each parameter draws from its own stream, so adding a parameter never
  // changes the values of the others.
  uint64_t hash = 0xcbf29ce484222325ull ^ seed;
  for (char c : name) // FNV-1a: a fixed, portable hash of the name
    hash = (hash ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  runtime::SplitMix64 rng{hash};
  if (init == "zeros" || init == "ones" || init == "constant") {
    float v = init == "zeros" ? 0.0f : init == "ones" ? 1.0f : args[0];
    std::fill(data, data + count, v);
  } else if (init == "uniform") {
    for (size_t i = 0; i < count; ++i)
      data[i] =
          static_cast<float>(args[0] + (args[1] - args[0]) * rng.uniform());
  } else { // normal: Box-Muller
    for (size_t i = 0; i < count; i += 2) {
      double r = std::sqrt(-2.0 * std::log(rng.uniform()));
      double t = 2.0 * M_PI * rng.uniform();
      data[i] = static_cast<float>(args[0] * r * std::cos(t));
      if (i + 1 < count)
        data[i + 1] = static_cast<float>(args[0] * r * std::sin(t));
    }
  }
}

LogicalResult kiln::writeArtifact(ModuleOp module,
                                  const ArtifactOptions &options,
                                  std::vector<uint8_t> &out) {
  Writer w(module, options);
  return w.run(out);
}
