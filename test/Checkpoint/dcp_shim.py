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

