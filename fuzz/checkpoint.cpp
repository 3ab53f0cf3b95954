//===- checkpoint.cpp - fuzz resuming from a checkpoint directory ---------===//
//
// A whole checkpoint directory, as `kiln train --resume` reads it: `latest`,
// then trainer_state.json, model.safetensors and optimizer.safetensors of
// the checkpoint it names, loaded into a small trainable model
// (fuzz/models/train.kart, AdamW). The input holds the four files one after
// another, split by kPartMarker (fuzz/make-corpus.py writes real
// checkpoints so).
#include "fuzz/Harness.h"
#include "runtime/File.h"
#include "runtime/Model.h"
#include "runtime/Trainer.h"
#include "runtime/TrainerState.h"

#include <cstdlib>
#include <filesystem>
#include <string_view>

using namespace kiln::runtime;

namespace {

constexpr std::string_view kPartMarker = "\n--kiln-fuzz-file--\n";

struct Fixture {
  std::unique_ptr<Model> model;
  std::unique_ptr<Trainer> trainer;
  Fixture() {
    const char *path = std::getenv("KILN_FUZZ_TRAIN_MODEL");
    std::string p = path ? path : KILN_FUZZ_SOURCE_DIR "/models/train.kart";
    if (!Model::load(p, model)) {
      std::fprintf(stderr, "checkpoint harness: cannot load %s\n", p.c_str());
      std::abort();
    }
    model->setThreads(1);
    TrainConfig config;
    if (!Trainer::create(*model, config, trainer)) {
      std::fprintf(stderr, "checkpoint harness: no trainer for %s\n",
                   p.c_str());
      std::abort();
    }
  }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static Fixture fixture; // (its model is not the input's doing)
  kiln::fuzz::AllocationBound bound(size, 8, size_t(1) << 20);
  std::string_view in(reinterpret_cast<const char *>(data), size);
  std::string_view parts[4];
  for (int i = 0; i < 4; ++i) {
    size_t end = i < 3 ? in.find(kPartMarker) : in.npos;
    parts[i] = in.substr(0, end);
    in = end == in.npos ? std::string_view()
                        : in.substr(end + kPartMarker.size());
  }
  const std::string parent = kiln::fuzz::scratch() + "/ck";
  std::error_code ignored;
  std::filesystem::remove_all(parent, ignored);
  std::filesystem::create_directories(parent + "/step-00000002");
  auto put = [&](const std::string &name, std::string_view bytes) {
    kiln::fuzz::writeInput(
        name, reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
  };
  put("ck/latest", parts[0]);
  put("ck/step-00000002/trainer_state.json", parts[1]);
  put("ck/step-00000002/model.safetensors", parts[2]);
  put("ck/step-00000002/optimizer.safetensors", parts[3]);
  TrainerState state;
  bool found = false;
  if (!readLatestTrainerState(parent, state, found) || !found)
    return 0;
  (void)fixture.trainer->loadCheckpoint(state.dir);
  return 0;
}
