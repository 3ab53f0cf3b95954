//===- training.cpp - Python bindings: training ---------------------------===//
//
// kiln.Trainer over runtime::Trainer, the machinery `kiln train` uses:
// training steps on the model's compiled gradient function, the optimizer,
// the schedule, clipping, accumulation and checkpoints.
//
//===----------------------------------------------------------------------===//
#include "bindings.h"

#include "runtime/Communicator.h"
#include "runtime/File.h"
#include "runtime/Trainer.h"

#include <pybind11/stl.h>

namespace py = pybind11;
using namespace kiln::runtime;

void kiln::python::registerTraining(py::module_ &m) {
  // The ranks of a data-parallel run (docs/distributed.md).
  py::class_<Communicator, std::shared_ptr<Communicator>>(m, "Communicator")
      .def_property_readonly("rank", &Communicator::rank)
      .def_property_readonly("size", &Communicator::size)
      .def_property_readonly("local_size", &Communicator::localSize)
      .def("__repr__",
           [](const Communicator &c) {
             return "<kiln.Communicator " + c.describe() + ">";
           })
      .def(
          "abort", [](Communicator &c, int code) { c.abort(code); },
          py::arg("code") = 1)
      .def("barrier", [](Communicator &c) {
        Status s;
        {
          py::gil_scoped_release release;
          s = c.barrier();
        }
        if (!s)
          throw std::runtime_error(s.pythonMessage());
      });
  m.def("mpi", [] {
    std::shared_ptr<Communicator> c;
    if (Status s = openMpi(c); !s)
      throw std::runtime_error(s.pythonMessage());
    return c;
  });
  m.def("local_communicator", &localCommunicator);
  m.def("launched_by_mpi", &launchedByMpi);
  py::class_<Trainer>(m, "Trainer")
      .def(py::init([](Model &model, const std::string &loss,
                       const std::string &optimizer, double lr, int64_t warmup,
                       int64_t total, double minLrRatio, double beta1,
                       double beta2, double eps, double momentum,
                       double weightDecay, double clip, uint64_t seed,
                       bool compiledStep, const std::string &stateFile,
                       std::shared_ptr<Communicator> communicator, int zero) {
             TrainConfig c;
             c.loss = loss;
             c.optimizer = optimizer;
             c.lr = lr;
             c.warmupSteps = warmup;
             c.totalSteps = total;
             c.minLrRatio = minLrRatio;
             c.beta1 = beta1;
             c.beta2 = beta2;
             c.eps = eps;
             c.momentum = momentum;
             c.weightDecay = weightDecay;
             c.clipNorm = clip;
             c.seed = seed;
             c.compiledStep = compiledStep;
             c.optimizerStateFile = stateFile;
             c.communicator = std::move(communicator);
             c.zero = zero;
             std::unique_ptr<Trainer> t;
             Status s;
             {
               // Data parallel: waits for the other ranks.
               py::gil_scoped_release release;
               s = Trainer::create(model, c, t);
             }
             if (!s)
               throw py::value_error(s.pythonMessage());
             return t;
           }),
           py::arg("model"), py::arg("loss"), py::arg("optimizer"),
           py::arg("lr"), py::arg("warmup"), py::arg("total_steps"),
           py::arg("min_lr_ratio"), py::arg("beta1"), py::arg("beta2"),
           py::arg("eps"), py::arg("momentum"), py::arg("weight_decay"),
           py::arg("clip"), py::arg("seed"), py::arg("compiled_step") = false,
           py::arg("optimizer_state") = "", py::arg("communicator") = nullptr,
           py::arg("zero") = 0,
           py::keep_alive<1, 2>()) // the model outlives its trainer
      .def(
          "step",
          [](Trainer &t, const Model &model, const std::string &loss,
             const std::vector<py::dict> &batches) {
            std::vector<std::map<std::string, Tensor>> micro;
            for (const py::dict &b : batches)
              micro.push_back(functionInputs(model, loss, b));
            StepStats st;
            Status s;
            {
              py::gil_scoped_release release;
              s = t.step(micro, st);
            }
            if (!s)
              throw std::runtime_error(s.pythonMessage());
            return py::make_tuple(st.loss, st.lr, st.gradNorm);
          },
          py::arg("model"), py::arg("loss"), py::arg("batches"))
      .def(
          "evaluate",
          [](Trainer &t, const Model &model, const std::string &loss,
             const py::dict &batch) {
            std::map<std::string, Tensor> in =
                functionInputs(model, loss, batch);
            double l = 0;
            Status s;
            {
              py::gil_scoped_release release;
              s = t.evaluate(in, l);
            }
            if (!s)
              throw std::runtime_error(s.pythonMessage());
            return l;
          },
          py::arg("model"), py::arg("loss"), py::arg("batch"))
      .def_property_readonly("step_count", &Trainer::stepCount)
      .def_property_readonly("optimizer_state_bytes",
                             &Trainer::optimizerStateBytes)
      .def_property_readonly("shard_range", &Trainer::shardRange)
      .def("learning_rate", &Trainer::learningRate, py::arg("step"))
      .def(
          "save_checkpoint",
          [](Trainer &t, const std::string &parent,
             const std::string &stateJson, int keep) {
            if (Status s = t.saveCheckpoint(parent, stateJson, keep); !s)
              throw std::runtime_error(s.pythonMessage());
          },
          py::arg("parent"), py::arg("state_json"), py::arg("keep"))
      .def(
          "load_checkpoint",
          [](Trainer &t, const std::string &dir) {
            if (Status s = t.loadCheckpoint(dir); !s)
              throw py::value_error(s.pythonMessage());
          },
          py::arg("dir"));
  m.def("latest_checkpoint", [](const std::string &parent) {
    std::string dir;
    if (Status s = latestCheckpoint(parent, dir); !s)
      throw py::value_error(s.pythonMessage());
    return dir;
  });
}
