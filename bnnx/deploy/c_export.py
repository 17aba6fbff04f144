"""`bnnx export RUN --format c OUT_DIR`: a dependency-free C99 program of an export.

OUT_DIR gets bnnx_model.h (sizes, the arena's size, `bnnx_model_run`), bnnx_weights.h (the packed
kernels as `static const uint32_t` words in bnnx's bit layout, the folded BatchNorms' int32
multipliers and thresholds, the real layers' float32 parameters), bnnx_model.c (the program),
bnnx_runtime.h/.c (the kernels), main.c and a Makefile building `infer`, and input.bin: a few
test examples of the run's data set, as the model takes them (normalized, N×H×W×C float32; none
for `dataset=shapes`, which has no examples).
The program is the packed engine's own (`bnnx.deploy.c_graph`): what the engine folds, the C
code folds; a graph it cannot express is refused naming the op.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np

from bnnx.deploy.c_emit import Emitter
from bnnx.deploy.c_graph import trace
from bnnx.deploy.c_values import C_TYPES
from bnnx.io import write_bytes, write_text

RUNTIME_FILES = ("bnnx_runtime.h", "bnnx_runtime.c", "main.c", "Makefile")


def c_sources(model, packed, input_shape, num_classes: int) -> tuple[dict[str, str], dict]:
    """The generated files {name: text} and facts about them (arena bytes, layers dumped)."""
    emitter = Emitter(packed)
    output = emitter.run(trace(model, packed, input_shape))
    if output.shape != (1, num_classes):
        raise AssertionError(f"the traced program gives {output.shape}, not (1, {num_classes})")
    dense_out = emitter.dense(output)
    offsets, arena = emitter.place()
    h, w, c = (list(input_shape) + [1, 1])[:3] if len(input_shape) < 3 else input_shape
    header = "\n".join([
        "/* A bnnx model exported to C99 (bnnx export --format c). */",
        "#ifndef BNNX_MODEL_H", "#define BNNX_MODEL_H", "", '#include "bnnx_runtime.h"', "",
        f"#define BNNX_INPUT_H {h}", f"#define BNNX_INPUT_W {w}", f"#define BNNX_INPUT_C {c}",
        f"#define BNNX_INPUT_SIZE {int(np.prod(input_shape))}", f"#define BNNX_NUM_CLASSES {num_classes}",
        "/* the caller's working memory: BNNX_ARENA_BYTES bytes, at least 8-byte aligned */",
        f"#define BNNX_ARENA_BYTES {arena}", "",
        "/* logits[BNNX_NUM_CLASSES] of one example input[BNNX_INPUT_SIZE] (H x W x C float32, normalized) */",
        "void bnnx_model_run(const float *input, float *logits, void *arena);", "", "#endif", ""])
    weights = "\n".join(["/* The model's constants (included by bnnx_model.c only). */", "#ifndef BNNX_WEIGHTS_H",
                         "#define BNNX_WEIGHTS_H", "", *emitter.consts, "", "#endif", ""])
    ctype = lambda name: C_TYPES[_dtype(emitter, name)]  # noqa: E731
    pointers = [f"  {ctype(name)} *{name} = ({ctype(name)} *)(memory + {offset});"
                for name, offset in sorted(offsets.items(), key=lambda kv: int(kv[0][1:]))]
    copy = f"  memcpy(logits, {dense_out.storage}, {num_classes} * sizeof(float));"
    source = "\n".join(['#include "bnnx_model.h"', '#include "bnnx_weights.h"', "",
                        "void bnnx_model_run(const float *input, float *logits, void *arena) {",
                        "  unsigned char *memory = (unsigned char *)arena;", *pointers, *emitter.body, copy, "}", ""])
    files = {"bnnx_model.h": header, "bnnx_weights.h": weights, "bnnx_model.c": source}
    for name in RUNTIME_FILES:
        files[name] = importlib.resources.files("bnnx.deploy").joinpath("c_runtime", name).read_text()
    return files, {"arena_bytes": arena, "dumps": emitter.dumps}


def _dtype(emitter: Emitter, name: str) -> str:
    return emitter.dtypes.get(name, "f32")


def write_c_export(export_path: Path | str, out_dir: Path | str, inputs: np.ndarray | None = None) -> dict:
    """Write the C program of the export at `export_path` into `out_dir` (and `inputs`, float32
    N×H×W×C as the model takes them, as input.bin). Returns the facts of `c_sources`."""
    from bnnx.packed.engine import load

    model, packed, manifest = load(export_path)
    files, facts = c_sources(model, packed, tuple(manifest["input_shape"]), manifest["num_classes"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        write_text(out_dir / name, text)
    if inputs is not None:
        write_bytes(out_dir / "input.bin", np.ascontiguousarray(inputs, "<f4").tobytes())
    return facts


def test_inputs(dataset_config, count: int = 8) -> np.ndarray | None:
    """The first `count` test examples of a data set, normalized as the model takes them (None for
    `dataset=shapes`, which has none)."""
    from bnnx.data import load_dataset

    if not dataset_config.has_examples:
        return None
    dataset = load_dataset(dataset_config)
    images, _, weights = next(iter(dataset.test_batches(count)))
    return np.asarray(dataset.normalize(images), np.float32)[:int(np.sum(weights))]


def export_run_c(config, run_dir: Path | str, out_dir: Path | str) -> dict:
    """`bnnx export RUN --format c OUT_DIR`: the run's export as a C program in `out_dir`."""
    import tempfile

    from bnnx.export import export_run

    with tempfile.TemporaryDirectory() as tmp:
        path, manifest = export_run(config, run_dir, Path(tmp) / "export.npz")
        inputs = test_inputs(config.dataset)
        facts = write_c_export(path, out_dir, inputs)
    return {**facts, "manifest": manifest, "input_bin": inputs is not None}


def cortex_m4_sizes(out_dir: Path | str, compiler: str = "arm-none-eabi-gcc") -> dict[str, int]:
    """text/data/bss bytes of the export's model and runtime (not main.c) compiled for a
    Cortex-M4 (`-mcpu=cortex-m4 -mthumb -Os`) into one object, by `arm-none-eabi-size`."""
    import subprocess

    out_dir = Path(out_dir)
    obj = out_dir / "bnnx_cortex_m4.o"
    flags = ["-std=c99", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-Os",
             "-ffp-contract=off"]
    for source in ("bnnx_model.c", "bnnx_runtime.c"):
        subprocess.run([compiler, *flags, "-c", str(out_dir / source), "-o", str(out_dir / f"{source}.m4.o")],
                       check=True, capture_output=True, text=True)
    subprocess.run([compiler.replace("gcc", "ld"), "-r", "-o", str(obj),
                    *[str(out_dir / f"{s}.m4.o") for s in ("bnnx_model.c", "bnnx_runtime.c")]], check=True)
    text = subprocess.run([compiler.replace("gcc", "size"), str(obj)], check=True, capture_output=True,
                          text=True).stdout.splitlines()[1].split()
    return {"text": int(text[0]), "data": int(text[1]), "bss": int(text[2])}
