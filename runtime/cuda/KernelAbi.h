//===- KernelAbi.h - the argument blocks of kiln's CUDA kernels -*- C++ -*-===//
//
// Every CUDA kernel kiln generates takes one of these structs by value: the
// code generator copies this header into each generated file (so nvcc needs
// nothing else), and the runtime's launcher (runtime/cuda/Launch.cpp) fills
// the same structs on the host. Plain C types only, the same layout on both
// sides (64-bit pointers, `long long` counts). Pointers are device
// addresses on a GPU and host addresses under emulation.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CUDA_KERNELABI_H
#define KILN_RUNTIME_CUDA_KERNELABI_H

// The version of these argument blocks: an artifact's CUDA executable
// records the one it was generated for, and a runtime with another refuses
// it. Bump it with any change to a struct below, to a kernel's meaning or
// to the library's list of kernels.
#define KILN_CUDA_ABI_VERSION 4

// The most operands and dimensions of an elementwise kernel: its argument
// block must fit CUDA's 4 KiB of kernel parameters.
#define KILN_CUDA_MAX_OPERANDS 40
#define KILN_CUDA_MAX_RANK 8
// Threads per block of every generated kernel (the block reductions assume
// a power of two, at most 1024).
#define KILN_CUDA_BLOCK 256

// An elementwise operand: its element strides along the result's
// dimensions (0 where it broadcasts).
struct KilnOperand {
  const float *data;
  long long strides[KILN_CUDA_MAX_RANK];
  int contiguous; // laid out as the result: index i is element i
};
// A fused elementwise program (or one elementwise op), one thread per
// element, grid-stride.
struct KilnElementwiseArgs {
  KilnOperand in[KILN_CUDA_MAX_OPERANDS];
  float *out;
  long long dims[KILN_CUDA_MAX_RANK];
  int rank;
  long long total;
};

// LayerNorm, RMSNorm and AddNorm over the last dimension, C wide, a block
// per row: y = norm(x + residual) * weight + bias, with `sum` = x +
// residual written when a residual is given (AddNorm).
struct KilnNormArgs {
  const float *x, *residual, *weight, *bias; // residual, bias: may be null
  float *sum, *y;                            // sum: AddNorm only
  long long rows;
  int C;
  float eps;
  int centered; // LayerNorm: about the mean; RMSNorm: about zero
};

// NormGrad: kiln_norm_grad_rows writes dx and each row's statistics (a
// block per row); kiln_norm_grad_columns sums dweight and dbias over the
// rows in row order (a thread per column), so the result does not depend
// on scheduling.
struct KilnNormGradArgs {
  const float *g, *x, *weight;
  float *dx, *dweight, *dbias; // dbias: LayerNorm only (zero for RMSNorm)
  float *stats;                // workspace: mean and 1/std, 2 per row
  long long rows;
  int C;
  float eps;
  int centered;
};

// Cross-entropy of rows of V logits against integer targets, with the
// gradient of loss x dloss (SoftmaxCrossEntropy) or without (CrossEntropy).
// kiln_xent_count counts the targets that are not `ignore` (and flags one
// out of range), kiln_xent_rows computes each row (a block per row),
// kiln_xent_finish averages the rows' terms in row order.
struct KilnCrossEntropyArgs {
  const float *logits;
  const void *targets;
  int targets64;      // targets are int64 (else int32)
  const float *dloss; // [1]: the incoming gradient; null: 1
  float *dlogits;     // null: the loss only
  float *loss;        // [1]
  double *terms;      // workspace: one per row
  long long *counted; // workspace: [1]
  long long *error;   // first bad position + 1, or 0
  long long rows;
  int V;
  long long ignore;
};

// Embedding rows out[i] = table[ids[i]] (kiln_embedding), and its
// gradient, summed per row of the table (kiln_embedding_grad; the caller
// zeroes `out` first).
struct KilnEmbeddingArgs {
  const float *table; // kiln_embedding: [V, D]; kiln_embedding_grad: g [n, D]
  const void *ids;
  int ids64;
  float *out; // kiln_embedding: [n, D]; kiln_embedding_grad: [V, D]
  long long n, V;
  int D;
  long long *error; // first bad position + 1, or 0
};

// out[i] = value for n elements.
struct KilnFillArgs {
  float *out;
  long long n;
  float value;
};

// A strided copy: out element at index (i_0, .., i_r-1) of `dims`, at
// out_offset + sum i_d out_strides[d], becomes in[in_offset + sum i_d
// in_strides[d]] x scale. Slices, splits, concatenation, transposes,
// reshapes, broadcasts and their gradients are all one such copy.
struct KilnCopyArgs {
  const float *in;
  float *out;
  long long dims[KILN_CUDA_MAX_RANK];
  long long in_strides[KILN_CUDA_MAX_RANK];
  long long out_strides[KILN_CUDA_MAX_RANK];
  long long in_offset, out_offset, total;
  int rank;
  float scale;
  int raw; // move the 4-byte words as they are (not f32): scale is 1
};

// A reduction: each of `total` outputs (kept dimensions `kept`, their
// input strides `kept_strides`) combines the `count` inputs at the reduced
// dimensions `red` (strides `red_strides`), in double. kind: 0 sum, 1 mean,
// 2 max.
struct KilnReduceArgs {
  const float *in;
  float *out;
  long long kept[KILN_CUDA_MAX_RANK], kept_strides[KILN_CUDA_MAX_RANK];
  long long red[KILN_CUDA_MAX_RANK], red_strides[KILN_CUDA_MAX_RANK];
  int kept_rank, red_rank;
  long long total, count;
  int kind;
};

// Rotary position embedding of x [B, T, C] (heads of head_dim), by the
// positions (null: t; per_batch: [B, T], else [T]).
struct KilnRopeArgs {
  const float *x;
  float *y;
  const void *positions;
  int positions64, per_batch;
  long long B, T;
  int C, head_dim;
  double theta;
  int half;    // pairs (i, i + head_dim / 2), else (2i, 2i + 1)
  int inverse; // rotate backwards (the gradient)
};

// Dropout in training: element i survives unless the counter-based draw
// from (base, i) falls below the rate (runtime/cpu/GradKernels.cpp).
struct KilnDropoutArgs {
  const float *x;
  float *y;
  long long n;
  unsigned long long base;
  double rate;
  float keep; // 1 / (1 - rate)
};

// The global norm of several tensors: kiln_sum_squares adds each block's
// share of one tensor into partial[first + block] (double), and
// kiln_norm_finish takes sqrt of the sum of `partials` partials in order.
struct KilnSumSquaresArgs {
  const float *x;
  long long n;
  double *partial;
  long long first, partials;
  float *out; // kiln_norm_finish: [1]
};

// AdamW or SGD on one parameter (runtime/train/Optimizer.cpp's
// applyUpdate): p, m (and v) in place, from the gradient, the global norm
// (clipped to max_norm when positive), the learning rate and 1-based step,
// the last three one-element tensors.
struct KilnOptimizerArgs {
  float *p, *m, *v;
  const float *g, *norm, *lr, *step;
  long long n;
  int adamw;
  float beta1, beta2, eps, weight_decay, momentum;
  double max_norm;
};

// A batched matrix product out = epilogue(a x b) of [M, K] x [K, N] (a
// stored [K, M] with ta, b stored [N, K] with tb): 64 x 64 tiles of the
// output, a block of exactly 256 threads each. The batch dimensions
// broadcast (a_strides, b_strides: element strides per output batch
// dimension, 0 where it broadcasts); with reduce > 1 the product sums
// `reduce` batches of a and b into one output (weight gradients). The
// epilogue (FusedMatmul): + bias[N], x scale, the activation (kart's
// Activation codes), + residual (shaped as out).
struct KilnMatmulArgs {
  const float *a, *b, *bias, *residual;
  float *out;
  long long M, N, K;
  int ta, tb;
  long long batches;
  int batch_rank;
  long long batch_dims[KILN_CUDA_MAX_RANK];
  long long a_strides[KILN_CUDA_MAX_RANK], b_strides[KILN_CUDA_MAX_RANK];
  long long reduce, a_reduce_stride, b_reduce_stride;
  float scale;
  int activation; // 0 none, 1 relu, 2 gelu, 3 gelu (tanh), 4 silu
};
#define KILN_CUDA_MATMUL_THREADS 256

// Dense attention (causal or not, an optional key mask [B, Tk] and score
// bias) of q
// [B, Tq, H x D], k [B, Tk, Hkv x D], v [B, Tk, Hkv x Dv]: kiln_attention
// writes o and the rows' log-sum-exp (a block per query row);
// kiln_attention_grad_q writes dq and each row's dO . O into `di`, then
// kiln_attention_grad_kv dk and dv (a block per key row, summing the
// query rows of its head group in order: no atomics).
struct KilnAttentionArgs {
  const float *q, *k, *v;
  const float *o, *lse, *g; // the gradient's: the forward's results, dO
  float *out, *out_lse;     // kiln_attention (out_lse may be null)
  float *dq, *dk, *dv;
  float *di; // scratch: B x H x Tq
  const void *mask;
  int mask_type; // 0 none, 1 f32, 2 i32, 3 i64, 4 bool (bytes)
  // An additive score bias (T5's relative positions), broadcast over
  // [B, H, Tq, Tk] by these element strides; the gradient's ds goes to
  // `ds` ([B, H, Tq, Tk], scratch) for its reduction into dbias.
  const float *bias;
  long long bias_strides[4];
  float *ds;
  long long B, Tq, Tk;
  int H, Hkv, D, Dv;
  float scale;
  int causal;
  long long offset; // query row i sits at key position i + offset
};

// Attention of new tokens over a key/value cache (decoding): q [B, T, H x D],
// the new k [B, T, Hkv x D] and v [B, T, Hkv x Dv], the caches kc
// [B, S, Hkv x D] and vc [B, S, Hkv x Dv], each row's token positions
// [B, T] and real-token count [B]. kiln_cached_attention writes o (a block
// per query row; padding rows zero), then kiln_cached_store puts the new
// keys and values in their slots (position % S when the window's cache
// rolls). A row whose positions do not fit is flagged as -(row + 1).
struct KilnCachedAttentionArgs {
  const float *q, *k, *v;
  float *kc, *vc, *out;
  const int *pos, *len;
  // T5's relative position bias [buckets, H], and the bucket of each
  // distance 0..S-1 between a query and an earlier key (the host's).
  const float *relative;
  const int *buckets;
  long long B, T, S, window;
  int H, Hkv, D, Dv;
  int rolls;
  float scale;
  long long *error;
};
// The widest head attention takes (rows kept in shared memory).
#define KILN_CUDA_MAX_HEAD 1024

// The library kernels every generated file holds (codegen/cuda/Library.cuh),
// each with its argument block: X(name, args). The fused elementwise
// programs come on top, one kernel each.
#define KILN_CUDA_LIBRARY(X)                                                   \
  X(kiln_norm, KilnNormArgs)                                                   \
  X(kiln_norm_grad_rows, KilnNormGradArgs)                                     \
  X(kiln_norm_grad_columns, KilnNormGradArgs)                                  \
  X(kiln_xent_count, KilnCrossEntropyArgs)                                     \
  X(kiln_xent_rows, KilnCrossEntropyArgs)                                      \
  X(kiln_xent_finish, KilnCrossEntropyArgs)                                    \
  X(kiln_embedding, KilnEmbeddingArgs)                                         \
  X(kiln_embedding_grad, KilnEmbeddingArgs)                                    \
  X(kiln_fill, KilnFillArgs)                                                   \
  X(kiln_copy, KilnCopyArgs)                                                   \
  X(kiln_reduce, KilnReduceArgs)                                               \
  X(kiln_rope, KilnRopeArgs)                                                   \
  X(kiln_dropout, KilnDropoutArgs)                                             \
  X(kiln_sum_squares, KilnSumSquaresArgs)                                      \
  X(kiln_norm_finish, KilnSumSquaresArgs)                                      \
  X(kiln_optimizer, KilnOptimizerArgs)                                         \
  X(kiln_matmul, KilnMatmulArgs)                                               \
  X(kiln_matmul_epilogue, KilnMatmulArgs)                                      \
  X(kiln_attention, KilnAttentionArgs)                                         \
  X(kiln_attention_grad_q, KilnAttentionArgs)                                  \
  X(kiln_attention_grad_kv, KilnAttentionArgs)                                 \
  X(kiln_cached_attention, KilnCachedAttentionArgs)                            \
  X(kiln_cached_store, KilnCachedAttentionArgs)

#endif
