"""`model=external`: a user's flax model named by `model.target=package.module:attribute`.

The attribute may be a linen Module class, an NNX Module class, a `functools.partial` of either
(`ResNet18 = partial(ResNet, stage_sizes=[2, 2, 2, 2], ...)`, as flax's examples name variants)
or any function returning a linen or NNX module. `model.options` are its keyword arguments
(`num_classes` too, when it takes one; `rngs` for NNX, which bnnx passes). An NNX model runs as a
linen module (`bnnx.nnx_bridge.FromNNX`), so it is binarized by the same rules and policies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import os
import sys
from typing import Any, Callable

import flax.linen as nn
import jax
from flax import nnx

from bnnx.errors import ConfigError, check

NOT_OPTIONS = ("num_classes", "policy", "parent", "name", "rngs")  # passed by bnnx, not by model.options


def import_target(target: str | None) -> Callable:
    """The callable named "package.module:attribute", importable from the working directory or
    an installed package: a flax Module class, a partial of one or a function returning one."""
    check(bool(target) and target.count(":") == 1,
          f"model.target must be package.module:ClassName (got {target!r})")
    assert target is not None
    module_name, attribute = target.split(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the user's module: any error while importing it is theirs
        raise ConfigError(f"model.target {target}: cannot import {module_name}: {_first_line(error)}") from None
    found: Any = getattr(module, attribute, None)
    check(found is not None, f"model.target {target}: {module_name} has no {attribute}")
    check(kind_of(found) is not None, f"model.target {target} is not a flax module: it must be a linen or NNX "
                                      "Module class, a functools.partial of one or a function returning one")
    return found


def kind_of(target) -> str | None:
    """'linen' or 'nnx' for a Module class or a partial of one, 'function' for another
    callable, None for anything else."""
    base = target
    while isinstance(base, functools.partial):
        base = base.func
    if isinstance(base, type):
        return "linen" if issubclass(base, nn.Module) else "nnx" if issubclass(base, nnx.Module) else None
    return "function" if callable(base) else None


def parameters(target) -> dict[str, inspect.Parameter]:
    """The keyword arguments `target` takes (a linen class's fields)."""
    try:
        found = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}
    return {name: p for name, p in found.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def options_of(target) -> dict[str, Any]:
    """The options `target` accepts, with their defaults."""
    return {name: p.default for name, p in parameters(target).items() if name not in NOT_OPTIONS}


def external_module(target: str, options: dict, num_classes: int) -> nn.Module:
    """The linen module to binarize: the target's own, or its NNX module wrapped by `FromNNX`."""
    from bnnx.nnx_bridge import FromNNX

    build = import_target(target)
    takes = parameters(build)
    options = {"num_classes": num_classes, **options} if "num_classes" in takes else dict(options)
    unknown = sorted(set(options) - set(takes)) if not _takes_any_keyword(build) else []
    check(not unknown, f"model {target} takes no option '{unknown[0] if unknown else ''}'; "
                       f"valid: {', '.join(options_of(build)) or 'none'}")
    kind = kind_of(build)
    if kind == "nnx" or (kind == "function" and "rngs" in takes):
        return FromNNX(build, _frozen(options))
    with user_errors(f"model {target}"):
        model = build(**options)
    if isinstance(model, nnx.Module):
        return FromNNX(build, _frozen(options), takes_rngs=False)
    check(isinstance(model, nn.Module), f"model.target {target} returned {type(model).__name__}, not a flax module")
    return _hashable(model)


def _hashable(model: nn.Module) -> nn.Module:
    """`model` with its list fields as tuples (`partial(ResNet, stage_sizes=[2, 2, 2, 2])`):
    bnnx compiles per model, and jit hashes the module by its fields."""
    lists = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
             if f.name not in ("parent", "name") and isinstance(getattr(model, f.name, None), list)}
    tuples: dict[str, Any] = {name: tuple(value) for name, value in lists.items()}
    return model.clone(**tuples) if tuples else model


def _frozen(options: dict) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))


def _takes_any_keyword(build) -> bool:
    try:
        return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(build).parameters.values())
    except (TypeError, ValueError):
        return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


@contextlib.contextmanager
def user_errors(where: str, active: bool = True):
    """Any error raised by the user's model code in the block as one ConfigError line (when
    `active`: errors of bnnx's own models keep their traceback)."""
    if not active:
        yield
        return
    try:
        yield
    except ConfigError:
        raise
    except Exception as error:  # the user's model: whatever it raises at set-up is theirs to fix
        raise ConfigError(f"{where} fails at set-up: {_first_line(error)}") from None


def check_trains(model: nn.Module, variables: dict, example) -> None:
    """Trace (abstractly) one training-mode forward pass, so a model that fails only there fails
    at set-up, before anything is written."""
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jax.numpy.shape(a), jax.numpy.result_type(a)),
                            (variables, example))
    jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                            rngs={"dropout": jax.random.key(0)}), *abstract)
