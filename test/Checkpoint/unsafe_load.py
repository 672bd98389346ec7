#!/usr/bin/env python3
"""Control for the hostile-pickle tests: loads a pickle with CPython's own unpickler,
which runs whatever it names, or a DCP folder with torch's own DCP reader, which
torch.load's its bytes entries. The tests use it to show their payloads are live (the
marker file appears) before showing that loom's VM leaves no trace."""
import os
import pickle
import sys

if os.path.isdir(sys.argv[1]):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import dcp_shim  # noqa: F401  (before torch: see dcp_shim.py)
    import torch.distributed._shard.checkpoint as dcp
    reader = dcp.FileSystemReader(sys.argv[1])
    state = {k: None for k in reader.read_metadata().state_dict_metadata if "param_groups" in k}
    dcp.load_state_dict(state, reader, no_dist=True)
else:
    with open(sys.argv[1], "rb") as f:
        pickle.load(f)
