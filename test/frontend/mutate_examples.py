"""Feeds the compiler hundreds of mutated copies of the example models.

Each mutant must either compile (exit 0) or be rejected with a located
`error:` (exit 1): never a crash, a hang, an abort, or a usage error.
Mutations are seeded, so a failure reproduces; the failing input is kept.
"""
import os
import random
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

kiln, examples, workdir = sys.argv[1], sys.argv[2], sys.argv[3]
per_file = int(sys.argv[4]) if len(sys.argv) > 4 else 150
os.makedirs(workdir, exist_ok=True)


def mutate(rng, text):
    b = bytearray(text.encode())
    kind = rng.randrange(7)
    i = rng.randrange(len(b))
    if kind == 0:  # delete a span
        del b[i:i + rng.randint(1, 40)]
    elif kind == 1:  # truncate
        del b[i:]
    elif kind == 2:  # overwrite a byte with anything (including non-UTF-8)
        b[i] = rng.randrange(256)
    elif kind == 3:  # overwrite with a printable character
        b[i] = ord(rng.choice("()[]{},:=.+-*/@#_0123456789abcTBxyz \n"))
    elif kind == 4:  # duplicate a line
        lines = b.split(b"\n")
        j = rng.randrange(len(lines))
        lines.insert(j, lines[j])
        b = bytearray(b"\n".join(lines))
    elif kind == 5:  # change a number
        digits = [k for k, c in enumerate(b) if chr(c).isdigit()]
        if digits:
            k = rng.choice(digits)
            b[k:k + 1] = str(rng.choice([0, 1, 3, 7, 99999999999999999999])).encode()
    else:  # swap two words
        words = text.split(" ")
        a, c = rng.randrange(len(words)), rng.randrange(len(words))
        words[a], words[c] = words[c], words[a]
        b = bytearray(" ".join(words).encode())
    return bytes(b)


def run(job):
    name, idx, data = job
    path = os.path.join(workdir, "%s-%d.kiln" % (name, idx))
    with open(path, "wb") as f:
        f.write(data)
    try:
        r = subprocess.run([kiln, "compile", path, "-o", os.devnull],
                           capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return path, "timed out"
    err = r.stderr.decode(errors="replace")
    if r.returncode == 0:
        os.remove(path)
        return None
    if r.returncode != 1:
        return path, "exit status %d: %s" % (r.returncode, err[-2000:])
    if "error:" not in err or "Stack dump" in err or "Assertion" in err:
        return path, "no clean error message: " + err[-2000:]
    os.remove(path)
    return None


jobs = []
for name in ["gpt2", "bert", "t5", "llama"]:
    text = open(os.path.join(examples, name + ".kiln")).read()
    rng = random.Random("kiln-" + name)
    for idx in range(per_file):
        jobs.append((name, idx, mutate(rng, text)))

with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
    failures = [f for f in pool.map(run, jobs) if f]
print("mutants: %d, failures: %d" % (len(jobs), len(failures)))
for path, why in failures[:10]:
    print("FAIL %s: %s" % (path, why))
sys.exit(1 if failures else 0)
