"""`bnnx data prepare`: write a tensorflow-datasets set from local files, offline."""

from __future__ import annotations

from typing import Optional

import typer

from bnnx.cli.common import user_errors

commands = typer.Typer()  # this module's commands; bnnx.cli adds them to the `bnnx` app

data_app = typer.Typer(no_args_is_help=True, help="Prepare data sets (tensorflow-datasets, array_record) offline.")
commands.add_typer(data_app, name="data")

PREPARE_HELP = """Prepare data set NAME (mnist, fashion_mnist, cifar10, cifar100, imagenet2012) so that
`bnnx train dataset=NAME` finds it. --from DIR reads local files: fashion_mnist from
/usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist), mnist from a folder with
its four idx files, cifar10/cifar100 from the python-pickle tarballs, imagenet2012 from tfds's
manual_dir (needs TensorFlow). Without --from, tfds's own download (needs TensorFlow and the
network). The result is the stock tfds data set: same features, splits and order."""


@data_app.command(help=PREPARE_HELP)
@user_errors
def prepare(
    name: str = typer.Argument(..., help="Data set name."),
    source: Optional[str] = typer.Option(None, "--from", help="Folder with the local source files."),
    data_dir: Optional[str] = typer.Option(
        None, "--data-dir", help="Where to write (default: tfds's, TFDS_DATA_DIR respected; as dataset.data_dir)."),
):
    from bnnx.data import DatasetConfig, load_dataset
    from bnnx.data.builders import prepare as prepare_dataset

    folder = prepare_dataset(name, source, data_dir)
    dataset = load_dataset(DatasetConfig(name=name, data_dir=data_dir))  # checks it reads back; caches arrays
    typer.echo(f"{name} is ready in {folder} ({dataset.num_train} training examples)")
