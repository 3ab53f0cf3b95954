//===- tokenizer.cpp - fuzz every tokenizer file format -------------------===//
//
// The first byte picks the format; the rest is the file (GPT-2's two files
// are split at the first "\n#--\n"). A tokenizer that loads then encodes
// and decodes a short text.
#include "runtime/Tokenizer.h"
#include "fuzz/Harness.h"

#include <filesystem>

using namespace kiln::runtime;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln::fuzz::AllocationBound bound(size, 64, size_t(1) << 20);
  if (size < 1)
    return 0;
  const uint8_t *body = data + 1;
  size_t n = size - 1;
  const std::string &dir = kiln::fuzz::scratch();
  std::error_code ignored;
  for (const char *f : {"tokenizer.bin", "tokenizer.model", "tokenizer.json",
                        "vocab.txt", "encoder.json", "vocab.bpe"})
    std::filesystem::remove(dir + "/" + f, ignored);
  Tokenizer tok;
  switch (data[0] % 5) {
  case 0:
    (void)Tokenizer::readLlama2c(
        kiln::fuzz::writeInput("tokenizer.bin", body, n), tok);
    break;
  case 1:
    kiln::fuzz::writeInput("tokenizer.model", body, n);
    (void)Tokenizer::load("sentencepiece:" + dir + "/tokenizer.model", tok);
    break;
  case 2:
    kiln::fuzz::writeInput("tokenizer.json", body, n);
    (void)Tokenizer::load(dir + "/tokenizer.json", tok);
    break;
  case 3:
    kiln::fuzz::writeInput("vocab.txt", body, n);
    (void)Tokenizer::load("wordpiece:" + dir + "/vocab.txt", tok);
    break;
  default: {
    std::string all(reinterpret_cast<const char *>(body), n);
    size_t cut = all.find("\n#--\n");
    std::string encoder = all.substr(0, cut),
                merges = cut == std::string::npos ? "" : all.substr(cut + 5);
    kiln::fuzz::writeInput("encoder.json",
                           reinterpret_cast<const uint8_t *>(encoder.data()),
                           encoder.size());
    kiln::fuzz::writeInput("vocab.bpe",
                           reinterpret_cast<const uint8_t *>(merges.data()),
                           merges.size());
    (void)Tokenizer::load("gpt2:" + dir, tok);
  }
  }
  if (tok.empty())
    return 0;
  std::vector<int32_t> ids;
  if (tok.encode("Hello, world! \xc3\xa9t\xc3\xa9 42", ids))
    (void)tok.decode(ids);
  return 0;
}
