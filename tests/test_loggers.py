"""Observers of the loop: TensorBoard event files in every run, W&B (offline) and MLflow (file store)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bnnx.io import read_json, read_jsonl

LOG_EVERY = 5


def tensorboard_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from the TFRecord event files in `run_dir`."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, dict[int, float]] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 16 + length
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


def wandb_records(path: Path):
    """The protobuf records of a W&B run file (LevelDB log format: 32 KiB blocks, 7-byte headers)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            yield Record.FromString(pending)
            pending = b""


def items(entries) -> dict[str, str]:
    """key -> JSON value of W&B config/history/summary items (the key is in `key` or `nested_key`)."""
    return {entry.key or "/".join(entry.nested_key): entry.value_json for entry in entries}


def train_digits(tmp_path, *overrides):
    from bnnx.config.compose import compose_config
    from bnnx.data.digits import load_digits_dataset
    from bnnx.train.loop import train

    config = compose_config(["epochs=2", f"log_every_steps={LOG_EVERY}", f"out_dir={tmp_path / 'run'}", *overrides])
    return train(config, dataset=load_digits_dataset())


def test_every_run_writes_tensorboard_rows_and_steps(tmp_path):
    result = train_digits(tmp_path, "method=bop")
    scalars = tensorboard_scalars(result.run_dir)
    rows = read_jsonl(result.run_dir / "metrics.jsonl")
    steps_per_epoch = 21  # 1347 digits / 64
    for epoch, row in enumerate(rows):
        step = (epoch + 1) * steps_per_epoch
        for key in ("train_loss", "test_accuracy", "lr", "gamma", "flip_ratio"):
            assert scalars[f"epoch/{key}"][step] == pytest.approx(row[key], rel=1e-6)
    assert sorted(scalars["step/train_loss"]) == list(range(LOG_EVERY, 2 * steps_per_epoch + 1, LOG_EVERY))
    assert set(scalars["step/lr"]) == set(scalars["step/train_loss"])
    first, last = scalars["step/lr"][LOG_EVERY], scalars["step/lr"][40]
    assert first > last > 0  # bop's cosine schedule, as the optimizer state holds it


def test_wandb_offline_logs_config_metrics_and_summary(tmp_path, monkeypatch):
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    result = train_digits(tmp_path, "logger=wandb")
    (run_file,) = (result.run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    config, history, summary = {}, [], {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update(items(record.run.config.update))
        elif kind == "config":
            config.update(items(record.config.update))
        elif kind == "history":
            history.append(items(record.history.item))
        elif kind == "summary":
            summary.update(items(record.summary.update))
    assert '"ste"' in config["method"] and config["epochs"] == "2"
    rows = read_jsonl(result.run_dir / "metrics.jsonl")
    logged = [float(h["test_accuracy"]) for h in history if "test_accuracy" in h]
    assert logged == pytest.approx([r["test_accuracy"] for r in rows])
    assert sum("step/train_loss" in h for h in history) == 42 // LOG_EVERY
    assert summary["status"] == '"completed"'
    assert float(summary["best_test_accuracy"]) == pytest.approx(
        read_json(result.run_dir / "summary.json")["best_test_accuracy"]
    )


def test_mlflow_file_store_logs_config_metrics_and_summary(tmp_path):
    from mlflow import MlflowClient

    uri = f"file:{tmp_path / 'mlruns'}"
    result = train_digits(tmp_path, "logger=mlflow", f"logger.tracking_uri={uri}", "logger.project=digits-test")
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("digits-test").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == result.run_dir.name
    assert run.data.params["method.name"] == "ste" and run.data.params["epochs"] == "2"
    rows = read_jsonl(result.run_dir / "metrics.jsonl")
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "test_accuracy"))
    assert [value for _, value in history] == pytest.approx([r["test_accuracy"] for r in rows])
    assert len(client.get_metric_history(run.info.run_id, "step/train_loss")) == 42 // LOG_EVERY
    summary_file = Path(client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path)))
    assert read_json(summary_file)["test_accuracy"] == pytest.approx(result.summary["test_accuracy"])


def test_an_unknown_logger_is_one_line(run_cli, tmp_path):
    code, text = run_cli("train", "logger=slack", "epochs=1", f"out_dir={tmp_path / 'run'}")
    assert code == 2 and "unknown logger 'slack'" in text
    assert not (tmp_path / "run").exists()
