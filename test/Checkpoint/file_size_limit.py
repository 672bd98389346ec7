"""file_size_limit.py BYTES CMD...: runs CMD with its files limited to BYTES
(RLIMIT_FSIZE, with SIGXFSZ ignored), so that a write past the limit fails with
EFBIG as one on a full disk fails with ENOSPC: writers' failure paths, tested
without root or a small file system."""
import os
import resource
import signal
import sys

limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an ignored signal stays so across exec
os.execvp(sys.argv[2], sys.argv[2:])
