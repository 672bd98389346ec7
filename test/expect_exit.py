"""expect_exit.py CODE CMD...: runs CMD with stdout/stderr passed through and
succeeds only when it exits with exactly CODE (lit's shell has no $?)."""
import subprocess
import sys

code = int(sys.argv[1])
result = subprocess.call(sys.argv[2:])
if result != code:
    sys.stderr.write(f"expect_exit: {sys.argv[2]} exited {result}, expected {code}\n")
    sys.exit(1)
