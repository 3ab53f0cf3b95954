//===- Trainer.h - training steps on a compiled gradient function -*- C++
//-*-===//
//
// A training step runs the artifact's compiled gradient function (`loss_grad`,
// made by `kiln compile --grad=loss`: the forward pass, the backward pass and
// the loss) on each micro-batch with dropout active, averages the gradients,
// clips them by their global norm and updates the model's parameters in place
// with AdamW or SGD with momentum at the scheduled learning rate.
//
//   std::unique_ptr<Trainer> t;
//   Trainer::create(*model, config, t);
//   StepStats st;
//   t->step({{{"tokens", x}, {"targets", y}}}, st);
//
// Everything is deterministic for a given seed and thread count.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_TRAINER_H
#define KILN_RUNTIME_TRAINER_H

#include "runtime/Communicator.h"
#include "runtime/Model.h"
#include "runtime/Safetensors.h"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kiln::runtime {

struct TrainConfig {
  /// The loss function; the artifact must also hold `<loss>_grad`.
  std::string loss = "loss";
  /// "adamw" (decoupled weight decay, as torch.optim.AdamW) or "sgd" (with
  /// momentum and coupled weight decay, as torch.optim.SGD).
  std::string optimizer = "adamw";
  double lr = 1e-3;
  /// Linear warmup over `warmupSteps` updates, then a cosine decay to
  /// `lr * minLrRatio` at `totalSteps`; constant afterwards.
  int64_t warmupSteps = 0;
  int64_t totalSteps = 1;
  double minLrRatio = 0.1;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double momentum = 0.9;
  /// Applied to parameters of rank >= 2 only (matrices and embeddings, not
  /// biases or norm weights).
  double weightDecay = 0.0;
  /// Global-norm gradient clipping; <= 0 turns it off.
  double clipNorm = 1.0;
  /// Seeds dropout: step s, micro-batch m draws from (seed, s, m).
  uint64_t seed = 0;
  /// Run the artifact's compiled `train_step` (kiln-train-step: forward,
  /// backward, global norm and kiln.optimizer_update ops, compiled with
  /// these same settings) for single-micro-batch steps, instead of
  /// `<loss>_grad` followed by the update on the host. Both give
  /// bit-identical results.
  bool compiledStep = false;
  /// Keep the optimizer's moments in this file (created or truncated, then
  /// memory-mapped) instead of RAM, so they can be paged out; empty: RAM.
  /// Data parallel: each rank its own file, this path + ".rank<r>".
  std::string optimizerStateFile;
  /// Data parallelism across the communicator's ranks (null, or one rank:
  /// this process alone; docs/distributed.md). Every rank runs the same
  /// steps on its own micro-batches: rank r's k-th micro-batch of a step
  /// is micro-batch k * N + r of the step as one process would run it (its
  /// dropout draws follow that index). The gradients are averaged over all
  /// of them by all-reduce, the loss over all of them in that order, and
  /// every rank applies the same update, so the weights stay identical:
  /// bit for bit one process accumulating the N micro-batches, with or without
  /// accumulation (the gradients are reduced after every micro-batch,
  /// overlapping the next one, in one process's order). Trainer::create starts
  /// every rank from rank 0's trainable weights. Steps use `<loss>_grad` and
  /// the host update (a compiled train_step has no all-reduce in it).
  std::shared_ptr<Communicator> communicator;
  /// ZeRO stage, with more than one rank. 0: every rank keeps all of the
  /// optimizer state. 1: the trainable parameters split into one
  /// contiguous shard per rank, and a rank keeps the optimizer moments of
  /// its shard only, updates only its shard (after a reduce-scatter of the
  /// gradients) and all-gathers the updated weights. 2: the gradients that
  /// accumulate over a step's micro-batches are sharded too (a
  /// reduce-scatter after every micro-batch). The results are those of
  /// stage 0 bit for bit; checkpoints hold the whole state whatever the
  /// stage and rank count.
  int zero = 0;
  /// Data parallel: start reducing each bucket of gradients as soon as the
  /// backward pass has computed it (RunOptions::outputReady), overlapping
  /// the rest of the backward pass; false: once the micro-batch's call
  /// returns (overlapping the next micro-batch only). The same results
  /// either way.
  bool overlapReductions = true;
  /// Data parallel: the most floats a bucket of gradients holds (a larger
  /// parameter has one of its own); 0: an eighth of the gradients, between
  /// 64 Ki and 4 Mi floats.
  size_t bucketFloats = 0;
};

struct StepStats {
  double loss = 0;     // mean over the micro-batches (of every rank)
  double lr = 0;       // the rate this update used
  double gradNorm = 0; // global norm before clipping
  /// Data parallel: seconds this rank waited for the gradients' reductions
  /// (what the computation did not hide) and, with ZeRO, for the all-gather
  /// of the updated weights; and the gradient bytes it reduced.
  double allReduceSeconds = 0;
  uint64_t allReduceBytes = 0;
  /// Data parallel: reductions (of buckets of gradients) and how many of
  /// them started while their micro-batch's backward pass was still
  /// running.
  int64_t reductions = 0, reductionsInBackward = 0;
};

class ParameterLayout;
class GradientReducer;

class Trainer {
public:
  static Status create(Model &model, const TrainConfig &config,
                       std::unique_ptr<Trainer> &out);
  ~Trainer();

  /// The learning rate of update `step` (0-based).
  double learningRate(int64_t step) const;

  /// One update from the given micro-batches (gradient accumulation when
  /// there are several); each maps the loss function's input names to
  /// tensors.
  Status step(const std::vector<std::map<std::string, Tensor>> &microBatches,
              StepStats &stats);

  /// Fills micro-batch `index` of a step into `batch`, which is reused from
  /// one micro-batch to the next.
  using MicroBatchSource = std::function<Status(
      int64_t index, std::map<std::string, Tensor> &batch)>;
  /// One update from `count` micro-batches made one at a time as they run:
  /// memory does not grow with the accumulation count.
  Status step(int64_t count, const MicroBatchSource &next, StepStats &stats);

  /// What training takes, for micro-batches whose symbolic dimensions
  /// are `dims` (e.g. {"B": 8, "T": 64}), from the plan: the step
  /// function's arena, and the weights, gradients and optimizer state.
  struct MemoryEstimate {
    uint64_t activations = 0; // the step's and the evaluation's arenas
    uint64_t state = 0;       // weights, gradients, optimizer moments
    uint64_t total() const { return activations + state; }
  };
  Status estimateMemory(const std::map<std::string, int64_t> &dims,
                        int64_t accumulate, MemoryEstimate &out);
  /// estimateMemory, refused with the numbers when it exceeds this
  /// machine's memory: checked before the first step, so a batch too large
  /// is an error rather than an abort minutes in.
  Status checkMemory(const std::map<std::string, int64_t> &dims,
                     int64_t accumulate);

  /// The loss on a batch in inference mode (dropout off).
  Status evaluate(const std::map<std::string, Tensor> &batch, double &loss);

  /// Updates done so far (restored by loadOptimizer).
  int64_t stepCount() const { return step_; }

  /// Bytes of optimizer moments this process holds: with ZeRO, its shard's.
  uint64_t optimizerStateBytes() const;
  /// The trainable parameters' elements, in parameter order, that this
  /// process updates: [first, second) (all of them without ZeRO). Shards
  /// start at kSquareSumChunk boundaries within a parameter, so that the
  /// global norm adds the same partial sums in the same order as one
  /// process does.
  std::pair<size_t, size_t> shardRange() const;

  /// Optimizer state as tensors named "<kind>/<parameter>" (exp_avg,
  /// exp_avg_sq for AdamW; momentum for SGD) plus "step". Data parallel:
  /// every rank calls it (ZeRO gathers the shards), rank 0 writes, all
  /// return its status.
  Status saveOptimizer(const std::string &path) const;
  Status loadOptimizer(const std::string &path);

  /// Copies weights from a .safetensors file into the model; every
  /// parameter must be present with its exact shape.
  Status loadWeights(const std::string &path);

  /// Writes a checkpoint directory `parent/step-NNNNNNNN` atomically (see
  /// File.h): model.safetensors, optimizer.safetensors and
  /// trainer_state.json with the caller's `stateJson`; keeps the newest
  /// `keep`. `kiln train` and the Python Trainer both use it. Data
  /// parallel: every rank calls it, rank 0 writes, all return its status.
  Status saveCheckpoint(const std::string &parent, const std::string &stateJson,
                        int keep);
  /// Restores the model's weights and the optimizer state from a checkpoint
  /// directory; checks that the two agree on the step.
  Status loadCheckpoint(const std::string &dir);

private:
  Trainer(Model &model, const TrainConfig &config);
  UpdateRule ruleFor(double lr) const;

  Model &model_;
  TrainConfig config_;
  int64_t step_ = 0;
  bool haveTrainStep_ = false;
  std::vector<size_t> sizes_;             // elements per parameter
  std::vector<int> gradIndex_;            // loss_grad's result (-1: frozen)
  std::vector<std::vector<float>> grads_; // accumulated micro-batch grads
  std::vector<Tensor> out_;               // loss_grad's results, reused
  // The trainable parameters end to end (runtime/train/GradientReducer.h);
  // data parallel: sharded with ZeRO, and the gradients' reductions.
  std::unique_ptr<ParameterLayout> layout_;
  int ranks_ = 1;
  std::unique_ptr<GradientReducer> reducer_;
  std::vector<int> paramOf_; // loss_grad's result -> parameter (-1: loss)
  std::vector<float> gatherStage_;
  /// Checks that the ranks hold the same model and starts them from rank
  /// 0's trainable weights; plans the shards with ZeRO.
  Status joinRanks();
  int rank() const;
  /// ZeRO: every rank's updated shard of the weights onto every rank.
  Status gatherParameters();
  /// The optimizer state as saveOptimizer writes it (rank 0's copy only
  /// with ZeRO, which gathers it).
  Status optimizerTensors(NamedTensors &out) const;
  /// Runs `write` on rank 0 only when data parallel, and gives every rank
  /// its status.
  Status onRankZero(const std::function<Status()> &write,
                    const std::string &what) const;
  /// saveCheckpoint's files, written by this process.
  Status writeCheckpoint(const std::string &parent,
                         const std::string &stateJson, int keep,
                         const NamedTensors &optimizer);
  /// The data-parallel step: averages over the ranks' micro-batches.
  Status parallelStep(int64_t count, const MicroBatchSource &next,
                      StepStats &stats);
  /// The update from gradients `grad` (one per parameter, of the elements
  /// this rank owns; null: none), with their global norm and clipping;
  /// fills stats.lr and gradNorm.
  Status update(const std::vector<const float *> &grad, StepStats &stats);
};

} // namespace kiln::runtime

#endif
