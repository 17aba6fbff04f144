"""Modules that are also the function they are named for: `bnnx.train(config)` trains, while
`bnnx.train.loop` is still a module of the package (Python binds `bnnx.train` to the package as
soon as any of its modules is imported, so a plain function of that name could not stay)."""

from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, target: str) -> None:
    """Calling the module `module_name` calls `target` ("module:function"), imported on first call."""
    where, _, function = target.partition(":")

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(importlib.import_module(where), function)(*args, **kwargs)

    sys.modules[module_name].__class__ = CallableModule
