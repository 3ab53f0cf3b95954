//===- CudaEmitter.cpp - CUDA C++ for an artifact's generated kernels -----===//
#include "codegen/CudaEmitter.h"

#include "runtime/kart_generated.h"

#include <cctype>
#include <cstdio>
#include <string>

using namespace kiln;
using kart::Op;

namespace {

/// What every generated file starts with: the argument block and the
/// helpers the programs use. The same text compiles with nvcc and, on the
/// host, with test/cuda/Emulation.h included first.
const char *const kPrelude =
    R"(// The argument block of a generated elementwise kernel: each operand's
// element strides along the result's dimensions (0 where it broadcasts).
struct KilnOperand {
  const float *data;
  long long strides[8];
  int contiguous; // laid out as the result: index i is element i
};
struct KilnElementwiseArgs {
  KilnOperand in[40]; // kCudaMaxOperands: 3.3 KB, within the 4 KiB of parameters
  float *out;
  long long dims[8];
  int rank;
  long long total;
};

__device__ __forceinline__ float kiln_load(const KilnOperand &o,
                                           const KilnElementwiseArgs &a,
                                           long long i) {
  if (o.contiguous)
    return o.data[i];
  long long at = 0;
  for (int d = a.rank - 1; d >= 0; --d) {
    long long q = i % a.dims[d];
    i /= a.dims[d];
    at += q * o.strides[d];
  }
  return o.data[at];
}

__device__ __forceinline__ float kiln_gelu(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
}
__device__ __forceinline__ float kiln_gelu_tanh(float x) {
  const float k = 0.7978845608028654f;
  return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float kiln_sigmoid(float x) {
  return 1.0f / (1.0f + expf(-x));
}
// d act(x)/dx * g, as runtime/cpu/FusedKernels.cpp's activationGradOf.
__device__ __forceinline__ float kiln_relu_grad(float g, float x) {
  return x > 0.0f ? g : 0.0f;
}
__device__ __forceinline__ float kiln_gelu_grad(float g, float x) {
  float cdf = 0.5f * (1.0f + erff(x * 0.7071067811865476f));
  float pdf = expf(-0.5f * x * x) * 0.3989422804014327f;
  return g * (cdf + x * pdf);
}
__device__ __forceinline__ float kiln_gelu_tanh_grad(float g, float x) {
  const float k = 0.7978845608028654f;
  float u = k * (x + 0.044715f * x * x * x);
  float th = tanhf(u);
  float du = k * (1.0f + 3.0f * 0.044715f * x * x);
  return g * (0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du);
}
__device__ __forceinline__ float kiln_silu_grad(float g, float x) {
  float s = 1.0f / (1.0f + expf(-x));
  return g * s * (1.0f + x * (1.0f - s));
}

// A row norm (LayerNorm, RMSNorm) over the last dimension, C wide: one
// block per row at a time.
struct KilnNormArgs {
  const float *x, *weight, *bias; // bias: LayerNorm only
  float *y;
  long long rows;
  int C;
  float eps;
  int centered; // LayerNorm: about the mean; RMSNorm: about zero
};

// The sum of every thread's `v` over the block (a power of two of at most
// 256 threads), for every thread.
__device__ __forceinline__ float kiln_block_sum(float v, float *part) {
  part[threadIdx.x] = v;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s)
      part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  float total = part[0];
  __syncthreads();
  return total;
}

// What a table entry's kernel takes.
enum KilnCudaKind { KILN_CUDA_ELEMENTWISE = 0, KILN_CUDA_NORM = 1 };
struct KilnCudaKernel {
  const char *model;    // the artifact's model
  const char *function; // its function
  int kernel;           // the kernel's index in it
  int kind;             // KilnCudaKind: its argument block
  const void *entry;
};
)";

/// The row norm kernel, one per file (its name carries the model's): as
/// runtime/cpu/Kernels.cpp's norm(), statistics about the mean (LayerNorm)
/// or zero (RMSNorm), 1 / sqrt(var + eps).
const char *const kNormKernel = R"((KilnNormArgs a) {
  __shared__ float part[256];
  for (long long r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const float *x = a.x + r * a.C;
    float *y = a.y + r * a.C;
    float mean = 0.0f;
    if (a.centered) {
      float s = 0.0f;
      for (int i = threadIdx.x; i < a.C; i += blockDim.x)
        s += x[i];
      mean = kiln_block_sum(s, part) / a.C;
    }
    float q = 0.0f;
    for (int i = threadIdx.x; i < a.C; i += blockDim.x) {
      float d = x[i] - mean;
      q += d * d;
    }
    float inv = 1.0f / sqrtf(kiln_block_sum(q, part) / a.C + a.eps);
    for (int i = threadIdx.x; i < a.C; i += blockDim.x)
      y[i] = (x[i] - mean) * inv * a.weight[i] +
             (a.centered ? a.bias[i] : 0.0f);
  }
}
)";

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

/// A C identifier made of `name`'s letters and digits.
std::string identifier(const std::string &name) {
  std::string out;
  for (char c : name)
    out += (std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
  return out;
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
bool expression(const kart::Instruction &ins, const std::string &a,
                const std::string &b, std::string &out, std::string &error) {
  for (const Form &f : kForms) {
    if (f.op != ins.op() || (f.variant >= 0 && f.variant != ins.variant()))
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
          kart::EnumNameOp(ins.op());
  return false;
}

/// One fused elementwise kernel.
bool emitElementwise(const std::string &name, const kart::Kernel &k,
                     std::string &out, std::string &error) {
  const kart::ElementwiseProgram *program = k.attrs_as_ElementwiseProgram();
  int nin = static_cast<int>(k.inputs()->size());
  if (nin > kCudaMaxOperands) {
    error = name + ": " + std::to_string(nin) +
            " operands, more than the CUDA backend's " +
            std::to_string(kCudaMaxOperands);
    return false;
  }
  int nconst = program->constants() ? program->constants()->size() : 0;
  auto reg = [&](int r) { return "r" + std::to_string(r); };
  std::string body;
  for (int i = 0; i < nin; ++i)
    body += "    float " + reg(i) + " = kiln_load(a.in[" + std::to_string(i) +
            "], a, i);\n";
  for (int i = 0; i < nconst; ++i)
    body += "    const float " + reg(nin + i) + " = " +
            floatLiteral(program->constants()->Get(i)) + ";\n";
  int count = program->code()->size();
  for (int i = 0; i < count; ++i) {
    const kart::Instruction &ins = *program->code()->Get(i);
    std::string e;
    if (!expression(ins, reg(ins.a()), ins.b() >= 0 ? reg(ins.b()) : "", e,
                    error)) {
      error = name + ": " + error;
      return false;
    }
    body += "    float " + reg(nin + nconst + i) + " = " + e + ";\n";
  }
  body += "    a.out[i] = " + reg(program->result()) + ";\n";
  std::string location = k.location() ? k.location()->str() : "";
  for (char &c : location)
    if (c == '\n' || c == '\r')
      c = ' ';
  out += "\n// " + location + "\n";
  out += "extern \"C\" __global__ void __launch_bounds__(" +
         std::to_string(kCudaBlock) + ")\n" + name +
         "(KilnElementwiseArgs a) {\n"
         "  for (long long i = (long long)blockIdx.x * blockDim.x + "
         "threadIdx.x; i < a.total;\n"
         "       i += (long long)gridDim.x * blockDim.x) {\n" +
         body + "  }\n}\n";
  return true;
}

} // namespace

bool kiln::emitCudaSource(const uint8_t *artifact, size_t size,
                          std::string &out, std::string &error) {
  flatbuffers::Verifier verifier(artifact, size);
  if (!kart::VerifyProgramBuffer(verifier)) {
    error = "the artifact does not verify";
    return false;
  }
  const kart::Program &program = *kart::GetProgram(artifact);
  std::string model = identifier(program.model()->str());
  std::string kernels, table;
  int generated = 0;
  std::string norm = "kiln_" + model + "_norm";
  bool haveNorm = false;
  auto entry = [&](const std::string &fn, size_t i, const char *kind,
                   const std::string &name) {
    table += "    {\"" + program.model()->str() + "\", \"" + fn + "\", " +
             std::to_string(i) + ", " + kind +
             ", reinterpret_cast<const void *>(" + name + ")},\n";
  };
  for (const kart::Function *f : *program.functions()) {
    std::string fn = f->name()->str();
    for (size_t i = 0; i < f->kernels()->size(); ++i) {
      const kart::Kernel &k = *f->kernels()->Get(i);
      if (k.op() == Op::LayerNorm || k.op() == Op::RMSNorm) {
        // One kernel serves them all: the launch passes eps and the kind.
        haveNorm = true;
        entry(fn, i, "KILN_CUDA_NORM", norm);
        continue;
      }
      if (k.op() != Op::FusedElementwise || !k.attrs_as_ElementwiseProgram())
        continue;
      std::string name =
          "kiln_" + model + "_" + identifier(fn) + "_k" + std::to_string(i);
      if (!emitElementwise(name, k, kernels, error))
        return false;
      entry(fn, i, "KILN_CUDA_ELEMENTWISE", name);
      ++generated;
    }
  }
  if (haveNorm) {
    kernels += "\n// LayerNorm and RMSNorm: launched with " +
               std::to_string(kCudaBlock) +
               " threads per block, one row per block at a time.\n"
               "extern \"C\" __global__ void __launch_bounds__(" +
               std::to_string(kCudaBlock) + ")\n" + norm + kNormKernel;
    ++generated;
  }
  out = "// Generated by kiln (kiln compile --emit=cuda) for model '" +
        program.model()->str() + "': " + std::to_string(generated) +
        (generated == 1 ? " kernel" : " kernels") +
        ".\n// Launch: " + std::to_string(kCudaBlock) +
        " threads per block; any grid (elementwise kernels step through the "
        "elements\n// by the grid's threads, norms through the rows by its "
        "blocks).\n\n";
  out += kPrelude;
  out += kernels;
  // The table names host functions, for the host build (emulation); the
  // device code needs none.
  out += "\n#ifdef KILN_CUDA_EMULATION\nstatic const KilnCudaKernel "
         "kiln_cuda_kernels[] = {\n" +
         table +
         "    {nullptr, nullptr, 0, 0, nullptr}};\n"
         "KILN_CUDA_REGISTER(kiln_cuda_kernels)\n#endif\n";
  return true;
}
