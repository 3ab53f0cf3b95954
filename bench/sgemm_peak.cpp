//===- sgemm_peak.cpp - the machine's measured f32 GEMM peak
//---------------===//
//
// oneDNN's f32 matmul at large square sizes (default 1024, 2048, 4096), the
// best of several runs each; bench/performance.py expresses kiln's useful
// FLOP rate as a fraction of the best of these. Prints one JSON object.
//
//   kiln-sgemm-peak [N ...]
//
//===----------------------------------------------------------------------===//
#include <dnnl.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char **argv) {
  std::vector<long> sizes;
  for (int i = 1; i < argc; ++i) {
    char *end = nullptr;
    long n = std::strtol(argv[i], &end, 10);
    if (!end || *end || n <= 0 || n > 16384) {
      std::fprintf(stderr,
                   "kiln-sgemm-peak: '%s' is not a size in [1, 16384]\n",
                   argv[i]);
      return 2;
    }
    sizes.push_back(n);
  }
  if (sizes.empty())
    sizes = {1024, 2048, 4096};
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  std::printf("{\"sizes\": [");
  double best = 0;
  for (size_t s = 0; s < sizes.size(); ++s) {
    long n = sizes[s];
    dnnl::memory::desc md({n, n}, dnnl::memory::data_type::f32,
                          dnnl::memory::format_tag::ab);
    dnnl::matmul mm(
        dnnl::matmul::primitive_desc(dnnl::matmul::desc(md, md, md), engine));
    dnnl::memory a(md, engine), b(md, engine), c(md, engine);
    for (dnnl::memory *m : {&a, &b}) {
      float *p = static_cast<float *>(m->get_data_handle());
      for (long i = 0; i < n * n; ++i)
        p[i] = static_cast<float>(i % 7) * 0.1f;
    }
    double fastest = 1e30;
    for (int r = 0; r < 6; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      mm.execute(stream,
                 {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
      stream.wait();
      double dt =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
              .count();
      if (r > 0 && dt < fastest) // the first run creates kernels
        fastest = dt;
    }
    double gflops = 2.0 * n * n * n / fastest / 1e9;
    best = gflops > best ? gflops : best;
    std::printf("%s{\"n\": %ld, \"gflops\": %.1f}", s ? ", " : "", n, gflops);
  }
  std::printf("], \"peak_gflops\": %.1f}\n", best);
  return 0;
}
