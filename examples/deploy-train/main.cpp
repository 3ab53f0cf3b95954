// kiln-deploy-train: fine-tune a compiled model from a C++ program that
// links only the kiln runtime (kiln::runtime), on one process or, under
// mpirun, data parallel across processes and machines (kiln::mpi).
//
//   kiln compile model.kiln --grad=loss -o model.kart
//   kiln-deploy-train model.kart rows.npy --steps=N --batch=B
//                     [--micro-batch=M] -o trained.safetensors
//   mpirun -np 2 kiln-deploy-train ...    (the same weights, bit for bit)
//
// rows.npy holds token ids, int32 [R, T+1]. Step s trains on rows
// s*B ... s*B+B-1 (modulo R) with AdamW: inputs row[0:T], targets
// row[1:T+1], in micro-batches of M rows (default B; gradients accumulate
// over them). Under mpirun the micro-batches of a step are dealt to the
// ranks (rank r takes micro-batches r, r+N, ...), and the ranks' results
// are those of one process, bit for bit (docs/distributed.md).
#include "runtime/Communicator.h"
#include "runtime/Model.h"
#include "runtime/Npy.h"
#include "runtime/Trainer.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

using namespace kiln::runtime;

namespace {

int fail(const std::string &message) {
  std::cerr << "kiln-deploy-train: error: " << message << "\n";
  return 1;
}

bool number(const std::string &arg, const char *flag, int64_t &out) {
  size_t n = std::strlen(flag);
  if (arg.compare(0, n, flag) != 0)
    return false;
  char *end = nullptr;
  long long v = std::strtoll(arg.c_str() + n, &end, 10);
  out = (end && *end == 0 && v > 0 && v <= (1 << 20)) ? v : -1;
  return true;
}

} // namespace

int main(int argc, char **argv) {
  std::string artifact, rowsPath, output;
  int64_t steps = 0, batch = 0, micro = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    int64_t *flag = nullptr;
    int64_t value = 0;
    if (number(a, "--steps=", value))
      flag = &steps;
    else if (number(a, "--batch=", value))
      flag = &batch;
    else if (number(a, "--micro-batch=", value))
      flag = &micro;
    if (flag) {
      if (value < 0) {
        fail(a + ": expected an integer from 1 to 1048576");
        return 2;
      }
      *flag = value;
    } else if (a == "-o" && i + 1 < argc) {
      output = argv[++i];
    } else if (a[0] != '-' && artifact.empty()) {
      artifact = a;
    } else if (a[0] != '-' && rowsPath.empty()) {
      rowsPath = a;
    } else {
      std::cerr << "usage: kiln-deploy-train MODEL.kart ROWS.npy --steps=N "
                   "--batch=B [--micro-batch=M] -o OUT.safetensors\n";
      return 2;
    }
  }
  if (artifact.empty() || rowsPath.empty() || output.empty() || !steps ||
      !batch) {
    std::cerr << "usage: kiln-deploy-train MODEL.kart ROWS.npy --steps=N "
                 "--batch=B [--micro-batch=M] -o OUT.safetensors\n";
    return 2;
  }
  if (!micro)
    micro = batch;

  // One process, or the ranks mpirun started.
  std::shared_ptr<Communicator> comm = localCommunicator();
  if (launchedByMpi())
    if (Status s = openMpi(comm); !s)
      return fail(s.message());
  const int64_t ranks = comm->size(), rank = comm->rank();
  if (batch % micro || (batch / micro) % ranks)
    return fail("--batch=" + std::to_string(batch) + " must be a multiple of " +
                "--micro-batch=" + std::to_string(micro) + " times the " +
                std::to_string(ranks) + " ranks");

  std::unique_ptr<Model> model;
  if (Status s = Model::load(artifact, model); !s)
    return fail(s.message());
  Tensor rows;
  if (Status s = readNpy(rowsPath, rows); !s)
    return fail(s.message());
  if (rows.dtype() != DType::I32 || rows.shape().size() != 2 ||
      rows.shape()[1] < 2 || rows.shape()[0] < 1)
    return fail(rowsPath + ": expected int32 token ids [rows, T+1]");
  const int64_t R = rows.shape()[0], T = rows.shape()[1] - 1;

  TrainConfig config;
  config.lr = 1e-3;
  config.totalSteps = steps;
  config.communicator = comm;
  std::unique_ptr<Trainer> trainer;
  if (Status s = Trainer::create(*model, config, trainer); !s)
    return fail(s.message());

  // This rank's micro-batch k of step s is the step's micro-batch
  // k * ranks + rank (Trainer.h): rows taken in one process's order.
  const int64_t perRank = batch / micro / ranks;
  const int32_t *ids = static_cast<const int32_t *>(rows.data());
  for (int64_t s = 0; s < steps; ++s) {
    auto next = [&](int64_t k, std::map<std::string, Tensor> &mb) -> Status {
      Tensor &x = mb["tokens"], &y = mb["targets"];
      if (x.shape() != std::vector<int64_t>{micro, T}) {
        x = Tensor(DType::I32, {micro, T});
        y = Tensor(DType::I32, {micro, T});
      }
      int64_t first = s * batch + (k * ranks + rank) * micro;
      for (int64_t b = 0; b < micro; ++b) {
        const int32_t *row = ids + ((first + b) % R) * (T + 1);
        std::memcpy(static_cast<int32_t *>(x.data()) + b * T, row, T * 4);
        std::memcpy(static_cast<int32_t *>(y.data()) + b * T, row + 1, T * 4);
      }
      return Status::ok();
    };
    StepStats stats;
    if (Status st = trainer->step(perRank, next, stats); !st) {
      std::cerr << "kiln-deploy-train: error: " << st.message() << "\n";
      comm->abort(1); // the other ranks may wait for this one
      return 1;
    }
    if (rank == 0)
      std::printf("step %lld: loss %.6f\n", static_cast<long long>(s + 1),
                  stats.loss);
  }
  // Every rank holds the same weights; rank 0 writes them.
  if (rank == 0)
    if (Status s = model->saveWeights(output); !s)
      return fail(s.message());
  return 0;
}
