"""The C export's cases of `bnnx bench`: its runtime's kernels (built here with -O3 -march=native)
against FP32 XLA and the JAX packed engine on the same inputs in the same run, the fraction of the
CPU's popcount peak they reach (a microbenchmark in the same run), and a whole BinaryNet.

Each case is measured as a row (case, the times, ratio, target) and reported as `Result`s: a kernel
case gives two, its speedup over FP32 XLA and over the JAX packed engine. The C timings are
medians over repeats inside the compiled program (clock_gettime); JAX's are `median_ms`'s.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bnnx.bench.common import Result
from bnnx.bench.packed import NHWC, _levels, median_ms, random_variables
from bnnx.packed import kernels
from bnnx.packed.bits import pack_kernel

FLAGS = ["-O3", "-march=native", "-std=c99", "-D_POSIX_C_SOURCE=199309L"]
# The kernel cases run the runtime's OpenMP loop on as many threads as XLA's pool has cores (the
# runtime stays dependency-free: without -fopenmp the pragma is ignored), and once on one thread.
OPENMP = ["-fopenmp"]
DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "bnnx_runtime.h"
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static void *load(const char *path, long *size) {
  FILE *f = fopen(path, "rb"); fseek(f, 0, SEEK_END); *size = ftell(f); fseek(f, 0, SEEK_SET);
  void *p = malloc(*size); if (fread(p, 1, *size, f) != (size_t)*size) exit(3); fclose(f); return p;
}
static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
int main(int argc, char **argv) {
  int b = atoi(argv[2]), h = atoi(argv[3]), w = atoi(argv[4]), c = atoi(argv[5]);
  int n = atoi(argv[6]), reps = atoi(argv[7]);
  long xs, ws; float *x = load(argv[8], &xs); uint32_t *k = load(argv[9], &ws);
  int wc = (c + 31) / 32, conv = argv[1][0] == 'c', rows = b * h * w;
  uint8_t *bits = malloc((size_t)rows * c); uint32_t *a = malloc((size_t)rows * wc * 4);
  int32_t *out = malloc((size_t)rows * n * 4); uint32_t *scratch = malloc(BNNX_CONV_SCRATCH_WORDS(w, 9, c, n) * 4);
  int32_t geo[8] = {3, 3, 1, 1, 1, 1, h, w};
  double *t = malloc(sizeof(double) * reps);
  for (int r = 0; r <= reps; ++r) {
    double start = now();
    for (long i = 0; i < (long)rows * c; ++i) bits[i] = x[i] >= 0.0f;
    bnnx_pack_bits(bits, rows, c, a);
    if (conv)
      for (int i = 0; i < b; ++i)
        bnnx_xnor_conv(a + (long)i * h * w * wc, h, w, c, k, 0, n, geo, scratch, out + (long)i * h * w * n);
    else bnnx_xnor_dense(a, rows, k, 0, n, wc, c, out);
    if (r) t[r - 1] = now() - start;
  }
  qsort(t, reps, sizeof(double), cmp);
  FILE *f = fopen(argv[10], "wb"); fwrite(out, 4, (size_t)rows * n, f); fclose(f);
  printf("%.6f %s\n", t[reps / 2], bnnx_popcount_path());
  return 0;
}
"""
PEAK = r"""
#include <stdio.h>
#include <time.h>
#include <immintrin.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(void) {  /* 8 independent VPOPCNTQ chains on one core: popcounted bits per second */
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    long iters = 20000000; double start = now(); long long total = 0;
    {
      __m512i v[8], acc = _mm512_setzero_si512();
      for (int i = 0; i < 8; ++i) v[i] = _mm512_set1_epi64(0x0123456789abcdefLL * (i + 1));
      for (long i = 0; i < iters; ++i)
        for (int j = 0; j < 8; ++j) { v[j] = _mm512_popcnt_epi64(v[j]); __asm__ volatile("" : "+v"(v[j])); }
      for (int j = 0; j < 8; ++j) acc = _mm512_add_epi64(acc, v[j]);
      total += iters * 8 * 512 + (_mm512_reduce_add_epi64(acc) & 0);
    }
    double rate = total / (now() - start); if (rate > best) best = rate;
  }
  printf("%.6e\n", best);
  return 0;
}
"""

# the issue sets targets for the dense kernel only (vs FP32 XLA, vs the JAX packed engine); the conv is reported
DENSE_TARGETS = (10.0, 2.0)


def _compile(folder: Path, name: str, text: str, extra: tuple = (), flags: tuple = ()) -> Path:
    runtime = importlib.resources.files("bnnx.deploy").joinpath("c_runtime")
    for file in ("bnnx_runtime.h", "bnnx_runtime.c"):
        (folder / file).write_text(runtime.joinpath(file).read_text())
    (folder / f"{name}.c").write_text(text)
    subprocess.run(["gcc", *FLAGS, *flags, "-o", str(folder / name), str(folder / f"{name}.c"), *extra], check=True,
                   capture_output=True, text=True)
    return folder / name


def popcount_peak_bits_per_s(folder: Path) -> float:
    binary = _compile(folder, "peak", PEAK)
    return float(subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout)


def _run_kernel(folder: Path, threads: int, kind: str, sizes: tuple, repeats: int) -> tuple[float, str, bool]:
    """The C kernel's median ms and popcount path on `threads` threads, and whether its output
    equals `out.bin`'s reference (written by the one-thread build, checked against JAX's)."""
    name = "kernel" if threads == 1 else "kernel_omp"
    binary = folder / name if (folder / name).exists() else _compile(
        folder, name, DRIVER, (str(folder / "bnnx_runtime.c"),), () if threads == 1 else tuple(OPENMP))
    out = folder / f"out_{threads}.bin"
    run = subprocess.run([str(binary), kind, *map(str, (*sizes, repeats)), str(folder / "x.bin"), str(folder / "w.bin"),
                          str(out)], check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    c_ms, path = run.stdout.split()
    return float(c_ms), path, out.read_bytes() == (folder / "out_1.bin").read_bytes()


def _kernel_row(folder, name, kind, x, w, shape, float_fn, packed_fn, repeats, peak,
                targets: tuple) -> dict:
    b, h, wd, c = x.shape if x.ndim == 4 else (x.shape[0], 1, 1, x.shape[1])
    n, threads = w.shape[-1], os.cpu_count() or 1
    (folder / "x.bin").write_bytes(np.ascontiguousarray(x, "<f4").tobytes())
    (folder / "w.bin").write_bytes(pack_kernel(w, False)["sign"].astype("<u4").tobytes())
    one_ms, path, _ = _run_kernel(folder, 1, kind, (b, h, wd, c, n), repeats)
    c_ms, _, threads_agree = _run_kernel(folder, threads, kind, (b, h, wd, c, n), repeats)
    ms = median_ms({"float32": float_fn, "packed": packed_fn}, repeats)
    c_out = np.frombuffer((folder / "out_1.bin").read_bytes(), "<i4")
    equal = bool(np.array_equal(c_out, np.asarray(packed_fn()).ravel())) and threads_agree
    xnors = b * h * wd * n * c * (9 if kind == "conv" else 1)
    return {"case": name, "kernel": list(shape), "batch": b, "c_ms": round(c_ms, 3), "c_threads": threads,
            "c_ms_1_thread": round(one_ms, 3), "float32_ms": round(ms["float32"], 3),
            "jax_packed_ms": round(ms["packed"], 3), "outputs_equal": equal, "popcount_path": path,
            "ratio": round(ms["float32"] / c_ms, 3), "target": targets[0],
            "ratio_vs_jax_packed": round(ms["packed"] / c_ms, 3), "target_vs_jax_packed": targets[1],
            "ratio_1_thread": round(ms["float32"] / one_ms, 3),
            "ratio_vs_jax_packed_1_thread": round(ms["packed"] / one_ms, 3),
            "fraction_of_popcount_peak": round(xnors / (one_ms / 1000) / peak, 3), "popcount_peak_bits_per_s": peak,
            "figure": f"float32 time / C time (speedup), C on {threads} threads (OpenMP) as XLA's pool; "
                      "ratio_vs_jax_packed: JAX packed time / C time; *_1_thread: the C kernel on one thread; "
                      "fraction_of_popcount_peak: one thread against one core's peak",
            "repeats": repeats}


def c_kernel_cases(folder: Path, repeats: int = 9) -> list[dict]:
    rng = np.random.default_rng(0)
    peak = popcount_peak_bits_per_s(folder)
    x = rng.normal(size=(64, 4096)).astype(np.float32)
    w = _levels(rng, (4096, 4096))
    planes = {k: jnp.asarray(v) for k, v in pack_kernel(w, False).items()}
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    dense_f = jax.jit(lambda x, w: jnp.dot(jnp.where(x >= 0, 1.0, -1.0), w))
    dense_p = jax.jit(lambda x, p: kernels.xnor_dense(x >= 0, p, 4096))
    rows = [_kernel_row(folder, "c-dense4096-w1a1-b64", "dense", x, w, (4096, 4096), lambda: dense_f(xj, wj),
                        lambda: dense_p(xj, planes), repeats, peak, DENSE_TARGETS)]
    x = rng.normal(size=(64, 16, 16, 256)).astype(np.float32)
    shape = (3, 3, 256, 256)
    w = _levels(rng, shape)
    planes = {k: jnp.asarray(v) for k, v in pack_kernel(w, False).items()}
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    pads = kernels.conv_pads((16, 16), (3, 3), (1, 1), "SAME")
    conv_f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(jnp.where(x >= 0, 1.0, -1.0), w, (1, 1), pads,
                                                               dimension_numbers=NHWC))
    conv_p = jax.jit(lambda x, p: kernels.xnor_conv(x >= 0, p, shape, (1, 1), pads))
    rows.append(_kernel_row(folder, "c-conv3x3-256-w1a1-16x16-b64", "conv", x, w, shape, lambda: conv_f(xj, wj),
                            lambda: conv_p(xj, planes), max(3, repeats // 2), peak, (None, None)))
    return rows


CASE_NAMES = ("c-dense4096-w1a1-b64", "c-conv3x3-256-w1a1-16x16-b64", "c-binarynet-cifar10-b1",
              "c-binarynet-cifar10-b64", "c-cortex-m4-mlp", "c-cortex-m4-binarynet")


def run_c_cases(only: str | None = None) -> list[Result]:
    return [result for row in c_rows(only) for result in as_results(row)]


def as_results(row: dict) -> list[Result]:
    """A measured row as its `Result`s: the ratio against its target, and a kernel's speedup over
    the JAX packed engine as a second result against its own target."""
    figures = {k: v for k, v in row.items() if k not in ("case", "ratio", "target", "met")}
    results = [Result(row["case"], row["ratio"], "x", row["target"], figures=figures)]
    if "target_vs_jax_packed" in row:
        results.append(Result(f"{row['case']}-vs-jax-packed", row["ratio_vs_jax_packed"], "x",
                              row["target_vs_jax_packed"], figures={"c_ms": row["c_ms"],
                                                                    "jax_packed_ms": row["jax_packed_ms"]}))
    return results


def c_rows(only: str | None = None) -> list[dict]:
    """The C cases (names start with "c-"), when gcc is on the PATH; none (with a note) otherwise."""
    import shutil

    if only is not None and not any(only in name for name in CASE_NAMES):
        return []
    if shutil.which("gcc") is None:
        return [{"case": "c-kernels", "ratio": 0.0, "target": None, "met": None,
                 "note": "gcc is missing (install: sudo apt-get install gcc)"}]
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        rows = c_kernel_cases(folder) + whole_model_rows(folder)
        if shutil.which("arm-none-eabi-gcc"):
            rows += cortex_m4_rows(folder)
        return [row for row in rows if only is None or only in row["case"]]


MODEL_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "bnnx_model.h"
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static uint64_t arena[(BNNX_ARENA_BYTES + 7) / 8];
int main(int argc, char **argv) {
  int batch = atoi(argv[1]), reps = atoi(argv[2]);
  float *x = malloc(sizeof(float) * BNNX_INPUT_SIZE * batch), logits[BNNX_NUM_CLASSES];
  double best = 1e30;
  for (long i = 0; i < (long)BNNX_INPUT_SIZE * batch; ++i) x[i] = (float)((i * 7919) % 2001 - 1000) / 500.0f;
  for (int r = 0; r <= reps; ++r) {
    double start = now();
    for (int b = 0; b < batch; ++b) bnnx_model_run(x + (long)b * BNNX_INPUT_SIZE, logits, arena);
    double t = now() - start;
    if (r && t < best) best = t;
  }
  printf("%.6f\n", best);
  return 0;
}
"""


def _model_export(folder: Path, name: str, options: dict, dataset_shape, num_classes: int = 10):
    """A random-valued zoo model written as `bnnx export` writes it, and its C program."""
    from bnnx.deploy.c_export import write_c_export
    from bnnx.export import export_with_folds, tensor_entries
    from bnnx.models import ModelConfig, build_model

    config = ModelConfig(name=name, options=options)
    model = build_model(config, num_classes)
    x = jnp.zeros((1, *dataset_shape), jnp.float32)
    variables = random_variables(model, x)
    fields = dataclasses.asdict(config)
    info = {"model": {**{k: v for k, v in fields.items() if k != "options"}, **fields["options"]},
            "num_classes": num_classes, "input_shape": list(dataset_shape)}
    data, manifest = export_with_folds(tensor_entries(variables, model.policy), info)
    (folder / f"{name}.npz").write_bytes(data)
    facts = write_c_export(folder / f"{name}.npz", folder / name)
    return model, variables, facts


def whole_model_rows(folder: Path, repeats: int = 5) -> list[dict]:
    """BinaryNet (CIFAR-10 shape, full width) batch 1 and 64: the C program (-O3 -march=native)
    against the JAX packed engine and the float32 model (XLA), all on this CPU in this run."""
    from bnnx.packed.engine import load, packed_apply

    model, variables, facts = _model_export(folder, "binarynet", {}, (32, 32, 3))
    out = folder / "binarynet"
    (out / "model_bench.c").write_text(MODEL_DRIVER)
    subprocess.run(["gcc", *FLAGS, "-ffp-contract=off", "-o", str(out / "model_bench"), str(out / "model_bench.c"),
                    str(out / "bnnx_model.c"), str(out / "bnnx_runtime.c")], check=True, capture_output=True, text=True)
    packed_model, packed, _ = load(folder / "binarynet.npz")
    rows = []
    for batch in (1, 64):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, 32, 32, 3)), jnp.float32)
        float_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
        packed_fn = jax.jit(lambda p, x: packed_apply(packed_model, p, x))
        ms = median_ms({"float32": lambda: float_fn(variables, x), "packed": lambda: packed_fn(packed, x)}, repeats)
        run = subprocess.run([str(out / "model_bench"), str(batch), str(repeats)], check=True, capture_output=True,
                             text=True)
        c_ms = float(run.stdout)
        rows.append({"case": f"c-binarynet-cifar10-b{batch}", "batch": batch, "c_ms": round(c_ms, 3),
                     "float32_ms": round(ms["float32"], 3), "jax_packed_ms": round(ms["packed"], 3),
                     "ratio": round(ms["float32"] / c_ms, 3), "ratio_vs_jax_packed": round(ms["packed"] / c_ms, 3),
                     "target": None, "met": None, "arena_bytes": facts["arena_bytes"],
                     "figure": "float32 time / C time (report only: no target in the issue)"})
    return rows


def cortex_m4_rows(folder: Path) -> list[dict]:
    """Flash (text + data) and RAM (arena + data + bss) of the C program for a Cortex-M4, next to
    the float32 model's parameter bytes: the zoo's digits MLP and a BinaryNet on CIFAR-10 shapes."""
    from bnnx.deploy.c_export import cortex_m4_sizes

    rows = []
    for name, shape in (("mlp", (8, 8, 1)), ("binarynet", (32, 32, 3))):
        if not (folder / name / "bnnx_model.c").exists():
            _model_export(folder, name, {}, shape)
        sizes = cortex_m4_sizes(folder / name)
        flash, float_bytes = sizes["text"] + sizes["data"], _float_bytes(folder / f"{name}.npz")
        rows.append({"case": f"c-cortex-m4-{name}", **sizes, "flash_bytes": flash,
                     "ram_bytes": _arena(folder / name) + sizes["data"] + sizes["bss"],
                     "float32_model_bytes": float_bytes, "ratio": round(float_bytes / flash, 3), "target": None,
                     "met": None, "figure": "float32 model bytes / flash bytes (report only)"})
    return rows


def _arena(out: Path) -> int:
    text = (out / "bnnx_model.h").read_text()
    return int(text.split("#define BNNX_ARENA_BYTES ")[1].split()[0])


def _float_bytes(export: Path) -> int:
    from bnnx.export import unpack

    manifest = unpack(export).manifest
    return int(manifest["bytes"]["float32"])
