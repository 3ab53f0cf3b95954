//===- Parser.cpp - recursive-descent parser for .kiln --------------------===//
//
// Grammar (docs/language.md has the full version with examples):
//
//   model   := 'model' NAME '(' [hparam {',' hparam}] ')' '{' {item} '}'
//   item    := 'dim' NAME {',' NAME} | param | block | fn
//   param   := 'param' path (':' type '=' call | '=' call)
//   block   := 'block' NAME '[' expr ']' '{' {param | fn} '}'
//   fn      := 'fn' NAME '(' [NAME ':' type {',' ...}] ')' '->' results body
//   stmt    := NAME {',' NAME} '=' expr | 'return' expr {',' expr}
//   expr    := additive: '+' '-' < '*' '/' '@' < unary '-' < '**' < postfix
//
// Statements need no separator (a statement never starts with an operator);
// ';' is accepted between them.
//
//===----------------------------------------------------------------------===//
#include "frontend/Parser.h"

using namespace kiln;
using namespace kiln::ast;
using llvm::SMLoc;

namespace {

class Parser {
public:
  Parser(llvm::StringRef buffer, Diagnostics &diags)
      : lexer(buffer, diags), diags(diags) {
    tok = lexer.next();
  }

  std::optional<Model> parseFile();

private:
  // Token handling. After any error, `failed` is set and parsing unwinds.
  void advance() {
    if (peeked) {
      tok = *peeked;
      peeked.reset();
    } else {
      tok = lexer.next();
    }
    if (tok.kind == Tok::Error)
      failed = true;
  }
  /// The kind of the token after the current one (one token of lookahead).
  Tok peekKind() {
    if (!peeked)
      peeked = lexer.next();
    return peeked->kind;
  }
  bool is(Tok k) const { return tok.kind == k; }
  /// A contextual keyword: an identifier with this spelling.
  bool isWord(llvm::StringRef w) const {
    return tok.kind == Tok::Ident && tok.text == w;
  }
  bool accept(Tok k) {
    if (!is(k))
      return false;
    advance();
    return true;
  }
  bool expect(Tok k, llvm::StringRef context) {
    if (accept(k))
      return true;
    errorHere(llvm::Twine("expected ") + tokName(k) + " " + context);
    return false;
  }
  void errorHere(const llvm::Twine &msg) {
    if (failed)
      return;
    failed = true;
    std::string found =
        is(Tok::Eof) ? std::string("end of file") : "'" + tok.text.str() + "'";
    diags.error(tok.loc(), msg + ", found " + found);
  }
  void errorAt(SMLoc loc, const llvm::Twine &msg) {
    if (failed)
      return;
    failed = true;
    diags.error(loc, msg);
  }
  bool expectIdent(std::string &out, SMLoc &loc, llvm::StringRef what) {
    if (!is(Tok::Ident)) {
      errorHere(llvm::Twine("expected ") + what);
      return false;
    }
    out = tok.text.str();
    loc = tok.loc();
    advance();
    return true;
  }

  bool parseHParams(Model &m);
  bool parseParam(ParamDecl &p);
  bool parseBlock(BlockDecl &b);
  bool parseFn(FnDecl &f);
  bool parseType(TypeExpr &t);
  bool parseStmt(Stmt &s);

  ExprPtr parseExpr();
  ExprPtr parseTest();
  ExprPtr parseBinary(int minPrec);
  ExprPtr parseUnary();
  ExprPtr parsePower();
  ExprPtr parsePostfix();
  ExprPtr parsePrimary();
  bool parseCallArgs(Expr &call);
  ExprPtr parseSubscript();

  /// Guards recursion depth for nested expressions.
  struct DepthGuard {
    Parser &p;
    bool ok;
    DepthGuard(Parser &p, SMLoc loc) : p(p) {
      ok = ++p.depth <= kMaxNesting;
      if (!ok)
        p.errorAt(loc, "expression is nested too deeply (more than " +
                           llvm::Twine(kMaxNesting) +
                           " levels); split it into several statements");
    }
    ~DepthGuard() { --p.depth; }
  };

  /// Counts each link of a chain the parser builds in a loop (`a + b + c`,
  /// `x[0][1].y`) as one more level of depth: the loop is iterative, but
  /// every consumer of the tree (elaboration, printing) recurses once per
  /// link, so an unbounded chain would overflow their stacks.
  struct ChainGuard {
    Parser &p;
    unsigned links = 0;
    explicit ChainGuard(Parser &p) : p(p) {}
    bool link(SMLoc loc) {
      ++links;
      if (++p.depth <= kMaxNesting)
        return true;
      p.errorAt(loc, "expression is nested too deeply (more than " +
                         llvm::Twine(kMaxNesting) +
                         " levels, chained operators included); split it "
                         "into several statements");
      return false;
    }
    ~ChainGuard() { p.depth -= links; }
  };

  Lexer lexer;
  Diagnostics &diags;
  Token tok;
  std::optional<Token> peeked;
  bool failed = false;
  unsigned depth = 0;
};

} // namespace

std::optional<Model> Parser::parseFile() {
  if (failed)
    return std::nullopt;
  if (is(Tok::Eof)) {
    errorAt(tok.loc(), "the file declares no model; start with "
                       "'model NAME(...) { ... }'");
    return std::nullopt;
  }
  Model m;
  m.loc = tok.loc();
  if (!isWord("model")) {
    errorHere("expected 'model' at the start of the file ('model NAME(...) { "
              "... }')");
    return std::nullopt;
  }
  advance();
  SMLoc nameLoc;
  if (!expectIdent(m.name, nameLoc, "the model's name after 'model'"))
    return std::nullopt;
  if (!parseHParams(m) || !expect(Tok::LBrace, "to open the model body"))
    return std::nullopt;
  while (!failed && !is(Tok::RBrace)) {
    if (accept(Tok::Semicolon))
      continue;
    if (isWord("dim")) {
      advance();
      do {
        std::string name;
        SMLoc loc;
        if (!expectIdent(name, loc, "a dimension name after 'dim'"))
          return std::nullopt;
        m.dims.emplace_back(name, loc);
      } while (accept(Tok::Comma));
    } else if (isWord("param")) {
      m.params.emplace_back();
      if (!parseParam(m.params.back()))
        return std::nullopt;
    } else if (isWord("block")) {
      m.blocks.emplace_back();
      if (!parseBlock(m.blocks.back()))
        return std::nullopt;
    } else if (isWord("fn")) {
      m.fns.emplace_back();
      if (!parseFn(m.fns.back()))
        return std::nullopt;
    } else {
      errorHere("expected 'dim', 'param', 'block', 'fn' or '}' in the model "
                "body");
      return std::nullopt;
    }
  }
  if (failed || !expect(Tok::RBrace, "to close the model body"))
    return std::nullopt;
  if (!is(Tok::Eof)) {
    errorHere("expected end of file after the model (one model per file)");
    return std::nullopt;
  }
  return m;
}

bool Parser::parseHParams(Model &m) {
  if (!expect(Tok::LParen, "after the model name (hyperparameters, possibly "
                           "none: 'model m() {')"))
    return false;
  if (accept(Tok::RParen))
    return true;
  do {
    HParam h;
    if (!expectIdent(h.name, h.loc, "a hyperparameter name"))
      return false;
    if (!expect(Tok::Equal, "after the hyperparameter name; every "
                            "hyperparameter has a default ('n_layer = 12')"))
      return false;
    h.value = parseExpr();
    if (!h.value)
      return false;
    m.hparams.push_back(std::move(h));
  } while (accept(Tok::Comma));
  return expect(Tok::RParen, "to close the hyperparameter list");
}

bool Parser::parseParam(ParamDecl &p) {
  p.loc = tok.loc();
  advance(); // 'param'
  SMLoc loc;
  std::string part;
  if (!expectIdent(part, loc, "a parameter name after 'param'"))
    return false;
  p.path = part;
  while (accept(Tok::Dot)) {
    if (!expectIdent(part, loc, "a name after '.' in the parameter path"))
      return false;
    p.path += "." + part;
  }
  if (accept(Tok::Colon)) {
    p.hasType = true;
    if (!parseType(p.type))
      return false;
  }
  if (!expect(Tok::Equal, p.hasType ? "and an initializer ('= normal(0.02)')"
                                    : "or ':' after the parameter name"))
    return false;
  SMLoc initLoc = tok.loc();
  p.init = parseTest(); // a trailing `if` is the declaration's condition
  if (!p.init)
    return false;
  if (p.init->kind != ExprKind::Call) {
    errorAt(initLoc, p.hasType ? "expected an initializer call such as "
                                 "normal(0.02), zeros() or ones()"
                               : "expected a module constructor such as "
                                 "linear(n_in, n_out) or layernorm(n)");
    return false;
  }
  if (accept(Tok::KwIf)) {
    p.condition = parseTest();
    if (!p.condition)
      return false;
  }
  return true;
}

bool Parser::parseBlock(BlockDecl &b) {
  b.loc = tok.loc();
  advance(); // 'block'
  if (!expectIdent(b.name, b.loc, "a block name after 'block'"))
    return false;
  while (accept(Tok::Dot)) {
    std::string part;
    SMLoc loc;
    if (!expectIdent(part, loc, "a name after '.' in the block path"))
      return false;
    b.name += "." + part;
  }
  if (!expect(Tok::LBracket, "and the repeat count ('block h[n_layer] {')"))
    return false;
  b.count = parseExpr();
  if (!b.count || !expect(Tok::RBracket, "after the repeat count") ||
      !expect(Tok::LBrace, "to open the block body"))
    return false;
  while (!failed && !is(Tok::RBrace)) {
    if (accept(Tok::Semicolon))
      continue;
    if (isWord("param")) {
      b.params.emplace_back();
      if (!parseParam(b.params.back()))
        return false;
    } else if (isWord("fn")) {
      b.fns.emplace_back();
      if (!parseFn(b.fns.back()))
        return false;
    } else {
      errorHere("expected 'param', 'fn' or '}' in a block body");
      return false;
    }
  }
  return !failed && expect(Tok::RBrace, "to close the block body");
}

bool Parser::parseFn(FnDecl &f) {
  advance(); // 'fn'
  if (!expectIdent(f.name, f.loc, "a function name after 'fn'") ||
      !expect(Tok::LParen, "after the function name"))
    return false;
  if (!accept(Tok::RParen)) {
    do {
      Arg a;
      if (!expectIdent(a.name, a.loc, "an argument name") ||
          !expect(Tok::Colon, "and the argument's type ('x: f32[B, T, C]')") ||
          !parseType(a.type))
        return false;
      f.args.push_back(std::move(a));
    } while (accept(Tok::Comma));
    if (!expect(Tok::RParen, "to close the argument list"))
      return false;
  }
  if (!expect(Tok::Arrow, "and the result type ('-> f32[B, T, C]')"))
    return false;
  if (accept(Tok::LParen)) {
    do {
      f.results.emplace_back();
      if (!parseType(f.results.back()))
        return false;
    } while (accept(Tok::Comma));
    if (!expect(Tok::RParen, "to close the result types"))
      return false;
  } else {
    f.results.emplace_back();
    if (!parseType(f.results.back()))
      return false;
  }
  if (!expect(Tok::LBrace, "to open the function body"))
    return false;
  while (!failed && !is(Tok::RBrace)) {
    if (accept(Tok::Semicolon))
      continue;
    f.body.emplace_back();
    if (!parseStmt(f.body.back()))
      return false;
  }
  return !failed && expect(Tok::RBrace, "to close the function body");
}

bool Parser::parseType(TypeExpr &t) {
  t.loc = tok.loc();
  SMLoc loc;
  if (!expectIdent(t.dtype, loc,
                   "an element type (f32, f16, bf16, f64, i32, i64, bool)"))
    return false;
  if (!accept(Tok::LBracket))
    return true;
  if (accept(Tok::RBracket))
    return true;
  do {
    ExprPtr d = parseExpr();
    if (!d)
      return false;
    t.dims.push_back(std::move(d));
  } while (accept(Tok::Comma));
  return expect(Tok::RBracket, "to close the shape");
}

bool Parser::parseStmt(Stmt &s) {
  s.loc = tok.loc();
  if (accept(Tok::KwReturn)) {
    s.kind = Stmt::Return;
    do {
      ExprPtr e = parseExpr();
      if (!e)
        return false;
      s.values.push_back(std::move(e));
    } while (accept(Tok::Comma));
    return true;
  }
  s.kind = Stmt::Assign;
  do {
    std::string name;
    SMLoc loc;
    if (!expectIdent(name, loc, "a statement ('name = expr' or 'return expr')"))
      return false;
    s.targets.emplace_back(name, loc);
  } while (accept(Tok::Comma));
  if (!expect(Tok::Equal, "in an assignment"))
    return false;
  ExprPtr e = parseExpr();
  if (!e)
    return false;
  s.values.push_back(std::move(e));
  return true;
}

ExprPtr Parser::parseExpr() {
  DepthGuard guard(*this, tok.loc());
  if (!guard.ok)
    return nullptr;
  ExprPtr value = parseTest();
  if (!value || !is(Tok::KwIf))
    return value;
  // `a if c else b`, as in Python: the condition is decided when the model
  // is elaborated, and only the chosen branch is built.
  auto e = std::make_unique<Expr>(ExprKind::Cond, tok.loc());
  advance();
  e->base = parseTest();
  if (!e->base ||
      !expect(Tok::KwElse, "after the condition of 'a if c else b'"))
    return nullptr;
  ExprPtr otherwise = parseExpr();
  if (!otherwise)
    return nullptr;
  e->items.push_back(std::move(value));
  e->items.push_back(std::move(otherwise));
  return e;
}

ExprPtr Parser::parseTest() {
  if (!is(Tok::KwNot))
    return parseBinary(0);
  DepthGuard guard(*this, tok.loc());
  if (!guard.ok)
    return nullptr;
  auto e = std::make_unique<Expr>(ExprKind::Unary, tok.loc());
  e->name = "not";
  advance();
  e->base = parseTest();
  return e->base ? std::move(e) : nullptr;
}

static int precedence(Tok t) {
  switch (t) {
  case Tok::EqualEqual:
  case Tok::NotEqual:
    return 1;
  case Tok::Plus:
  case Tok::Minus:
    return 2;
  case Tok::Star:
  case Tok::Slash:
  case Tok::At:
    return 3;
  default:
    return -1;
  }
}

ExprPtr Parser::parseBinary(int minPrec) {
  ExprPtr lhs = parseUnary();
  ChainGuard chain(*this);
  while (lhs && precedence(tok.kind) >= minPrec && precedence(tok.kind) > 0) {
    if (!chain.link(tok.loc()))
      return nullptr;
    int prec = precedence(tok.kind);
    auto e = std::make_unique<Expr>(ExprKind::Binary, tok.loc());
    e->name = tok.text.str();
    advance();
    ExprPtr rhs = parseBinary(prec + 1);
    if (!rhs)
      return nullptr;
    e->items.push_back(std::move(lhs));
    e->items.push_back(std::move(rhs));
    lhs = std::move(e);
  }
  return failed ? nullptr : std::move(lhs);
}

ExprPtr Parser::parseUnary() {
  if (is(Tok::Minus)) {
    DepthGuard guard(*this, tok.loc());
    if (!guard.ok)
      return nullptr;
    auto e = std::make_unique<Expr>(ExprKind::Unary, tok.loc());
    e->name = "-";
    advance();
    e->base = parseUnary();
    return e->base ? std::move(e) : nullptr;
  }
  return parsePower();
}

ExprPtr Parser::parsePower() {
  ExprPtr base = parsePostfix();
  if (!base || !is(Tok::StarStar))
    return base;
  DepthGuard guard(*this, tok.loc());
  if (!guard.ok)
    return nullptr;
  auto e = std::make_unique<Expr>(ExprKind::Binary, tok.loc());
  e->name = "**";
  advance();
  ExprPtr exp = parseUnary(); // right-associative: a ** -b ** c
  if (!exp)
    return nullptr;
  e->items.push_back(std::move(base));
  e->items.push_back(std::move(exp));
  return e;
}

ExprPtr Parser::parsePostfix() {
  ExprPtr e = parsePrimary();
  ChainGuard chain(*this);
  while (e && !failed) {
    if ((is(Tok::LParen) || is(Tok::LBracket) || is(Tok::Dot)) &&
        !chain.link(tok.loc()))
      return nullptr;
    if (is(Tok::LParen)) {
      auto call = std::make_unique<Expr>(ExprKind::Call, tok.loc());
      advance();
      call->base = std::move(e);
      if (!parseCallArgs(*call))
        return nullptr;
      e = std::move(call);
    } else if (is(Tok::LBracket)) {
      auto idx = std::make_unique<Expr>(ExprKind::Index, tok.loc());
      advance();
      idx->base = std::move(e);
      do {
        ExprPtr sub = parseSubscript();
        if (!sub)
          return nullptr;
        idx->items.push_back(std::move(sub));
      } while (accept(Tok::Comma));
      if (!expect(Tok::RBracket, "to close the subscript"))
        return nullptr;
      e = std::move(idx);
    } else if (is(Tok::Dot)) {
      advance();
      auto mem = std::make_unique<Expr>(ExprKind::Member, tok.loc());
      SMLoc loc;
      if (!expectIdent(mem->name, loc, "a name after '.'"))
        return nullptr;
      mem->base = std::move(e);
      e = std::move(mem);
    } else {
      break;
    }
  }
  return failed ? nullptr : std::move(e);
}

bool Parser::parseCallArgs(Expr &call) {
  if (accept(Tok::RParen))
    return true;
  do {
    // A keyword argument is NAME '=' expr.
    if (is(Tok::Ident) && peekKind() == Tok::Equal) {
      KeywordArg kw;
      kw.name = tok.text.str();
      kw.loc = tok.loc();
      advance();
      advance();
      kw.value = parseExpr();
      if (!kw.value)
        return false;
      for (const KeywordArg &other : call.keywords)
        if (other.name == kw.name) {
          errorAt(kw.loc, "argument '" + kw.name + "' is given twice");
          return false;
        }
      call.keywords.push_back(std::move(kw));
      continue;
    }
    SMLoc loc = tok.loc();
    ExprPtr arg = parseExpr();
    if (!arg)
      return false;
    if (!call.keywords.empty()) {
      errorAt(loc, "positional argument after a keyword argument; put "
                   "positional arguments first");
      return false;
    }
    call.items.push_back(std::move(arg));
  } while (accept(Tok::Comma));
  return expect(Tok::RParen, "to close the argument list");
}

ExprPtr Parser::parseSubscript() {
  SMLoc loc = tok.loc();
  ExprPtr lo;
  if (!is(Tok::Colon)) {
    lo = parseExpr();
    if (!lo)
      return nullptr;
    if (!is(Tok::Colon))
      return lo;
  }
  advance(); // ':'
  auto range = std::make_unique<Expr>(ExprKind::Range, loc);
  range->items.push_back(std::move(lo));
  ExprPtr hi;
  if (!is(Tok::Comma) && !is(Tok::RBracket)) {
    hi = parseExpr();
    if (!hi)
      return nullptr;
  }
  range->items.push_back(std::move(hi));
  return range;
}

ExprPtr Parser::parsePrimary() {
  SMLoc loc = tok.loc();
  switch (tok.kind) {
  case Tok::Int: {
    auto e = std::make_unique<Expr>(ExprKind::Int, loc);
    e->intValue = tok.intValue;
    advance();
    return e;
  }
  case Tok::Float: {
    auto e = std::make_unique<Expr>(ExprKind::Float, loc);
    e->floatValue = tok.floatValue;
    advance();
    return e;
  }
  case Tok::KwTrue:
  case Tok::KwFalse: {
    auto e = std::make_unique<Expr>(ExprKind::Bool, loc);
    e->boolValue = is(Tok::KwTrue);
    advance();
    return e;
  }
  case Tok::Ident: {
    auto e = std::make_unique<Expr>(ExprKind::Name, loc);
    e->name = tok.text.str();
    advance();
    return e;
  }
  case Tok::LParen: {
    DepthGuard guard(*this, loc);
    if (!guard.ok)
      return nullptr;
    advance();
    ExprPtr e = parseExpr();
    if (!e || !expect(Tok::RParen, "to close the parenthesis"))
      return nullptr;
    return e;
  }
  case Tok::LBracket: {
    DepthGuard guard(*this, loc);
    if (!guard.ok)
      return nullptr;
    auto e = std::make_unique<Expr>(ExprKind::List, loc);
    advance();
    if (accept(Tok::RBracket))
      return e;
    do {
      ExprPtr item = parseExpr();
      if (!item)
        return nullptr;
      e->items.push_back(std::move(item));
    } while (accept(Tok::Comma));
    if (!expect(Tok::RBracket, "to close the list"))
      return nullptr;
    return e;
  }
  case Tok::Error:
    failed = true;
    return nullptr;
  default:
    errorHere("expected an expression");
    return nullptr;
  }
}

std::optional<Model> kiln::parseModel(llvm::StringRef buffer,
                                      Diagnostics &diags) {
  if (!checkSourceText(buffer, diags))
    return std::nullopt;
  Parser parser(buffer, diags);
  return parser.parseFile();
}
