#!/usr/bin/env python3
"""Control for the hostile-pickle tests: loads a pickle with CPython's own unpickler,
which runs whatever it names. The tests use it to show their payloads are live (the
marker file appears) before showing that loom's VM leaves no trace."""
import pickle
import sys

with open(sys.argv[1], "rb") as f:
    pickle.load(f)
