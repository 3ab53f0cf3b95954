//===- QuantFormatsTest.cpp - quantized weight formats
//---------------------===//
//
// The parts of runtime/quant that NumPy cannot check from Python: the
// exact Python float layout of the NF4 quant state, the decision rules at
// their edges, and the bounds every reader applies. Bit-exactness against
// bitsandbytes' algorithm is test/python/test_quantize.py.
//
//===----------------------------------------------------------------------===//
#include "runtime/quant/Gemv.h"
#include "runtime/quant/Serialize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

using namespace kiln::runtime;
using namespace kiln::runtime::quant;

TEST(QuantFormats, PythonFloatRepr) {
  // Python 3: repr(x) for each.
  EXPECT_EQ(pythonFloatRepr(0.0), "0.0");
  EXPECT_EQ(pythonFloatRepr(-0.0), "-0.0");
  EXPECT_EQ(pythonFloatRepr(2.0), "2.0");
  EXPECT_EQ(pythonFloatRepr(0.1), "0.1");
  EXPECT_EQ(pythonFloatRepr(1e-05), "1e-05");
  EXPECT_EQ(pythonFloatRepr(0.0001), "0.0001");
  EXPECT_EQ(pythonFloatRepr(1.5e-05), "1.5e-05");
  EXPECT_EQ(pythonFloatRepr(123456.5), "123456.5");
  EXPECT_EQ(pythonFloatRepr(1e16), "1e+16");
  EXPECT_EQ(pythonFloatRepr(1234567890123456.0), "1234567890123456.0");
  EXPECT_EQ(pythonFloatRepr(-2.5e-07), "-2.5e-07");
  // The f32 value 0.1f seen as a double, as offset.item() gives it.
  EXPECT_EQ(pythonFloatRepr(static_cast<double>(0.1f)), "0.10000000149011612");
}

TEST(QuantFormats, Nf4CodesFollowTheThresholds) {
  EXPECT_EQ(nf4Code(-1.0f), 0);
  EXPECT_EQ(nf4Code(1.0f), 15);
  EXPECT_EQ(nf4Code(0.0f), 7);
  EXPECT_EQ(nf4Code(std::nanf("")), 0); // an all-zero block
  // A threshold itself stays below (bitsandbytes compares with >).
  EXPECT_EQ(nf4Code(0.03979014977812767f), 7);
  EXPECT_EQ(nf4Code(std::nextafter(0.03979014977812767f, 1.0f)), 8);
  for (int c = 0; c < 16; ++c)
    EXPECT_EQ(nf4Code(kNf4Levels[c]), c);
}

TEST(QuantFormats, DynamicMapIsAscendingAndSearchable) {
  const auto &map = dynamicMap();
  EXPECT_EQ(map[0], -map[254]);
  EXPECT_EQ(map[255], 1.0f);
  for (int i = 1; i < 256; ++i)
    EXPECT_LT(map[i - 1], map[i]) << i;
  for (int i = 0; i < 256; ++i)
    EXPECT_EQ(dynamicCode(map, map[i]), i) << i;
}

TEST(QuantFormats, RoundTripsWithinTheirSteps) {
  std::vector<float> w(6 * 70);
  for (size_t i = 0; i < w.size(); ++i)
    w[i] = std::sin(0.37f * i) * (1 + i % 5);
  Tensor t(DType::F32, {6, 70});
  std::memcpy(t.data(), w.data(), t.bytes());
  for (const char *spec :
       {"int8", "int4:group=14", "nf4", "nf4:double=false"}) {
    QuantSpec qs;
    std::string error;
    ASSERT_TRUE(parseQuantSpec(spec, qs, error)) << spec;
    QuantizedWeight q;
    ASSERT_TRUE(quantize(t, qs, q)) << spec;
    Tensor back;
    ASSERT_TRUE(dequantize(q, back)) << spec;
    ASSERT_EQ(back.shape(), t.shape());
    // Within half a step of each format's grid at this range (max |w| 5).
    double tol = qs.format == Format::Int8   ? 5.0 / 127 / 2 + 1e-6
                 : qs.format == Format::Int4 ? 10.0 / 15 / 2 + 1e-6
                                             : 5.0 * 0.33 / 2;
    for (int64_t i = 0; i < t.numel(); ++i)
      ASSERT_NEAR(back.as<float>()[i], w[i], tol) << spec << " at " << i;
    // Written and read back through the checkpoint names.
    NamedTensors named;
    appendTensors("h.0.w", q, named);
    std::map<std::string, const Tensor *> byName;
    for (auto &[n, x] : named)
      byName[n] = &x;
    EXPECT_TRUE(holdsQuantized("h.0.w", byName)) << spec;
    QuantizedWeight r;
    std::vector<std::string> used;
    ASSERT_TRUE(readQuantized("h.0.w", byName, r, &used)) << spec;
    EXPECT_EQ(used.size(), named.size()) << spec;
    Tensor again;
    ASSERT_TRUE(dequantize(r, again));
    EXPECT_EQ(std::memcmp(again.data(), back.data(), back.bytes()), 0) << spec;
  }
}

TEST(QuantFormats, SpecsAreCheckedWithReasons) {
  QuantSpec qs;
  std::string error;
  EXPECT_TRUE(parseQuantSpec("int4:group=128", qs, error));
  EXPECT_EQ(qs.group, 128);
  EXPECT_TRUE(parseQuantSpec("nf4:block=128,double=false", qs, error));
  EXPECT_EQ(qs.block, 128);
  EXPECT_FALSE(qs.doubleQuant);
  for (const char *bad :
       {"int3", "int4:group=7", "int4:group=0", "int4:group=x", "nf4:block=96",
        "nf4:block=32", "nf4:double=maybe", "int8:group=32", "nf4:blocks=64",
        "int4:group", "nf4:"}) {
    error.clear();
    EXPECT_FALSE(parseQuantSpec(bad, qs, error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
  // The canonical text reads back to the same spec.
  for (const char *text : {"int8", "int4", "int4:group=128", "nf4",
                           "nf4:block=256,double=false"}) {
    ASSERT_TRUE(parseQuantSpec(text, qs, error)) << text;
    QuantSpec again;
    ASSERT_TRUE(parseQuantSpec(formatQuantSpec(qs), again, error)) << text;
    EXPECT_EQ(again, qs) << text;
  }
}

TEST(QuantFormats, ReadersRefuseDamagedStates) {
  Tensor t(DType::F32, {4, 64});
  for (int64_t i = 0; i < t.numel(); ++i)
    t.as<float>()[i] = std::cos(0.1f * i);
  QuantSpec qs;
  QuantizedWeight q;
  ASSERT_TRUE(quantize(t, qs, q));
  NamedTensors named;
  appendTensors("w", q, named);
  auto readWith = [&](const std::string &json) {
    NamedTensors copy = named;
    for (auto &[n, x] : copy)
      if (n == "w.quant_state.bitsandbytes__nf4") {
        x = Tensor(DType::U8, {static_cast<int64_t>(json.size())});
        if (!json.empty()) // (an empty tensor has no data)
          std::memcpy(x.data(), json.data(), json.size());
      }
    std::map<std::string, const Tensor *> byName;
    for (auto &[n, x] : copy)
      byName[n] = &x;
    QuantizedWeight r;
    return readQuantized("w", byName, r, nullptr);
  };
  std::string good = nf4QuantStateJson(q.nf4, {4, 64});
  EXPECT_TRUE(readWith(good));
  struct Case {
    std::string json, expect;
  } cases[] = {
      {"", "at byte 0"},
      {"{\"quant_type\": \"nf4\"", "at byte 20"},
      {"[1, 2]", "expected '{'"},
      {good.substr(0, good.size() - 1) + ", \"blocksize\": 64}", "twice"},
      {good + "x", "after '}'"},
      {"{\"quant_type\": \"fp4\"}", "\"quant_type\" is \"fp4\""},
      {"{\"quant_type\": \"nf4\", \"dtype\": \"float32\", \"shape\": [4, 64], "
       "\"blocksize\": 96}",
       "not a power of two"},
      {"{\"quant_type\": \"nf4\", \"dtype\": \"float32\", \"shape\": [4, "
       "-64], \"blocksize\": 64}",
       "whole number"},
      {"{\"quant_type\": \"nf4\", \"dtype\": \"float32\", \"shape\": [4, 65], "
       "\"blocksize\": 64, \"nested_blocksize\": 256, \"nested_dtype\": "
       "\"float32\", \"nested_offset\": 0.5}",
       "expected u8[130, 1]"},
  };
  for (const Case &c : cases) {
    Status s = readWith(c.json);
    EXPECT_FALSE(s) << c.json;
    EXPECT_NE(s.message().find(c.expect), std::string::npos)
        << c.json << " -> " << s.message();
  }
}

/// The view the loader builds for `q` (an N x K weight); NF4's decoded
/// block scales go to `scales`.
QuantView viewOf(const QuantizedWeight &q, int64_t N, int64_t K,
                 std::vector<float> &scales) {
  QuantView v;
  v.format = q.format;
  v.rows = N;
  v.cols = K;
  if (q.format == Format::Int8) {
    v.codes = reinterpret_cast<const uint8_t *>(q.int8.q.data());
    v.scales = q.int8.scales.data();
  } else if (q.format == Format::Int4) {
    v.block = q.int4.group;
    v.codes = q.int4.packed.data();
    v.scales = q.int4.scales.data();
    v.zeros = q.int4.zeros.data();
  } else {
    v.block = q.nf4.blockSize;
    v.codes = q.nf4.packed.data();
    scales = q.nf4.blockScales();
    v.scales = scales.data();
  }
  return v;
}

TEST(QuantFormats, DecodingGemvMatchesTheDequantizedProduct) {
  // Rows of 128 and 192 values (NF4 blocks of 64 tile them; 192 in blocks
  // of 64 only), 1 to 4 rows of x, every ISA the CPU runs.
  for (int64_t K : {128, 192}) {
    const int64_t N = 37;
    Tensor w(DType::F32, {N, K});
    for (int64_t i = 0; i < w.numel(); ++i)
      w.as<float>()[i] = std::sin(0.7f * i) * (1 + i % 7) * 0.1f;
    // (int8 multiplies in integers instead: QuantMatmul.cpp.)
    for (const char *text :
         {"nf4", "nf4:double=false", "int4:group=32", "int4:group=64"}) {
      QuantSpec spec;
      std::string error;
      ASSERT_TRUE(parseQuantSpec(text, spec, error));
      QuantizedWeight q;
      ASSERT_TRUE(quantize(w, spec, q));
      Tensor dense;
      ASSERT_TRUE(dequantize(q, dense));
      std::vector<float> scales;
      QuantView v = viewOf(q, N, K, scales);
      for (attention::Isa isa : attention::supportedIsas())
        for (int64_t M = 1; M <= kGemvRows; ++M) {
          if (!gemvCovers(isa, v, M)) {
            EXPECT_EQ(isa, attention::Isa::Baseline);
            continue;
          }
          std::vector<float> x(static_cast<size_t>(M * K)), y(M * N);
          for (size_t i = 0; i < x.size(); ++i)
            x[i] = std::cos(0.3f * i);
          gemv(isa, v, M, x.data(), K, y.data(), N);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
              double want = 0;
              for (int64_t k = 0; k < K; ++k)
                want += double(x[m * K + k]) * dense.as<float>()[n * K + k];
              ASSERT_NEAR(y[m * N + n], want, 1e-5 * (1 + std::fabs(want)))
                  << text << " " << attention::isaName(isa) << " M=" << M
                  << " K=" << K << " n=" << n;
            }
        }
    }
  }
}

TEST(QuantFormats, VectorDecodingEqualsTheDequantizer) {
  const int64_t N = 9, K = 192;
  Tensor w(DType::F32, {N, K});
  for (int64_t i = 0; i < w.numel(); ++i)
    w.as<float>()[i] = std::cos(0.37f * i) * (1 + i % 5);
  for (const char *text : {"nf4", "int4:group=32", "int4:group=64"}) {
    QuantSpec spec;
    std::string error;
    ASSERT_TRUE(parseQuantSpec(text, spec, error));
    QuantizedWeight q;
    ASSERT_TRUE(quantize(w, spec, q));
    Tensor dense;
    ASSERT_TRUE(dequantize(q, dense));
    std::vector<float> scales;
    QuantView v = viewOf(q, N, K, scales);
    for (attention::Isa isa : attention::supportedIsas()) {
      std::vector<float> out(static_cast<size_t>((N - 2) * K), -1.0f);
      bool done = decodeRows(isa, v, 2, N, out.data(), K);
      EXPECT_EQ(done, isa != attention::Isa::Baseline) << text;
      if (!done)
        continue;
      EXPECT_EQ(std::memcmp(out.data(), dense.as<float>() + 2 * K,
                            out.size() * sizeof(float)),
                0)
          << text << " " << attention::isaName(isa);
    }
  }
}
