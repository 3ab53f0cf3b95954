//===- Profiler.cpp - kernel timelines as Chrome/Perfetto traces ----------===//
#include "runtime/File.h"
#include "runtime/Json.h"
#include "runtime/Profile.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

using namespace kiln::runtime;

namespace {

const char *category(ProfileSlice::Kind k) {
  switch (k) {
  case ProfileSlice::Kind::Kernel:
    return "kernel";
  case ProfileSlice::Kind::Call:
    return "call";
  case ProfileSlice::Kind::Host:
    return "host";
  }
  return "kernel";
}

/// A kernel's place, short, for the summary: the first of its locations
/// (a fused kernel has several), the file by its name, without the call
/// chain or the block instance — so one line of the model, repeated in
/// every layer, is one row.
std::string shortLocation(const std::string &location) {
  std::string first = location.substr(0, location.find(", "));
  first = first.substr(0, first.find(" ("));
  size_t slash = first.rfind('/');
  return slash == std::string::npos ? first : first.substr(slash + 1);
}

} // namespace

int Profiler::threadIndex() {
  std::lock_guard<std::mutex> lock(mutex_);
  auto [it, inserted] = threads_.try_emplace(std::this_thread::get_id(),
                                             static_cast<int>(threads_.size()));
  return it->second;
}

void Profiler::record(ProfileSlice slice) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (slices_.size() >= kMaxSlices) {
    ++dropped_;
    return;
  }
  slices_.push_back(std::move(slice));
}

std::vector<ProfileSlice> Profiler::slices() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return slices_;
}

uint64_t Profiler::dropped() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return dropped_;
}

std::string Profiler::traceJson() const {
  std::vector<ProfileSlice> all = slices();
  int threads = 0;
  for (const ProfileSlice &s : all)
    threads = std::max(threads, s.thread + 1);
  std::string out;
  out.reserve(all.size() * 256 + 256);
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "{\"displayTimeUnit\": \"ms\", \"otherData\": {\"producer\": "
                "\"kiln\", \"dropped_slices\": %" PRIu64 "},\n"
                "\"traceEvents\": [\n"
                "{\"ph\": \"M\", \"name\": \"process_name\", \"pid\": 1, "
                "\"tid\": 0, \"args\": {\"name\": \"kiln\"}}",
                dropped());
  out += buf;
  for (int t = 0; t < threads; ++t) {
    std::snprintf(buf, sizeof buf,
                  ",\n{\"ph\": \"M\", \"name\": \"thread_name\", \"pid\": 1, "
                  "\"tid\": %d, \"args\": {\"name\": \"caller %d\"}}",
                  t, t);
    out += buf;
  }
  for (const ProfileSlice &s : all) {
    out += ",\n{\"ph\": \"X\", \"cat\": \"";
    out += category(s.kind);
    out += "\", \"name\": ";
    out += jsonQuote(s.name);
    std::snprintf(buf, sizeof buf,
                  ", \"pid\": 1, \"tid\": %d, \"ts\": %.3f, \"dur\": %.3f, "
                  "\"args\": {\"function\": ",
                  s.thread, s.startUs, s.durationUs);
    out += buf;
    out += jsonQuote(s.function);
    if (s.kind == ProfileSlice::Kind::Kernel) {
      std::snprintf(buf, sizeof buf,
                    ", \"kernel\": %d, \"bytes\": %" PRIu64 ", \"shapes\": ",
                    s.kernel, s.bytes);
      out += buf;
      out += jsonQuote(s.shapes);
      out += ", \"location\": ";
      out += jsonQuote(s.location);
    }
    out += "}}";
  }
  out += "\n]}\n";
  return out;
}

Status Profiler::writeTrace(const std::string &path) const {
  std::string json = traceJson();
  return writeFileAtomically(path, {{json.data(), json.size()}});
}

Status kiln::runtime::readTrace(const std::string &path,
                                std::vector<ProfileSlice> &out,
                                uint64_t maxBytes) {
  out.clear();
  JsonValue root;
  if (Status s = readJsonFile(path, root, maxBytes); !s)
    return s;
  const JsonValue *events = root.get("traceEvents");
  if (!events || !events->isArray())
    return Status::error(path + ": not a trace (no \"traceEvents\" list; " +
                         optionRef("kiln run, train and generate write one "
                                   "with --profile",
                                   "Model.profile writes one") +
                         ")");
  for (size_t i = 0; i < events->items.size(); ++i) {
    const JsonValue &e = events->items[i];
    const JsonValue *ph = e.get("ph");
    if (!ph || !ph->isString() || ph->string != "X")
      continue; // metadata, or another tool's events
    auto bad = [&](const char *what) {
      return Status::error(path + ": event " + std::to_string(i) + " (byte " +
                           std::to_string(e.offset) + ") has " + what);
    };
    const JsonValue *name = e.get("name"), *cat = e.get("cat"),
                    *ts = e.get("ts"), *dur = e.get("dur"), *tid = e.get("tid"),
                    *args = e.get("args");
    auto number = [](const JsonValue *v) {
      return v && v->kind == JsonValue::Kind::Number;
    };
    if (!name || !name->isString())
      return bad("no name");
    if (!number(ts) || !number(dur) || dur->number < 0)
      return bad("no valid \"ts\" and \"dur\"");
    ProfileSlice s;
    s.name = name->string;
    s.startUs = ts->number;
    s.durationUs = dur->number;
    s.thread = number(tid) ? static_cast<int>(tid->number) : 0;
    std::string c = cat && cat->isString() ? cat->string : "kernel";
    s.kind = c == "call"   ? ProfileSlice::Kind::Call
             : c == "host" ? ProfileSlice::Kind::Host
                           : ProfileSlice::Kind::Kernel;
    if (args && args->isObject()) {
      auto text = [&](const char *key) {
        const JsonValue *v = args->get(key);
        return v && v->isString() ? v->string : std::string();
      };
      s.function = text("function");
      s.shapes = text("shapes");
      s.location = text("location");
      if (const JsonValue *b = args->get("bytes"); number(b) && b->number >= 0)
        s.bytes = static_cast<uint64_t>(b->number);
      if (const JsonValue *k = args->get("kernel"); number(k))
        s.kernel = static_cast<int>(k->number);
    }
    out.push_back(std::move(s));
  }
  return Status::ok();
}

std::string
kiln::runtime::profileSummary(const std::vector<ProfileSlice> &slices,
                              size_t top) {
  struct Group {
    std::string op, location, shapes;
    double us = 0;
    uint64_t bytes = 0;
    int64_t count = 0;
  };
  std::map<std::pair<std::string, std::string>, Group> groups;
  std::map<std::string, std::pair<double, int64_t>> byOp, calls;
  double kernelUs = 0, callUs = 0;
  int64_t kernels = 0, ncalls = 0;
  for (const ProfileSlice &s : slices) {
    if (s.kind == ProfileSlice::Kind::Call) {
      auto &c = calls[s.function.empty() ? s.name : s.function];
      c.first += s.durationUs;
      ++c.second;
      callUs += s.durationUs;
      ++ncalls;
      continue;
    }
    if (s.kind == ProfileSlice::Kind::Host) {
      auto &c = calls[s.name + " (host)"];
      c.first += s.durationUs;
      ++c.second;
      continue;
    }
    std::string where = shortLocation(s.location);
    Group &g = groups[{s.name, where}];
    if (g.count == 0) {
      g.op = s.name;
      g.location = where;
      g.shapes = s.shapes;
    }
    g.us += s.durationUs;
    g.bytes += s.bytes;
    ++g.count;
    auto &o = byOp[s.name];
    o.first += s.durationUs;
    ++o.second;
    kernelUs += s.durationUs;
    ++kernels;
  }
  std::string out;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%" PRId64 " kernel slices in %" PRId64
                " calls: %.2f ms in kernels",
                kernels, ncalls, kernelUs / 1000);
  out += buf;
  if (callUs > 0) {
    std::snprintf(buf, sizeof buf, " of %.2f ms in calls (%.0f%%)",
                  callUs / 1000, 100 * kernelUs / callUs);
    out += buf;
  }
  out += "\n";
  if (kernels == 0)
    return out;
  std::vector<const Group *> order;
  for (const auto &[key, g] : groups)
    order.push_back(&g);
  std::sort(order.begin(), order.end(),
            [](const Group *a, const Group *b) { return a->us > b->us; });
  out += "\ntop kernels (by time; one row per op and source line, all "
         "layers together):\n"
         "       ms      %   calls    avg us    GB/s  op                   "
         "location          shapes (first call)\n";
  for (size_t i = 0; i < order.size() && i < top; ++i) {
    const Group &g = *order[i];
    double gbs = g.us > 0 ? static_cast<double>(g.bytes) / (g.us * 1e3) : 0;
    std::snprintf(buf, sizeof buf,
                  "%9.2f %6.1f %7" PRId64 " %9.1f %7.1f  %-20s %-17s %s\n",
                  g.us / 1000, 100 * g.us / kernelUs, g.count,
                  g.us / static_cast<double>(g.count), gbs, g.op.c_str(),
                  g.location.empty() ? "-" : g.location.c_str(),
                  g.shapes.c_str());
    out += buf;
  }
  if (order.size() > top) {
    std::snprintf(buf, sizeof buf, "  ... and %zu more\n", order.size() - top);
    out += buf;
  }
  std::vector<std::pair<double, std::string>> ops;
  for (const auto &[op, v] : byOp)
    ops.push_back({v.first, op});
  std::sort(ops.rbegin(), ops.rend());
  out += "\nby op:\n       ms      %  kernels  op\n";
  for (const auto &[us, op] : ops) {
    std::snprintf(buf, sizeof buf, "%9.2f %6.1f %8" PRId64 "  %s\n", us / 1000,
                  100 * us / kernelUs, byOp[op].second, op.c_str());
    out += buf;
  }
  if (!calls.empty()) {
    out += "\ncalls:\n   calls    avg ms   total ms  function\n";
    for (const auto &[fn, v] : calls) {
      std::snprintf(buf, sizeof buf, "%8" PRId64 " %9.2f %10.2f  %s\n",
                    v.second, v.first / 1000 / static_cast<double>(v.second),
                    v.first / 1000, fn.c_str());
      out += buf;
    }
  }
  return out;
}
