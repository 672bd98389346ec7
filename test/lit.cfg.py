# lit configuration for loom: dialect round-trips and diagnostics, one test per pass,
# end-to-end CLI tests. FileCheck/not/count come from LLVM 19's bin directory.
import os
import lit.formats

config.name = "loom"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".test", ".yaml"]
config.excludes = ["lit.cfg.py", "lit.site.cfg.py", "Inputs", "unit", "CMakeLists.txt", "expect_exit.py"]
config.test_source_root = os.path.join(config.loom_src_root, "test")
config.test_exec_root = os.path.join(config.loom_obj_root, "test")

config.environment["PATH"] = os.pathsep.join(
    [os.path.join(config.loom_obj_root, "bin"), config.llvm_tools_dir,
     config.environment.get("PATH", os.environ.get("PATH", ""))])
config.environment["LOOM_NO_COLOR"] = "1"
# `loom reshard --mpi` (parallel HDF5): tests that run it under mpirun say REQUIRES: mpi.
if getattr(config, "loom_have_mpi", False):
    config.available_features.add("mpi")
config.substitutions.append(("%python", config.python_executable))
# The Python module (python/): PYTHONPATH=%pymodule imports `loom`.
config.substitutions.append(("%pymodule", os.path.join(config.loom_obj_root, "python")))
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "Inputs")))
config.substitutions.append(
    ("%expect-exit", config.python_executable + " " +
     os.path.join(config.test_source_root, "expect_exit.py")))
