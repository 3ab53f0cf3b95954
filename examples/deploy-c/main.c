/* kiln-deploy-c: run a compiled model from plain C through kiln's C API.
 *
 *   kiln-deploy-c MODEL.kart FUNCTION NAME=TYPE:DIMS:FILE... [-o OUT]
 *                 [--concurrent=N] [--generate=N] [--load-weights=F]
 *                 [--save-weights=F]
 *
 * TYPE is i32, i64 or f32, DIMS like 2x4, FILE the raw little-endian
 * elements. Opens the artifact from its file and again from memory, prints
 * the functions and their signatures, binds the inputs to the buffers read
 * (no copies), runs FUNCTION and writes its first result's raw bytes to OUT.
 * --concurrent=N then runs it from N threads at once, each with its own
 * call on the one model, and checks every result equals the first run's
 * byte for byte (exit status 3 if not). --generate=N continues the first
 * input's first row by N greedy tokens and prints them. --load-weights=F
 * replaces the weights with F's (.safetensors) before running;
 * --save-weights=F writes them at the end.
 */
#include <kiln/kiln.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INPUTS 16

typedef struct input {
  char name[64];
  kiln_dtype dtype;
  int64_t shape[8];
  size_t rank;
  void *data;
} input;

static input inputs[MAX_INPUTS];
static size_t ninputs;
static kiln_model *model;
static const char *function;
static const void *first;
static size_t firstBytes;

/* Prints a failed status and frees it; returns 1 for main's exit status. */
static int failed(kiln_status *s) {
  fprintf(stderr, "kiln-deploy-c: error: %s\n", kiln_status_message(s));
  kiln_status_free(s);
  return 1;
}

static void *readFile(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  void *data = NULL;
  if (fseek(f, 0, SEEK_END) == 0) {
    long n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) {
      data = malloc(n ? (size_t)n : 1);
      if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
      }
      *size = (size_t)n;
    }
  }
  fclose(f);
  return data;
}

/* NAME=TYPE:DIMS:FILE */
static int parseInput(const char *arg, input *in) {
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof in->name)
    return 0;
  memcpy(in->name, arg, (size_t)(eq - arg));
  in->name[eq - arg] = 0;
  const char *type = eq + 1;
  size_t width;
  if (strncmp(type, "i32:", 4) == 0) {
    in->dtype = KILN_I32;
    width = 4;
  } else if (strncmp(type, "i64:", 4) == 0) {
    in->dtype = KILN_I64;
    width = 8;
  } else if (strncmp(type, "f32:", 4) == 0) {
    in->dtype = KILN_F32;
    width = 4;
  } else {
    return 0;
  }
  const char *p = type + 4;
  size_t elements = 1;
  in->rank = 0;
  while (*p && *p != ':') {
    char *end;
    long long d = strtoll(p, &end, 10);
    if (end == p || d < 0 || in->rank == 8)
      return 0;
    in->shape[in->rank++] = d;
    elements *= (size_t)d;
    p = *end == 'x' ? end + 1 : end;
  }
  if (*p != ':')
    return 0;
  size_t size = 0;
  in->data = readFile(p + 1, &size);
  if (!in->data || size != elements * width) {
    fprintf(stderr, "kiln-deploy-c: error: %s: expected %zu bytes\n", p + 1,
            elements * width);
    free(in->data);
    in->data = NULL;
    return 0;
  }
  return 1;
}

/* Frees the inputs read so far and returns `code` (a usage error). */
static int badArguments(int code) {
  for (size_t i = 0; i < ninputs; ++i)
    free(inputs[i].data);
  return code;
}

/* Binds every input to `call` and runs it. */
static kiln_status *runOnce(kiln_call *call) {
  for (size_t i = 0; i < ninputs; ++i) {
    kiln_status *s =
        kiln_call_bind(call, inputs[i].name, inputs[i].dtype, inputs[i].shape,
                       inputs[i].rank, inputs[i].data);
    if (s)
      return s;
  }
  return kiln_call_run(call);
}

static void *worker(void *arg) {
  int *mismatch = arg;
  kiln_call *call = NULL;
  kiln_status *s = kiln_call_create(model, function, &call);
  for (int round = 0; !s && round < 3; ++round) {
    s = runOnce(call);
    kiln_tensor t;
    if (!s)
      s = kiln_call_output(call, 0, &t);
    if (!s && (t.bytes != firstBytes || memcmp(t.data, first, t.bytes) != 0))
      *mismatch = 1;
  }
  if (s) {
    fprintf(stderr, "kiln-deploy-c: thread: %s\n", kiln_status_message(s));
    kiln_status_free(s);
    *mismatch = 1;
  }
  kiln_call_free(call);
  return NULL;
}

static void printArg(const char *kind, const kiln_arg *a) {
  static const char *types[] = {"f32", "f16",  "bf16", "f64", "i32",
                                "i64", "bool", "u8",   "i8"};
  printf("  %s %s: %s[", kind, a->name, types[a->dtype]);
  for (size_t d = 0; d < a->rank; ++d)
    printf("%s%s", d ? ", " : "", a->dims[d]);
  printf("]\n");
}

int main(int argc, char **argv) {
  if (kiln_abi_version() != KILN_ABI_VERSION) {
    fprintf(stderr, "kiln-deploy-c: libkiln has ABI %d, built for %d\n",
            kiln_abi_version(), KILN_ABI_VERSION);
    return 1;
  }
  if (argc < 3) {
    fprintf(stderr, "usage: kiln-deploy-c MODEL.kart FUNCTION "
                    "NAME=TYPE:DIMS:FILE... [-o OUT] [--concurrent=N] "
                    "[--generate=N]\n");
    return 2;
  }
  function = argv[2];
  const char *output = NULL, *loadWeights = NULL, *saveWeights = NULL;
  int concurrent = 0, generate = 0;
  for (int i = 3; i < argc; ++i) {
    if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
      output = argv[++i];
    } else if (strncmp(argv[i], "--concurrent=", 13) == 0) {
      concurrent = atoi(argv[i] + 13);
      if (concurrent < 1 || concurrent > 64) {
        fprintf(stderr, "kiln-deploy-c: error: --concurrent expects 1..64\n");
        return badArguments(2);
      }
    } else if (strncmp(argv[i], "--load-weights=", 15) == 0) {
      loadWeights = argv[i] + 15;
    } else if (strncmp(argv[i], "--save-weights=", 15) == 0) {
      saveWeights = argv[i] + 15;
    } else if (strncmp(argv[i], "--generate=", 11) == 0) {
      generate = atoi(argv[i] + 11);
      if (generate < 1 || generate > 4096) {
        fprintf(stderr, "kiln-deploy-c: error: --generate expects 1..4096\n");
        return badArguments(2);
      }
    } else if (ninputs == MAX_INPUTS ||
               !parseInput(argv[i], &inputs[ninputs++])) {
      fprintf(stderr,
              "kiln-deploy-c: error: expected NAME=TYPE:DIMS:FILE, "
              "got '%s'\n",
              argv[i]);
      return badArguments(2);
    }
  }

  /* Everything below ends at `done`, which frees what was made. */
  int status = 0;
  kiln_call *call = NULL;
  kiln_status *s = kiln_model_open(argv[1], &model);
  if (s) {
    status = failed(s);
    goto done;
  }
  /* The same artifact from memory: the same functions. */
  size_t size = 0;
  void *bytes = readFile(argv[1], &size);
  kiln_model *again = NULL;
  s = bytes ? kiln_model_open_memory(bytes, size, &again) : NULL;
  free(bytes);
  if (s || !again ||
      kiln_model_function_count(again) != kiln_model_function_count(model)) {
    status = s ? failed(s) : 1;
    kiln_model_free(again);
    goto done;
  }
  kiln_model_free(again);

  for (size_t f = 0; f < kiln_model_function_count(model); ++f) {
    const char *name = kiln_model_function_name(model, f);
    size_t nin = 0, nout = 0;
    kiln_arg a;
    printf("fn %s\n", name);
    if ((s = kiln_model_input(model, name, 0, &nin, NULL)) ||
        (s = kiln_model_output(model, name, 0, &nout, NULL)))
      goto fail;
    for (size_t i = 0; i < nin; ++i) {
      if ((s = kiln_model_input(model, name, i, NULL, &a)))
        goto fail;
      printArg("in", &a);
    }
    for (size_t i = 0; i < nout; ++i) {
      if ((s = kiln_model_output(model, name, i, NULL, &a)))
        goto fail;
      printArg("out", &a);
    }
  }

  if (loadWeights && (s = kiln_model_load_weights(model, loadWeights)))
    goto fail;
  kiln_tensor result;
  if ((s = kiln_call_create(model, function, &call)) || (s = runOnce(call)) ||
      (s = kiln_call_output(call, 0, &result)))
    goto fail;
  printf("%s: %zu results; the first has %zu bytes\n", function,
         kiln_call_output_count(call), result.bytes);
  first = result.data;
  firstBytes = result.bytes;
  if (output) {
    FILE *f = fopen(output, "wb");
    int written = f && fwrite(result.data, 1, result.bytes, f) == result.bytes;
    if (f)
      fclose(f);
    if (!written) {
      fprintf(stderr, "kiln-deploy-c: error: cannot write %s\n", output);
      status = 1;
      goto done;
    }
  }

  if (concurrent) {
    pthread_t threads[64];
    int mismatch[64] = {0};
    for (int t = 0; t < concurrent; ++t)
      pthread_create(&threads[t], NULL, worker, &mismatch[t]);
    for (int t = 0; t < concurrent; ++t) {
      pthread_join(threads[t], NULL);
      if (mismatch[t])
        status = 3;
    }
    printf("%d threads: %s\n", concurrent,
           status ? "results differ" : "every result identical");
  }

  if (generate && ninputs && inputs[0].dtype == KILN_I32 &&
      inputs[0].rank == 2) {
    int32_t *out = malloc((size_t)generate * sizeof *out);
    size_t produced = 0;
    kiln_generate_options o;
    kiln_generate_options_init(&o);
    o.max_tokens = generate;
    o.temperature = 0;
    s = out ? kiln_generate(model, inputs[0].data, (size_t)inputs[0].shape[1],
                            &o, out, (size_t)generate, &produced)
            : NULL;
    if (!s && out) {
      printf("generated:");
      for (size_t i = 0; i < produced; ++i)
        printf(" %d", out[i]);
      printf("\n");
    }
    free(out);
    if (s)
      goto fail;
  }
  if (saveWeights && (s = kiln_model_save_weights(model, saveWeights)))
    goto fail;
  goto done;

fail:
  status = failed(s);
done:
  kiln_call_free(call);
  kiln_model_free(model);
  for (size_t i = 0; i < ninputs; ++i)
    free(inputs[i].data);
  return status;
}
