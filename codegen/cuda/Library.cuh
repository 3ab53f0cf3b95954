// kiln's CUDA kernel library: the kernels whose work the launch arguments
// describe (norms, cross-entropy, embeddings, copies, reductions, RoPE,
// dropout, the global norm and the optimizer updates), and the helpers the
// generated elementwise programs use. codegen/CudaEmitter.cpp copies this
// file, after runtime/cuda/KernelAbi.h, into every file it generates; each
// kernel computes what the CPU runtime's kernel of the same op computes
// (runtime/cpu/*.cpp), in the same precision where that matters (double
// statistics and sums). Launch with a block of a multiple of 32 threads
// (KILN_CUDA_BLOCK on a GPU), any grid; runtime/cuda/Launch.cpp says which
// grid each op takes.

#ifdef KILN_CUDA_EMULATION
#define KILN_KERNEL static void
#define KILN_UNROLL
#else
#define KILN_KERNEL                                                            \
  extern "C" __global__ void __launch_bounds__(KILN_CUDA_BLOCK)
#define KILN_UNROLL _Pragma("unroll")
#endif

// Each thread's share of a head row of n <= 8 x blockDim values: slot s is
// value threadIdx.x + s x blockDim.x. Unrolled, so the slots stay in
// registers.
#define KILN_FOR_SLOTS(n, body)                                                \
  KILN_UNROLL for (int slot = 0; slot < 8; ++slot) {                           \
    int d = threadIdx.x + slot * blockDim.x;                                   \
    if (d < (n)) {                                                             \
      body;                                                                    \
    }                                                                          \
  }

// --- Elementwise helpers -------------------------------------------------

__device__ __forceinline__ float
kiln_load(const KilnOperand &o, const KilnElementwiseArgs &a, long long i) {
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

// --- Block reductions ----------------------------------------------------

struct KilnSum {
  __device__ double operator()(double a, double b) const { return a + b; }
};
struct KilnMax {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// `op` of every thread's `v` over the block, for every thread: within each
// warp by shuffles, then across the warps through `part` (32 values of
// shared memory). The same blocks give the same results.
template <typename T, typename Op>
__device__ __forceinline__ T kiln_block_reduce(T v, T *part, Op op) {
  for (int o = 16; o > 0; o >>= 1)
    v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  int warps = (blockDim.x + 31) >> 5;
  if ((threadIdx.x & 31) == 0)
    part[threadIdx.x >> 5] = v;
  __syncthreads();
  T r = part[0];
  for (int w = 1; w < warps; ++w)
    r = op(r, part[w]);
  __syncthreads();
  return r;
}
__device__ __forceinline__ double kiln_block_sum(double v, double *part) {
  return kiln_block_reduce(v, part, KilnSum());
}
__device__ __forceinline__ float kiln_block_max(float v, float *part) {
  return kiln_block_reduce(v, part, KilnMax());
}

__device__ __forceinline__ long long kiln_index(const void *ids, int wide,
                                                long long i) {
  return wide ? static_cast<const long long *>(ids)[i]
              : static_cast<const int *>(ids)[i];
}

// --- Norms ---------------------------------------------------------------

// Element i of the row being normalized: x + residual, kept in `sum`.
__device__ __forceinline__ float kiln_norm_input(const KilnNormArgs &a,
                                                 long long at) {
  if (a.sum)
    return a.sum[at];
  return a.residual ? a.x[at] + a.residual[at] : a.x[at];
}

// As runtime/Vector.h's normStats: the mean and variance in double, then
// 1 / sqrt(var + eps) rounded to float; y in float.
KILN_KERNEL kiln_norm(KilnNormArgs a) {
  __shared__ double part[32];
  for (long long r = blockIdx.x; r < a.rows; r += gridDim.x) {
    long long row = r * a.C;
    if (a.sum) // each thread later reads back only what it wrote
      for (int i = threadIdx.x; i < a.C; i += blockDim.x)
        a.sum[row + i] = a.x[row + i] + a.residual[row + i];
    double m = 0.0;
    if (a.centered) {
      double s = 0.0;
      for (int i = threadIdx.x; i < a.C; i += blockDim.x)
        s += kiln_norm_input(a, row + i);
      m = kiln_block_sum(s, part) / a.C;
    }
    double q = 0.0;
    for (int i = threadIdx.x; i < a.C; i += blockDim.x) {
      double d = kiln_norm_input(a, row + i) - m;
      q += d * d;
    }
    double var = kiln_block_sum(q, part) / a.C;
    float inv = static_cast<float>(1.0 / sqrt(var + a.eps));
    float mean = static_cast<float>(m);
    for (int i = threadIdx.x; i < a.C; i += blockDim.x)
      a.y[row + i] = (kiln_norm_input(a, row + i) - mean) * inv * a.weight[i] +
                     (a.bias ? a.bias[i] : 0.0f);
  }
}

// dx of each row (runtime/cpu/FusedKernels.cpp's normGrad), keeping the
// row's statistics for kiln_norm_grad_columns.
KILN_KERNEL kiln_norm_grad_rows(KilnNormGradArgs a) {
  __shared__ double part[32];
  for (long long r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const float *x = a.x + r * a.C, *g = a.g + r * a.C;
    double m = 0.0;
    if (a.centered) {
      double s = 0.0;
      for (int i = threadIdx.x; i < a.C; i += blockDim.x)
        s += x[i];
      m = kiln_block_sum(s, part) / a.C;
    }
    double q = 0.0;
    for (int i = threadIdx.x; i < a.C; i += blockDim.x)
      q += (x[i] - m) * (x[i] - m);
    float inv =
        static_cast<float>(1.0 / sqrt(kiln_block_sum(q, part) / a.C + a.eps));
    float mean = static_cast<float>(m);
    double sg = 0.0, sgx = 0.0;
    for (int i = threadIdx.x; i < a.C; i += blockDim.x) {
      float gw = g[i] * a.weight[i];
      sg += gw;
      sgx += gw * ((x[i] - mean) * inv);
    }
    float meanG =
        a.centered ? static_cast<float>(kiln_block_sum(sg, part) / a.C) : 0.0f;
    float meanGX = static_cast<float>(kiln_block_sum(sgx, part) / a.C);
    for (int i = threadIdx.x; i < a.C; i += blockDim.x)
      a.dx[r * a.C + i] =
          inv * (g[i] * a.weight[i] - meanG - ((x[i] - mean) * inv) * meanGX);
    if (threadIdx.x == 0) {
      a.stats[2 * r] = mean;
      a.stats[2 * r + 1] = inv;
    }
  }
}

// dweight and dbias, a thread per column summing the rows in order.
KILN_KERNEL kiln_norm_grad_columns(KilnNormGradArgs a) {
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < a.C;
       j += gridDim.x * blockDim.x) {
    double sw = 0.0, sb = 0.0;
    for (long long r = 0; r < a.rows; ++r) {
      float g = a.g[r * a.C + j];
      float xh = (a.x[r * a.C + j] - a.stats[2 * r]) * a.stats[2 * r + 1];
      sw += static_cast<double>(g) * xh;
      sb += g;
    }
    a.dweight[j] = static_cast<float>(sw);
    a.dbias[j] = a.centered ? static_cast<float>(sb) : 0.0f;
  }
}

// --- Cross-entropy -------------------------------------------------------

KILN_KERNEL kiln_xent_count(KilnCrossEntropyArgs a) {
  __shared__ double part[32];
  double n = 0.0;
  for (long long r = threadIdx.x; r < a.rows; r += blockDim.x) {
    long long t = kiln_index(a.targets, a.targets64, r);
    if (t == a.ignore)
      continue;
    if (t < 0 || t >= a.V)
      *a.error = r + 1;
    n += 1.0;
  }
  n = kiln_block_sum(n, part);
  if (threadIdx.x == 0)
    *a.counted = static_cast<long long>(n);
}

// A block per row: the row's term log(sum exp(l - m)) + m - l[t] and, with
// dlogits, (softmax - onehot) x dloss / counted (runtime/cpu/FusedKernels.cpp's
// crossEntropyRow).
KILN_KERNEL kiln_xent_rows(KilnCrossEntropyArgs a) {
  __shared__ double part[32];
  __shared__ float mpart[32];
  long long counted = *a.counted;
  float scale = (a.dloss ? a.dloss[0] : 1.0f) /
                static_cast<float>(counted > 1 ? counted : 1);
  for (long long r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const float *l = a.logits + r * a.V;
    float *d = a.dlogits ? a.dlogits + r * a.V : nullptr;
    long long t = kiln_index(a.targets, a.targets64, r);
    if (t == a.ignore || t < 0 || t >= a.V) { // bad ones are flagged
      if (d)
        for (int j = threadIdx.x; j < a.V; j += blockDim.x)
          d[j] = 0.0f;
      if (threadIdx.x == 0)
        a.terms[r] = 0.0;
      continue;
    }
    // The gradient may overwrite the logits (SoftmaxCrossEntropy writes
    // it in place): the target's logit is read before the block's barriers.
    float lt = threadIdx.x == 0 ? l[t] : 0.0f;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < a.V; j += blockDim.x)
      m = fmaxf(m, l[j]);
    m = kiln_block_max(m, mpart);
    double s = 0.0;
    for (int j = threadIdx.x; j < a.V; j += blockDim.x)
      s += expf(l[j] - m);
    float sum = static_cast<float>(kiln_block_sum(s, part));
    if (d) {
      float k = scale / sum;
      for (int j = threadIdx.x; j < a.V; j += blockDim.x)
        d[j] = expf(l[j] - m) * k - (j == t ? scale : 0.0f);
    }
    if (threadIdx.x == 0)
      a.terms[r] = log(static_cast<double>(sum)) + m - lt;
  }
}

// One block: the mean of the rows' terms.
KILN_KERNEL kiln_xent_finish(KilnCrossEntropyArgs a) {
  __shared__ double part[32];
  double s = 0.0;
  for (long long r = threadIdx.x; r < a.rows; r += blockDim.x)
    s += a.terms[r];
  s = kiln_block_sum(s, part);
  if (threadIdx.x == 0) {
    long long n = *a.counted;
    *a.loss = n ? static_cast<float>(s / n) : __int_as_float(0x7fc00000);
  }
}

// --- Embeddings, copies, reductions ---------------------------------------

KILN_KERNEL kiln_embedding(KilnEmbeddingArgs a) {
  long long total = a.n * a.D;
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
       e < total; e += (long long)gridDim.x * blockDim.x) {
    long long i = e / a.D, id = kiln_index(a.ids, a.ids64, i);
    if (id < 0 || id >= a.V) {
      *a.error = i + 1;
      a.out[e] = 0.0f;
      continue;
    }
    a.out[e] = a.table[id * a.D + e % a.D];
  }
}

// Scatter-add of the rows of g into out[ids] (atomic: rows that share an
// id add in any order).
KILN_KERNEL kiln_embedding_grad(KilnEmbeddingArgs a) {
  long long total = a.n * a.D;
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
       e < total; e += (long long)gridDim.x * blockDim.x) {
    long long i = e / a.D, id = kiln_index(a.ids, a.ids64, i);
    if (id < 0 || id >= a.V) {
      *a.error = i + 1;
      continue;
    }
    atomicAdd(&a.out[id * a.D + e % a.D], a.table[e]);
  }
}

KILN_KERNEL kiln_fill(KilnFillArgs a) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < a.n;
       i += (long long)gridDim.x * blockDim.x)
    a.out[i] = a.value;
}

KILN_KERNEL kiln_copy(KilnCopyArgs a) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
       i < a.total; i += (long long)gridDim.x * blockDim.x) {
    long long rem = i, from = a.in_offset, to = a.out_offset;
    for (int d = a.rank - 1; d >= 0; --d) {
      long long q = rem % a.dims[d];
      rem /= a.dims[d];
      from += q * a.in_strides[d];
      to += q * a.out_strides[d];
    }
    if (a.raw)
      reinterpret_cast<unsigned *>(a.out)[to] =
          reinterpret_cast<const unsigned *>(a.in)[from];
    else
      a.out[to] = a.in[from] * a.scale;
  }
}

KILN_KERNEL kiln_reduce(KilnReduceArgs a) {
  for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x;
       o < a.total; o += (long long)gridDim.x * blockDim.x) {
    long long rem = o, base = 0;
    for (int d = a.kept_rank - 1; d >= 0; --d) {
      base += rem % a.kept[d] * a.kept_strides[d];
      rem /= a.kept[d];
    }
    double s = 0.0;
    float m = -INFINITY;
    for (long long k = 0; k < a.count; ++k) {
      long long at = base;
      rem = k;
      for (int d = a.red_rank - 1; d >= 0; --d) {
        at += rem % a.red[d] * a.red_strides[d];
        rem /= a.red[d];
      }
      float v = a.in[at];
      s += v;
      m = fmaxf(m, v);
    }
    a.out[o] = a.kind == 2   ? m
               : a.kind == 1 ? static_cast<float>(s / a.count)
                             : static_cast<float>(s);
  }
}

// --- RoPE, dropout -------------------------------------------------------

// A thread per rotated pair; the angle in double, as the CPU kernel.
KILN_KERNEL kiln_rope(KilnRopeArgs a) {
  int pairs = a.head_dim / 2, heads = a.C / a.head_dim;
  long long total = a.B * a.T * heads * pairs;
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
       e < total; e += (long long)gridDim.x * blockDim.x) {
    int i = static_cast<int>(e % pairs);
    long long rest = e / pairs;
    int h = static_cast<int>(rest % heads);
    long long bt = rest / heads, t = bt % a.T;
    long long p = t;
    if (a.positions)
      p = kiln_index(a.positions, a.positions64, a.per_batch ? bt : t);
    double ang = p * pow(a.theta, -2.0 * i / a.head_dim);
    float cs = static_cast<float>(cos(ang));
    float sn = static_cast<float>(a.inverse ? -sin(ang) : sin(ang));
    long long row = bt * a.C + h * a.head_dim;
    long long i0 = row + (a.half ? i : 2 * i);
    long long i1 = row + (a.half ? i + pairs : 2 * i + 1);
    float x0 = a.x[i0], x1 = a.x[i1];
    a.y[i0] = x0 * cs - x1 * sn;
    a.y[i1] = x0 * sn + x1 * cs;
  }
}

// runtime/Random.h's SplitMix64 draw, as a double in (0, 1).
__device__ __forceinline__ double kiln_uniform(unsigned long long state) {
  unsigned long long z = state + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (static_cast<double>(z >> 11) + 0.5) * 1.1102230246251565e-16;
}

KILN_KERNEL kiln_dropout(KilnDropoutArgs a) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < a.n;
       i += (long long)gridDim.x * blockDim.x) {
    double u = kiln_uniform(a.base + static_cast<unsigned long long>(i) *
                                         0x9e3779b97f4a7c15ull);
    a.y[i] = u < a.rate ? 0.0f : a.x[i] * a.keep;
  }
}

// --- Global norm, optimizer updates ---------------------------------------

KILN_KERNEL kiln_sum_squares(KilnSumSquaresArgs a) {
  __shared__ double part[32];
  double s = 0.0;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < a.n;
       i += (long long)gridDim.x * blockDim.x)
    s += static_cast<double>(a.x[i]) * a.x[i];
  s = kiln_block_sum(s, part);
  if (threadIdx.x == 0)
    a.partial[a.first + blockIdx.x] = s;
}

KILN_KERNEL kiln_norm_finish(KilnSumSquaresArgs a) {
  __shared__ double part[32];
  double s = 0.0;
  for (long long i = threadIdx.x; i < a.partials; i += blockDim.x)
    s += a.partial[i];
  s = kiln_block_sum(s, part);
  if (threadIdx.x == 0)
    *a.out = static_cast<float>(sqrt(s));
}

// runtime/train/Optimizer.cpp's applyUpdate: torch.optim.AdamW or SGD.
KILN_KERNEL kiln_optimizer(KilnOptimizerArgs a) {
  double norm = *a.norm;
  float clip = a.max_norm > 0 && norm > a.max_norm
                   ? static_cast<float>(a.max_norm / (norm + 1e-6))
                   : 1.0f;
  float lr = *a.lr;
  long long step = llround(static_cast<double>(*a.step));
  if (a.adamw) {
    double bc1 = 1.0 - pow(static_cast<double>(a.beta1), (double)step);
    double bc2 = 1.0 - pow(static_cast<double>(a.beta2), (double)step);
    float stepSize = static_cast<float>(lr / bc1);
    float bc2Sqrt = static_cast<float>(sqrt(bc2));
    float decay = 1.0f - lr * a.weight_decay;
    for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x;
         j < a.n; j += (long long)gridDim.x * blockDim.x) {
      float g = a.g[j] * clip;
      float p = a.p[j] * decay;
      float m = a.beta1 * a.m[j] + (1.0f - a.beta1) * g;
      float v = a.beta2 * a.v[j] + (1.0f - a.beta2) * g * g;
      a.m[j] = m;
      a.v[j] = v;
      a.p[j] = p - stepSize * m / (sqrtf(v) / bc2Sqrt + a.eps);
    }
    return;
  }
  bool first = step == 1 || a.momentum == 0.0f;
  for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < a.n;
       j += (long long)gridDim.x * blockDim.x) {
    float g = a.g[j] * clip + a.weight_decay * a.p[j];
    float m = first ? g : a.momentum * a.m[j] + g;
    a.m[j] = m;
    a.p[j] -= lr * m;
  }
}

// --- Matrix products -----------------------------------------------------

// A straightforward tiled product (64 x 64 outputs per tile, 16-deep slices
// of a and b staged in shared memory, 4 x 4 outputs per thread), for GPUs
// without cuBLASLt and the emulation. Loads follow each operand's
// contiguous dimension.
// A product's epilogue on output element `at` (column n): the bias, the
// scale, the activation, then the residual.
__device__ __forceinline__ float kiln_matmul_finish(const KilnMatmulArgs &a,
                                                    float v, long long n,
                                                    long long at) {
  v = (v + (a.bias ? a.bias[n] : 0.0f)) * a.scale;
  if (a.activation == 1)
    v = v > 0.0f ? v : 0.0f;
  else if (a.activation == 2)
    v = kiln_gelu(v);
  else if (a.activation == 3)
    v = kiln_gelu_tanh(v);
  else if (a.activation == 4)
    v = v / (1.0f + expf(-v));
  return v + (a.residual ? a.residual[at] : 0.0f);
}

KILN_KERNEL kiln_matmul(KilnMatmulArgs a) {
  __shared__ float As[16][64 + 1];
  __shared__ float Bs[16][64 + 1];
  long long tilesM = (a.M + 63) / 64, tilesN = (a.N + 63) / 64;
  long long tiles = a.batches * tilesM * tilesN;
  int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  for (long long tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    long long batch = tile / (tilesM * tilesN);
    long long m0 = (tile / tilesN) % tilesM * 64, n0 = tile % tilesN * 64;
    long long aBase = 0, bBase = 0, rem = batch;
    for (int d = a.batch_rank - 1; d >= 0; --d) {
      long long q = rem % a.batch_dims[d];
      rem /= a.batch_dims[d];
      aBase += q * a.a_strides[d];
      bBase += q * a.b_strides[d];
    }
    float acc[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j)
        acc[i][j] = 0.0f;
    for (long long rb = 0; rb < a.reduce; ++rb) {
      const float *A = a.a + aBase + rb * a.a_reduce_stride;
      const float *B = a.b + bBase + rb * a.b_reduce_stride;
      for (long long k0 = 0; k0 < a.K; k0 += 16) {
        for (int e = threadIdx.x; e < 16 * 64; e += blockDim.x) {
          int kk = a.ta ? e / 64 : e % 16, mm = a.ta ? e % 64 : e / 16;
          long long m = m0 + mm, k = k0 + kk;
          As[kk][mm] = m < a.M && k < a.K
                           ? (a.ta ? A[k * a.M + m] : A[m * a.K + k])
                           : 0.0f;
          int kb = a.tb ? e % 16 : e / 64, nn = a.tb ? e / 16 : e % 64;
          long long n = n0 + nn, kq = k0 + kb;
          Bs[kb][nn] = n < a.N && kq < a.K
                           ? (a.tb ? B[n * a.K + kq] : B[kq * a.N + n])
                           : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < 16; ++kk) {
          float av[4], bv[4];
          for (int i = 0; i < 4; ++i)
            av[i] = As[kk][ty * 4 + i];
          for (int j = 0; j < 4; ++j)
            bv[j] = Bs[kk][tx * 4 + j];
          for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j)
              acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
      }
    }
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        long long m = m0 + ty * 4 + i, n = n0 + tx * 4 + j;
        if (m >= a.M || n >= a.N)
          continue;
        long long at = (batch * a.M + m) * a.N + n;
        a.out[at] = kiln_matmul_finish(a, acc[i][j], n, at);
      }
  }
}

// The epilogue of a product cuBLASLt computed into `out` without it: in
// place, one thread per element.
KILN_KERNEL kiln_matmul_epilogue(KilnMatmulArgs a) {
  long long n = a.batches * a.M * a.N;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    a.out[i] = kiln_matmul_finish(a, a.out[i], i % a.N, i);
}

// --- Attention -----------------------------------------------------------

__device__ __forceinline__ bool kiln_visible(const KilnAttentionArgs &a,
                                             long long b, long long i,
                                             long long j) {
  if (a.causal && j > i + a.offset)
    return false;
  if (!a.mask)
    return true;
  long long at = b * a.Tk + j;
  switch (a.mask_type) {
  case 1:
    return static_cast<const float *>(a.mask)[at] != 0.0f;
  case 2:
    return static_cast<const int *>(a.mask)[at] != 0;
  case 3:
    return static_cast<const long long *>(a.mask)[at] != 0;
  default:
    return static_cast<const unsigned char *>(a.mask)[at] != 0;
  }
}

__device__ __forceinline__ float kiln_dot(const float *x, const float *y,
                                          int n) {
  float s = 0.0f;
  for (int d = 0; d < n; ++d)
    s += x[d] * y[d];
  return s;
}

// The score of query row (b, h, i) against key row `key` (j): scale q.k
// plus the bias, as the CPU's referenceScore.
__device__ __forceinline__ float kiln_score(const KilnAttentionArgs &a,
                                            const float *q, const float *key,
                                            long long b, int h, long long i,
                                            long long j) {
  float s = a.scale * kiln_dot(q, key, a.D);
  if (a.bias)
    s += a.bias[b * a.bias_strides[0] + h * a.bias_strides[1] +
                i * a.bias_strides[2] + j * a.bias_strides[3]];
  return s;
}

// Query row r of the attention: batch b, head h (on key/value head hk),
// position i.
struct KilnQueryRow {
  long long b, i;
  int h, hk;
};
__device__ __forceinline__ KilnQueryRow
kiln_query_row(const KilnAttentionArgs &a, long long r) {
  KilnQueryRow q;
  q.i = r % a.Tq;
  q.b = r / (a.Tq * a.H);
  q.h = static_cast<int>(r / a.Tq % a.H);
  q.hk = q.h / (a.H / a.Hkv);
  return q;
}

// A block per query row (b, h, i): the row's max and sum of exp over the
// visible keys, then the keys in chunks of the block's width: each thread
// one key's probability, then each thread its share of the output.
KILN_KERNEL kiln_attention(KilnAttentionArgs a) {
  __shared__ float qrow[KILN_CUDA_MAX_HEAD];
  __shared__ float p[1024];
  __shared__ double part[32];
  __shared__ float mpart[32];
  long long rows = a.B * a.H * a.Tq;
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    KilnQueryRow q = kiln_query_row(a, r);
    long long i = q.i, b = q.b;
    int h = q.h, hk = q.hk;
    const float *qi = a.q + ((b * a.Tq + i) * a.H + h) * a.D;
    for (int d = threadIdx.x; d < a.D; d += blockDim.x)
      qrow[d] = qi[d];
    __syncthreads();
    float m = -INFINITY, s = 0.0f;
    for (long long j = threadIdx.x; j < a.Tk; j += blockDim.x) {
      if (!kiln_visible(a, b, i, j))
        continue;
      float sc = kiln_score(a, qrow, a.k + ((b * a.Tk + j) * a.Hkv + hk) * a.D,
                            b, h, i, j);
      if (sc > m) {
        s = s * expf(m - sc) + 1.0f;
        m = sc;
      } else {
        s += expf(sc - m);
      }
    }
    float M = kiln_block_max(m, mpart);
    float S = static_cast<float>(
        kiln_block_sum(m == -INFINITY ? 0.0 : s * expf(m - M), part));
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (long long j0 = 0; M != -INFINITY && j0 < a.Tk; j0 += blockDim.x) {
      long long j = j0 + threadIdx.x;
      float pj = 0.0f;
      if (j < a.Tk && kiln_visible(a, b, i, j))
        pj = expf(kiln_score(a, qrow, a.k + ((b * a.Tk + j) * a.Hkv + hk) * a.D,
                             b, h, i, j) -
                  M) /
             S;
      p[threadIdx.x] = pj;
      __syncthreads();
      long long chunk = a.Tk - j0 < blockDim.x ? a.Tk - j0 : blockDim.x;
      for (long long jj = 0; jj < chunk; ++jj) {
        const float *vj = a.v + ((b * a.Tk + j0 + jj) * a.Hkv + hk) * a.Dv;
        float pj = p[jj];
        KILN_FOR_SLOTS(a.Dv, acc[slot] += pj * vj[d]);
      }
      __syncthreads();
    }
    float *oi = a.out + ((b * a.Tq + i) * a.H + h) * a.Dv;
    KILN_FOR_SLOTS(a.Dv, oi[d] = acc[slot]);
    if (a.out_lse && threadIdx.x == 0)
      a.out_lse[(b * a.H + h) * a.Tq + i] =
          M == -INFINITY ? -INFINITY : M + logf(S);
    __syncthreads();
  }
}

// dq of each query row, and the row's di = dO . O for kiln_attention_grad_kv.
KILN_KERNEL kiln_attention_grad_q(KilnAttentionArgs a) {
  __shared__ float qrow[KILN_CUDA_MAX_HEAD];
  __shared__ float grow[KILN_CUDA_MAX_HEAD];
  __shared__ float ds[1024];
  __shared__ double part[32];
  long long rows = a.B * a.H * a.Tq;
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    KilnQueryRow q = kiln_query_row(a, r);
    long long i = q.i, b = q.b;
    int h = q.h, hk = q.hk;
    long long row = (b * a.Tq + i) * a.H + h;
    float l = a.lse[(b * a.H + h) * a.Tq + i];
    for (int d = threadIdx.x; d < a.D; d += blockDim.x)
      qrow[d] = a.q[row * a.D + d];
    double od = 0.0;
    for (int d = threadIdx.x; d < a.Dv; d += blockDim.x) {
      grow[d] = a.g[row * a.Dv + d];
      od += grow[d] * a.o[row * a.Dv + d];
    }
    float di = static_cast<float>(kiln_block_sum(od, part)); // syncs
    if (threadIdx.x == 0)
      a.di[(b * a.H + h) * a.Tq + i] = di;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (a.ds && l == -INFINITY) // a row that sees no key: no bias gradient
      for (long long j = threadIdx.x; j < a.Tk; j += blockDim.x)
        a.ds[((b * a.H + h) * a.Tq + i) * a.Tk + j] = 0.0f;
    for (long long j0 = 0; l != -INFINITY && j0 < a.Tk; j0 += blockDim.x) {
      long long j = j0 + threadIdx.x;
      float dsj = 0.0f;
      if (j < a.Tk && kiln_visible(a, b, i, j)) {
        long long kv = (b * a.Tk + j) * a.Hkv + hk;
        float pj = expf(kiln_score(a, qrow, a.k + kv * a.D, b, h, i, j) - l);
        dsj = pj * (kiln_dot(grow, a.v + kv * a.Dv, a.Dv) - di);
      }
      if (a.ds && j < a.Tk)
        a.ds[((b * a.H + h) * a.Tq + i) * a.Tk + j] = dsj;
      ds[threadIdx.x] = dsj;
      __syncthreads();
      long long chunk = a.Tk - j0 < blockDim.x ? a.Tk - j0 : blockDim.x;
      for (long long jj = 0; jj < chunk; ++jj) {
        const float *kj = a.k + ((b * a.Tk + j0 + jj) * a.Hkv + hk) * a.D;
        float w = a.scale * ds[jj];
        KILN_FOR_SLOTS(a.D, acc[slot] += w * kj[d]);
      }
      __syncthreads();
    }
    KILN_FOR_SLOTS(a.D, a.dq[row * a.D + d] = acc[slot]);
    __syncthreads();
  }
}

// dk and dv of each key row (b, hk, j): the (head, query row) pairs of its
// group in chunks of the block's width.
KILN_KERNEL kiln_attention_grad_kv(KilnAttentionArgs a) {
  __shared__ float krow[KILN_CUDA_MAX_HEAD];
  __shared__ float vrow[KILN_CUDA_MAX_HEAD];
  __shared__ float pp[1024];
  __shared__ float ds[1024];
  int group = a.H / a.Hkv;
  long long rows = a.B * a.Hkv * a.Tk, pairs = group * a.Tq;
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    long long j = r % a.Tk, b = r / (a.Tk * a.Hkv);
    int hk = static_cast<int>(r / a.Tk % a.Hkv);
    long long kv = (b * a.Tk + j) * a.Hkv + hk;
    for (int d = threadIdx.x; d < a.D; d += blockDim.x)
      krow[d] = a.k[kv * a.D + d];
    for (int d = threadIdx.x; d < a.Dv; d += blockDim.x)
      vrow[d] = a.v[kv * a.Dv + d];
    __syncthreads();
    float accK[8] = {0, 0, 0, 0, 0, 0, 0, 0},
          accV[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (long long c0 = 0; c0 < pairs; c0 += blockDim.x) {
      long long c = c0 + threadIdx.x;
      float pc = 0.0f, dsc = 0.0f;
      if (c < pairs) {
        int h = hk * group + static_cast<int>(c / a.Tq);
        long long i = c % a.Tq, row = (b * a.Tq + i) * a.H + h;
        float l = a.lse[(b * a.H + h) * a.Tq + i];
        if (l != -INFINITY && kiln_visible(a, b, i, j)) {
          pc = expf(kiln_score(a, a.q + row * a.D, krow, b, h, i, j) - l);
          dsc = pc * (kiln_dot(a.g + row * a.Dv, vrow, a.Dv) -
                      a.di[(b * a.H + h) * a.Tq + i]);
        }
      }
      pp[threadIdx.x] = pc;
      ds[threadIdx.x] = dsc;
      __syncthreads();
      long long chunk = pairs - c0 < blockDim.x ? pairs - c0 : blockDim.x;
      for (long long cc = 0; cc < chunk; ++cc) {
        int h = hk * group + static_cast<int>((c0 + cc) / a.Tq);
        long long row = (b * a.Tq + (c0 + cc) % a.Tq) * a.H + h;
        const float *qr = a.q + row * a.D, *gr = a.g + row * a.Dv;
        float w = a.scale * ds[cc], pc = pp[cc];
        KILN_FOR_SLOTS(a.D, accK[slot] += w * qr[d]);
        KILN_FOR_SLOTS(a.Dv, accV[slot] += pc * gr[d]);
      }
      __syncthreads();
    }
    KILN_FOR_SLOTS(a.D, a.dk[kv * a.D + d] = accK[slot]);
    KILN_FOR_SLOTS(a.Dv, a.dv[kv * a.Dv + d] = accV[slot]);
    __syncthreads();
  }
}

// --- Attention over a key/value cache (decoding) -------------------------

// Whether row b's real tokens sit at consecutive positions, from 0 or
// later, that fit the cache (the CPU's checkRows).
__device__ __forceinline__ bool
kiln_cached_row_ok(const KilnCachedAttentionArgs &a, long long b) {
  long long n = a.len[b];
  if (n < 0 || n > a.T)
    return false;
  if (n == 0)
    return true;
  long long p0 = a.pos[b * a.T];
  if (p0 < 0)
    return false;
  for (long long t = 1; t < n; ++t)
    if (a.pos[b * a.T + t] != p0 + t)
      return false;
  return a.rolls || p0 + n <= a.S;
}

// The key (or, given the value arrays and width, value) row of head hk at
// position j of row b, whose new tokens start at position p0: cached
// before p0, new from there.
__device__ __forceinline__ const float *
kiln_cached_row(const KilnCachedAttentionArgs &a, const float *cache,
                const float *fresh, int width, long long b, long long p0,
                long long j, int hk) {
  if (j < p0) {
    long long slot = a.rolls ? j % a.S : j;
    return cache + (b * a.S + slot) * a.Hkv * width + (long long)hk * width;
  }
  return fresh + (b * a.T + j - p0) * a.Hkv * width + (long long)hk * width;
}

__device__ __forceinline__ float
kiln_cached_score(const KilnCachedAttentionArgs &a, const float *q, long long b,
                  long long p0, long long at, long long j, int h, int hk) {
  float s = a.scale *
            kiln_dot(q, kiln_cached_row(a, a.kc, a.k, a.D, b, p0, j, hk), a.D);
  if (a.relative)
    s += a.relative[(long long)a.buckets[at - j] * a.H + h];
  return s;
}

// A block per query row (b, t, h), as kiln_attention: the max and sum of
// exp over the visible keys (the window's, up to the row's own position),
// then the keys in chunks of the block's width.
KILN_KERNEL kiln_cached_attention(KilnCachedAttentionArgs a) {
  __shared__ float qrow[KILN_CUDA_MAX_HEAD];
  __shared__ float p[1024];
  __shared__ double part[32];
  __shared__ float mpart[32];
  long long rows = a.B * a.T * a.H;
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    long long b = r / (a.T * a.H), t = r / a.H % a.T;
    int h = static_cast<int>(r % a.H), hk = h / (a.H / a.Hkv);
    float *oi = a.out + ((b * a.T + t) * a.H + h) * a.Dv;
    bool ok = kiln_cached_row_ok(a, b);
    if (!ok || t >= a.len[b]) {
      if (!ok && t == 0 && h == 0 && threadIdx.x == 0)
        *a.error = -(b + 1);
      for (int d = threadIdx.x; d < a.Dv; d += blockDim.x)
        oi[d] = 0.0f;
      continue;
    }
    long long p0 = a.pos[b * a.T], at = p0 + t;
    long long lo =
        a.window > 0 && at - a.window + 1 > 0 ? at - a.window + 1 : 0;
    const float *qi = a.q + ((b * a.T + t) * a.H + h) * a.D;
    for (int d = threadIdx.x; d < a.D; d += blockDim.x)
      qrow[d] = qi[d];
    __syncthreads();
    float m = -INFINITY, s = 0.0f;
    for (long long j = lo + threadIdx.x; j <= at; j += blockDim.x) {
      float sc = kiln_cached_score(a, qrow, b, p0, at, j, h, hk);
      if (sc > m) {
        s = s * expf(m - sc) + 1.0f;
        m = sc;
      } else {
        s += expf(sc - m);
      }
    }
    float M = kiln_block_max(m, mpart);
    float S = static_cast<float>(
        kiln_block_sum(m == -INFINITY ? 0.0 : s * expf(m - M), part));
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (long long j0 = lo; j0 <= at; j0 += blockDim.x) {
      long long j = j0 + threadIdx.x;
      p[threadIdx.x] =
          j <= at
              ? expf(kiln_cached_score(a, qrow, b, p0, at, j, h, hk) - M) / S
              : 0.0f;
      __syncthreads();
      long long chunk = at - j0 + 1 < blockDim.x ? at - j0 + 1 : blockDim.x;
      for (long long jj = 0; jj < chunk; ++jj) {
        const float *vj =
            kiln_cached_row(a, a.vc, a.v, a.Dv, b, p0, j0 + jj, hk);
        float pj = p[jj];
        KILN_FOR_SLOTS(a.Dv, acc[slot] += pj * vj[d]);
      }
      __syncthreads();
    }
    KILN_FOR_SLOTS(a.Dv, oi[d] = acc[slot]);
    __syncthreads();
  }
}

// After every query read the caches: the new keys and values into their
// slots (a rolling cache keeps the last S), a block per new token.
KILN_KERNEL kiln_cached_store(KilnCachedAttentionArgs a) {
  long long kRow = (long long)a.Hkv * a.D, vRow = (long long)a.Hkv * a.Dv;
  for (long long r = blockIdx.x; r < a.B * a.T; r += gridDim.x) {
    long long b = r / a.T, t = r % a.T, n = a.len[b];
    if (!kiln_cached_row_ok(a, b) || t >= n || t < n - a.S)
      continue;
    long long p = a.pos[b * a.T] + t, slot = a.rolls ? p % a.S : p;
    for (long long i = threadIdx.x; i < kRow; i += blockDim.x)
      a.kc[(b * a.S + slot) * kRow + i] = a.k[(b * a.T + t) * kRow + i];
    for (long long i = threadIdx.x; i < vRow; i += blockDim.x)
      a.vc[(b * a.S + slot) * vRow + i] = a.v[(b * a.T + t) * vRow + i];
  }
}
