//===- Help.cpp - the kiln CLI's help and usage errors --------------------===//
//
// `kiln --help` and each command's --help, in one table; OptionParser checks
// that every option a command reads is described here.
//
//===----------------------------------------------------------------------===//
#include "tools/Commands.h"

#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

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
                     default when -o ends in .kart), plan (the artifact's
                     functions and kernel list) or cuda (CUDA C++ of the
                     kernels kiln generates; docs/cuda.md)
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
  --train-step       with --grad: also compile `train_step` (forward,
                     backward, clipping and the optimizer update in one
                     function; lr and step are its inputs), the update set
                     by --optimizer, --weight-decay, --beta1, --beta2,
                     --eps, --momentum and --clip as for kiln train
  --no-fuse          skip the fusion passes (matmul epilogues, add + norm,
                     softmax cross-entropy, elementwise chains), for
                     comparing against the unfused kernels
  --target=T         the devices the artifact is for: cpu (default),
                     cpu,cuda (also the CUDA kernels, compiled by nvcc for
                     sm_80/sm_90 + PTX: run on either) or cuda (GPU only);
                     docs/cuda.md
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
  --profile=F.json   record every kernel (op, shapes, source location,
                     bytes, time) and write a Chrome/Perfetto trace to F
                     (ui.perfetto.dev; kiln inspect --profile=F lists the
                     top kernels; docs/profiling.md)
  --weights-file=F   the external weights, when not beside the artifact
  --device=D         where the calls run: cpu (default), cuda or cuda:N (an
                     artifact compiled with --target=cpu,cuda, on the
                     NVIDIA driver; docs/cuda.md)
)"},
    {"inspect", R"(usage: kiln inspect MODEL.kart [options]
       kiln inspect --profile=TRACE.json [--top=N]

inspect options:
  --dims=B=1,T=128   bind symbolic dimensions: report the arena size at them
  --plan             list every kernel of every function
  --attention-layout=T  draw each attention kernel's block layout at
                     sequence length T: which 64x64 blocks are computed,
                     per head, and the density (docs/sparse-attention.md)
  --weights-file=F   the external weights, when not beside the artifact
  --profile=F.json   instead of an artifact, a trace of kiln run, train or
                     generate --profile: the kernels that took the most
                     time (--top=N rows, default 20; one per op and source
                     location, with calls, average time and GB/s), the time
                     by op and per call
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
  --profile=F.json   record every kernel (op, shapes, source location,
                     bytes, time) and write a Chrome/Perfetto trace to F
                     (ui.perfetto.dev; kiln inspect --profile=F lists the
                     top kernels; docs/profiling.md)
  --weights-file=F   the external weights, when not beside the artifact
  --device=D         where the calls run: cpu (default), cuda or cuda:N (an
                     artifact compiled with --target=cpu,cuda, on the
                     NVIDIA driver; docs/cuda.md)
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
  --config=run.json  options from a JSON file, e.g. {"model": "gpt2.kiln",
                     "data": "text.txt", "steps": 100, "define":
                     {"n_layer": 2}}: keys are the option names without
                     dashes; the command line's options win
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
                     terminal the progress bar shows every step, with
                     tokens/s over the last 20 steps)
  --quiet            only warnings, errors and the metrics file
  --verbose          a line for every step, and the settings at the start
  --checkpoint-dir=D checkpoints (model, optimizer, trainer state with
                     the run's settings) in D, written atomically;
                     --checkpoint-every=K (default 0: only at the end);
                     --keep-checkpoints=N (2); --stop-after=N stops early
                     after N steps
  --resume           continue exactly from the latest checkpoint of
                     --checkpoint-dir with the settings it recorded: no
                     other option is needed; those given (--steps=N to go
                     further) override them
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
  --data-parallel    train on the ranks of MPI (mpirun -np N kiln train
                     ...; noticed without this flag under mpirun): --batch
                     is the global batch, each rank takes its slice, and
                     the weights equal one process's with --batch=B/N
                     --accumulate=N bit for bit; rank 0 reports and writes
                     (docs/distributed.md)
  --zero=S           ZeRO stage for data-parallel runs: 1 shards the
                     optimizer moments over the ranks (each keeps and
                     updates 1/N), 2 the accumulated gradients too; the
                     weights are the same bit for bit (0: no sharding)
  --no-overlap       data parallel: reduce a micro-batch's gradients after
                     its backward pass instead of bucket by bucket during
                     it (the same results; to measure the overlap)
  --weights=FILE     start from trained weights (.safetensors, a llama2.c
                     checkpoint or a Hugging Face directory), as in compile
  --seed=S           seed for initialization, data order and dropout (0)
  -D NAME=VALUE      override a hyperparameter (also --define NAME=VALUE)
  --loss=FN          the function to minimize (default loss)
  --profile=F.json   record every kernel of every step (op, shapes, source location,
                     bytes, time) and write a Chrome/Perfetto trace to F
                     (ui.perfetto.dev; kiln inspect --profile=F lists the
                     top kernels; docs/profiling.md)
  --weights-file=F   an artifact's external weights
  --device=D         train on cpu (default), cuda or cuda:N (a .kiln model
                     is compiled with its CUDA kernels; docs/cuda.md)
  --target=T         the devices a .kiln model is compiled for, as in
                     kiln compile (default cpu; cpu,cuda with --device=cuda)
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
