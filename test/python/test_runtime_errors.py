"""Bad input to the runtime — corrupted or truncated artifacts, artifacts from
a newer format, wrong weights, wrong inputs, malformed .npy files — gets a
clear error and exit status 1, never a crash."""
import os
import struct

import numpy as np
import pytest

from kiln_cli import EXAMPLES, KILN, compile_model, kiln, write_safetensors
import subprocess

TINY = dict(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("art")
    return compile_model(d, EXAMPLES / "gpt2.kiln", TINY)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    p = tmp_path_factory.mktemp("npy") / "tokens.npy"
    np.save(p, np.array([[1, 2, 3]], np.int32))
    return p


def run_kiln(*args):
    r = subprocess.run([KILN, *map(str, args)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode >= 0, f"kiln crashed with signal {-r.returncode}"
    return r


def expect_error(r, *fragments):
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "error:" in r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


def root_version_offset(data):
    """Byte offset of Program.version (field 0 of the root table)."""
    root = struct.unpack_from("<I", data, 0)[0]
    vtable = root - struct.unpack_from("<i", data, root)[0]
    field = struct.unpack_from("<H", data, vtable + 4)[0]
    assert field, "version is stored"
    return root + field


@pytest.mark.parametrize("version,relation", [(5, "is newer than"),
                                              (3, "is not"),
                                              (2, "is not"),
                                              (1, "is not")])
def test_other_format_versions(tmp_path, artifact, tokens, version, relation):
    """Version 1 (before typed kernel attributes and the storage, device
    and pattern tables), version 2 (attention patterns without sparse
    kinds), version 3 (the tokenizer without merges, special tokens or a
    model) and anything newer are refused with the fix."""
    data = bytearray(artifact.read_bytes())
    off = root_version_offset(data)
    assert struct.unpack_from("<I", data, off)[0] == 4
    struct.pack_into("<I", data, off, version)
    bad = tmp_path / "other.kart"
    bad.write_bytes(bytes(data))
    expect_error(run_kiln("run", bad, f"--input=tokens=@{tokens}"),
                 f"artifact format version {version} {relation} the version "
                 "this runtime reads (4)", "recompile the model")


def table_field(data, table, index):
    """Byte offset of field `index` of the table at `table` (0 if absent)."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    vsize = struct.unpack_from("<H", data, vtable)[0]
    if 4 + 2 * index >= vsize:
        return 0
    field = struct.unpack_from("<H", data, vtable + 4 + 2 * index)[0]
    return table + field if field else 0


def deref(data, at):
    return at + struct.unpack_from("<I", data, at)[0]


def test_misaligned_wide_vector(tmp_path, artifact, tokens):
    # The FlatBuffers verifier checks vector lengths for 4-byte alignment only;
    # a damaged offset can leave a [long] vector's elements misaligned, which
    # the runtime must reject instead of reading (undefined behaviour).
    data = bytearray(artifact.read_bytes())
    root = struct.unpack_from("<I", data, 0)[0]
    params = deref(data, table_field(data, root, 4))  # Program.parameters
    first = deref(data, params + 4)
    shape_field = table_field(data, first, 2)  # Parameter.shape
    vec = deref(data, shape_field)
    assert (vec + 4) % 8 == 0, "the writer aligns [long] elements"
    struct.pack_into("<I", data, shape_field,
                     struct.unpack_from("<I", data, shape_field)[0] + 4)
    bad = tmp_path / "misaligned.kart"
    bad.write_bytes(bytes(data))
    expect_error(run_kiln("run", bad, f"--input=tokens=@{tokens}"),
                 "the artifact is corrupted: parameter 0 shape is misaligned "
                 f"at byte offset {vec + 8}")


def test_not_an_artifact(tmp_path, tokens):
    for name, data, msg in [
            ("empty.kart", b"", "too short to be a .kart artifact"),
            ("text.kart", b"model m() {}\n", "not a .kart artifact"),
            ("npy.kart", open(tokens, "rb").read(), "not a .kart artifact")]:
        p = tmp_path / name
        p.write_bytes(data)
        expect_error(run_kiln("inspect", p), msg)
    expect_error(run_kiln("inspect", tmp_path / "missing.kart"),
                 "cannot open the file")


def test_truncated_artifacts(tmp_path, artifact, tokens):
    data = artifact.read_bytes()
    cuts = sorted(set(list(range(1, 200, 7)) +
                      [len(data) * k // 40 for k in range(1, 40)] +
                      [len(data) - 1]))
    for cut in cuts:
        p = tmp_path / "cut.kart"
        p.write_bytes(data[:cut])
        r = run_kiln("run", p, f"--input=tokens=@{tokens}")
        expect_error(r)


def test_random_bit_flips_never_crash(tmp_path, artifact, tokens):
    data = artifact.read_bytes()
    rng = np.random.default_rng(1234)
    outcomes = {0: 0, 1: 0}
    for trial in range(250):
        b = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            i = int(rng.integers(0, len(b)))
            b[i] ^= 1 << int(rng.integers(0, 8))
        p = tmp_path / "flip.kart"
        p.write_bytes(bytes(b))
        r = run_kiln("run", p, f"--input=tokens=@{tokens}")
        assert r.returncode in (0, 1), (trial, r.returncode, r.stderr[-500:])
        if r.returncode == 1:
            assert "error:" in r.stderr
        outcomes[r.returncode] += 1
    # Most flips land in weights (still a valid artifact); some must be caught.
    assert outcomes[1] > 0


def test_wrong_inputs(tmp_path, artifact):
    def npy(name, a):
        p = tmp_path / name
        np.save(p, a)
        return p
    ok = npy("ok.npy", np.array([[1, 2]], np.int32))
    expect_error(run_kiln("run", artifact), "missing input 'tokens'")
    expect_error(run_kiln("run", artifact, f"--input=tokens=@{ok}",
                          f"--input=extra=@{ok}"),
                 "has no input 'extra'; its inputs are: tokens")
    expect_error(run_kiln("run", artifact, "--input=tokens=@" +
                          str(npy("f.npy", np.zeros((1, 2), np.float32)))),
                 "input 'tokens' is f32[1, 2], expected i32[B, T]")
    expect_error(run_kiln("run", artifact, "--input=tokens=@" +
                          str(npy("r.npy", np.zeros((2,), np.int32)))),
                 "input 'tokens' is i32[2], expected i32[B, T]")
    expect_error(run_kiln("run", artifact, "--input=tokens=@" +
                          str(npy("big.npy", np.array([[1, 99]], np.int32)))),
                 "index 99 at position 1 is outside [0, 50)")
    expect_error(run_kiln("run", artifact, "--input=tokens=@" +
                          str(npy("long.npy", np.ones((1, 17), np.int32)))),
                 "is a run-time length larger than the model allows?")
    expect_error(run_kiln("run", artifact, "--function=backward",
                          f"--input=tokens=@{ok}"),
                 "the model has no function 'backward'; it has: forward, loss")
    tgt = npy("tgt.npy", np.array([[1, 2, 3]], np.int32))
    expect_error(run_kiln("run", artifact, "--function=loss",
                          f"--input=tokens=@{ok}", f"--input=targets=@{tgt}"),
                 "input 'targets' is i32[1, 3], expected i32[B, T] with T = 2")


def test_malformed_npy(tmp_path, artifact):
    cases = {
        "magic.npy": (b"NOTNUMPY" + b"\0" * 20, "not a .npy file"),
        "version.npy": (b"\x93NUMPY\x09\x00" + b"\0" * 20,
                        "unsupported .npy format version 9"),
        "hdrlen.npy": (b"\x93NUMPY\x01\x00\xff\xff" + b"{}", "header length"),
    }
    for name, (data, msg) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        expect_error(run_kiln("run", artifact, f"--input=tokens=@{p}"), msg)
    f16 = tmp_path / "f16.npy"
    np.save(f16, np.zeros((1, 2), np.float16))
    expect_error(run_kiln("run", artifact, f"--input=tokens=@{f16}"),
                 "unsupported dtype '<f2'")
    fort = tmp_path / "fortran.npy"
    np.save(fort, np.asfortranarray(np.zeros((2, 3), np.int32)))
    expect_error(run_kiln("run", artifact, f"--input=tokens=@{fort}"),
                 "Fortran-ordered")
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((4, 4), np.int32))
    short.write_bytes(short.read_bytes()[:-5])
    expect_error(run_kiln("run", artifact, f"--input=tokens=@{short}"),
                 "holds 59 data bytes, but i32[4, 4] needs 64")
    # A negative dimension is an error, not its absolute value (the data
    # of a (3, 4) array under a (-3, 4) header).
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((3, 4), np.int32))
    data = good.read_bytes()
    for shape, bad_dim in (("(-3, 4)", "-3"), ("(3, x)", "x"),
                           ("(3,, 4)", "")):
        end = data.index(b"\n") + 1  # the header, padded to its length
        text = "{'descr': '<i4', 'fortran_order': False, 'shape': %s, }" \
            % shape
        hdr = data[:10] + text.ljust(end - 11).encode() + b"\n" + data[end:]
        p = tmp_path / "neg.npy"
        p.write_bytes(hdr)
        expect_error(run_kiln("run", artifact, f"--input=tokens=@{p}"),
                     f"has an invalid dimension '{bad_dim}'")


def test_bad_weights(tmp_path):
    table = {"wte.weight": (50, 16), "wpe.weight": (16, 16)}
    model = EXAMPLES / "gpt2.kiln"
    defs = sum([["-D", f"{k}={v}"] for k, v in TINY.items()], [])
    good = tmp_path / "partial.safetensors"
    write_safetensors(good, {k: np.zeros(s, np.float32)
                             for k, s in table.items()})
    expect_error(run_kiln("compile", model, *defs, "-o", tmp_path / "a.kart",
                          f"--weights={good}"),
                 "the weights have no tensor 'h.0.ln_1.weight'")
    wrong = tmp_path / "wrong.safetensors"
    write_safetensors(wrong, {"wte.weight": np.zeros((49, 16), np.float32)})
    expect_error(run_kiln("compile", model, *defs, "-o", tmp_path / "a.kart",
                          f"--weights={wrong}"),
                 "weight 'wte.weight' is f32[49, 16] in the weights, but the "
                 "model declares 'tensor<50x16xf32>'")
    bad = tmp_path / "bad.safetensors"
    raw = good.read_bytes()
    for name, data, msg in [
            ("short", raw[:5], "too short"),
            ("hugeheader", struct.pack("<Q", 1 << 40) + raw[8:],
             "exceeds the limit"),
            ("pastend", struct.pack("<Q", 1 << 20) + raw[8:],
             "is larger than the file"),
            ("truncated", raw[:-4], "run past the"),
            ("json", struct.pack("<Q", 4) + b"{,}}", "malformed JSON header")]:
        bad.write_bytes(data)
        expect_error(run_kiln("compile", model, *defs, "-o",
                              tmp_path / "a.kart", f"--weights={bad}"), msg)
    hdr = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' \
          b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'
    bad.write_bytes(struct.pack("<Q", len(hdr)) + hdr + b"\0" * 12)
    expect_error(run_kiln("compile", model, *defs, "-o", tmp_path / "a.kart",
                          f"--weights={bad}"), "overlaps")
    hdr = b'{"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}'
    bad.write_bytes(struct.pack("<Q", len(hdr)) + hdr + b"\0" * 2)
    expect_error(run_kiln("compile", model, *defs, "-o", tmp_path / "a.kart",
                          f"--weights={bad}"), "unsupported dtype 'F8_E4M3'")
    hdr = b'{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}'
    bad.write_bytes(struct.pack("<Q", len(hdr)) + hdr + b"\0" * 8)
    expect_error(run_kiln("compile", model, *defs, "-o", tmp_path / "a.kart",
                          f"--weights={bad}"),
                 "covers 8 bytes, but f32[3] needs 12")


def test_external_weights(tmp_path, tokens):
    defs = sum([["-D", f"{k}={v}"] for k, v in TINY.items()], [])
    model = EXAMPLES / "gpt2.kiln"
    kiln("compile", model, *defs, "--seed=4", "-o", tmp_path / "embedded.kart")
    kiln("compile", model, *defs, "--seed=4", "-o", tmp_path / "ext.kart",
         f"--external-weights={tmp_path / 'ext.safetensors'}")
    weights = (tmp_path / "ext.safetensors").stat().st_size
    assert (tmp_path / "embedded.kart").stat().st_size - \
        (tmp_path / "ext.kart").stat().st_size >= weights * 0.9
    outs = []
    for name in ["embedded", "ext"]:
        kiln("run", tmp_path / f"{name}.kart", f"--input=tokens=@{tokens}",
             f"--output=@{tmp_path / (name + '.npy')}")
        outs.append((tmp_path / f"{name}.npy").read_bytes())
    assert outs[0] == outs[1]
    # The reference is relative: the pair moves together.
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in ["ext.kart", "ext.safetensors"]:
        (tmp_path / f).rename(moved / f)
    kiln("run", moved / "ext.kart", f"--input=tokens=@{tokens}")
    # Wrong or missing external weights are load errors.
    w = moved / "ext.safetensors"
    data = w.read_bytes()
    write_safetensors(w, {"wte.weight": np.zeros((50, 16), np.float32)})
    expect_error(run_kiln("run", moved / "ext.kart", f"--input=tokens=@{tokens}"),
                 "('wpe.weight'): is missing from the external weights")
    write_safetensors(w, {"wte.weight": np.zeros((50, 15), np.float32)})
    expect_error(run_kiln("run", moved / "ext.kart", f"--input=tokens=@{tokens}"),
                 "is f32[50, 15] in")
    w.unlink()
    expect_error(run_kiln("run", moved / "ext.kart", f"--input=tokens=@{tokens}"),
                 "external weights:", "cannot open the file")


def fused_program(data):
    """Byte offset of the ElementwiseProgram of the first kernel of the
    first function (Program.functions -> Function.kernels -> Kernel.attrs)."""
    root = struct.unpack_from("<I", data, 0)[0]
    functions = deref(data, table_field(data, root, 5))
    fn = deref(data, functions + 4)
    kernels = deref(data, table_field(data, fn, 5))
    kernel = deref(data, kernels + 4)
    assert struct.unpack_from("<B", data, table_field(data, kernel, 3))[0] \
        == 21, "Kernel.attrs_type is ElementwiseProgram"
    return deref(data, table_field(data, kernel, 4))


# Instruction: op (int16) at 0, variant (int8) at 2, a (int32) at 4, b at 8.
@pytest.mark.parametrize("field,value,message", [
    ("a", 1000, "program instruction 0 reads a register not yet defined"),
    ("op", 999, "program instruction 0 has op code 999"),
    ("variant", 7, "program instruction 0 has op code 4 (variant 7)"),
    ("result", 1000, "program result register 1000 is out of range"),
])
def test_corrupted_fused_program(tmp_path, tokens, field, value, message):
    """A fused elementwise kernel's program (op codes, variants and register
    numbers) is checked when the artifact loads: a damaged one is an error
    naming the kernel, never an out-of-bounds read."""
    src = tmp_path / "f.kiln"
    src.write_text("model f(C = 4) {\n  dim B\n"
                   "  fn forward(x: f32[B, C]) -> f32[B, C] {\n"
                   "    return tanh(x * 2.0) + x\n  }\n}\n")
    art = tmp_path / "f.kart"
    kiln("compile", src, "-o", art)
    data = bytearray(art.read_bytes())
    program = fused_program(data)
    code = deref(data, table_field(data, program, 0))
    count = struct.unpack_from("<I", data, code)[0]
    assert count == 3, count  # mul, tanh, add
    first = code + 4
    if field == "result":
        struct.pack_into("<i", data, table_field(data, program, 2), value)
    elif field == "op":
        struct.pack_into("<h", data, first, value)
    elif field == "variant":
        struct.pack_into("<b", data, first + 2, value)
    else:
        struct.pack_into("<i", data, first + 4, value)
    bad = tmp_path / "bad.kart"
    bad.write_bytes(bytes(data))
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    expect_error(run_kiln("run", bad, f"--input=x=@{tmp_path / 'x.npy'}"),
                 "kernel 0 (FusedElementwise)", message)


def test_outputs_into_pipes_devices_and_links(tmp_path, tokens):
    """-o FILE replaces a regular file atomically, but writes into a FIFO or
    device (-o /dev/null) instead of renaming a file over it, and keeps a
    symbolic link a link. (Renaming over /dev/null once turned this
    machine's /dev/null into a plain file.)"""
    import os
    import stat
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    r = run_kiln("compile", EXAMPLES / "gpt2.kiln", "-D", "n_layer=1", "-o",
                 fifo)
    out = reader.communicate(timeout=120)[0]
    assert r.returncode == 0, r.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert b"kiln.parameter @wte.weight" in out
    real = tmp_path / "real.mlir"
    real.write_text("old")
    link = tmp_path / "link.mlir"
    link.symlink_to(real)
    r = run_kiln("compile", EXAMPLES / "gpt2.kiln", "-D", "n_layer=1", "-o",
                 link)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and "kiln.parameter" in real.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        ["link.mlir", "out.fifo", "real.mlir"]
    expect_error(run_kiln("compile", EXAMPLES / "gpt2.kiln", "-o", tmp_path),
                 f"{tmp_path}: is a directory")


def test_directories_and_fifos_as_inputs(tmp_path, artifact, tokens):
    """A directory where a file is expected is a clear error (it used to
    abort with 'LLVM ERROR: out of memory'), and a FIFO is refused rather
    than read (which blocks forever)."""
    import os
    for command in (["run"], ["inspect"], ["generate", "--max-tokens=1"]):
        expect_error(run_kiln(command[0], tmp_path, *command[1:]),
                     f"{tmp_path}: is a directory, not a file")
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    expect_error(run_kiln("run", artifact, f"--input=tokens=@{fifo}"),
                 "in.fifo: is not a regular file")
    expect_error(run_kiln("run", fifo), "in.fifo: is not a regular file")
    weights = tmp_path / "w.bin"
    os.mkfifo(weights)
    expect_error(run_kiln("compile", EXAMPLES / "llama.kiln",
                          f"--weights={weights}", "-o", tmp_path / "x.kart"),
                 "w.bin: is not a regular file")


# A fresh, small interpreter starts kiln and reports its peak memory: a
# process forked from pytest would count pytest's own (over 1 GB, with
# torch) in its maximum resident set size, exec or not.
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write("\\nkiln-peak-kib %d\\n" % usage.ru_maxrss)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def rss_bound(mib):
    """`mib`, or under the sanitizers (scripts/sanitize.sh sets
    KILN_SANITIZED) 3 x `mib` + 256 MiB: ASan's shadow memory and redzones
    add to every allocation and freed blocks wait in its quarantine. The
    failures these bounds catch are gigabytes either way."""
    return 3 * mib + 256 if os.environ.get("KILN_SANITIZED") else mib


def run_measured(*args):
    """Runs kiln; returns (exit status, stderr, peak resident MiB)."""
    r = subprocess.run(["/usr/bin/python3", "-c", _MEASURE, KILN,
                        *map(str, args)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, timeout=300)
    err, _, peak = r.stderr.rpartition("\nkiln-peak-kib ")
    assert r.returncode < 128, f"kiln died of signal {r.returncode - 128}"
    return r.returncode, err, int(peak) / 1024


def test_safetensors_header_work_is_bounded(tmp_path, tokens):
    """A header listing a million tiny tensors cost 1.17 GB and 6 s before
    the error: it was parsed whole into a JSON tree. The header is now read
    entry by entry and refused once it lists more tensors than the model
    has parameters."""
    n = 300_000
    entries = ",".join('"t%d":{"dtype":"F32","shape":[1],"data_offsets":[%d,%d]}'
                       % (i, 4 * i, 4 * i + 4) for i in range(n))
    header = ("{" + entries + "}").encode()
    header += b" " * ((8 - len(header) % 8) % 8)
    many = tmp_path / "many.safetensors"
    many.write_bytes(struct.pack("<Q", len(header)) + header + bytes(4 * n))
    defs = sum([["-D", f"{k}={v}"] for k, v in TINY.items()], [])
    rc, err, mib = run_measured("compile", EXAMPLES / "gpt2.kiln", *defs,
                                "-o", tmp_path / "a.kart", f"--weights={many}")
    assert rc == 1, err
    # 16 parameters, each in at most 6 tensors (a quantized checkpoint).
    assert "lists more than 96 tensors, but a checkpoint of this model " \
        "holds at most 96" in err, err
    assert mib < rss_bound(250), \
        f"{mib:.0f} MiB for a {len(header) >> 20} MiB header"
    # External weights of an artifact: bounded by its parameter count.
    kiln("compile", EXAMPLES / "gpt2.kiln", *defs, "-o", tmp_path / "e.kart",
         f"--external-weights={tmp_path / 'e.safetensors'}")
    (tmp_path / "e.safetensors").write_bytes(many.read_bytes())
    expect_error(run_kiln("run", tmp_path / "e.kart",
                          f"--input=tokens=@{tokens}"),
                 "external weights:", "lists more than 16 tensors")
    # A name given twice is an error, not a silent choice of one.
    hdr = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},' \
          b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
    dup = tmp_path / "dup.safetensors"
    dup.write_bytes(struct.pack("<Q", len(hdr)) + hdr + bytes(8))
    expect_error(run_kiln("compile", EXAMPLES / "gpt2.kiln", *defs, "-o",
                          tmp_path / "a.kart", f"--weights={dup}"),
                 "tensor 'a' appears twice")
    # Metadata and unknown keys are skipped, however they nest.
    hdr = (b'{"__metadata__":{"format":"pt","x":[1,[2,{"y":null}],true]},'
           b'"wte.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4],'
           b'"extra":{"k":[false]}}}')
    meta = tmp_path / "meta.safetensors"
    meta.write_bytes(struct.pack("<Q", len(hdr)) + hdr + bytes(4))
    expect_error(run_kiln("compile", EXAMPLES / "gpt2.kiln", *defs, "-o",
                          tmp_path / "a.kart", f"--weights={meta}"),
                 "weight 'wte.weight' is f32[1] in the weights")


def weights_file_offset(data, name):
    """Byte offset of the artifact's weights_file string contents: the
    occurrence that is a whole FlatBuffers string (its length before it;
    the history's command line holds the name too)."""
    data = bytes(data)
    at = data.find(name.encode())
    while at > 0 and struct.unpack_from("<I", data, at - 4)[0] != len(name):
        at = data.find(name.encode(), at + 1)
    assert at > 0, "the weights_file string is stored"
    return at


def test_external_weights_only_beside_the_artifact(tmp_path, tokens):
    """An artifact's weights_file was followed wherever it pointed (an
    absolute path, ../): any artifact could make kiln open any file. Now it
    is a bare file name, looked up beside the artifact; a file elsewhere is
    given explicitly (--weights-file, kiln.load(weights_file=))."""
    import os
    import sys
    from kiln_cli import BUILD
    sys.path.insert(0, str(BUILD / "python"))
    import kiln as kiln_py
    defs = sum([["-D", f"{k}={v}"] for k, v in TINY.items()], [])
    elsewhere = tmp_path / "store"
    elsewhere.mkdir()
    w = elsewhere / "weights_ext.safetensors"
    r = kiln("compile", EXAMPLES / "gpt2.kiln", *defs, "--seed=3",
             "-o", tmp_path / "m.kart", f"--external-weights={w}")
    assert "m.kart expects its weights beside it" in r.stderr, r.stderr
    kiln("compile", EXAMPLES / "gpt2.kiln", *defs, "--seed=3",
         "-o", tmp_path / "embedded.kart")
    data = bytearray((tmp_path / "m.kart").read_bytes())
    at = weights_file_offset(data, w.name)  # the name only, no directory
    assert str(elsewhere).encode() not in data
    expect_error(run_kiln("run", tmp_path / "m.kart",
                          f"--input=tokens=@{tokens}"),
                 f"{tmp_path}/weights_ext.safetensors: cannot open the file")
    ref = tmp_path / "ref.npy"
    kiln("run", tmp_path / "embedded.kart", f"--input=tokens=@{tokens}",
         f"--output=@{ref}")
    out = tmp_path / "out.npy"
    kiln("run", tmp_path / "m.kart", f"--weights-file={w}",
         f"--input=tokens=@{tokens}", f"--output=@{out}")
    assert out.read_bytes() == ref.read_bytes()
    kiln("inspect", tmp_path / "m.kart", f"--weights-file={w}")
    m = kiln_py.load(tmp_path / "m.kart", weights_file=w)
    assert np.array_equal(m.forward(tokens=np.load(tokens)), np.load(ref))
    with pytest.raises(Exception, match="cannot open the file"):
        kiln_py.load(tmp_path / "m.kart")
    # A weights file for an artifact that embeds its weights is a mistake.
    expect_error(run_kiln("run", tmp_path / "embedded.kart",
                          f"--weights-file={w}", f"--input=tokens=@{tokens}"),
                 "the artifact embeds its weights")
    # Paths written into the artifact are refused before anything is opened.
    for evil in ["../" + w.name[3:], "/" + w.name[1:], ".."]:
        bad = bytearray(data)
        if evil == "..":
            struct.pack_into("<I", bad, at - 4, 2)
            bad[at:at + 3] = b"..\0"  # FlatBuffers strings end in NUL
        else:
            bad[at:at + len(evil)] = evil.encode()
        (tmp_path / "evil.kart").write_bytes(bytes(bad))
        expect_error(run_kiln("run", tmp_path / "evil.kart",
                              f"--input=tokens=@{tokens}"),
                     "weights_file", "is not a file name")
    # Beside the artifact, only a regular file is opened (a FIFO hung).
    os.mkfifo(tmp_path / w.name)
    expect_error(run_kiln("run", tmp_path / "m.kart",
                          f"--input=tokens=@{tokens}"),
                 "is not a regular file")


def test_model_size_is_checked_before_the_ir_is_built(tmp_path):
    """-D n_layer=100000 built 2.9 GB of IR for minutes before the writer
    refused it; huge embeddings aborted while writing. The frontend now
    adds up the parameters as it declares them (a repeated block from its
    first copy) and counts the operations it unrolls."""
    small = ["-D", "n_embd=64", "-D", "n_head=4", "-D", "vocab_size=65",
             "-D", "n_positions=64"]
    out = tmp_path / "x.kart"
    for extra, message in [
            (["-D", "n_layer=100000"], "block 'h' repeats 100000 times with "
             "195 KiB of parameters each: the model needs 18.6 GiB, more than "
             "the 1.9 GiB an artifact embeds"),
            (["-D", "n_layer=100000",
              f"--external-weights={tmp_path / 'w.safetensors'}"],
             "block 'h' repeats 100000 times: the model would unroll to more "
             "than 250000 operations"),
            (["-D", "n_layer=5000", "--emit=mlir"],
             "the model unrolls to more than 250000 operations by here"),
            (["-D", "n_embd=65536", "-D", "vocab_size=65536"],
             "more than the 1.9 GiB an artifact embeds")]:
        args = small + extra if "n_embd=65536" not in extra else extra
        rc, err, mib = run_measured("compile", EXAMPLES / "gpt2.kiln", *args,
                                    "-o", out)
        assert rc == 1 and message in err, err
        assert "gpt2.kiln:" in err, err  # names the place in the source
        assert mib < rss_bound(400), f"{extra}: {mib:.0f} MiB before the error"
    assert not out.exists()


@pytest.mark.parametrize("command", ["run", "generate", "inspect", "train"])
def test_shared_options_have_shared_limits(tmp_path, artifact, command):
    """kiln train validated less than run and generate (--threads=100000
    segfaulted in OpenMP, --threads=0 was accepted). One parser now reads
    every command's options with the same limits and messages."""
    base = {"run": [artifact],
            "generate": [artifact, "--max-tokens=1"],
            "inspect": [artifact],
            "train": [EXAMPLES / "gpt2.kiln", "--data=x.txt", "--steps=1"]}
    for flag, message in [
            ("--threads=100000", "--threads expects an integer from 1 to 4096,"
                                 " got '100000'"),
            ("--threads=0", "--threads expects an integer from 1 to 4096"),
            ("--weights-file=", "--weights-file expects the external weights"),
            ("--bogus", f"unknown option '--bogus' for 'kiln {command}'"),
            ("x" * 100_000, "more than one")]:
        if command == "inspect" and flag.startswith("--threads"):
            continue
        r = run_kiln(command, *base[command], flag)
        assert r.returncode == 2, (flag, r.stderr)
        assert message in r.stderr, (flag, r.stderr)
        assert len(r.stderr) < 1000, "long values are not echoed in full"


def test_train_bounds_and_memory_estimate(tmp_path):
    """--batch=100000 and 2^40 aborted on memory, --accumulate=100000000
    built every micro-batch up front (7.9 GB). Counts are bounded, the
    plan's memory is checked before the first step, and micro-batches are
    drawn as they run."""
    text = tmp_path / "t.txt"
    text.write_text("To be, or not to be, that is the question. " * 200)
    def train(*flags, layers=1):
        return run_measured("train", EXAMPLES / "gpt2.kiln", "-D",
                            f"n_layer={layers}", "-D", "n_embd=16", "-D",
                            "n_head=2", f"--data={text}", "--steps=1", "-o",
                            tmp_path / "o.kart", *flags)
    for flag, message in [
            ("--batch=100000", "--batch expects an integer from 1 to 65536"),
            (f"--batch={2**40}", "--batch expects an integer from 1 to 65536"),
            ("--accumulate=100000000",
             "--accumulate expects an integer from 1 to 1048576")]:
        rc, err, _ = train(flag)
        assert rc == 2 and message in err, err
    # About 572 GiB of activations: more than any machine this runs on.
    rc, err, mib = train("-D", "n_positions=1024", "--seq=1024",
                         "--batch=65536", layers=8)
    assert rc == 1, err
    assert "--batch=65536 --seq=1024: training needs about" in err, err
    assert "of memory; use a smaller batch or sequence" in err, err
    assert mib < rss_bound(400), mib
    # Many micro-batches: memory stays flat.
    rc, err, mib = train("--batch=1", "--seq=8", "--accumulate=3000")
    assert rc == 0, err
    assert mib < rss_bound(400), mib


def test_an_artifact_is_held_once_while_it_loads(tmp_path):
    """Loading read the file into one buffer and copied it into an aligned
    second one: a peak of twice the artifact (1.0 GB for GPT-2 small's
    498 MB). It is now read once, into place. A 124 MiB artifact may add
    its own size and a little more to the peak of loading a tiny one, not
    twice its size."""
    def artifact(name, *defs):
        path = tmp_path / name
        r = kiln("compile", EXAMPLES / "gpt2.kiln", *defs, "-o", path)
        assert r.returncode == 0, r.stderr
        return path

    tiny = artifact("tiny.kart", "-D", "n_layer=1", "-D", "n_embd=64",
                    "-D", "n_head=2", "-D", "vocab_size=256")
    large = artifact("large.kart", "-D", "n_layer=2", "-D", "n_embd=512",
                     "-D", "n_head=8")
    size = large.stat().st_size / 2**20
    assert size > 100, size
    rc, err, base = run_measured("inspect", tiny)
    assert rc == 0, err
    rc, err, peak = run_measured("inspect", large)
    assert rc == 0, err
    assert peak - base < rss_bound(1.3 * size), \
        f"loading a {size:.0f} MiB artifact took {peak - base:.0f} MiB more"
