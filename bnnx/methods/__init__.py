"""Training methods by name. Each is one module with one typed config class."""

from __future__ import annotations

import importlib

from bnnx.errors import unknown_choice
from bnnx.methods.base import MethodConfig, MethodContext, Recipe

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


def method_class(name: str) -> type[MethodConfig]:
    if name not in METHODS:
        raise unknown_choice("method", name, METHODS)
    module, attribute = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


__all__ = ["METHODS", "MethodConfig", "MethodContext", "Recipe", "method_class"]
