//===- AttentionPattern.cpp - patterns written on a command line ----------===//
#include "ir/AttentionPattern.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"

using namespace kiln;
namespace attn = kiln::runtime::attention;

bool kiln::parsePatternText(llvm::StringRef text, attn::PatternSpec &out,
                            std::string &error) {
  auto [kind, args] = text.trim().split(':');
  const attn::PatternKindInfo *info = attn::findPatternKind(kind.trim().str());
  if (!info) {
    error = "unknown attention pattern '" + kind.trim().str() +
            "'; the patterns are " + attn::patternKindList() +
            " (e.g. sliding_window:512)";
    return false;
  }
  std::vector<const attn::PatternParam *> params;
  for (const attn::PatternParam &p : info->params)
    params.push_back(&p);
  params.push_back(&attn::globalTokensParam());
  std::string names;
  for (const attn::PatternParam *p : params)
    names += (names.empty() ? "" : ", ") + std::string(p->name);
  attn::PatternSpec spec;
  spec.kind = info->kind;
  std::vector<std::string> given;
  std::string where = std::string(info->name) + ": ";
  if (text.contains(':')) {
    llvm::SmallVector<llvm::StringRef> items;
    args.split(items, ',');
    size_t positional = 0;
    for (llvm::StringRef item : items) {
      item = item.trim();
      const attn::PatternParam *param = nullptr;
      llvm::StringRef value = item;
      if (item.contains('=')) {
        auto [name, v] = item.split('=');
        value = v.trim();
        for (const attn::PatternParam *p : params)
          if (name.trim() == p->name)
            param = p;
        if (!param) {
          error = where + "no parameter '" + name.trim().str() +
                  "'; the parameters are " + names;
          return false;
        }
      } else {
        if (positional >= info->params.size()) {
          error = where + "too many values in '" + item.str() +
                  "'; the parameters are " + names;
          return false;
        }
        param = &info->params[positional++];
      }
      if (llvm::is_contained(given, param->name)) {
        error = where + "'" + param->name + "' is given twice";
        return false;
      }
      int64_t v;
      if (value.getAsInteger(10, v)) {
        error = where + "'" + param->name + "' must be an integer, got '" +
                value.str() + "'";
        return false;
      }
      spec.*(param->field) = v;
      given.push_back(param->name);
    }
  }
  error = attn::checkPattern(spec, &given);
  if (!error.empty())
    return false;
  out = spec;
  return true;
}

bool kiln::blockSelected(llvm::StringRef selector, llvm::StringRef instance,
                         std::string &error) {
  auto [block, layers] = selector.split('.');
  if (block.empty()) {
    error = "block selector '" + selector.str() +
            "' names no block (write h, h.3 or h.0-5)";
    return false;
  }
  auto [name, layer] = instance.rsplit('.');
  if (!selector.contains('.'))
    return instance == block || (name == block && !layer.empty());
  auto [from, to] = layers.split('-');
  int64_t lo, hi, at;
  if (from.getAsInteger(10, lo) ||
      (layers.contains('-') ? to.getAsInteger(10, hi) : (hi = lo, false)) ||
      lo < 0 || hi < lo) {
    error = "block selector '" + selector.str() +
            "' is not h, h.3 or h.0-5 (layers from-to, ascending)";
    return false;
  }
  return name == block && !layer.getAsInteger(10, at) && at >= lo && at <= hi;
}
