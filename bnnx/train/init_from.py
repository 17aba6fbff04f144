"""`method.init_from=RUN`: a run that starts from another run's variables, for every method.

The source is any run folder with a checkpoint: a finished bnnx run, or one `bnnx import larq` or
`bnnx import torchvision` wrote. Its params and batch statistics replace the fresh ones before
the method is built, so the method's optimizer state, masks and `prepare` (RPR's rescaling,
Bop's signs) all start from them; the method's own `quant` collection stays fresh. A resumed run
takes everything from its own checkpoint and does not read the source again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from bnnx.config import config_to_dict, flat_dict
from bnnx.errors import BnnxError, CheckpointError
from bnnx.io import read_json
from bnnx.train.restore import restore_trained
from bnnx.train.rundir import RunDir

if TYPE_CHECKING:
    from bnnx.config import TrainConfig

COLLECTIONS = ("params", "batch_stats")  # what a start takes; `quant` is the method's own


def source_config(run_dir: str | Path) -> TrainConfig:
    """The config the source run recorded, or a one-line CheckpointError naming the option."""
    try:
        return RunDir(run_dir).config()
    except BnnxError as error:
        raise CheckpointError(f"method.init_from: {error}") from None


def start_variables(config: TrainConfig, dataset, fresh: dict, run_dir: Path | None) -> tuple[dict, dict | None]:
    """(the variables the run starts from, the record of its source for summary.json).

    Without `method.init_from`, `fresh` and None. A resumed run keeps `fresh` (its checkpoint
    replaces them) and the record its summary.json already holds."""
    source = config.method.init_from
    if not source:
        return fresh, None
    if config.resume:
        return fresh, _recorded_start(run_dir) or {"run_dir": source}
    variables, record = load_start(source, config, dataset, fresh)
    return {**fresh, **variables}, record


def load_start(run_dir: str | Path, config: TrainConfig, dataset, fresh: dict) -> tuple[dict, dict]:
    """The params and batch statistics of the run in `run_dir`, checked to fit `fresh` (this run's
    model), as JAX arrays of the fresh dtypes; and the record of that run."""
    theirs = source_config(run_dir)
    theirs.dataset.require_examples()  # an import that records only shapes: training from it needs a data set
    _check_same_model(config, theirs, run_dir)
    try:
        run = restore_trained(run_dir, dataset, theirs)
    except BnnxError as error:
        raise CheckpointError(f"method.init_from: {error}") from None
    _check_same_variables(fresh, run.variables, _model_differences(config, theirs), run_dir)
    variables = {name: jax.tree.map(lambda mine, its: jnp.asarray(its, jnp.result_type(mine)),
                                    fresh.get(name, {}), run.variables[name]) for name in COLLECTIONS}
    return variables, _record(run_dir, theirs, run.step)


def _check_same_model(mine: TrainConfig, theirs: TrainConfig, run_dir) -> None:
    pairs = {"model": (theirs.model.name, mine.model.name), "model.target": (theirs.model.target, mine.model.target),
             "dataset": (theirs.dataset.name, mine.dataset.name)}
    for key, (there, here) in pairs.items():
        if there != here:
            raise CheckpointError(f"method.init_from={run_dir} does not fit this run: {key}={there} there, "
                                  f"{key}={here} here")


def _check_same_variables(fresh: dict, theirs: dict, differences: list[str], run_dir) -> None:
    for name in COLLECTIONS:
        difference = _first_difference(_shapes(fresh.get(name, {})), _shapes(theirs.get(name, {})), name)
        if difference:
            why = f"{', '.join(differences)}; " if differences else ""
            raise CheckpointError(f"method.init_from={run_dir} does not fit this run's model: {why}{difference}")


def _shapes(tree) -> dict[str, tuple]:
    return {jax.tree_util.keystr(path, simple=True, separator="/"): tuple(np.shape(leaf))
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _first_difference(mine: dict, theirs: dict, collection: str) -> str | None:
    for path in sorted(set(mine) | set(theirs)):
        if path not in theirs:
            return f"{collection} {path} is missing there"
        if path not in mine:
            return f"{collection} {path} is there but not in this model"
        if mine[path] != theirs[path]:
            return f"{collection} {path} is {theirs[path]} there, {mine[path]} here"
    return None


def _model_differences(mine: TrainConfig, theirs: TrainConfig) -> list[str]:
    """`model.KEY=VALUE there, VALUE here` for each model key the two configs set differently."""
    here = flat_dict({"model": config_to_dict(mine)["model"]})
    there = flat_dict({"model": config_to_dict(theirs)["model"]})
    return [f"{key}={_short(there.get(key))} there, {_short(here.get(key))} here"
            for key in sorted(set(here) | set(there)) if here.get(key) != there.get(key)]


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _record(run_dir, theirs: TrainConfig, step: int) -> dict:
    """What summary.json keeps of the source: where it was, what it was, and where it came from."""
    summary = _summary(Path(run_dir))
    record = {"run_dir": str(Path(run_dir).resolve()), "method": theirs.method.name, "model": theirs.model.name,
              "dataset": theirs.dataset.name, "step": step, "status": summary.get("status"),
              "test_accuracy": summary.get("test_accuracy")}
    if summary.get("imported_from"):
        record["imported_from"] = summary["imported_from"]
    return record


def _recorded_start(run_dir: Path | None) -> dict | None:
    start = _summary(run_dir).get("init_from") if run_dir is not None else None
    return start if isinstance(start, dict) else None


def _summary(run_dir: Path) -> dict:
    try:
        summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
    except BnnxError:
        return {}
    return summary if isinstance(summary, dict) else {}


def inherit_model(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """With `method.init_from=RUN`, the model and data set groups that `overrides` leave unset are
    the source run's: `bnnx train method=ste method.init_from=RUN` fine-tunes an imported graph,
    which no override could spell. A group that is set must fit the source (checked at start)."""
    import dataclasses

    if not config.method.init_from or config.resume:
        return config
    named = {o.partition("=")[0].lstrip("+~").split(".")[0] for o in overrides}
    theirs = source_config(config.method.init_from)
    inherited = {group: getattr(theirs, group) for group in ("model", "dataset") if group not in named}
    return dataclasses.replace(config, **inherited)
