//===- KilnDialect.cpp - the kiln dialect ---------------------------------===//
#include "ir/KilnDialect.h"
#include "ir/KilnOps.h"

using namespace mlir;
using namespace kiln;

#include "ir/KilnDialect.cpp.inc"
#include "ir/KilnEnums.cpp.inc"
#include "llvm/ADT/TypeSwitch.h"
#define GET_ATTRDEF_CLASSES
#include "ir/KilnAttrs.cpp.inc"

void KilnDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "ir/KilnOps.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "ir/KilnAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// #kiln.pattern
//===----------------------------------------------------------------------===//

namespace {
using runtime::attention::PatternParam;
using runtime::attention::PatternSpec;

/// The parameters a kind takes, global_tokens last.
std::vector<const PatternParam *>
paramsOf(const runtime::attention::PatternKindInfo &info) {
  std::vector<const PatternParam *> out;
  for (const PatternParam &p : info.params)
    out.push_back(&p);
  out.push_back(&runtime::attention::globalTokensParam());
  return out;
}
} // namespace

Attribute AttentionPatternAttr::parse(AsmParser &parser, Type) {
  llvm::SMLoc loc = parser.getCurrentLocation();
  std::string kind;
  if (parser.parseLess() || parser.parseKeywordOrString(&kind))
    return {};
  const runtime::attention::PatternKindInfo *info =
      runtime::attention::findPatternKind(kind);
  if (!info) {
    parser.emitError(loc, "unknown attention pattern '")
        << kind << "'; expected one of "
        << runtime::attention::patternKindList();
    return {};
  }
  PatternSpec spec;
  spec.kind = info->kind;
  std::vector<std::string> given;
  while (succeeded(parser.parseOptionalComma())) {
    llvm::SMLoc at = parser.getCurrentLocation();
    std::string name;
    int64_t value;
    if (parser.parseKeywordOrString(&name) || parser.parseEqual() ||
        parser.parseInteger(value))
      return {};
    const PatternParam *param = nullptr;
    for (const PatternParam *p : paramsOf(*info))
      if (name == p->name)
        param = p;
    if (!param) {
      std::string names;
      for (const PatternParam *p : paramsOf(*info))
        names += (names.empty() ? "" : ", ") + std::string(p->name);
      parser.emitError(at, "'")
          << kind << "' has no parameter '" << name << "'; it takes " << names;
      return {};
    }
    spec.*(param->field) = value;
    given.push_back(name);
  }
  if (parser.parseGreater())
    return {};
  std::string bad = runtime::attention::checkPattern(spec, &given);
  if (!bad.empty()) {
    parser.emitError(loc, bad);
    return {};
  }
  return AttentionPatternAttr::get(parser.getContext(), spec);
}

void AttentionPatternAttr::print(AsmPrinter &printer) const {
  const PatternSpec &spec = getSpec();
  const runtime::attention::PatternKindInfo &info =
      runtime::attention::infoOf(spec.kind);
  printer << "<" << info.name;
  for (const PatternParam *p : paramsOf(info))
    if (p->required || spec.*(p->field) != 0 ||
        (p->field == &PatternSpec::seed && spec.random != 0))
      printer << ", " << p->name << " = " << spec.*(p->field);
  printer << ">";
}

LogicalResult
AttentionPatternAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                             PatternSpec spec) {
  std::string bad = runtime::attention::checkPattern(spec);
  if (!bad.empty())
    return emitError() << "invalid attention pattern: " << bad;
  if (spec.causal)
    return emitError() << "an attention pattern does not carry causality; "
                          "the op's `causal` attribute does";
  return success();
}
