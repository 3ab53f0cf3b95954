//===- Options.cpp - one option parser for every kiln command -------------===//
#include "tools/Options.h"
#include "tools/Commands.h"

#include "runtime/File.h"

#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

using namespace kiln::tools;
using kiln::runtime::jsonQuote;

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

} // namespace

namespace {

/// A number as JSON, exactly (it reads back to the same double).
std::string jsonNumber(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  // The shortest spelling that reads back the same, for people.
  for (int digits = 1; digits < 17; ++digits) {
    char shortBuf[32];
    std::snprintf(shortBuf, sizeof shortBuf, "%.*g", digits, x);
    if (std::strtod(shortBuf, nullptr) == x)
      return shortBuf;
  }
  return buf;
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
  options_.push_back(
      {name.str(), false,
       [&out, value](llvm::StringRef) {
         out = value;
         return 0;
       },
       [&out, value] { return out == value ? "true" : "false"; }});
}

void OptionParser::integer(llvm::StringRef name, int64_t &out, IntRange range) {
  std::string n = name.str();
  options_.push_back(
      {n, true,
       [n, &out, range](llvm::StringRef v) {
         int64_t x;
         if (!parseInteger(v, x) || x < range.min || x > range.max)
           return usageError(
               n + " expects an integer from " + std::to_string(range.min) +
               " to " + std::to_string(range.max) + ", got '" + shown(v) + "'");
         out = x;
         return 0;
       },
       [&out] { return std::to_string(out); }});
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
  options_.back().show = [&out] { return std::to_string(out); };
}

void OptionParser::seed(llvm::StringRef name, uint64_t &out) {
  std::string n = name.str();
  options_.push_back({n, true,
                      [n, &out](llvm::StringRef v) {
                        if (v.empty() || v.getAsInteger(10, out))
                          return usageError(
                              n + " expects a non-negative integer, got '" +
                              shown(v) + "' (seeds are below 2^64)");
                        return 0;
                      },
                      [&out] {
                        // Beyond 2^53 a JSON number loses digits.
                        std::string v = std::to_string(out);
                        return out < (uint64_t(1) << 53) ? v : jsonQuote(v);
                      }});
}

void OptionParser::real(llvm::StringRef name, double &out, double min,
                        double max, bool minOpen) {
  std::string n = name.str();
  options_.push_back({n, true,
                      [n, &out, min, max, minOpen](llvm::StringRef v) {
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
                      },
                      [&out] { return jsonNumber(out); }});
}

void OptionParser::text(llvm::StringRef name, std::string &out,
                        llvm::StringRef example) {
  std::string n = name.str(), e = example.str();
  options_.push_back(
      {n, true,
       [n, e, &out](llvm::StringRef v) {
         if (v.empty())
           return usageError(n + " expects " + e);
         out = v.str();
         return 0;
       },
       [&out] { return out.empty() ? std::string() : jsonQuote(out); }});
}

void OptionParser::choice(llvm::StringRef name, std::string &out,
                          std::vector<std::string> choices) {
  std::string n = name.str();
  options_.push_back({n, true,
                      [n, &out, choices](llvm::StringRef v) {
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
                      },
                      [&out] {
                        return out.empty() ? std::string() : jsonQuote(out);
                      }});
}

void OptionParser::custom(llvm::StringRef name,
                          std::function<int(llvm::StringRef)> handle,
                          std::function<std::string()> show) {
  options_.push_back({name.str(), true, std::move(handle), std::move(show)});
}

void OptionParser::configFile(llvm::StringRef name) {
  config_ = name.str();
  // Read by parse() before the rest of the command line.
  options_.push_back({config_, true, [](llvm::StringRef) { return 0; }, {}});
}

void OptionParser::layer(const kiln::runtime::JsonValue &options,
                         std::string origin) {
  layers_.push_back({options, std::move(origin), "", false});
}

std::string OptionParser::where(const Layer &layer, size_t offset) {
  if (layer.text.empty())
    return layer.origin + " (byte " + std::to_string(offset) + ")";
  size_t line = 1, col = 1;
  for (size_t i = 0; i < offset && i < layer.text.size(); ++i) {
    if (layer.text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return layer.origin + ":" + std::to_string(line) + ":" + std::to_string(col);
}

int OptionParser::apply(const Layer &layer) {
  using kiln::runtime::JsonValue;
  const JsonValue &root = layer.options;
  if (!root.isObject())
    return usageError(where(layer, root.offset) +
                      ": expected a JSON object of options, e.g. "
                      "{\"steps\": 100, \"lr\": 0.003}; got " +
                      root.kindName());
  std::string positionalKey = what_;
  std::replace(positionalKey.begin(), positionalKey.end(), ' ', '-');
  for (const auto &[rawKey, value] : root.members) {
    llvm::StringRef key = llvm::StringRef(rawKey).ltrim('-');
    std::string at = where(layer, value.offset);
    // A value as an option's text: 1 with the text, 0 for none (null), -1
    // after printing the error (a value that is no option's text).
    auto text = [&](const JsonValue &v, std::string &out) -> int {
      switch (v.kind) {
      case JsonValue::Kind::String:
        out = v.string;
        return 1;
      case JsonValue::Kind::Number:
        out = v.isInteger ? std::to_string(v.integer) : jsonNumber(v.number);
        return 1;
      case JsonValue::Kind::Bool:
        out = v.boolean ? "true" : "false";
        return 1;
      case JsonValue::Kind::Null:
        return 0;
      default:
        usageError(at + ": \"" + key +
                   "\" expects a string, a number or true/false here, got " +
                   v.kindName());
        return -1; // printed
      }
    };
    if (positional_ && key == positionalKey) {
      std::string v;
      int rc = text(value, v);
      if (rc < 0)
        return 2;
      if (rc == 1 && !v.empty()) {
        *positional_ = v;
        positionalFromLayer_ = true;
      }
      continue;
    }
    const Option *o = find(("--" + key).str());
    if (!o || o->name == config_) {
      // At the key, where the text has it.
      size_t keyAt = layer.text.rfind(jsonQuote(rawKey), value.offset);
      std::string atKey = keyAt == std::string::npos ? at : where(layer, keyAt);
      if (!o) {
        std::string near = nearest(("--" + key).str());
        return usageError(atKey + ": unknown option \"" + key +
                          "\" for 'kiln " + command_ + "'" +
                          (near.empty()
                               ? ""
                               : "; did you mean \"" +
                                     llvm::StringRef(near).ltrim('-').str() +
                                     "\"?"));
      }
      return usageError(atKey + ": a config file cannot name another (\"" +
                        key + "\")");
    }
    // One value, a list of them (an option given several times), or
    // {"K": V} for K=V options.
    std::vector<std::string> values;
    auto add = [&](const JsonValue &v, const std::string &prefix) {
      std::string t;
      int rc = text(v, t);
      if (rc == 1)
        values.push_back(prefix + t);
      return rc >= 0;
    };
    bool ok = true;
    if (value.isArray())
      for (const JsonValue &item : value.items)
        ok = ok && add(item, "");
    else if (value.isObject())
      for (const auto &[k, item] : value.members)
        ok = ok && add(item, k + "=");
    else
      ok = add(value, "");
    if (!ok)
      return 2;
    if (layer.counts && !values.empty())
      given_.push_back(o->name);
    for (const std::string &v : values) {
      int rc;
      if (!o->takesValue) {
        if (v != "true" && v != "false")
          return usageError(at + ": \"" + key +
                            "\" is a switch: true or false, got '" + shown(v) +
                            "'");
        rc = v == "true" ? o->handle("") : 0;
      } else {
        rc = o->handle(v);
      }
      if (rc) {
        llvm::WithColor::note(llvm::errs(), "kiln")
            << "\"" << key << "\" is set at " << at << "\n";
        return rc;
      }
    }
  }
  return -1;
}

std::string
OptionParser::settingsJson(std::initializer_list<llvm::StringRef> skip,
                           int indent) const {
  std::string pad(indent + 2, ' ');
  std::string out = "{";
  bool first = true;
  auto add = [&](llvm::StringRef key, const std::string &json) {
    out += (first ? "\n" : ",\n") + pad + jsonQuote(key.str()) + ": " + json;
    first = false;
  };
  std::string positionalKey = what_;
  std::replace(positionalKey.begin(), positionalKey.end(), ' ', '-');
  if (positional_ && !positional_->empty())
    add(positionalKey, jsonQuote(*positional_));
  for (const Option &o : options_) {
    if (!o.show || o.name == config_ ||
        std::find(skip.begin(), skip.end(), o.name) != skip.end())
      continue;
    std::string json = o.show();
    if (!json.empty())
      add(llvm::StringRef(o.name).ltrim('-'), json);
  }
  return out + "\n" + std::string(indent, ' ') + "}";
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
  // The layers, then the config file, then the command line: the last
  // word wins.
  std::vector<Layer> layers = layers_;
  if (!config_.empty())
    for (size_t i = 0; i < args.size(); ++i) {
      llvm::StringRef a = args[i];
      std::string path;
      if (a.starts_with(config_ + "="))
        path = a.drop_front(config_.size() + 1).str();
      else if (a == config_ && i + 1 < args.size())
        path = args[i + 1];
      else
        continue;
      if (path.empty())
        return usageError(config_ + " expects a JSON file, e.g. " + config_ +
                          "=run.json");
      Layer l;
      l.origin = path;
      if (kiln::runtime::Status s =
              kiln::runtime::readFile(path, l.text, 16 << 20, "config file");
          !s)
        return usageError(s.message());
      if (kiln::runtime::Status s =
              kiln::runtime::parseJson(l.text, l.options, path);
          !s)
        return usageError(s.message());
      layers.push_back(std::move(l));
    }
  for (const Layer &l : layers)
    if (int rc = apply(l); rc >= 0)
      return rc;
  for (size_t i = 0; i < args.size(); ++i) {
    llvm::StringRef a = args[i];
    if (!a.starts_with("-") || a == "-") {
      if (!positional_)
        return usageError("'kiln " + command_ + "' takes no argument '" +
                          shown(a) + "'");
      if (positionalFromLayer_) {
        positional_->clear();
        positionalFromLayer_ = false;
      }
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
