//===- NoMpi.cpp - openMpi() in a kiln built without MPI ------------------===//
#include "runtime/Communicator.h"

using namespace kiln;
using namespace kiln::runtime;

Status kiln::runtime::openMpi(std::shared_ptr<Communicator> &) {
  return Status::error(
      "this kiln was built without MPI (configure with -DKILN_MPI=ON where "
      "libopenmpi-dev is installed)");
}
