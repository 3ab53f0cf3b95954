//===- Mpi.cpp - the Communicator on MPI_COMM_WORLD -----------------------===//
//
// Built when CMake finds MPI (KILN_MPI). Reductions add the ranks' values in
// rank order, so they are exact and the same everywhere: an all-reduce is a
// reduce-scatter — MPI_Alltoallv brings every rank's copy of a shard to the
// shard's owner, which adds them in order — then an MPI_Allgatherv of the
// summed shards. That moves the same bytes per rank as a ring all-reduce,
// 2 (N-1)/N of the buffer.
//
// The communicator is MPI_COMM_WORLD duplicated, with errors returned
// instead of aborting, so a failed call becomes a Status naming the
// collective. MPI counts are ints: larger buffers go in pieces.
//
//===----------------------------------------------------------------------===//
#include "runtime/Communicator.h"

// The C API only: Open MPI's deprecated C++ bindings need libmpi_cxx.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>

using namespace kiln;
using namespace kiln::runtime;

namespace {

/// The largest piece one MPI call moves (floats for the reductions and
/// gathers, bytes for broadcasts): well under INT_MAX.
constexpr size_t kPiece = size_t(1) << 28;

Status mpiStatus(int code, const char *what) {
  if (code == MPI_SUCCESS)
    return Status::ok();
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return Status::error(std::string("MPI ") + what + " failed: " +
                       std::string(text, static_cast<size_t>(length)));
}

/// One piece of a rank-ordered reduction, its alltoall started: `gathered`
/// receives each rank's copy of this rank's shard of `in`, summed in order
/// into `dest` when it has arrived (after dest's own values when
/// `accumulate`); an all-reduce then gathers the shards back into
/// `gatherInto`.
struct ReducePiece {
  const float *in = nullptr;
  float *dest = nullptr;
  float *gatherInto = nullptr; // null: a reduce-scatter
  bool accumulate = false;
  Shards shards;
  std::vector<float> gathered; // size() * counts[rank] floats, rank-major
  std::vector<int> sendCounts, sendOffsets, recvCounts, recvOffsets;
  MPI_Request request = MPI_REQUEST_NULL;
};

class Mpi;

class MpiPending final : public PendingReduce {
public:
  MpiPending(Mpi &comm, std::vector<ReducePiece> pieces)
      : comm_(comm), pieces_(std::move(pieces)) {}
  ~MpiPending() override {
    // Never leave MPI writing into a buffer that is gone.
    (void)wait();
  }
  Status progress() override;
  Status wait() override;

private:
  Mpi &comm_;
  std::vector<ReducePiece> pieces_;
  bool done_ = false;
};

class Mpi final : public Communicator {
public:
  explicit Mpi(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm local;
    if (MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL,
                            &local) == MPI_SUCCESS) {
      MPI_Comm_size(local, &localSize_);
      MPI_Comm_free(&local);
    }
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int length = 0;
    MPI_Get_library_version(version, &length);
    std::string v(version, static_cast<size_t>(length));
    library_ = v.substr(0, v.find_first_of(",\n"));
    char host[MPI_MAX_PROCESSOR_NAME];
    MPI_Get_processor_name(host, &length);
    host_.assign(host, static_cast<size_t>(length));
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int localSize() const override { return localSize_; }
  std::string describe() const override {
    return "MPI: " + library_ + ", rank " + std::to_string(rank_) + " of " +
           std::to_string(size_) + " on " + host_;
  }

  Status allReduceSum(float *data, size_t n) override {
    std::unique_ptr<PendingReduce> pending;
    if (Status s = startAllReduceSum(data, n, pending); !s)
      return s;
    return pending->wait();
  }

  Status startAllReduceSum(float *data, size_t n,
                           std::unique_ptr<PendingReduce> &out) override {
    std::vector<ReducePiece> pieces;
    for (size_t at = 0; at < n; at += kPiece) {
      size_t len = std::min(kPiece, n - at);
      Shards shards = Shards::even(len, size_);
      float *shard = data + at + shards.offsets[static_cast<size_t>(rank_)];
      pieces.push_back(
          piece(data + at, shard, data + at, false, std::move(shards)));
    }
    return start(std::move(pieces), out);
  }

  Status
  startReduceScatterSum(const float *in, float *out, const Shards &shards,
                        bool accumulate,
                        std::unique_ptr<PendingReduce> &pending) override {
    if (Status s = check(shards, "reduce-scatter"); !s)
      return s;
    std::vector<ReducePiece> pieces;
    pieces.push_back(piece(in, out, nullptr, accumulate, shards));
    return start(std::move(pieces), pending);
  }

  /// The rank-ordered sum of the copies of this rank's shard in `p` (after
  /// dest's own values when accumulating), then for an all-reduce gathered
  /// into the piece's buffer on every rank.
  Status finish(ReducePiece &p) {
    const char *what =
        p.gatherInto ? "all-reduce (alltoall)" : "reduce-scatter";
    if (Status s = mpiStatus(MPI_Wait(&p.request, MPI_STATUS_IGNORE), what); !s)
      return s;
    size_t mine = p.shards.counts[static_cast<size_t>(rank_)];
    sumInOrder(p.gathered.data(), mine, p.dest, p.accumulate);
    if (!p.gatherInto)
      return Status::ok();
    return gatherPiece(p.dest, p.gatherInto, p.shards,
                       "all-reduce (allgather)");
  }

  Status allGather(const float *in, float *out, const Shards &shards) override {
    if (Status s = check(shards, "all-gather"); !s)
      return s;
    return gatherPiece(in, out, shards, "all-gather");
  }

  Status gather(const float *in, float *out, const Shards &shards,
                int root) override {
    if (Status s = check(shards, "gather"); !s)
      return s;
    if (root < 0 || root >= size_)
      return Status::error("gather to rank " + std::to_string(root) + " of " +
                           std::to_string(size_));
    std::vector<int> counts, offsets;
    for (size_t r = 0; r < shards.counts.size(); ++r) {
      counts.push_back(static_cast<int>(shards.counts[r]));
      offsets.push_back(static_cast<int>(shards.offsets[r]));
    }
    size_t me = static_cast<size_t>(rank_);
    const void *send =
        rank_ == root && in == out + shards.offsets[me] ? MPI_IN_PLACE : in;
    return mpiStatus(MPI_Gatherv(send, counts[me], MPI_FLOAT, out,
                                 counts.data(), offsets.data(), MPI_FLOAT, root,
                                 comm_),
                     "gather");
  }

  Status allGatherBytes(const void *in, void *out, size_t bytes) override {
    if (bytes > kPiece)
      return Status::error("MPI all-gather of " + std::to_string(bytes) +
                           " bytes per rank: more than one piece");
    return mpiStatus(MPI_Allgather(in, static_cast<int>(bytes), MPI_BYTE, out,
                                   static_cast<int>(bytes), MPI_BYTE, comm_),
                     "all-gather");
  }

  Status broadcast(void *data, size_t bytes, int root) override {
    if (root < 0 || root >= size_)
      return Status::error("broadcast from rank " + std::to_string(root) +
                           " of " + std::to_string(size_));
    auto *p = static_cast<char *>(data);
    for (size_t at = 0; at < bytes; at += kPiece)
      if (Status s = mpiStatus(
              MPI_Bcast(p + at, static_cast<int>(std::min(kPiece, bytes - at)),
                        MPI_BYTE, root, comm_),
              "broadcast");
          !s)
        return s;
    return Status::ok();
  }

  Status barrier() override { return mpiStatus(MPI_Barrier(comm_), "barrier"); }

  void abort(int code) override { MPI_Abort(comm_, code); }

private:
  /// A reduction piece of `shards` from `in`: this rank's sum into `dest`.
  ReducePiece piece(const float *in, float *dest, float *gatherInto,
                    bool accumulate, Shards shards) const {
    ReducePiece p;
    p.in = in;
    p.dest = dest;
    p.gatherInto = gatherInto;
    p.accumulate = accumulate;
    p.shards = std::move(shards);
    size_t mine = p.shards.counts[static_cast<size_t>(rank_)];
    p.gathered.resize(static_cast<size_t>(size_) * mine);
    for (int r = 0; r < size_; ++r) {
      size_t ru = static_cast<size_t>(r);
      p.sendCounts.push_back(static_cast<int>(p.shards.counts[ru]));
      p.sendOffsets.push_back(static_cast<int>(p.shards.offsets[ru]));
      p.recvCounts.push_back(static_cast<int>(mine));
      p.recvOffsets.push_back(static_cast<int>(ru * mine));
    }
    return p;
  }

  /// Starts the pieces' alltoalls, once every piece's vectors stopped
  /// moving.
  Status start(std::vector<ReducePiece> pieces,
               std::unique_ptr<PendingReduce> &out) {
    for (ReducePiece &p : pieces) {
      const char *what =
          p.gatherInto ? "all-reduce (alltoall)" : "reduce-scatter";
      if (Status s =
              mpiStatus(MPI_Ialltoallv(
                            p.in, p.sendCounts.data(), p.sendOffsets.data(),
                            MPI_FLOAT, p.gathered.data(), p.recvCounts.data(),
                            p.recvOffsets.data(), MPI_FLOAT, comm_, &p.request),
                        what);
          !s)
        return s;
    }
    out = std::make_unique<MpiPending>(*this, std::move(pieces));
    return Status::ok();
  }

  /// out[j] = ((g[0][j] + g[1][j]) + g[2][j]) ..., g rank-major; with
  /// `accumulate`, ((out[j] + g[0][j]) + g[1][j]) ...
  void sumInOrder(const float *g, size_t n, float *out, bool accumulate) const {
    for (size_t j = 0; j < n; ++j) {
      float s = accumulate ? out[j] + g[j] : g[j];
      for (int r = 1; r < size_; ++r)
        s += g[static_cast<size_t>(r) * n + j];
      out[j] = s;
    }
  }

  Status gatherPiece(const float *in, float *out, const Shards &shards,
                     const char *what) {
    std::vector<int> counts, offsets;
    for (size_t r = 0; r < shards.counts.size(); ++r) {
      counts.push_back(static_cast<int>(shards.counts[r]));
      offsets.push_back(static_cast<int>(shards.offsets[r]));
    }
    size_t me = static_cast<size_t>(rank_);
    const void *send = in == out + shards.offsets[me] ? MPI_IN_PLACE : in;
    return mpiStatus(MPI_Allgatherv(send, counts[me], MPI_FLOAT, out,
                                    counts.data(), offsets.data(), MPI_FLOAT,
                                    comm_),
                     what);
  }

  Status check(const Shards &shards, const char *what) const {
    if (shards.counts.size() != static_cast<size_t>(size_) ||
        shards.offsets.size() != shards.counts.size())
      return Status::error(std::string(what) + ": " +
                           std::to_string(shards.counts.size()) +
                           " shards for " + std::to_string(size_) + " ranks");
    if (shards.total() > static_cast<size_t>(INT_MAX))
      return Status::error(std::string(what) + " of " +
                           std::to_string(shards.total()) +
                           " floats: more than one MPI call moves (2^31)");
    return Status::ok();
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1, localSize_ = 1;
  std::string library_, host_;
};

Status MpiPending::progress() {
  for (ReducePiece &p : pieces_) {
    if (p.request == MPI_REQUEST_NULL)
      continue;
    int flag = 0;
    if (Status s = mpiStatus(MPI_Test(&p.request, &flag, MPI_STATUS_IGNORE),
                             "reduction (alltoall)");
        !s)
      return s;
    if (!flag)
      break; // later pieces wait for this one anyway
  }
  return Status::ok();
}

Status MpiPending::wait() {
  if (done_)
    return Status::ok();
  done_ = true;
  for (ReducePiece &p : pieces_)
    if (Status s = comm_.finish(p); !s)
      return s;
  return Status::ok();
}

void finalizeMpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized)
    MPI_Finalize();
}

} // namespace

Status kiln::runtime::openMpi(std::shared_ptr<Communicator> &out) {
  // MPI is initialized once per process, so its communicator is too.
  static std::mutex mutex;
  static std::shared_ptr<Communicator> world;
  std::lock_guard<std::mutex> lock(mutex);
  if (!world) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized)
      return Status::error("MPI was already finalized in this process");
    if (!initialized) {
      int provided = 0;
      if (Status s =
              mpiStatus(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED,
                                        &provided),
                        "initialization");
          !s)
        return s;
      std::atexit(finalizeMpi);
      if (provided < MPI_THREAD_SERIALIZED)
        return Status::error(
            "this MPI library cannot take calls from more than one thread "
            "(MPI_THREAD_SERIALIZED), which kiln's Python threads need");
    }
    MPI_Comm comm;
    if (Status s = mpiStatus(MPI_Comm_dup(MPI_COMM_WORLD, &comm),
                             "communicator duplication");
        !s)
      return s;
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    // Freed by MPI_Finalize with the rest of MPI's state.
    world = std::make_shared<Mpi>(comm);
  }
  out = world;
  return Status::ok();
}
