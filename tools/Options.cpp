//===- Options.cpp - one option parser for every kiln command -------------===//
#include "tools/Options.h"
#include "tools/Commands.h"

#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>

using namespace kiln::tools;

namespace {

/// A value as typed, shortened for a message (a 10 MB argument is not
/// echoed in full).
std::string shown(llvm::StringRef v) {
  return v.size() <= 60 ? v.str() : (v.take_front(57) + "...").str();
}

/// Whether `text` mentions the option `name` as a whole word ("--seq" in
/// "--batch=B --seq=T", not in "--sequence").
bool mentions(llvm::StringRef text, llvm::StringRef name) {
  for (size_t at = text.find(name); at != llvm::StringRef::npos;
       at = text.find(name, at + 1)) {
    bool startOk =
        at == 0 || !(std::isalnum(static_cast<unsigned char>(text[at - 1])) ||
                     text[at - 1] == '-');
    size_t end = at + name.size();
    bool endOk = end == text.size() ||
                 !(std::isalnum(static_cast<unsigned char>(text[end])) ||
                   text[end] == '-' || text[end] == '_');
    if (startOk && endOk)
      return true;
  }
  return false;
}

bool parseInteger(llvm::StringRef v, int64_t &out) {
  // getAsInteger accepts "0x10" with radix 0 only; radix 10 is strict.
  return !v.empty() && !v.getAsInteger(10, out);
}

} // namespace

std::string kiln::tools::commandLine(llvm::StringRef command,
                                     const std::vector<std::string> &args) {
  std::string line = "kiln " + command.str();
  for (size_t i = 0; i < args.size(); ++i) {
    llvm::StringRef arg = args[i];
    if (arg == "-o" || arg == "--output") {
      ++i; // and its value
      continue;
    }
    if (arg.starts_with("--output=") ||
        (arg.starts_with("-o") && !arg.starts_with("--")))
      continue;
    // Each path in the argument ("--data=/a/b.txt", "gpt2:/a/dir") by its
    // last component.
    std::string a;
    llvm::StringRef rest = arg;
    while (!rest.empty()) {
      size_t cut = rest.find_first_of("=:,");
      llvm::StringRef piece = rest.substr(0, cut);
      llvm::StringRef trimmed = piece.rtrim('/');
      a += trimmed.contains('/') ? trimmed.rsplit('/').second.str()
                                 : piece.str();
      if (cut == llvm::StringRef::npos)
        break;
      a += rest[cut];
      rest = rest.drop_front(cut + 1);
    }
    bool plain = !a.empty() && std::all_of(a.begin(), a.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) ||
             std::strchr("-_=./,:@+%", c);
    });
    line += ' ';
    if (plain) {
      line += a;
      continue;
    }
    line += '\'';
    for (char c : a)
      line += c == '\'' ? std::string("'\\''") : std::string(1, c);
    line += '\'';
  }
  return line;
}

OptionParser::OptionParser(std::string command)
    : command_(std::move(command)) {}

void OptionParser::flag(llvm::StringRef name, bool &out, bool value) {
  options_.push_back({name.str(), false, [&out, value](llvm::StringRef) {
                        out = value;
                        return 0;
                      }});
}

void OptionParser::integer(llvm::StringRef name, int64_t &out, IntRange range) {
  std::string n = name.str();
  options_.push_back(
      {n, true, [n, &out, range](llvm::StringRef v) {
         int64_t x;
         if (!parseInteger(v, x) || x < range.min || x > range.max)
           return usageError(
               n + " expects an integer from " + std::to_string(range.min) +
               " to " + std::to_string(range.max) + ", got '" + shown(v) + "'");
         out = x;
         return 0;
       }});
}

void OptionParser::integer(llvm::StringRef name, int &out, IntRange range) {
  // Through a 64-bit value, then narrowed: `range` fits an int.
  auto wide = std::make_shared<int64_t>(0);
  integer(name, *wide, range);
  auto parse = std::move(options_.back().handle);
  options_.back().handle = [parse, wide, &out](llvm::StringRef v) {
    int rc = parse(v);
    if (rc == 0)
      out = static_cast<int>(*wide);
    return rc;
  };
}

void OptionParser::seed(llvm::StringRef name, uint64_t &out) {
  std::string n = name.str();
  options_.push_back({n, true, [n, &out](llvm::StringRef v) {
                        if (v.empty() || v.getAsInteger(10, out))
                          return usageError(
                              n + " expects a non-negative integer, got '" +
                              shown(v) + "' (seeds are below 2^64)");
                        return 0;
                      }});
}

void OptionParser::real(llvm::StringRef name, double &out, double min,
                        double max, bool minOpen) {
  std::string n = name.str();
  options_.push_back({n, true, [n, &out, min, max, minOpen](llvm::StringRef v) {
                        double x;
                        bool ok = !v.empty() && !v.getAsDouble(x) &&
                                  std::isfinite(x) &&
                                  (minOpen ? x > min : x >= min) && x <= max;
                        if (!ok) {
                          std::string range;
                          auto num = [](double d) {
                            std::string s = std::to_string(d);
                            s.erase(s.find_last_not_of('0') + 1);
                            if (!s.empty() && s.back() == '.')
                              s.pop_back();
                            return s;
                          };
                          if (std::isinf(min) && std::isinf(max))
                            range = "a number";
                          else if (std::isinf(max))
                            range = std::string("a number ") +
                                    (minOpen ? "> " : ">= ") + num(min);
                          else
                            range = std::string("a number in ") +
                                    (minOpen ? "(" : "[") + num(min) + ", " +
                                    num(max) + "]";
                          return usageError(n + " expects " + range +
                                            ", got '" + shown(v) + "'");
                        }
                        out = x;
                        return 0;
                      }});
}

void OptionParser::text(llvm::StringRef name, std::string &out,
                        llvm::StringRef example) {
  std::string n = name.str(), e = example.str();
  options_.push_back({n, true, [n, e, &out](llvm::StringRef v) {
                        if (v.empty())
                          return usageError(n + " expects " + e);
                        out = v.str();
                        return 0;
                      }});
}

void OptionParser::choice(llvm::StringRef name, std::string &out,
                          std::vector<std::string> choices) {
  std::string n = name.str();
  options_.push_back({n, true, [n, &out, choices](llvm::StringRef v) {
                        for (const std::string &c : choices)
                          if (v == c) {
                            out = c;
                            return 0;
                          }
                        std::string list;
                        for (size_t i = 0; i < choices.size(); ++i)
                          list += (i == 0                    ? ""
                                   : i + 1 == choices.size() ? " or "
                                                             : ", ") +
                                  choices[i];
                        return usageError(n + " expects " + list + ", got '" +
                                          shown(v) + "'");
                      }});
}

void OptionParser::custom(llvm::StringRef name,
                          std::function<int(llvm::StringRef)> handle) {
  options_.push_back({name.str(), true, std::move(handle)});
}

void OptionParser::prefix(llvm::StringRef prefix,
                          std::vector<std::string> &out) {
  prefixes_.emplace_back(prefix.str(), &out);
}

void OptionParser::alias(llvm::StringRef short_, llvm::StringRef name) {
  aliases_.emplace_back(short_.str(), name.str());
}

void OptionParser::positional(std::string &out, llvm::StringRef what) {
  positional_ = &out;
  what_ = what.str();
}

std::string OptionParser::nearest(llvm::StringRef typed) const {
  std::string best;
  unsigned bestDistance = 0;
  auto consider = [&](llvm::StringRef name) {
    unsigned d = typed.edit_distance(name, /*AllowReplacements=*/true);
    if (best.empty() || d < bestDistance) {
      best = name.str();
      bestDistance = d;
    }
  };
  for (const Option &o : options_)
    consider(o.name);
  for (const auto &[prefix, out] : prefixes_)
    if (typed.starts_with(prefix.substr(0, 4)))
      consider(prefix + "*");
  // Close enough to be a typo: two edits, or a third of a long name.
  unsigned limit = std::max<unsigned>(2, typed.size() / 3);
  return !best.empty() && bestDistance <= limit ? best : "";
}

int OptionParser::help() const {
  std::string text = helpText(command_);
  llvm::outs() << text;
  // Every option a command reads is in its --help: a command that gained
  // an option without a line for it fails here (test/tools/cli.test runs
  // every command's --help).
  std::vector<std::string> names;
  for (const Option &o : options_)
    names.push_back(o.name);
  for (const auto &[short_, full] : aliases_)
    names.push_back(short_);
  int rc = 0;
  for (const std::string &n : names)
    if (!mentions(text, n)) {
      llvm::errs() << "kiln: internal error: 'kiln " << command_
                   << " --help' does not describe " << n << "\n";
      rc = 70;
    }
  return rc;
}

const OptionParser::Option *OptionParser::find(llvm::StringRef name) const {
  for (const Option &o : options_)
    if (o.name == name)
      return &o;
  return nullptr;
}

bool OptionParser::given(llvm::StringRef name) const {
  return std::find(given_.begin(), given_.end(), name) != given_.end();
}

void OptionParser::unused(std::initializer_list<llvm::StringRef> names,
                          llvm::StringRef why) const {
  for (llvm::StringRef n : names)
    if (given(n))
      llvm::WithColor::warning(llvm::errs(), "kiln")
          << n << " has no effect " << why << "\n";
}

int OptionParser::parse(const std::vector<std::string> &args) {
  // --help wins wherever it stands, even after a mistake.
  for (const std::string &a : args)
    if (a == "--help" || a == "-h")
      return help();
  for (size_t i = 0; i < args.size(); ++i) {
    llvm::StringRef a = args[i];
    if (!a.starts_with("-") || a == "-") {
      if (!positional_)
        return usageError("'kiln " + command_ + "' takes no argument '" +
                          shown(a) + "'");
      if (!positional_->empty())
        return usageError("more than one " + what_ + ": '" +
                          shown(*positional_) + "' and '" + shown(a) + "'");
      *positional_ = a.str();
      continue;
    }
    bool passed = false;
    for (const auto &[prefix, out] : prefixes_)
      if (a.starts_with(prefix)) {
        out->push_back(a.str());
        passed = true;
        break;
      }
    if (passed)
      continue;
    // Short spellings: "-o FILE", "-oFILE", "-D NAME=V", "-DNAME=V".
    std::string name, spelled;
    std::optional<std::string> value;
    for (const auto &[s, full] : aliases_)
      if (a.starts_with(s) && !a.starts_with("--")) {
        name = full;
        spelled = s;
        if (a.size() > s.size())
          value = a.drop_front(s.size()).str();
        break;
      }
    if (name.empty()) {
      auto [n, v] = a.split('=');
      name = spelled = n.str();
      if (a.contains('='))
        value = v.str();
    }
    const Option *o = find(name);
    if (!o) {
      std::string near = nearest(name);
      return usageError("unknown option '" + shown(a) + "' for 'kiln " +
                        command_ + "'" +
                        (near.empty() ? "" : "; did you mean " + near + "?"));
    }
    given_.push_back(o->name);
    if (!o->takesValue) {
      if (value)
        return usageError(name + " takes no value, got '" + shown(a) + "'");
      if (int rc = o->handle(""))
        return rc;
      continue;
    }
    if (!value) {
      if (i + 1 >= args.size())
        return usageError(spelled + " needs a value, e.g. " +
                          (spelled == name ? name + "=..." : spelled + " ..."));
      value = args[++i];
    }
    if (int rc = o->handle(*value))
      return rc;
  }
  return -1;
}
