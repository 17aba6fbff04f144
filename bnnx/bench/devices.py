"""Benchmark case for data parallelism: a train step split over 2 devices against 1 device.

On a CPU the two devices are XLA's forced host devices (`--xla_force_host_platform_device_count`),
which share the same cores, so about 1× is expected there; the figure is for a machine with two
accelerators. Measured in a fresh process, since the device count is fixed when JAX starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bnnx.bench.common import Result, seconds_per_call, synthetic_dataset

OVERRIDES = ("model=mlp", "model.hidden=[512,512]", "method=ste", "batch_size=128", "epochs=1")
SHAPE, STEPS = (28, 28, 1), 20


def step_seconds(devices: int) -> float:
    """Seconds per train step of the Fashion-MNIST-shaped MLP with `devices` devices (in this process)."""
    from bnnx.config.compose import compose_config
    from bnnx.train.experiment import build_experiment
    from bnnx.train.seeds import OneRun

    config = compose_config([*OVERRIDES, f"devices={devices}"])
    dataset = synthetic_dataset(SHAPE, config.batch_size)
    program = OneRun(build_experiment(config, dataset=dataset))
    state = program.stack([program.experiments[0].recipe.prepare(program.experiments[0].state)])
    batch = next(iter(program.train_batches(0, 0)))
    holder = [state]

    def keep(out):
        holder[0] = out[0]

    seconds_per_call(lambda: program.train_step(holder[0], batch), 1, keep)  # compile
    return seconds_per_call(lambda: program.train_step(holder[0], batch), STEPS, keep)


def devices_case(name: str = "data-parallel-2-vs-1-device") -> Result:
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"}
    if "cpu" in os.environ.get("JAX_PLATFORMS", "cpu"):
        env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run([sys.executable, "-m", "bnnx.bench.devices"], capture_output=True, text=True, env=env,
                          check=True)
    seconds = json.loads(done.stdout.strip().splitlines()[-1])
    ratio = seconds["1"] / seconds["2"]
    # no target: forced host devices share the cores, so the figure says nothing about two accelerators
    return Result(name, round(ratio, 3), "x", None, figures={
        "one_device_ms": round(1000 * seconds["1"], 3), "two_devices_ms": round(1000 * seconds["2"], 3),
        "note": "forced host devices share the CPU's cores: report only"})


if __name__ == "__main__":
    print(json.dumps({str(n): step_seconds(n) for n in (1, 2)}))
