"""Lets torch 1.13's DCP modules import on Python 3.11 (import this before torch).

torch 1.13's DCP dataclasses use dataclass instances as defaults, which Python 3.11
refuses ("mutable default ... use default_factory"): turn such defaults into
default_factory copies before torch's modules define them.
"""
import dataclasses

_get_field = dataclasses._get_field


def _unhashable_instance(value):
    return dataclasses.is_dataclass(value) and not isinstance(value, type) and \
        type(value).__hash__ is None


def _patched_get_field(cls, name, type_, *args):
    default = cls.__dict__.get(name, dataclasses.MISSING)
    if isinstance(default, dataclasses.Field) and _unhashable_instance(default.default):
        value = default.default
        default.default = dataclasses.MISSING
        default.default_factory = lambda: dataclasses.replace(value)
    elif _unhashable_instance(default):
        setattr(cls, name, dataclasses.field(default_factory=lambda: dataclasses.replace(default)))
    return _get_field(cls, name, type_, *args)


dataclasses._get_field = _patched_get_field



def run_ranks(worker, args, world):
    """Runs worker(rank, *args, port, outdir) in `world` processes that meet on
    a free local port, and returns what each rank saved to outdir/rank<r>.pt."""
    import os
    import socket
    import tempfile

    import torch
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as outdir:
        mp.spawn(worker, args=(*args, port, outdir), nprocs=world, join=True)
        return [torch.load(os.path.join(outdir, f"rank{r}.pt")) for r in range(world)]
