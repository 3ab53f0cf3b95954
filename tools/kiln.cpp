//===- kiln.cpp - the kiln command-line tool ------------------------------===//
//
//   kiln compile MODEL.kiln [--emit=ast|mlir|params|kart|plan] [-D
//   name=value]...
//                           [-o FILE] [--seed=N] [--locations]
//   kiln run MODEL.kart [--function=F] --input=NAME=FILE.npy ...
//   [--output=FILE.npy] kiln inspect MODEL.kart [--dims=B=1,T=128] kiln --help
//   | --version
//
// Exit status: 0 on success, 1 when the model has errors, 2 for bad usage.
//
//===----------------------------------------------------------------------===//
#include "codegen/KartWriter.h"
#include "driver/Compile.h"
#include "frontend/Driver.h"
#include "ir/AttentionPattern.h"
#include "ir/KilnDialect.h"
#include "passes/Passes.h"
#include "runtime/File.h"
#include "runtime/Llama2c.h"
#include "runtime/Model.h"
#include "runtime/quant/QuantSpec.h"
#include "tools/Commands.h"
#include "tools/Options.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <string>
#include <unistd.h>
#include <vector>

#ifndef KILN_VERSION
#define KILN_VERSION "0.0.0"
#endif

namespace kiln::tools {

namespace {

const char *const kOverview =
    R"(kiln - a compiler and runtime for transformer models

usage:
  kiln compile MODEL.kiln [options]   check a model; print its IR or write an artifact
  kiln run MODEL.kart [options]       run a function of a compiled model
  kiln inspect MODEL.kart [--dims=B=1,T=128] [--plan]
                                      functions, signatures, parameters, memory
                                      plan (arena at the given sizes), kernels
  kiln generate MODEL.kart --max-tokens=N [options]
                                      continue a prompt (decoder models), or
                                      write from a source (encoder-decoders):
                                      text with a tokenizer, ids without
  kiln tokenize --tokenizer=PATH [--decode] TEXT|-
                                      text to token ids (or ids to text)
  kiln train MODEL.kiln|MODEL.kart --data=TEXT --steps=N [options]
                                      train a language model on a text file
  kiln merge MODEL.kart -o MERGED.safetensors [--quantize=Q]
                                      fold LoRA adapters into the base weights
  kiln COMMAND --help                 the options of one command
  kiln --help                         show this help
  kiln --version                      show the version
)";

/// Each command's usage line and options, printed by `kiln COMMAND --help`
/// and, all together, by `kiln --help`.
struct CommandHelp {
  const char *name;
  const char *text;
};

const CommandHelp kCommands[] = {
    {"compile", R"(usage: kiln compile MODEL.kiln [options]

compile options:
  --emit=STAGE       what to produce: mlir (default), ast, lowered (the IR
                     with each op's runtime kernel), params
                     (a table of the parameters), kart (the artifact; the
                     default when -o ends in .kart) or plan (the artifact's
                     functions and kernel list)
  -D NAME=VALUE      override a hyperparameter (repeatable), e.g. -D n_layer=2
                     (also --define NAME=VALUE)
  -o FILE            write the output to FILE instead of standard output
                     (also --output=FILE); without --emit, a FILE ending in
                     .kart gets the artifact, any other the IR
  --seed=N           seed for the parameter initializers (default 0)
  --weights=FILE     trained weights: .safetensors (names as in the model),
                     a llama2.c .bin checkpoint, whose header sets the
                     hyperparameters (use with examples/llama.kiln), or a
                     Hugging Face model directory (config.json sets the
                     hyperparameters; its tokenizer comes along)
  --tokenizer=PATH   carry a tokenizer in the artifact, so kiln generate
                     takes and prints text: tokenizer.bin (llama2.c; its
                     size must equal the model's vocabulary), a
                     SentencePiece .model, tokenizer.json, vocab.json +
                     merges.txt or encoder.json + vocab.bpe (GPT-2),
                     vocab.txt (BERT), or a directory holding one;
                     KIND:PATH picks a kind (gpt2, wordpiece,
                     sentencepiece, llama2c)
  --save-weights=F   also write the artifact's weights (initialized or
                     imported) to the .safetensors file F
  --external-weights=F  keep the weights out of the artifact: write them to
                     the .safetensors file F; the artifact names the file
                     and finds it beside itself (elsewhere: --weights-file
                     when loading). Needed for weights over 1.9 GiB
  --locations        print source locations in the IR (mlir)
  --grad=FN          also derive FN_grad: the loss FN returns and the gradient
                     of every trainable parameter (reverse-mode autodiff)
  --recompute        with --grad: recompute each block's activations in the
                     backward pass instead of keeping them (less memory)
  --no-fuse          skip the fusion passes (matmul epilogues, add + norm,
                     softmax cross-entropy, elementwise chains), for
                     comparing against the unfused kernels
  --decode           insist on `decode`, incremental decoding with a
                     key/value cache, which artifacts of causal decoders get
                     by default (kiln generate uses it): an error says why a
                     model cannot have it; with --emit=mlir, show it
  --no-decode        leave `decode` out of the artifact
  --attention=PAT    give the model's attention ops a sparse pattern
                     (docs/sparse-attention.md): sliding_window:512,
                     block_sparse:block=64,local=1,global=1,random=3,seed=0,
                     strided:128, fixed:128,8, dense; any takes
                     global_tokens=G
  --attention-functions=F,G   only in these functions
  --attention-blocks=h.0-5    only in these block instances (h, h.3, h.0-5)
  --quantize=Q       store weights quantized (docs/quantization.md): int8,
                     int4[:group=G] (32), nf4[:block=B][,double=BOOL] (64,
                     true; bitsandbytes' NF4); quantized weights are frozen
  --quantize-params=GLOBS   which parameters, e.g. 'h.*.mlp.*' (default:
                     every matrix that only feeds matmuls: linear layers,
                     not embeddings, norms or a tied output projection)
  --lora=rank=R,alpha=A,targets=GLOBS   LoRA adapters beside linear
                     layers (default rank 8, alpha 8, every linear layer);
                     everything else is frozen (docs/quantization.md)
  --adapter=DIR      start the adapters from a PEFT adapter directory
                     (adapter_config.json, adapter_model.safetensors); alone,
                     its config sets --lora
  --mlir-*           MLIR's own options for the one compile pipeline, e.g.
                     --mlir-timing (time per pass), --mlir-print-ir-after-all
                     (the IR after each pass, on stderr)
)"},
    {"run", R"(usage: kiln run MODEL.kart [options]

run options:
  --function=NAME    the function to run (default: forward)
  --input=NAME=F     bind input NAME to the .npy file F (repeatable; also
                     NAME=@F)
  --output=F         write the next result to the .npy file F (repeatable;
                     also @F); a single F.npz takes every result, by name;
                     results without a file are summarized on stdout, by
                     name (the name the function returns, "loss", or
                     "PARAM.grad" for gradients)
  --output-dir=D     write every result to D/NAME.npy
  --threads=N        threads for the kernels (see "threads" below)
  --repeat=N         run N more times and report the median time
  --kernels=KIND     fast (default) or reference: the naive kernels that
                     define each op, to check a result (the default follows
                     KILN_REFERENCE_KERNELS=1)
  --weights-file=F   the external weights, when not beside the artifact
)"},
    {"inspect", R"(usage: kiln inspect MODEL.kart [options]

inspect options:
  --dims=B=1,T=128   bind symbolic dimensions: report the arena size at them
  --plan             list every kernel of every function
  --attention-layout=T  draw each attention kernel's block layout at
                     sequence length T: which 64x64 blocks are computed,
                     per head, and the density (docs/sparse-attention.md)
  --weights-file=F   the external weights, when not beside the artifact
)"},
    {"merge", R"(usage: kiln merge MODEL.kart -o MERGED.safetensors [options]

Folds a model's LoRA adapters (kiln compile/train --lora) into its base
weights: each adapted weight becomes W + (alpha / rank) B A, the adapters
are left out, and the checkpoint compiles from the model's source without
--lora (kiln compile MODEL.kiln --weights=MERGED.safetensors).

merge options:
  -o FILE            the merged checkpoint (.safetensors; also --output=FILE;
                     required)
  --quantize=Q       store the merged weights quantized (int8, int4[:group=G],
                     nf4[...]); compile with the same --quantize to keep
                     them as they are. Default: f32
  --weights-file=F   the external weights, when not beside the artifact
)"},
    {"generate", R"(usage: kiln generate MODEL.kart --max-tokens=N [options]

generate options:
  --max-tokens=N     how many tokens to generate at most (required)
  --prompt=TEXT      a text prompt, for artifacts with a tokenizer (from kiln
                     train, or kiln compile --tokenizer); the text prints as
                     it is generated, and stops early where the model ends
                     the sequence (BOS or EOS, for llama2.c tokenizers)
  --prompt-ids=1,2,3 the prompt as token ids (default: BOS = 1 without a
                     tokenizer, the tokenizer's BOS or a newline with one)
  --ids              print token ids (the prompt's included, space-separated,
                     one line) instead of text; artifacts without a
                     tokenizer always print ids

Decoder artifacts decode incrementally with a key/value cache (the compiled
`decode` function); the text streams as it is generated, and a summary line
on stderr gives the prompt and generated token counts and tokens/s for the
prompt (prefill) and for decoding. An encoder-decoder (T5) takes the prompt
as its source (a text source ends with the tokenizer's EOS) and prints only
the output, which starts from its decoder_start_token_id.
  --temperature=T    0 is greedy argmax; default 1
  --top-k=K          sample from the K most likely tokens (default 0: all)
  --top-p=P          nucleus sampling: keep the most likely tokens up to
                     probability P (default 1)
  --repetition-penalty=R  divide the logits of tokens already in the text
                     by R (multiply negative ones), as Hugging Face does
                     (default 1: off)
  --stop=STRING      end when the text contains STRING, which is not
                     printed (repeatable; needs a tokenizer)
  --recompute        run the whole sequence for every token instead of the
                     compiled key/value-cache decoding (for checking it)
  --seed=S           seed for sampling (default 0)
  --threads=N        threads for the kernels (see "threads" below)
  --weights-file=F   the external weights, when not beside the artifact
)"},
    {"tokenize", R"(usage: kiln tokenize --tokenizer=PATH [--decode] TEXT|-

tokenize options:
  --tokenizer=PATH   tokenizer files (as for kiln compile --tokenizer:
                     tokenizer.bin, *.model, tokenizer.json, vocab.json +
                     merges.txt, encoder.json + vocab.bpe, vocab.txt, a
                     directory, KIND:PATH), or an artifact (.kart) that
                     carries a tokenizer (required)
  --decode           read token ids (separated by spaces or commas) and
                     print their text, instead of text to ids
  TEXT               the text (or ids); - reads standard input

Prints the ids on one line, space-separated, as the model sees them
(llama2.c and SentencePiece tokenizers put BOS first, WordPiece [CLS] and
[SEP] around), or the decoded text.
)"},
    {"train",
     R"(usage: kiln train MODEL.kiln|MODEL.kart --data=FILE --steps=N [options]

train options (see docs/training.md):
  --data=FILE        the text to learn (required), or FILE.bin: token ids
                     (nanoGPT's uint16 array, llm.c's format); the last
                     --eval-fraction (default 0.1) is held out
  --tokenizer=T      char (default: the file's distinct characters), byte,
                     or tokenizer files (gpt2:DIR, tokenizer.model, ...);
                     vocab_size is bound to its size unless given with -D;
                     an artifact that has a tokenizer trains with its own
  --token-dtype=D    uint16 (default) or uint32: the ids of a headerless
                     token file
  --steps=N          optimizer updates (required)
  --batch=B --seq=T  batch size and sequence length (default 8 and 64;
                     B <= 65536); the memory a step needs is estimated
                     from the plan and refused before the first step when
                     it exceeds the machine's
  --accumulate=K     micro-batches per update (gradient accumulation; 1),
                     drawn one at a time: memory does not grow with K
  --optimizer=NAME   adamw (default) or sgd (with --momentum, default 0.9)
  --lr=LR            peak learning rate (1e-3); --warmup=N steps of linear
                     warmup (default min(100, steps/10)), then cosine decay
                     to lr * --min-lr-ratio (0.1)
  --weight-decay=W   on matrices and embeddings (0); --beta1 (0.9), --beta2
                     (0.999), --eps (1e-8): AdamW's
  --clip=C           clip gradients to global norm C (1.0; 0 turns it off)
  --eval-fraction=F  the share of the data held out for evaluation (0.1;
                     below 0.9)
  --eval-every=K     evaluate every K steps (default 0: only at the end);
                     --eval-batches=N batches per evaluation (8)
  --log-every=K      print a line every K steps (default steps/20; on a
                     terminal the progress bar shows every step)
  --checkpoint-dir=D checkpoints (model, optimizer, trainer state) in D,
                     written atomically; --checkpoint-every=K (default 0:
                     only at the end); --resume continues exactly from D's
                     latest checkpoint; --keep-checkpoints=N (2);
                     --stop-after=N stops early after N steps (for tests)
  --metrics=F.jsonl  one JSON object per step (loss, lr, tokens/s, ...)
  --plot=F.png       the loss curve as an image
  -o FILE            the trained artifact (also --output=FILE; default
                     MODEL-trained.kart, in the checkpoint directory when
                     there is one)
  --recompute        recompute activations per block in the backward pass
  --no-fuse          compile without the fusion passes
  --attention=PAT    a sparse attention pattern, as in kiln compile
                     (--attention-functions, --attention-blocks too)
  --quantize=Q       store the matmul weights quantized and frozen, as in
                     kiln compile (--quantize-params too)
  --lora=SPEC        train LoRA adapters only, as in kiln compile (QLoRA
                     with --quantize=nf4); --adapter=DIR starts from one
  --save-adapter=DIR write the trained adapters as PEFT's files
  --optimizer-state=F  keep the optimizer's moments in file F (memory-
                     mapped, so the OS pages them out under memory
                     pressure) instead of RAM
  --threads=N        threads for the kernels (see "threads" below)
  --weights=FILE     start from trained weights (.safetensors, a llama2.c
                     checkpoint or a Hugging Face directory), as in compile
  --seed=S           seed for initialization, data order and dropout (0)
  -D NAME=VALUE      override a hyperparameter (also --define NAME=VALUE)
  --loss=FN          the function to minimize (default loss)
  --weights-file=F   an artifact's external weights
)"},
};

const char *const kThreads = R"(
threads: kiln's kernels and oneDNN share one OpenMP pool. By default it has
one thread per core. If other work is running when kiln starts, a waiting
thread sleeps at once (OMP_WAIT_POLICY=PASSIVE), so kiln slows down
gracefully on shared cores; on free cores it spins up to 300,000 times
(GOMP_SPINCOUNT=300000, OpenMP's default) before it sleeps. --threads=N
(1 to 4096) sets the count; OMP_NUM_THREADS, OMP_WAIT_POLICY and
GOMP_SPINCOUNT, when set, are respected (OMP_WAIT_POLICY=PASSIVE for cores
that will be shared later).

options: every command reads --name=VALUE or --name VALUE; -o FILE and
-D NAME=VALUE also attach their value (-oFILE). Numbers outside an option's
range are refused with the range.

exit status: 0 success, 1 errors in the model or data, 2 bad command line
)";

} // namespace

std::string helpText(llvm::StringRef command) {
  std::string text;
  for (const CommandHelp &c : kCommands)
    if (command.empty() || command == c.name)
      text += (text.empty() ? "" : "\n") + std::string(c.text);
  if (text.empty())
    return text;
  if (command.empty())
    text = std::string(kOverview) + "\n" + text;
  return text + kThreads;
}

int usageError(const llvm::Twine &msg) {
  llvm::WithColor::error(llvm::errs(), "kiln") << msg << "\n";
  llvm::errs() << "run 'kiln --help' for usage\n";
  return 2;
}

} // namespace kiln::tools

using kiln::tools::helpText;

using kiln::tools::usageError;

namespace {

/// Writes `text` to `path` (standard output for "" or "-") atomically: an
/// existing file is never left half-written, and a device or pipe (`-o
/// /dev/null`) is written into rather than replaced (runtime/File.h).
int writeOutput(llvm::StringRef path, llvm::StringRef text) {
  if (path.empty() || path == "-") {
    llvm::outs() << text;
    llvm::outs().flush();
    return 0;
  }
  if (kiln::runtime::Status st = kiln::runtime::writeFileAtomically(
          path.str(), {{text.data(), text.size()}});
      !st) {
    llvm::WithColor::error(llvm::errs(), "kiln") << st.message() << "\n";
    return 1;
  }
  return 0;
}

} // namespace

void kiln::tools::AttentionOptions::declare(OptionParser &p) {
  p.text("--attention", pattern,
         "an attention pattern, e.g. --attention=sliding_window:512");
  p.text("--attention-functions", functions,
         "function names, e.g. --attention-functions=forward,loss");
  p.text("--attention-blocks", blocks,
         "block instances, e.g. --attention-blocks=h.0-5");
}

int kiln::tools::AttentionOptions::apply(CompileRequest &r) const {
  if (pattern.empty()) {
    if (!functions.empty() || !blocks.empty())
      return usageError("--attention-functions and --attention-blocks "
                        "select where --attention applies; give the pattern "
                        "too, e.g. --attention=sliding_window:512");
    return -1;
  }
  runtime::attention::PatternSpec spec;
  std::string error;
  if (!parsePatternText(pattern, spec, error))
    return usageError("--attention=" + pattern + ": " + error);
  auto split = [](const std::string &list, std::vector<std::string> &out) {
    llvm::SmallVector<llvm::StringRef> items;
    llvm::StringRef(list).split(items, ',', -1, false);
    for (llvm::StringRef i : items)
      out.push_back(i.trim().str());
  };
  r.attention = pattern;
  split(functions, r.attentionFunctions);
  split(blocks, r.attentionBlocks);
  for (const std::string &sel : r.attentionBlocks) {
    blockSelected(sel, "", error);
    if (!error.empty())
      return usageError("--attention-blocks: " + error);
  }
  return -1;
}

void kiln::tools::QuantizeOptions::declare(OptionParser &p) {
  p.text("--quantize", spec,
         "a quantization, e.g. --quantize=nf4 or --quantize=int4:group=128");
  p.text("--quantize-params", params,
         "parameter globs, e.g. --quantize-params='h.*.mlp.*'");
}

int kiln::tools::QuantizeOptions::apply(CompileRequest &r) const {
  if (spec.empty()) {
    if (!params.empty())
      return usageError("--quantize-params selects what --quantize stores "
                        "quantized; give the quantization too, e.g. "
                        "--quantize=nf4");
    return -1;
  }
  runtime::quant::QuantSpec parsed;
  std::string error;
  if (!runtime::quant::parseQuantSpec(spec, parsed, error))
    return usageError("--quantize=" + spec + ": " + error);
  r.quantize = spec;
  llvm::SmallVector<llvm::StringRef> items;
  llvm::StringRef(params).split(items, ',', -1, false);
  for (llvm::StringRef i : items)
    r.quantizeParams.push_back(i.trim().str());
  return -1;
}

void kiln::tools::AdapterOptions::declare(OptionParser &p) {
  p.text(
      "--lora", lora,
      "LoRA adapters, e.g. --lora=rank=8,alpha=16,targets='*.c_attn.weight'");
  p.text("--adapter", adapter,
         "a PEFT adapter directory (adapter_config.json, "
         "adapter_model.safetensors)");
}

int kiln::tools::AdapterOptions::apply(CompileRequest &r) const {
  if (!lora.empty()) {
    runtime::lora::LoraSpec parsed;
    std::string error;
    if (!runtime::lora::parseLoraSpec(lora, parsed, error))
      return usageError("--lora=" + lora + ": " + error);
  }
  r.lora = lora;
  r.adapter = adapter;
  return -1;
}

int kiln::tools::compileCommand(const std::vector<std::string> &args) {
  AttentionOptions attention;
  QuantizeOptions quantize;
  AdapterOptions adapters;
  std::string output, emit;
  std::string saveWeightsPath;
  std::vector<std::string> mlirOptions;
  kiln::CompileRequest r;
  kiln::tools::OptionParser p("compile");
  p.positional(r.path, "model file");
  p.text("--emit", emit, "a stage: ast, mlir, lowered, params, kart or plan");
  p.text("--output", output, "a file, e.g. -o model.kart");
  p.alias("-o", "--output");
  p.custom("--define", [&](llvm::StringRef def) {
    auto [name, value] = def.split('=');
    if (!def.contains('=') || name.trim().empty() || value.trim().empty())
      return usageError("-D expects NAME=VALUE, got '" + def.take_front(60) +
                        "'");
    r.defines.push_back({name.trim().str(), value.trim().str(), ""});
    return 0;
  });
  p.alias("-D", "--define");
  p.flag("--locations", r.locations);
  p.text("--grad", r.grad, "a function name, e.g. --grad=loss");
  p.text("--external-weights", r.externalWeights,
         "a file, e.g. --external-weights=model.safetensors");
  p.text("--save-weights", saveWeightsPath,
         "a file, e.g. --save-weights=init.safetensors");
  p.text("--weights", r.weights,
         "a .safetensors or llama2.c .bin file, e.g. --weights=model.bin");
  p.text("--tokenizer", r.tokenizerPath,
         "tokenizer files, e.g. --tokenizer=tok512.bin or "
         "--tokenizer=gpt2:DIR");
  p.seed("--seed", r.seed);
  p.flag("--recompute", r.recompute);
  p.flag("--no-fuse", r.fuse, false);
  bool decode = false, noDecode = false;
  p.flag("--decode", decode);
  p.flag("--no-decode", noDecode);
  attention.declare(p);
  quantize.declare(p);
  adapters.declare(p);
  // MLIR's own options (--mlir-timing, --mlir-print-ir-after-all, ...).
  p.prefix("--mlir-", mlirOptions);
  if (int rc = p.parse(args); rc >= 0)
    return rc;
  if (decode && noDecode)
    return usageError("give --decode or --no-decode, not both");
  if (decode || noDecode)
    r.decode =
        decode ? CompileRequest::Decode::Required : CompileRequest::Decode::Off;
  if (r.path.empty())
    return usageError("'kiln compile' needs a model file, e.g. "
                      "'kiln compile examples/gpt2.kiln'");
  // Without --emit, the output's name decides: .kart an artifact, anything
  // else the IR, said on stderr unless the name says so (.mlir).
  bool sayWhatIsWritten = false;
  if (emit.empty()) {
    llvm::StringRef out(output);
    emit = out.ends_with(".kart") ? "kart" : "mlir";
    sayWhatIsWritten =
        emit == "mlir" && !out.empty() && out != "-" && !out.ends_with(".mlir");
  }
  bool plan = emit == "plan";
  std::optional<kiln::CompileStage> stage =
      plan ? kiln::CompileStage::Kart : kiln::parseStage(emit);
  if (!stage)
    return usageError("unknown --emit stage '" + emit +
                      "'; use ast, mlir, lowered, params, kart or plan");
  r.stage = *stage;
  bool artifact = r.stage == kiln::CompileStage::Kart ||
                  r.stage == kiln::CompileStage::Lowered;
  if ((!r.weights.empty() || !saveWeightsPath.empty() ||
       !r.externalWeights.empty() || !r.tokenizerPath.empty()) &&
      !artifact)
    return usageError("--weights, --tokenizer, --save-weights and "
                      "--external-weights apply to artifacts (--emit=kart, "
                      "plan or lowered)");
  if (!r.externalWeights.empty() && (emit != "kart"))
    return usageError("--external-weights needs an artifact written with -o "
                      "FILE.kart");
  if (emit == "kart" && (output.empty() || output == "-"))
    return usageError("--emit=kart writes a binary artifact; give a file "
                      "with -o");
  if (!r.weights.empty() && !llvm::StringRef(r.weights).ends_with(".bin") &&
      !llvm::StringRef(r.weights).ends_with(".safetensors") &&
      !llvm::sys::fs::is_directory(r.weights))
    return usageError("--weights takes a .safetensors file, a llama2.c .bin "
                      "checkpoint or a Hugging Face model directory, got '" +
                      r.weights + "'");
  if (r.recompute && r.grad.empty())
    return usageError("--recompute applies to the gradient function; add "
                      "--grad=FN");
  if (int rc = quantize.apply(r); rc >= 0)
    return rc;
  if (int rc = adapters.apply(r); rc >= 0)
    return rc;
  if (int rc = attention.apply(r); rc >= 0)
    return rc;
  if (!mlirOptions.empty()) {
    // Through LLVM's option registry, where MLIR reads them.
    kiln::registerMLIROptions();
    std::vector<const char *> argv = {"kiln compile"};
    for (const std::string &o : mlirOptions)
      argv.push_back(o.c_str());
    std::string errors;
    llvm::raw_string_ostream es(errors);
    if (!llvm::cl::ParseCommandLineOptions(static_cast<int>(argv.size()),
                                           argv.data(), "", &es))
      return usageError(llvm::StringRef(errors).trim().str());
    r.mlirCommandLine = true;
  }
  if (!r.externalWeights.empty()) {
    llvm::SmallString<256> absExternal(r.externalWeights), absOut(output);
    llvm::sys::fs::make_absolute(absExternal);
    llvm::sys::fs::make_absolute(absOut);
    if (llvm::sys::path::parent_path(absExternal) !=
        llvm::sys::path::parent_path(absOut))
      llvm::WithColor::note(llvm::errs(), "kiln")
          << output << " expects its weights beside it, as "
          << llvm::sys::path::filename(absExternal) << "; move "
          << r.externalWeights
          << " there, or load with --weights-file=" << r.externalWeights
          << "\n";
  }

  kiln::CompileResult result;
  r.provenance = kiln::tools::commandLine("compile", args);
  if (!kiln::compile(r, result))
    return 1;
  kiln::runtime::LoadOptions load;
  load.weightsFile = r.externalWeights;
  if (!saveWeightsPath.empty()) {
    std::unique_ptr<kiln::runtime::Model> model;
    kiln::runtime::Status st =
        kiln::runtime::Model::fromBytes(result.artifact, model, ".", load);
    if (st)
      st = model->saveWeights(saveWeightsPath);
    if (!st) {
      llvm::WithColor::error(llvm::errs(), "kiln") << st.message() << "\n";
      return 1;
    }
  }
  if (emit == "kart")
    return writeOutput(output, llvm::StringRef(reinterpret_cast<const char *>(
                                                   result.artifact.data()),
                                               result.artifact.size()));
  if (plan) {
    std::unique_ptr<kiln::runtime::Model> model;
    if (kiln::runtime::Status st = kiln::runtime::Model::fromBytes(
            std::move(result.artifact), model, ".", load);
        !st) {
      llvm::WithColor::error(llvm::errs(), "kiln")
          << "the generated artifact does not load: " << st.message() << "\n";
      return 1;
    }
    return writeOutput(
        output, kiln::tools::describeModel(*model, {}, /*withPlan=*/true));
  }
  int rc = writeOutput(output, result.text);
  if (rc == 0 && sayWhatIsWritten)
    llvm::WithColor::note(llvm::errs(), "kiln")
        << "wrote the IR (--emit=mlir) to " << output
        << "; for an artifact, name it .kart or add --emit=kart\n";
  return rc;
}

namespace {

/// This process's runnable threads (state R in /proc/self/task/*/stat),
/// this one included.
int ownRunnableThreads() {
  int running = 0;
  DIR *tasks = opendir("/proc/self/task");
  if (!tasks)
    return 1;
  while (dirent *e = readdir(tasks)) {
    if (e->d_name[0] == '.')
      continue;
    std::string path = std::string("/proc/self/task/") + e->d_name + "/stat";
    std::FILE *f = std::fopen(path.c_str(), "r");
    if (!f)
      continue;
    char buf[512];
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    // "tid (name) S ...": the state follows the last ')'.
    const char *close = std::strrchr(buf, ')');
    if (close && close[1] == ' ' && close[2] == 'R')
      ++running;
  }
  closedir(tasks);
  return std::max(running, 1);
}

/// Runnable tasks on the machine besides this process's: the fewest of five
/// samples of /proc/stat's procs_running less this process's runnable
/// threads, a millisecond apart (so that a moment's blip does not count);
/// -1 when it cannot be read.
int otherRunnableTasks() {
  int fewest = -1;
  for (int i = 0; i < 5; ++i) {
    if (i)
      usleep(1000);
    std::FILE *f = std::fopen("/proc/stat", "r");
    if (!f)
      return -1;
    char line[256];
    int running = -1;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "procs_running %d", &running) == 1)
        break;
    std::fclose(f);
    if (running < 1)
      return -1;
    int others = std::max(0, running - ownRunnableThreads());
    fewest = fewest < 0 ? others : std::min(fewest, others);
  }
  return fewest;
}

/// How OpenMP's waiting threads wait. Long spins (libgomp's default,
/// 300,000 times, about 3 ms, before they sleep) make kiln crawl when
/// another program shares the cores: with one of two cores busy, training
/// took 1.6-2x as long and decoding 1.7x (bench/threads.py,
/// docs/threads.md). Threads that sleep at once (OMP_WAIT_POLICY=PASSIVE)
/// pay a wake-up for every parallel region instead, slow on a virtual
/// machine: a decoding step runs about a hundred regions, and on free cores
/// decoded 1.2-1.4x slower. Short spins (1,000) lost to one or the other
/// in both cases. So kiln looks when it starts: if other work is runnable,
/// waiting threads sleep at once; if the cores are free, they spin as
/// libgomp's default does. OpenMP reads this from the environment once,
/// when the library loads, before main; so unless the user chose a policy,
/// kiln sets it and runs itself again. If that fails it simply goes on with
/// the default. `import kiln` decides the same way (python/kiln/__init__.py).
void chooseWaitPolicy(char **argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT"))
    return;
  int failed = otherRunnableTasks() == 0
                   ? setenv("GOMP_SPINCOUNT", "300000", /*overwrite=*/0)
                   : setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0);
  if (failed)
    return;
  execv("/proc/self/exe", argv);
}

} // namespace

int main(int argc, char **argv) {
  chooseWaitPolicy(argv);
  llvm::InitLLVM init(argc, argv);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    llvm::errs() << helpText("");
    return 2;
  }
  llvm::StringRef cmd = args[0];
  if (cmd == "--help" || cmd == "-h") {
    llvm::outs() << helpText("");
    return 0;
  }
  if (cmd == "help") { // kiln help [COMMAND]
    if (args.size() > 2 || (args.size() == 2 && helpText(args[1]).empty()))
      return usageError("'kiln help' takes one of: compile, run, inspect, "
                        "generate, tokenize, train, merge");
    llvm::outs() << helpText(args.size() == 2 ? args[1] : "");
    return 0;
  }
  if (cmd == "--version") {
    llvm::outs() << "kiln " << KILN_VERSION << " (MLIR " << LLVM_VERSION_STRING
                 << ")\n";
    return 0;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (cmd == "compile")
    return kiln::tools::compileCommand(rest);
  if (cmd == "run")
    return kiln::tools::runCommand(rest);
  if (cmd == "inspect")
    return kiln::tools::inspectCommand(rest);
  if (cmd == "generate")
    return kiln::tools::generateCommand(rest);
  if (cmd == "tokenize")
    return kiln::tools::tokenizeCommand(rest);
  if (cmd == "train")
    return kiln::tools::trainCommand(rest);
  if (cmd == "merge")
    return kiln::tools::mergeCommand(rest);
  return usageError(
      "unknown command '" + cmd +
      "'; the commands are: compile, run, inspect, generate, tokenize, train, "
      "merge");
}
