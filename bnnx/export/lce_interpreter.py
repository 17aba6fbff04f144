"""Run a .tflite file in Larq Compute Engine's own Python interpreter (its x86 reference kernels):
`python lce_interpreter.py MODEL.tflite INPUTS.npy OUTPUTS.npy`.

Standalone on purpose (numpy and LCE only, no bnnx import): LCE 0.16.0's interpreter extension is
built against NumPy 1.x and misreads NumPy 2 arrays (it sees 0 bytes), while bnnx needs NumPy 2,
so the tests run this file with the python of a separate environment holding `numpy<2` and
`larq-compute-engine==0.16.0` (see `make lce-env`). LCE's top-level `__init__` imports
TensorFlow's converter; registering its parent packages as empty modules first loads only
`larq_compute_engine.tflite.python.interpreter`, which needs no TensorFlow.
"""

import importlib.util
import sys
import types

import numpy as np


def interpreter_class():
    """LCE's `Interpreter`, imported without running `larq_compute_engine/__init__.py`."""
    spec = importlib.util.find_spec("larq_compute_engine")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: larq-compute-engine is not installed in this python (make lce-env)")
    root = spec.submodule_search_locations[0]
    for name, sub in (("larq_compute_engine", ""), ("larq_compute_engine.tflite", "/tflite"),
                      ("larq_compute_engine.tflite.python", "/tflite/python")):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [root + sub]
            sys.modules[name] = module
    from larq_compute_engine.tflite.python.interpreter import Interpreter  # pyright: ignore[reportMissingImports]

    return Interpreter


def main(model_path: str, inputs_path: str, outputs_path: str) -> None:
    with open(model_path, "rb") as f:
        # the reference kernel: the only one running LceBconv2d's zero padding with int32 words
        interpreter = interpreter_class()(f.read(), num_threads=1, use_reference_bconv=True)
    inputs = np.load(inputs_path).astype(np.float32)
    np.save(outputs_path, np.asarray(interpreter.predict(inputs), np.float32))


if __name__ == "__main__":
    main(*sys.argv[1:4])
