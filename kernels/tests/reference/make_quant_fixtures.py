#!/usr/bin/env python3
"""Writes quantize fixtures from ggml's own reference quantizers (`quantize_row_*_ref`).

Compiles ggml-quants.c from the llama.cpp tree inside the llama-cpp-python sdist (plus four
stubs for the ggml core functions it links against) into a small shared library, quantizes
seeded random rows with it and saves `<type>.src.f32` (input) and `<type>.ref.bin` (ggml's
bytes) under tests/fixtures/quant_ref/. kernels/tests/quant_reference.rs requires
`quantize_row` to reproduce them byte for byte.

    /work/main/.venv/bin/python kernels/tests/reference/make_quant_fixtures.py [sdist.tar.gz]
"""
import ctypes
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

SDIST = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/cache/pip/llama_cpp_python-0.3.36.tar.gz")
OUT = Path(__file__).resolve().parent.parent / "fixtures" / "quant_ref"

STUBS = r"""
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
void ggml_abort(const char *file, int line, const char *fmt, ...) {
    fprintf(stderr, "ggml_abort %s:%d\n", file, line); abort();
}
size_t ggml_row_size(int type, long long ne) { (void)type; (void)ne; abort(); }
const char *ggml_type_name(int type) { (void)type; return "?"; }
size_t ggml_type_size(int type) { (void)type; abort(); }
"""

# ggml function, element count per block, bytes per block
CASES = {
    "q4_0": ("quantize_row_q4_0_ref", 32, 18),
    "q4_1": ("quantize_row_q4_1_ref", 32, 20),
    "q5_0": ("quantize_row_q5_0_ref", 32, 22),
    "q8_0": ("quantize_row_q8_0_ref", 32, 34),
    "q8_1": ("quantize_row_q8_1_ref", 32, 36),
    "q4_K": ("quantize_row_q4_K_ref", 256, 144),
    "q6_K": ("quantize_row_q6_K_ref", 256, 210),
    "q8_K": ("quantize_row_q8_K_ref", 256, 292),
}


def build(tmp: Path) -> ctypes.CDLL:
    with tarfile.open(SDIST) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/ggml/" in m.name
                   and (m.name.endswith(".h") or m.name.endswith("ggml-quants.c"))]
        tar.extractall(tmp, members=members, filter="data")
    ggml = next(tmp.glob("*/vendor/llama.cpp/ggml"))
    (tmp / "stubs.c").write_text(STUBS)
    lib = tmp / "libggmlquants.so"
    subprocess.run(["gcc", "-O2", "-std=c11", "-fPIC", "-shared", f"-I{ggml}/include", f"-I{ggml}/src",
                    str(ggml / "src/ggml-quants.c"), str(tmp / "stubs.c"), "-lm", "-o", str(lib)], check=True)
    return ctypes.CDLL(str(lib))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(31337)
    with tempfile.TemporaryDirectory() as t:
        lib = build(Path(t))
        for name, (fn, qk, ts) in CASES.items():
            n = 2 * 256
            rows = [
                rng.standard_normal(n) * 0.8,
                rng.standard_normal(n) ** 3,  # heavy tails
                rng.uniform(0.1, 2.0, n),  # all positive: exercises the min of the K-quants
            ]
            rows[1][:qk] = 0.0  # an all-zero block
            rows[2][7] = -rows[2].max() - 0.25  # largest magnitude negative
            src = np.ascontiguousarray(np.stack(rows).astype(np.float32))
            dst = np.zeros((src.shape[0], n // qk * ts), dtype=np.uint8)
            f = getattr(lib, fn)
            f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            for r in range(src.shape[0]):
                f(src[r].ctypes.data, dst[r].ctypes.data, n)
            (OUT / f"{name}.src.f32").write_bytes(src.astype("<f4").tobytes())
            (OUT / f"{name}.ref.bin").write_bytes(dst.tobytes())
            print(name, src.shape, dst.shape)


if __name__ == "__main__":
    main()
