/* The weight reads of one decoding step of a Llama, as a plain C decoder
 * with OpenMP does them (llama2.c's matmul: one `omp parallel for` over the
 * output rows of each product, a scalar dot product that the compiler
 * vectorizes under -Ofast -march=native). bench/decoding.py compiles and
 * runs it beside kiln: its rate is what memory allows a straightforward
 * program on this machine, the practical ceiling beside the bandwidth limit.
 *
 *   plain_matvec DIM HIDDEN LAYERS KV_DIM VOCAB REPS
 *
 * prints the mean, the best and the median seconds of REPS steps (every
 * layer's seven products and the classifier; no attention, norms or
 * activations).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* y[n] = w[n, :] . x for n < N, as llama2.c's matmul. */
static void matmul(float *y, const float *x, const float *w, int K, int N) {
  int n;
#pragma omp parallel for private(n)
  for (n = 0; n < N; n++) {
    float s = 0.0f;
    for (int k = 0; k < K; k++)
      s += w[(size_t)n * K + k] * x[k];
    y[n] = s;
  }
}

static float *matrix(size_t n, unsigned seed) {
  float *m = malloc(n * sizeof(float));
  if (!m) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    m[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
  }
  return m;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr,
            "usage: plain_matvec DIM HIDDEN LAYERS KV_DIM VOCAB REPS\n");
    return 2;
  }
  int d = atoi(argv[1]), h = atoi(argv[2]), L = atoi(argv[3]);
  int kv = atoi(argv[4]), V = atoi(argv[5]), reps = atoi(argv[6]);
  if (d <= 0 || h <= 0 || L <= 0 || kv <= 0 || V <= 0 || reps <= 0 ||
      L > 1024 || reps > 100000) {
    fprintf(stderr, "plain_matvec: bad arguments\n");
    return 2;
  }
  float **wq = malloc(L * sizeof(float *)), **wk = malloc(L * sizeof(float *)),
        **wv = malloc(L * sizeof(float *)), **wo = malloc(L * sizeof(float *)),
        **w1 = malloc(L * sizeof(float *)), **w2 = malloc(L * sizeof(float *)),
        **w3 = malloc(L * sizeof(float *));
  for (int l = 0; l < L; l++) {
    wq[l] = matrix((size_t)d * d, 7 * l + 1);
    wk[l] = matrix((size_t)kv * d, 7 * l + 2);
    wv[l] = matrix((size_t)kv * d, 7 * l + 3);
    wo[l] = matrix((size_t)d * d, 7 * l + 4);
    w1[l] = matrix((size_t)h * d, 7 * l + 5);
    w2[l] = matrix((size_t)d * h, 7 * l + 6);
    w3[l] = matrix((size_t)h * d, 7 * l + 7);
  }
  float *cls = matrix((size_t)V * d, 99);
  float *x = matrix(h > d ? h : d, 5), *y = malloc(sizeof(float) * V);
  double *t = malloc(sizeof(double) * reps);
  for (int r = -1; r < reps; r++) { /* r = -1 warms up */
    double t0 = now();
    for (int l = 0; l < L; l++) {
      matmul(y, x, wq[l], d, d);
      matmul(y, x, wk[l], d, kv);
      matmul(y, x, wv[l], d, kv);
      matmul(y, x, wo[l], d, d);
      matmul(y, x, w1[l], d, h);
      matmul(y, x, w3[l], d, h);
      matmul(y, x, w2[l], h, d);
    }
    matmul(y, x, cls, d, V);
    if (r >= 0)
      t[r] = now() - t0;
  }
  double sum = 0;
  for (int r = 0; r < reps; r++)
    sum += t[r];
  qsort(t, reps, sizeof(double), cmp);
  printf("%.9f %.9f %.9f %g\n", sum / reps, t[0], t[reps / 2], y[0]);
  return 0;
}
