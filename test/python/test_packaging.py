"""`pip install .` from the checkout, offline, with Debian's pip into a fresh
venv (python3 -m venv --system-site-packages, so Debian's numpy is there):
the kiln package and the kiln command install and work outside the
checkout, and uninstall cleanly."""
import os
import subprocess
import sys

from kiln_cli import BUILD, EXAMPLES, ROOT


def run(cmd, **kw):
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True,
                       timeout=1200, **kw)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
    return r


def test_pip_install_into_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # Offline: no index at all; the build backend needs nothing from one.
    env.update(KILN_BUILD_DIR=str(BUILD), PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = run([venv / "bin" / "pip", "install", ROOT], env=env)
    assert "Successfully installed kiln" in r.stdout
    # Outside the checkout, with nothing on PYTHONPATH: the venv's copy.
    code = f"""
import kiln, numpy as np
print(kiln.__version__, kiln.__file__)
m = kiln.compile({str(EXAMPLES / 'gpt2.kiln')!r}, defines=dict(n_layer=1,
    n_embd=16, n_head=2, n_positions=8, vocab_size=11))
print(m.forward(tokens=np.zeros((1, 4), np.int32)).shape)
"""
    out = run([venv / "bin" / "python", "-c", code], env=env,
              cwd=tmp_path).stdout.split()
    version = (ROOT / "CMakeLists.txt").read_text().split(
        "project(kiln VERSION ")[1].split()[0]
    assert out[0] == version
    assert out[1].startswith(str(venv)), out[1]
    assert out[2:] == ["(1,", "4,", "11)"]
    assert run([venv / "bin" / "kiln", "--version"], env=env,
               cwd=tmp_path).stdout.startswith(f"kiln {version}")
    run([venv / "bin" / "pip", "uninstall", "-y", "kiln"], env=env)
    assert not (venv / "bin" / "kiln").exists()
    r = subprocess.run([venv / "bin" / "python", "-c", "import kiln"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode != 0 and "No module named 'kiln'" in r.stderr
