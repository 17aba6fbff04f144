"""A run's folder, and its one owner: `RunDir` writes and reads back its config.yaml,
metrics.jsonl and summary.json (checkpoints/ belongs to `bnnx.train.checkpoint`), says where a
run goes and whether it may be written there.

config.yaml is written and read with PyYAML (no OmegaConf in the loop), with OmegaConf's
reading of numbers such as `1e-3` as floats, so the file reads the same through either.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from pathlib import Path

import yaml

from bnnx.config import TrainConfig, config_from_dict, config_to_dict, flat_dict
from bnnx.errors import BnnxError, CheckpointError, ConfigError, CorruptFileError
from bnnx.io import read_json, read_jsonl, read_jsonl_rows, write_json, write_jsonl, write_text
from bnnx.train.plateau import curve_from_rows, time_to_plateau

EXIT_OK, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 3, 130
RESULT_FILES = ("summary.json", "metrics.jsonl", "checkpoints")


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    summary: dict
    metrics: list[dict]

    @property
    def status(self) -> str:
        return self.summary["status"]

    @property
    def exit_code(self) -> int:
        return {"completed": EXIT_OK, "diverged": EXIT_DIVERGED}.get(self.status, EXIT_INTERRUPTED)


class RunDir:
    """One run's folder: what it holds, and the only code that writes or reads its records."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def of(cls, config: TrainConfig, root: Path = Path("runs")) -> RunDir:
        """The folder `config` trains into: its out_dir, else a new runs/<time>-<method>-<model>-<dataset>."""
        if config.out_dir:
            return cls(config.out_dir)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = root / f"{stamp}-{config.method.name}-{config.model.name}-{config.dataset.name}"
        candidate, n = base, 1
        while candidate.exists():
            candidate, n = Path(f"{base}-{n}"), n + 1
        return cls(candidate)

    def holds_run(self) -> bool:
        return self.path.is_dir() and any((self.path / name).exists() for name in RESULT_FILES)

    def check(self, config: TrainConfig) -> None:
        """May this config write the folder? (Checks only: nothing is created.)"""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"out_dir {self.path} is a file, not a folder")
        has_results = self.holds_run()
        if config.resume and not has_results:
            raise ConfigError(f"nothing to resume in {self.path}: it holds no run")
        if config.resume:
            self.check_trained_here()
        if has_results and not config.resume:
            raise ConfigError(f"out_dir {self.path} already holds a run; pass resume=true to continue it or choose "
                              f"another out_dir")

    def check_trained_here(self) -> None:
        """A run `bnnx import` wrote has no training to continue: say how to train from it instead."""
        summary = self.path / "summary.json"
        try:
            source = read_json(summary).get("imported_from") if summary.exists() else None
        except (BnnxError, AttributeError):
            return  # a damaged record is the resume's own error to report
        if isinstance(source, dict):
            origin = " ".join(str(source[k]) for k in ("framework", "arch", "file") if source.get(k))
            raise ConfigError(f"{self.path} was imported ({origin}), not trained by bnnx: it has no training to "
                              f"resume; train from it with method.init_from={self.path} out_dir=NEW_DIR")

    # ---- config.yaml ---------------------------------------------------------------------

    def write_config(self, config: TrainConfig) -> None:
        write_text(self.path / "config.yaml", yaml.dump(config_to_dict(config), Dumper=_Dumper, sort_keys=False,
                                                        default_flow_style=False, allow_unicode=True))

    def config(self) -> TrainConfig:
        """The typed config the run recorded, or a one-line CheckpointError (missing or corrupt)."""
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path} does not exist or is not a folder")
        config_file = self.path / "config.yaml"
        if not config_file.exists():
            raise CheckpointError(f"{self.path} is not a bnnx run (no config.yaml)")
        try:
            data = yaml.load(config_file.read_text(), Loader=_Loader)
            if not isinstance(data, dict):
                raise ValueError("not a mapping of keys")
            return config_from_dict(data)
        except BnnxError as error:
            raise CheckpointError(f"{config_file} does not hold a valid config: {error}") from None
        except Exception as error:  # YAML raises many types for a damaged file
            reason = " ".join(str(error).split())[:160] or type(error).__name__
            raise CheckpointError(f"{config_file} is corrupt or cut short ({reason})") from None

    # ---- metrics.jsonl and summary.json ------------------------------------------------------

    def write_rows(self, rows: list[dict]) -> None:
        write_jsonl(self.path / "metrics.jsonl", rows)

    def rows_before(self, epoch: int) -> list[dict]:
        """metrics.jsonl's rows of epochs 0..epoch-1, the epochs the checkpoint being resumed has
        done. Rows after them (written before a later, lost checkpoint) and damaged lines among them
        are dropped; a resume cannot invent a missing epoch's numbers, so one missing is refused."""
        path = self.path / "metrics.jsonl"
        rows, _ = read_jsonl_rows(path)
        by_epoch = {row["epoch"]: row for row in rows
                    if isinstance(row.get("epoch"), int) and 0 <= row["epoch"] < epoch}
        missing = [e for e in range(epoch) if e not in by_epoch]
        if missing:
            shown = ", ".join(str(e) for e in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise CorruptFileError(f"{path} lacks the rows of epochs {shown} that the checkpoint has done "
                                   f"(the file is damaged); the run cannot be resumed with a complete record: "
                                   f"train it again in another out_dir")
        return [by_epoch[e] for e in range(epoch)]

    def write_summary(self, summary: dict) -> None:
        write_json(self.path / "summary.json", summary)

    def completed(self) -> RunResult | None:
        """The run, if it completed here, or None (a damaged record counts as not completed)."""
        try:
            summary = read_json(self.path / "summary.json") if (self.path / "summary.json").exists() else {}
            if isinstance(summary, dict) and summary.get("status") == "completed":
                return RunResult(self.path, summary, read_jsonl(self.path / "metrics.jsonl"))
        except BnnxError:
            pass
        return None


def resolve_resume(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """With resume=true, the run's own config.yaml is the base: `bnnx train resume=true out_dir=D`
    needs nothing else, and any other override (`overrides`, which composed `config`) must agree
    with what the run recorded."""
    if not config.resume:
        return config
    if not config.out_dir:
        raise ConfigError("resume=true needs out_dir=DIR, the folder of the run to continue")
    if not (Path(config.out_dir) / "config.yaml").exists():
        return config  # the loop reports that there is nothing to resume
    RunDir(config.out_dir).check_trained_here()  # before any override is compared with its config
    saved = RunDir(config.out_dir).config()
    keys = {o.partition("=")[0].lstrip("+~") for o in overrides} - {"resume", "out_dir"}
    if keys:
        mine, theirs = flat_dict(config_to_dict(config)), flat_dict(config_to_dict(saved))
        for key in sorted(mine):
            if key not in ("resume", "out_dir") and mine.get(key) != theirs.get(key):
                raise ConfigError(f"cannot resume with a different config: {key}={mine[key]!r} but the run has "
                                  f"{theirs.get(key)!r}")
    return dataclasses.replace(saved, resume=True, out_dir=config.out_dir)


def run_summary(config: TrainConfig, rows: list[dict], *, status: str, wall_time_s: float, parameters: dict,
                versions: dict, epochs_done: int | None = None, **extra) -> dict:
    """summary.json of a run of `config` whose metrics.jsonl holds `rows`: its status, accuracies,
    times and time to plateau, parameter counts and the code's versions; `extra` keys are added."""
    accuracies = [r["test_accuracy"] for r in rows]
    return {
        "status": status,
        "test_accuracy": accuracies[-1] if accuracies else None,
        "best_test_accuracy": max(accuracies) if accuracies else None,
        "epochs_done": len(rows) if epochs_done is None else epochs_done,
        "epochs": config.epochs,
        "wall_time_s": wall_time_s,
        "train_time_s": sum((r["epoch_time_s"] for r in rows), 0.0),
        "test_accuracy_curve": accuracies,
        "compile_time_s": sum((r.get("compile_time_s", 0.0) for r in rows), 0.0),
        "time_to_plateau": time_to_plateau(curve_from_rows(rows)) if rows else None,
        "parameters": parameters,
        "seed": config.seed,
        "method": config.method.name,
        "model": config.model.name,
        "dataset": config.dataset.name,
        "versions": versions,
        **extra,
    }


def prepare_run_dir(config: TrainConfig) -> Path:
    """The run's folder, checked and created (for callers that drive a Trainer themselves)."""
    run_dir = RunDir.of(config)
    run_dir.check(config)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    return run_dir.path


# OmegaConf reads `1e-3` (no dot) as a float where YAML 1.1 reads a string: a string that looks
# like one is quoted when written, and an unquoted one read as OmegaConf reads it; the file is
# byte for byte what OmegaConf.to_yaml wrote before.
_FLOAT = re.compile(r"""^(?:[-+]?[0-9]+(?:_[0-9]+)*\.[0-9]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
    |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\.[0-9]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class _Dumper(yaml.SafeDumper):
    pass


class _Loader(yaml.SafeLoader):
    pass


for _yaml_class in (_Dumper, _Loader):
    _yaml_class.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
_Dumper.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))  # as OmegaConf
