"""`bnnx import torchvision ARCH WEIGHTS OUT_DIR`: torchvision's pretrained weights as a finished
`method=fp` run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import typer

from bnnx.cli.common import user_errors

commands = typer.Typer()  # this module's commands; bnnx.cli adds them to the `bnnx` app

import_app = typer.Typer(no_args_is_help=True, help="Turn weights trained elsewhere into finished bnnx runs.")
commands.add_typer(import_app, name="import")

TORCHVISION_HELP = """Turn a torchvision state dict of ARCH (resnet18, resnet50, googlenet) into a finished
method=fp run in OUT_DIR (ImageNet, 224x224, 1000 classes) that `bnnx sweep --use CELL=OUT_DIR` and
`method.init_from=OUT_DIR` accept: the RPR paper's baselines. WEIGHTS is a .safetensors file (no
pickle is loaded); convert a .pth in an environment with torch:
python -c "import torch, safetensors.torch as st; st.save_file(torch.load('W.pth'), 'W.safetensors')".
GoogLeNet runs with model.transform_input=true (torchvision's setting for its pretrained weights);
its auxiliary heads are dropped."""


@import_app.command(help=TORCHVISION_HELP)
@user_errors
def torchvision(
    arch: str = typer.Argument(..., help="resnet18, resnet50 or googlenet."),
    weights: Path = typer.Argument(..., help="The state dict, a .safetensors file."),
    out_dir: Path = typer.Argument(..., help="The run folder to write (must not hold a run)."),
    transform_input: bool = typer.Option(True, help="GoogLeNet only: torchvision's transform_input."),
):
    from bnnx.config.compose import compose_config
    from bnnx.errors import ConfigError
    from bnnx.pretrained.torchvision import ARCHS, load_state_dict, to_variables
    from bnnx.train.imported import write_imported_run

    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture '{arch}'; valid options: {', '.join(ARCHS)}")
    overrides = ["method=fp", f"model={arch}", "dataset=imagenet2012", "epochs=90", f"out_dir={out_dir}"]
    if arch == "googlenet":
        overrides.append(f"model.transform_input={str(transform_input).lower()}")
    config = compose_config(overrides)
    variables = to_variables(arch, load_state_dict(weights))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    run_dir = write_imported_run(config, variables, {"framework": "torchvision", "arch": arch,
                                                     "weights": weights.name, "sha256": digest})
    typer.echo(f"wrote {run_dir}: method=fp {arch} on imagenet2012 from {weights.name}")
