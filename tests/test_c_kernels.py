"""The C runtime's binary dense kernel against NumPy, built as a user builds for speed
(-O3 -march=native: this CPU's fast popcount path, AVX-512's 4x4 tiles where it has them) and
with OpenMP, on shapes that hit every remainder: rows and outputs not multiples of 4, row
lengths with and without a partial 512-bit chunk, ternary planes."""

from __future__ import annotations

import importlib.resources
import os
import subprocess

import numpy as np
import pytest

DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "bnnx_runtime.h"
static void *load(const char *path) {
  FILE *f = fopen(path, "rb"); fseek(f, 0, SEEK_END); long size = ftell(f); fseek(f, 0, SEEK_SET);
  void *p = malloc(size); if (fread(p, 1, size, f) != (size_t)size) exit(3); fclose(f); return p;
}
int main(int argc, char **argv) {
  int m = atoi(argv[1]), n = atoi(argv[2]), k = atoi(argv[3]), words = (k + 31) / 32;
  uint32_t *a = load(argv[4]), *w = load(argv[5]), *z = argc > 7 ? load(argv[7]) : 0;
  int32_t *out = malloc(sizeof(int32_t) * m * n);
  bnnx_xnor_dense(a, m, w, z, n, words, k, out);
  FILE *f = fopen(argv[6], "wb"); fwrite(out, 4, (size_t)m * n, f); fclose(f);
  puts(bnnx_popcount_path());
  return 0;
}
"""


def pack(values: np.ndarray) -> np.ndarray:
    """(rows, K) booleans as bnnx's words: bit j of word i is element 32 i + j, the tail zero."""
    rows, k = values.shape
    padded = np.zeros((rows, -(-k // 32) * 32), np.uint8)
    padded[:, :k] = values
    return np.packbits(padded.reshape(rows, -1, 32), axis=-1, bitorder="little").view("<u4").reshape(rows, -1)


@pytest.fixture(scope="module", params=["", "-fopenmp"], ids=["one-thread", "openmp"])
def kernel(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("kernel")
    runtime = importlib.resources.files("bnnx.deploy").joinpath("c_runtime")
    for name in ("bnnx_runtime.h", "bnnx_runtime.c"):
        (folder / name).write_text(runtime.joinpath(name).read_text())
    (folder / "driver.c").write_text(DRIVER)
    flags = ["-O3", "-march=native", "-std=c99", *request.param.split()]
    subprocess.run(["gcc", *flags, "-o", str(folder / "driver"), str(folder / "driver.c"),
                    str(folder / "bnnx_runtime.c")], check=True, capture_output=True, text=True)
    return folder


@pytest.mark.parametrize("m,n,k", [(9, 13, 4096), (4, 8, 1000), (7, 6, 520), (5, 17, 31), (12, 4, 64)])
@pytest.mark.parametrize("ternary", [False, True], ids=["binary", "ternary"])
def test_dense_kernel_equals_numpy(kernel, m, n, k, ternary):
    rng = np.random.default_rng(m * 1000 + n + k)
    a, w = rng.random((m, k)) < 0.5, rng.random((n, k)) < 0.5  # True: +1
    z = rng.random((n, k)) < 0.7 if ternary else np.ones((n, k), bool)
    signed = lambda bits: np.where(bits, 1, -1)  # noqa: E731
    expected = signed(a) @ (signed(w) * z).T
    files = {"a": pack(a), "w": pack(w), **({"z": pack(z)} if ternary else {})}
    for name, words in files.items():
        (kernel / f"{name}.bin").write_bytes(words.tobytes())
    args = [str(kernel / "driver"), str(m), str(n), str(k), str(kernel / "a.bin"), str(kernel / "w.bin"),
            str(kernel / "out.bin"), *([str(kernel / "z.bin")] if ternary else [])]
    run = subprocess.run(args, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    got = np.frombuffer((kernel / "out.bin").read_bytes(), "<i4").reshape(m, n)
    np.testing.assert_array_equal(got, expected, err_msg=run.stdout)
