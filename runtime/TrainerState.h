//===- TrainerState.h - a checkpoint's trainer_state.json -------*- C++ -*-===//
//
// A checkpoint directory (docs/training.md) holds the weights
// (model.safetensors), the optimizer state (optimizer.safetensors) and
// trainer_state.json: where the run is (the step, the data sampler's state)
// and what a resume must agree with (seed, batch, tokenizer, optimizer, the
// run's settings). `kiln train --resume` and the checkpoint fuzz harness
// read it through here.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_TRAINERSTATE_H
#define KILN_RUNTIME_TRAINERSTATE_H

#include "runtime/Json.h"

#include <cstdint>
#include <optional>
#include <string>

namespace kiln::runtime {

/// Largest trainer_state.json kiln reads.
constexpr uint64_t kMaxTrainerStateBytes = 16u << 20;

struct TrainerState {
  std::string dir;  // the checkpoint directory
  std::string path; // the file it was read from (dir/trainer_state.json)
  JsonValue json;
  int64_t step = 0;     // updates done
  uint64_t dataRng = 0; // the data sampler's state after them
  /// A field as text: strings as they are, integers in decimal, other
  /// numbers rounded; "an object" and the like for other kinds; nullopt
  /// when absent.
  std::optional<std::string> field(const char *key) const;
};

/// Reads `dir`/trainer_state.json and checks that it says where the run is
/// ('step' a non-negative integer, 'data_rng' an unsigned 64-bit one, each
/// an integer JSON number or a decimal string) and that 'settings', if
/// present, is an object.
Status readTrainerState(const std::string &dir, TrainerState &state);

/// The trainer state of the newest checkpoint in `parent` (the one
/// `parent/latest` names). `found` is false, with an ok status, only when
/// there is no checkpoint yet (no `latest`); a `latest` that is there but
/// cannot be read, names no checkpoint, or names one whose state is bad is
/// an error, never "start over": a run that started over would write its
/// checkpoints over the old ones.
Status readLatestTrainerState(const std::string &parent, TrainerState &state,
                              bool &found);

/// `text` as a decimal integer: digits only (a leading '-' for the signed
/// one), no overflow.
bool parseDecimal(const std::string &text, int64_t &value);
bool parseDecimal(const std::string &text, uint64_t &value);

} // namespace kiln::runtime

#endif
