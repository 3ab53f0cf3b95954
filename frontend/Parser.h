//===- Parser.h - recursive-descent parser for .kiln ------------*- C++ -*-===//
#ifndef KILN_FRONTEND_PARSER_H
#define KILN_FRONTEND_PARSER_H

#include "frontend/AST.h"
#include "frontend/Lexer.h"

#include <optional>

namespace kiln {

/// Parses one model from a buffer registered in the diagnostics' SourceMgr.
/// Returns nullopt after reporting the first syntax error.
std::optional<ast::Model> parseModel(llvm::StringRef buffer,
                                     Diagnostics &diags);

/// Expressions nested deeper than this are rejected with a clear error rather
/// than risking the parser's stack.
constexpr unsigned kMaxNesting = 200;

} // namespace kiln

#endif
