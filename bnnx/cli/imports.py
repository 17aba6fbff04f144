"""`bnnx import torchvision ARCH WEIGHTS OUT_DIR`: torchvision's pretrained weights as a finished
`method=fp` run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import typer

from bnnx.cli.common import user_errors

commands = typer.Typer()  # this module's commands; bnnx.cli adds them to the `bnnx` app

import_app = typer.Typer(no_args_is_help=True, help="Turn weights trained elsewhere into finished bnnx runs.")
commands.add_typer(import_app, name="import")

TORCHVISION_HELP = """Turn a torchvision state dict of ARCH (resnet18, resnet50, googlenet) into a finished
method=fp run in OUT_DIR that `bnnx sweep --use CELL=OUT_DIR` and `method.init_from=OUT_DIR` accept:
the RPR paper's baselines (ImageNet, 224x224, 1000 classes). A model fine-tuned to other classes or
--image-size records the first data set that fits, or --dataset; where none fits, dataset=shapes
with its input shape and class count (predict, export and summary work; training and evaluating
need a data set). WEIGHTS is a .safetensors file (no
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
    image_size: int = typer.Option(224, "--image-size", min=1, help="The side of the square RGB inputs."),
    dataset: str = typer.Option(None, help="The data set the run records (default: the first that fits, "
                                           "else shapes: the model's shapes alone)."),
):
    from bnnx.config.compose import compose_config
    from bnnx.data import dataset_overrides
    from bnnx.errors import ConfigError
    from bnnx.pretrained.torchvision import ARCHS, load_state_dict, num_classes, to_variables
    from bnnx.train.imported import write_imported_run

    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture '{arch}'; valid options: {', '.join(ARCHS)}")
    variables = to_variables(arch, load_state_dict(weights))
    datasets = dataset_overrides((image_size, image_size, 3), num_classes(variables), dataset)
    overrides = ["method=fp", f"model={arch}", *datasets, "epochs=90", f"out_dir={out_dir}"]
    if arch == "googlenet":
        overrides.append(f"model.transform_input={str(transform_input).lower()}")
    config = compose_config(overrides)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    run_dir = write_imported_run(config, variables, {"framework": "torchvision", "arch": arch,
                                                     "weights": weights.name, "sha256": digest})
    typer.echo(f"wrote {run_dir}: method=fp {arch} on {config.dataset.described()} from {weights.name}")


LARQ_HELP = """Turn a larq/Keras model file (.h5 or .keras, saved with model.save) into a finished method=ste
run in OUT_DIR that `bnnx eval`, `bnnx predict`, `bnnx export` and `method.init_from=OUT_DIR` accept. No
TensorFlow is needed: the file is read with h5py. Layers and quantizers map as docs/larq-migration.md
lists (what bnnx cannot express is refused in one line); a final softmax is dropped (bnnx models
return logits). The run records the first data set whose inputs and classes fit the model, or
--dataset; where none fits, dataset=shapes with the model's input shape and class count (predict,
export and summary work; training and evaluating need a data set)."""


@import_app.command(help=LARQ_HELP)
@user_errors
def larq(
    model_file: Path = typer.Argument(..., help="The larq/Keras model, a .h5 or .keras file."),
    out_dir: Path = typer.Argument(..., help="The run folder to write (must not hold a run)."),
    dataset: str = typer.Option(None, help="The data set the run records (default: the first that fits, "
                                               "else shapes: the model's shapes alone)."),
):
    import dataclasses

    from bnnx.config.compose import compose_config
    from bnnx.data import dataset_overrides
    from bnnx.interop.keras_file import read_keras_file
    from bnnx.interop.larq_import import TARGET, import_model, output_classes
    from bnnx.models import ModelConfig
    from bnnx.train.imported import write_imported_run

    graph, variables, shape = import_model(read_keras_file(model_file))
    datasets = dataset_overrides(shape, output_classes(graph, variables, shape), dataset)
    config = compose_config(["method=ste", *datasets, f"out_dir={out_dir}"])
    model = ModelConfig(name="external", target=TARGET, options={"graph": json.dumps(graph)})
    config = dataclasses.replace(config, model=model)
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    run_dir = write_imported_run(config, variables, {"framework": "larq", "file": model_file.name, "sha256": digest,
                                                     "layers": len(graph)})
    typer.echo(f"wrote {run_dir}: {len(graph)} layers of {model_file.name} as method=ste "
               f"on {config.dataset.described()}")
