"""bnnx: train binarized (1-bit) and ternary neural networks in JAX.

The Python API, each name imported on first use so that `import bnnx` stays cheap:

    import bnnx

    config = bnnx.compose(["method=rpr", "model=mlp", "epochs=5"])  # a TrainConfig, as `bnnx train` builds it
    result = bnnx.train(config)                  # the one loop: result.summary, result.run_dir
    bnnx.evaluate(result.run_dir)                # test figures of its latest checkpoint
    path, manifest = bnnx.export(config, result.run_dir)  # the bit-packed .npz
    model = bnnx.binarize(flax_model, rules)     # any flax model, made binary by rules over its layers

`bnnx.train`, `bnnx.export` and `bnnx.evaluate` are also the modules of those names; calling one
calls its function (`bnnx.callable_module`).
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the names are, for type checkers; at run time `__getattr__` imports them
    from bnnx.binarizer import binarize
    from bnnx.config.compose import compose_config as compose
    from bnnx.config.config import TrainConfig
    from bnnx.evaluate import evaluate
    from bnnx.export.writer import export_run as export
    from bnnx.train.loop import train

__version__ = "0.1.0"

_API = {
    "compose": ("bnnx.config.compose", "compose_config"),
    "TrainConfig": ("bnnx.config.config", "TrainConfig"),
    "binarize": ("bnnx.binarizer", "binarize"),
    "train": ("bnnx.train", None),
    "export": ("bnnx.export", None),
    "evaluate": ("bnnx.evaluate", None),
}

__all__ = ["TrainConfig", "binarize", "compose", "evaluate", "export", "train"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'bnnx' has no attribute {name!r}")
    module, attribute = _API[name]
    found = importlib.import_module(module)
    return found if attribute is None else getattr(found, attribute)
