"""The C runtime's binary dense and conv kernels against NumPy, built as a user builds for speed
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
static int dense(char **argv, int argc, int32_t **out) {
  int m = atoi(argv[2]), n = atoi(argv[3]), k = atoi(argv[4]), words = (k + 31) / 32;
  uint32_t *a = load(argv[5]), *w = load(argv[6]), *z = argc > 8 ? load(argv[8]) : 0;
  *out = malloc(sizeof(int32_t) * m * n);
  bnnx_xnor_dense(a, m, w, z, n, words, k, *out);
  return m * n;
}
/* conv H W CIN N KH KW SH SW PAD_TOP PAD_LEFT HO WO a.bin w.bin out.bin [z.bin] */
static int conv(char **argv, int argc, int32_t **out) {
  int32_t v[12], geo[8];
  for (int i = 0; i < 12; ++i) v[i] = atoi(argv[2 + i]);
  for (int i = 0; i < 8; ++i) geo[i] = v[4 + i];
  uint32_t *a = load(argv[14]), *w = load(argv[15]), *z = argc > 17 ? load(argv[17]) : 0;
  uint32_t *scratch = malloc(BNNX_CONV_SCRATCH_WORDS(geo[7], geo[0] * geo[1], v[2], v[3]) * 4);
  *out = malloc(sizeof(int32_t) * geo[6] * geo[7] * v[3]);
  bnnx_xnor_conv(a, v[0], v[1], v[2], w, z, v[3], geo, scratch, *out);
  return geo[6] * geo[7] * v[3];
}
int main(int argc, char **argv) {
  int32_t *out;
  int count = argv[1][0] == 'c' ? conv(argv, argc, &out) : dense(argv, argc, &out);
  FILE *f = fopen(argv[argv[1][0] == 'c' ? 16 : 7], "wb"); fwrite(out, 4, (size_t)count, f); fclose(f);
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
    got, path = run_driver(kernel, ["dense", m, n, k], ternary, m * n)
    np.testing.assert_array_equal(got.reshape(m, n), expected, err_msg=path)


def run_driver(kernel, sizes: list, ternary: bool, count: int) -> tuple[np.ndarray, str]:
    args = [str(kernel / "driver"), *map(str, sizes), str(kernel / "a.bin"), str(kernel / "w.bin"),
            str(kernel / "out.bin"), *([str(kernel / "z.bin")] if ternary else [])]
    run = subprocess.run(args, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    got = np.frombuffer((kernel / "out.bin").read_bytes(), "<i4")
    assert got.size == count
    return got, run.stdout


def conv_reference(a, w, z, strides, pads, out_hw):
    """sum over the window's taps on the input (padding contributes 0) of a * w * z, a and w in +-1."""
    (kh, kw, cin, n), (sh, sw), (top, left) = w.shape, strides, pads
    h, wd = a.shape[:2]
    padded = np.zeros((h + 2 * kh, wd + 2 * kw, cin))
    padded[kh:kh + h, kw:kw + wd] = a
    out = np.zeros((*out_hw, n), np.int64)
    for oy in range(out_hw[0]):
        for ox in range(out_hw[1]):
            y, x = oy * sh - top + kh, ox * sw - left + kw
            out[oy, ox] = np.einsum("ijc,ijcn->n", padded[y:y + kh, x:x + kw], w * z)
    return out


@pytest.mark.parametrize("h,w,cin,n,window,strides,pads,out_hw", [
    (6, 5, 40, 7, (3, 3), (1, 1), (1, 1), (6, 5)),      # SAME, channels over one word
    (9, 9, 20, 5, (7, 7), (1, 1), (3, 3), (9, 9)),      # 49 taps, most outputs padded
    (8, 7, 64, 9, (3, 3), (2, 2), (0, 1), (4, 4)),      # strided, padding on one side only
    (4, 4, 300, 4, (2, 2), (1, 1), (0, 0), (3, 3)),     # VALID, a partial 512-bit chunk
])
@pytest.mark.parametrize("ternary", [False, True], ids=["binary", "ternary"])
def test_conv_kernel_equals_numpy(kernel, h, w, cin, n, window, strides, pads, out_hw, ternary):
    rng = np.random.default_rng(h * 100 + cin + n)
    a = rng.random((h, w, cin)) < 0.5
    weights = rng.random((*window, cin, n)) < 0.5
    z = rng.random((*window, cin, n)) < 0.7 if ternary else np.ones((*window, cin, n), bool)
    signed = lambda bits: np.where(bits, 1, -1)  # noqa: E731
    expected = conv_reference(signed(a), signed(weights), z, strides, pads, out_hw)
    by_tap = lambda bits: np.moveaxis(bits, -1, 0).reshape(n * window[0] * window[1], cin)  # noqa: E731
    files = {"a": pack(a.reshape(h * w, cin)), "w": pack(by_tap(weights)),
             **({"z": pack(by_tap(z))} if ternary else {})}
    for name, words in files.items():
        (kernel / f"{name}.bin").write_bytes(words.tobytes())
    got, path = run_driver(kernel, ["conv", h, w, cin, n, *window, *strides, *pads, *out_hw], ternary,
                           out_hw[0] * out_hw[1] * n)
    np.testing.assert_array_equal(got.reshape(*out_hw, n), expected, err_msg=path)
