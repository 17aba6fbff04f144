"""Training methods by name: the name a config's `method=` takes is declared here, with the
class that implements it."""

from __future__ import annotations

import importlib

from bnnx.errors import unknown_choice

METHODS = {
    "fp": "bnnx.methods.fp:FP",
    "ste": "bnnx.methods.ste:STE",
    "bmd": "bnnx.methods.bmd:BMD",
    "bop": "bnnx.methods.bop:Bop",
    "bnew": "bnnx.methods.bnew:BNEW",
    "rpr": "bnnx.methods.rpr:RPR",
    "ppt": "bnnx.methods.ppt:PPT",
    "ilb": "bnnx.methods.ilb:ILB",
}


def method_class(name: str) -> type:
    if name not in METHODS:
        raise unknown_choice("method", name, METHODS)
    module, attribute = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def method_name(cls: type) -> str:
    """The name under which `cls` is registered (a class declares one with `method_name`)."""
    declared = getattr(cls, "method_name", None)
    if declared:
        return declared
    for klass in cls.__mro__:  # a subclass of a registered method keeps its name
        where = f"{klass.__module__}:{klass.__qualname__}"
        for name, registered in METHODS.items():
            if registered == where:
                return name
    raise KeyError(f"{cls.__qualname__} is not a registered method: add it to bnnx.methods.registry.METHODS "
                   f"or give it a `method_name`")
