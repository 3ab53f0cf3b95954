//===- CudaEmitter.cpp - CUDA C++ for an artifact's generated kernels -----===//
#include "codegen/CudaEmitter.h"

#include "runtime/core/OpTable.h"
#include "runtime/cuda/Launch.h"
#include "runtime/kart_generated.h"

#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

using namespace kiln;
using kart::Op;

namespace {

// The argument blocks (runtime/cuda/KernelAbi.h) and the kernel library
// (codegen/cuda/Library.cuh), embedded at build time as kKernelAbi and
// kLibrary.
#include "codegen/CudaSources.inc"

/// A float literal that reads back as the same float.
std::string floatLiteral(double v) {
  float f = static_cast<float>(v);
  if (f != f)
    return "__int_as_float(0x7fc00000)";
  if (f == __builtin_inff())
    return "__int_as_float(0x7f800000)";
  if (f == -__builtin_inff())
    return "__int_as_float(0xff800000)";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.9gf", f);
  std::string s = buf;
  if (s.find_first_of(".e") == std::string::npos)
    s.insert(s.size() - 1, ".0");
  return s;
}

/// Each elementwise op as a CUDA expression of its operands $a and $b:
/// runtime/cpu/FusedKernels.cpp's apply(), one row per op. Gelu and
/// ActivationGrad pick a row by their variant.
struct Form {
  Op op;
  int variant; // -1: any
  const char *text;
};
const Form kForms[] = {
    {Op::Add, -1, "$a + $b"},
    {Op::Sub, -1, "$a - $b"},
    {Op::Mul, -1, "$a * $b"},
    {Op::Div, -1, "$a / $b"},
    {Op::Max, -1, "fmaxf($a, $b)"},
    {Op::Min, -1, "fminf($a, $b)"},
    {Op::Pow, -1, "powf($a, $b)"},
    {Op::Neg, -1, "-$a"},
    {Op::Exp, -1, "expf($a)"},
    {Op::Log, -1, "logf($a)"},
    {Op::Sqrt, -1, "sqrtf($a)"},
    {Op::Rsqrt, -1, "1.0f / sqrtf($a)"},
    {Op::Tanh, -1, "tanhf($a)"},
    {Op::Sigmoid, -1, "kiln_sigmoid($a)"},
    {Op::Relu, -1, "$a > 0.0f ? $a : 0.0f"},
    {Op::Silu, -1, "$a * kiln_sigmoid($a)"},
    {Op::Gelu, 0, "kiln_gelu($a)"},
    {Op::Gelu, 1, "kiln_gelu_tanh($a)"},
    {Op::ActivationGrad, static_cast<int>(kart::Activation::Relu),
     "kiln_relu_grad($a, $b)"},
    {Op::ActivationGrad, static_cast<int>(kart::Activation::Gelu),
     "kiln_gelu_grad($a, $b)"},
    {Op::ActivationGrad, static_cast<int>(kart::Activation::GeluTanh),
     "kiln_gelu_tanh_grad($a, $b)"},
    {Op::ActivationGrad, static_cast<int>(kart::Activation::Silu),
     "kiln_silu_grad($a, $b)"},
};

/// The expression of one instruction over registers `a` and `b`.
bool expression(Op op, int variant, const std::string &a, const std::string &b,
                std::string &out, std::string &error) {
  for (const Form &f : kForms) {
    if (f.op != op || (f.variant >= 0 && f.variant != variant))
      continue;
    out.clear();
    for (const char *c = f.text; *c; ++c) {
      if (c[0] == '$' && (c[1] == 'a' || c[1] == 'b')) {
        out += c[1] == 'a' ? a : b;
        ++c;
      } else {
        out += *c;
      }
    }
    return true;
  }
  error = std::string("the CUDA backend has no elementwise form of ") +
          kart::EnumNameOp(op);
  return false;
}

/// The instructions of one elementwise kernel: a fused program's, or one
/// op over the kernel's inputs (registers 0 and 1).
struct Program {
  std::vector<std::tuple<Op, int, int, int>> code; // op, variant, a, b
  std::vector<double> constants;
  int result = 0;
};

Program programOf(const kart::Kernel &k) {
  Program p;
  if (const kart::ElementwiseProgram *fused = k.attrs_as_ElementwiseProgram()) {
    for (const kart::Instruction *ins : *fused->code())
      p.code.emplace_back(ins->op(), ins->variant(), ins->a(), ins->b());
    if (fused->constants())
      p.constants.assign(fused->constants()->begin(),
                         fused->constants()->end());
    p.result = fused->result();
    return p;
  }
  int variant = 0;
  if (const kart::GeluAttrs *g = k.attrs_as_GeluAttrs())
    variant = static_cast<int>(g->approximation());
  if (const kart::ActivationGradAttrs *g = k.attrs_as_ActivationGradAttrs())
    variant = static_cast<int>(g->kind());
  int nin = static_cast<int>(k.inputs()->size());
  p.code.emplace_back(k.op(), variant, 0, nin > 1 ? 1 : -1);
  p.result = nin;
  return p;
}

/// One elementwise kernel: a grid-stride loop over the result's elements.
bool emitElementwise(const std::string &name, const kart::Kernel &k,
                     std::string &out, std::string &error) {
  Program program = programOf(k);
  int nin = static_cast<int>(k.inputs()->size());
  if (nin > kCudaMaxOperands) {
    error = name + ": " + std::to_string(nin) +
            " operands, more than the CUDA backend's " +
            std::to_string(kCudaMaxOperands);
    return false;
  }
  int nconst = static_cast<int>(program.constants.size());
  auto reg = [&](int r) { return "r" + std::to_string(r); };
  std::string body;
  for (int i = 0; i < nin; ++i)
    body += "    float " + reg(i) + " = kiln_load(a.in[" + std::to_string(i) +
            "], a, i);\n";
  for (int i = 0; i < nconst; ++i)
    body += "    const float " + reg(nin + i) + " = " +
            floatLiteral(program.constants[i]) + ";\n";
  for (size_t i = 0; i < program.code.size(); ++i) {
    auto [op, variant, ra, rb] = program.code[i];
    std::string e;
    if (!expression(op, variant, reg(ra), rb >= 0 ? reg(rb) : "", e, error)) {
      error = name + ": " + error;
      return false;
    }
    body += "    float " + reg(nin + nconst + static_cast<int>(i)) + " = " + e +
            ";\n";
  }
  body += "    a.out[i] = " + reg(program.result) + ";\n";
  std::string location = k.location() ? k.location()->str() : "";
  for (char &c : location)
    if (c == '\n' || c == '\r')
      c = ' ';
  out += "\n// " + std::string(kart::EnumNameOp(k.op())) + ", " + location +
         "\nKILN_KERNEL " + name +
         "(KilnElementwiseArgs a) {\n"
         "  for (long long i = (long long)blockIdx.x * blockDim.x + "
         "threadIdx.x; i < a.total;\n"
         "       i += (long long)gridDim.x * blockDim.x) {\n" +
         body + "  }\n}\n";
  return true;
}

} // namespace

bool kiln::emitCudaSource(const uint8_t *artifact, size_t size,
                          std::string &out, std::string &error,
                          std::vector<std::string> *entries) {
  flatbuffers::Verifier verifier(artifact, size);
  if (!kart::VerifyProgramBuffer(verifier)) {
    error = "the artifact does not verify";
    return false;
  }
  const kart::Program &program = *kart::GetProgram(artifact);
  std::string model = program.model()->str();
  std::string kernels, table;
  int generated = 0;
  for (const kart::Function *f : *program.functions()) {
    std::string fn = f->name()->str();
    for (size_t i = 0; i < f->kernels()->size(); ++i) {
      const kart::Kernel &k = *f->kernels()->Get(i);
      if (!runtime::cuda::isGeneratedElementwise(k))
        continue;
      std::string name = runtime::cuda::elementwiseEntry(model, fn, i);
      if (!emitElementwise(name, k, kernels, error))
        return false;
      if (entries)
        entries->push_back(name);
      table += "    {\"" + model + "\", \"" + name +
               "\", [](const void *a) { " + name +
               "(*static_cast<const KilnElementwiseArgs *>(a)); }},\n";
      ++generated;
    }
  }
  if (entries) {
#define KILN_LIBRARY_NAME(name, args) entries->push_back(#name);
    KILN_CUDA_LIBRARY(KILN_LIBRARY_NAME)
#undef KILN_LIBRARY_NAME
  }
  out = "// Generated by kiln (kiln compile --emit=cuda) for model '" + model +
        "': the kernel library and " + std::to_string(generated) +
        " elementwise kernel" + (generated == 1 ? "" : "s") +
        ".\n// Launched as runtime/cuda/Launch.cpp says: " +
        std::to_string(kCudaBlock) +
        " threads per block, any grid (the kernels\n// loop over what the "
        "grid does not cover).\n\n";
  out += kKernelAbi;
  out += "\n";
  out += kLibrary;
  out += "\n// --- The model's elementwise kernels "
         "---------------------------------------\n";
  out += kernels;
  // Under emulation every kernel joins a table by model and name, with a
  // trampoline that unpacks its argument block (test/cuda/Emulation.h).
  out += "\n#ifdef KILN_CUDA_EMULATION\n"
         "#define KILN_LIBRARY_ENTRY(name, args) \\\n"
         "  {\"" +
         model +
         "\", #name, [](const void *a) { "
         "name(*static_cast<const args *>(a)); }},\n"
         "static const KilnCudaEntry kiln_cuda_entries[] = {\n"
         "    KILN_CUDA_LIBRARY(KILN_LIBRARY_ENTRY)\n" +
         table +
         "    {nullptr, nullptr, nullptr}};\n"
         "#undef KILN_LIBRARY_ENTRY\n"
         "KILN_CUDA_REGISTER(kiln_cuda_entries)\n#endif\n";
  return true;
}
