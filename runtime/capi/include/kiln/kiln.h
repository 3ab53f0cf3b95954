/* kiln.h - the C API of kiln's runtime, for ahead-of-time deployment.
 *
 * C11 (and C++), opaque handles, no exceptions across it. A function that
 * can fail returns a kiln_status pointer: NULL on success, else an error
 * the caller reads (kiln_status_code, kiln_status_message) and frees
 * (kiln_status_free). Installed as <kiln/kiln.h> with the shared library
 * libkiln.so (which exports only these functions), the static libkiln_c.a,
 * the CMake package (kiln::c, kiln::c_static) and pkg-config (kiln).
 * docs/c-api.md has a guide; examples/deploy-c a program.
 *
 *   kiln_model *model;
 *   kiln_status *s = kiln_model_open("gpt2.kart", &model);
 *   if (s) { fprintf(stderr, "%s\n", kiln_status_message(s)); ... }
 *   kiln_call *call;
 *   s = kiln_call_create(model, "forward", &call);
 *   int64_t shape[2] = {1, 8};
 *   s = kiln_call_bind(call, "tokens", KILN_I32, shape, 2, tokens);
 *   s = kiln_call_run(call);
 *   kiln_tensor logits;
 *   s = kiln_call_output(call, 0, &logits);
 *   ...
 *   kiln_call_free(call);
 *   kiln_model_free(model);
 *
 * Threads: a model may be shared by any number of threads, each with calls
 * of its own (runs of one model proceed concurrently and give the
 * sequential results). One call is used by one thread at a time.
 */
#ifndef KILN_KILN_H
#define KILN_KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The binary interface's version: a program built against this header
 * checks kiln_abi_version() == KILN_ABI_VERSION before anything else.
 * Additions keep it; a changed or removed function or struct raises it. */
#define KILN_ABI_VERSION 1

#if defined(__GNUC__)
#define KILN_API __attribute__((visibility("default")))
#else
#define KILN_API
#endif

typedef struct kiln_model kiln_model;
typedef struct kiln_call kiln_call;
typedef struct kiln_status kiln_status;

typedef enum kiln_code {
  KILN_OK = 0,
  KILN_INVALID_ARGUMENT = 1, /* a null pointer, an unknown name, a bad shape */
  KILN_ERROR = 2,            /* anything else: a file, an artifact, a run */
  KILN_OUT_OF_MEMORY = 3
} kiln_code;

/* Element types (the runtime's own numbering). */
typedef enum kiln_dtype {
  KILN_F32 = 0,
  KILN_F16 = 1,
  KILN_BF16 = 2,
  KILN_F64 = 3,
  KILN_I32 = 4,
  KILN_I64 = 5,
  KILN_BOOL = 6,
  KILN_U8 = 7,
  KILN_I8 = 8
} kiln_dtype;

KILN_API int kiln_abi_version(void);

KILN_API kiln_code kiln_status_code(const kiln_status *status);
/* The message ("forward: input 'tokens' is i32[1, 9], expected ..."); valid
 * until the status is freed. */
KILN_API const char *kiln_status_message(const kiln_status *status);
KILN_API void kiln_status_free(kiln_status *status);

/* Opens an artifact (.kart) from a file, or from `size` bytes at `data`
 * (copied; an artifact with external weights names its file relative to
 * the working directory then). */
KILN_API kiln_status *kiln_model_open(const char *path, kiln_model **out);
KILN_API kiln_status *kiln_model_open_memory(const void *data, size_t size,
                                             kiln_model **out);
/* Frees the model; its calls must be freed first. NULL is ignored. */
KILN_API void kiln_model_free(kiln_model *model);
/* Threads for this model's runs; 0: one per core. */
KILN_API void kiln_model_set_threads(kiln_model *model, int threads);

/* The functions (forward, loss, ...) and their signatures. Strings stay
 * valid while the model lives. */
KILN_API size_t kiln_model_function_count(const kiln_model *model);
/* NULL when `index` is out of range. */
KILN_API const char *kiln_model_function_name(const kiln_model *model,
                                              size_t index);

/* An input or output: its name, element type and dimensions, each a size
 * ("768") or a symbol bound when the function runs ("B", "T"). */
typedef struct kiln_arg {
  const char *name;
  kiln_dtype dtype;
  size_t rank;
  const char *const *dims;
} kiln_arg;
KILN_API kiln_status *kiln_model_input(const kiln_model *model,
                                       const char *function, size_t index,
                                       size_t *count, kiln_arg *arg);
KILN_API kiln_status *kiln_model_output(const kiln_model *model,
                                        const char *function, size_t index,
                                        size_t *count, kiln_arg *arg);

/* A call: a function with its inputs bound, run as often as needed. */
KILN_API kiln_status *kiln_call_create(kiln_model *model, const char *function,
                                       kiln_call **out);
/* Binds input `name` to the caller's buffer, without a copy: `data` must
 * hold the shape's elements of `dtype` and stay untouched until the runs
 * that read it return. Binding a name again replaces it. */
KILN_API kiln_status *kiln_call_bind(kiln_call *call, const char *name,
                                     kiln_dtype dtype, const int64_t *shape,
                                     size_t rank, const void *data);
KILN_API kiln_status *kiln_call_run(kiln_call *call);

/* A result: valid until the call runs again or is freed. */
typedef struct kiln_tensor {
  kiln_dtype dtype;
  size_t rank;
  const int64_t *shape;
  const void *data;
  size_t bytes;
} kiln_tensor;
KILN_API size_t kiln_call_output_count(const kiln_call *call);
KILN_API kiln_status *kiln_call_output(const kiln_call *call, size_t index,
                                       kiln_tensor *out);
KILN_API void kiln_call_free(kiln_call *call);

/* Weights as .safetensors: every parameter with its exact shape. Loading
 * waits for the runs in flight and holds back new ones meanwhile. */
KILN_API kiln_status *kiln_model_load_weights(kiln_model *model,
                                              const char *path);
KILN_API kiln_status *kiln_model_save_weights(const kiln_model *model,
                                              const char *path);

/* Text generation with a decoder model (forward: tokens -> logits). */
typedef struct kiln_generate_options {
  size_t struct_size; /* sizeof(kiln_generate_options), set by _init */
  int64_t max_tokens; /* 16 */
  double temperature; /* 1.0; 0: greedy */
  int64_t top_k;      /* 0: all */
  double top_p;       /* 1.0 */
  uint64_t seed;      /* 0 */
} kiln_generate_options;
KILN_API void kiln_generate_options_init(kiln_generate_options *options);
/* Continues `prompt` (token ids) with up to `capacity` (and max_tokens)
 * new tokens into `out`; `produced` gets their number. Stops at the
 * tokenizer's end-of-text token, when the artifact has a tokenizer. */
KILN_API kiln_status *kiln_generate(kiln_model *model, const int32_t *prompt,
                                    size_t prompt_length,
                                    const kiln_generate_options *options,
                                    int32_t *out, size_t capacity,
                                    size_t *produced);

/* Text <-> token ids with the artifact's tokenizer. `ids`/`text` of
 * `capacity` receive up to capacity entries (text: bytes, NUL-terminated
 * when there is room); `needed` gets the full count either way, so a
 * caller may ask first with capacity 0. */
KILN_API kiln_status *kiln_encode(const kiln_model *model, const char *text,
                                  int32_t *ids, size_t capacity,
                                  size_t *needed);
KILN_API kiln_status *kiln_decode(const kiln_model *model, const int32_t *ids,
                                  size_t count, char *text, size_t capacity,
                                  size_t *needed);

#ifdef __cplusplus
}
#endif

#endif /* KILN_KILN_H */
