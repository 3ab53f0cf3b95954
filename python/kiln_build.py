"""The build backend of `pip install .` (PEP 517, in-tree): builds kiln's
Python module and command with the project's CMake build and packs them as a
wheel. It needs nothing from a package index — no setuptools, no
scikit-build — so it works offline with Debian's pip and python3-venv once
scripts/install-deps.sh has installed the build's packages.

The build directory is $KILN_BUILD_DIR, else build/ beside pyproject.toml
(the one scripts/build.sh makes, so an installed checkout reuses it);
configured with Ninja in Release mode when it does not exist yet. Progress
shows with `pip install -v .`.
"""
import base64
import hashlib
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _version():
    text = (ROOT / "CMakeLists.txt").read_text()
    m = re.search(r"project\(kiln VERSION ([0-9.]+)", text)
    if not m:
        raise RuntimeError("CMakeLists.txt: no 'project(kiln VERSION x.y.z)'")
    return m.group(1)


def _build_dir():
    return Path(os.environ.get("KILN_BUILD_DIR", ROOT / "build")).resolve()


def _run(cmd):
    print("kiln_build: " + " ".join(map(str, cmd)), file=sys.stderr,
          flush=True)
    r = subprocess.run(list(map(str, cmd)), cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"kiln_build: '{' '.join(map(str, cmd))}' failed "
                           f"(exit {r.returncode}); see the output above "
                           f"(pip install -v . shows it)")


def _build():
    build = _build_dir()
    if not (build / "build.ninja").is_file():
        _run(["cmake", "-G", "Ninja", "-S", ROOT, "-B", build,
              "-DCMAKE_BUILD_TYPE=Release"])
    _run(["cmake", "--build", build, "--target", "_kiln", "kiln"])
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    module = build / "python" / "kiln" / f"_kiln{suffix}"
    if not module.is_file():
        built = sorted((build / "python" / "kiln").glob("_kiln*"))
        raise RuntimeError(
            f"kiln_build: {build} holds a module for another Python "
            f"({', '.join(p.name for p in built) or 'none'}), not this "
            f"pip's {sys.version.split()[0]} ({suffix}); kiln builds for "
            f"/usr/bin/python3: make the venv from it")
    return build, module


def _tag():
    impl = f"cp{sys.version_info.major}{sys.version_info.minor}"
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{impl}-{impl}-{plat}"


def _metadata(version):
    return (f"Metadata-Version: 2.1\nName: kiln\nVersion: {version}\n"
            f"Summary: A compiler and runtime for transformer models\n"
            f"Requires-Python: >=3.9\nRequires-Dist: numpy\n")


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
    return f"{name},sha256={digest.rstrip(b'=').decode()},{len(data)}\n"


# --- PEP 517 hooks -----------------------------------------------------------

def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory,
                                     config_settings=None):
    version = _version()
    info = Path(metadata_directory) / f"kiln-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(_metadata(version))
    return info.name


def build_wheel(wheel_directory, config_settings=None,
                metadata_directory=None):
    version = _version()
    build, module = _build()
    info = f"kiln-{version}.dist-info"
    files = []  # (name in the wheel, bytes, executable)
    for src in sorted((ROOT / "python" / "kiln").glob("*.py")):
        files.append((f"kiln/{src.name}", src.read_bytes(), False))
    files.append((f"kiln/{module.name}", module.read_bytes(), True))
    # The command line, installed into the environment's bin/.
    files.append((f"kiln-{version}.data/scripts/kiln",
                  (build / "bin" / "kiln").read_bytes(), True))
    files.append((f"{info}/METADATA", _metadata(version).encode(), False))
    files.append((f"{info}/WHEEL", (
        f"Wheel-Version: 1.0\nGenerator: kiln_build\nRoot-Is-Purelib: "
        f"false\nTag: {_tag()}\n").encode(), False))
    name = f"kiln-{version}-{_tag()}.whl"
    record = "".join(_record_line(n, d) for n, d, _ in files)
    record += f"{info}/RECORD,,\n"
    path = Path(wheel_directory) / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data, executable in files + [(f"{info}/RECORD",
                                             record.encode(), False)]:
            entry = zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0))
            # A regular file (S_IFREG) with its permissions: pip makes the
            # executable ones executable.
            entry.external_attr = (0o100000 | (0o755 if executable else 0o644)) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(entry, data)
    print(f"kiln_build: wrote {name}", file=sys.stderr)
    return name
