# lit configuration for kiln's compiler tests.
import os
import lit.formats

config.name = "kiln"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".kiln", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.kiln_obj_root, "test")
config.excludes = ["Inputs", "unit", "CMakeLists.txt", "lit.cfg.py"]

config.environment["PATH"] = os.pathsep.join(
    [config.kiln_tools_dir, config.llvm_tools_dir, config.environment.get("PATH", "")])
config.substitutions.append(("%kiln-opt", os.path.join(config.kiln_tools_dir, "kiln-opt")))
config.substitutions.append(("%kiln", os.path.join(config.kiln_tools_dir, "kiln")))
config.substitutions.append(("%examples", os.path.join(config.kiln_src_root, "examples")))
config.substitutions.append(("%docs", os.path.join(config.kiln_src_root, "docs")))
config.substitutions.append(("%builddocs", os.path.join(config.kiln_obj_root, "docs")))
config.substitutions.append(("%python", config.python_executable))
# nvcc, for `kiln compile --target=cuda` (found as kiln finds it).
nvcc = os.environ.get("KILN_NVCC") or "/usr/local/cuda/bin/nvcc"
if os.access(nvcc, os.X_OK):
    config.available_features.add("nvcc")
    config.environment["KILN_NVCC"] = nvcc
# Sanitized runs (scripts/sanitize.sh) name the real nvcc behind the wrapper
# in KILN_NVCC.
if "KILN_SANITIZED_NVCC" in os.environ:
    config.environment["KILN_SANITIZED_NVCC"] = os.environ["KILN_SANITIZED_NVCC"]
