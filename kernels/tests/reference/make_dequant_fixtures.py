#!/usr/bin/env python3
"""Writes the dequantization fixtures used by kernels/tests/quant_reference.rs.

For each case, `<name>.bin` holds raw block bytes of a few rows and `<name>.f32` holds what the
`gguf` package's `dequantize` makes of them (little-endian f32). Quantized-weight cases come from
the real models; F16/BF16/Q4_0 (and Q8_0 quantize bytes) are made with `gguf.quantize` on seeded
random data, whose f32 input is saved as `<name>.src.f32` so the Rust side can quantize it too.

Run from the repository root:
    /work/main/.venv/bin/python kernels/tests/reference/make_dequant_fixtures.py [models dir]
"""
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T, dequantize, quantize

OUT = Path(__file__).resolve().parent.parent / "fixtures"
MODELS = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/main/models")

# (file, tensor name, type, fixture name, rows to take)
FROM_MODELS = [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "blk.0.ffn_down.weight", T.Q4_1, "smollm_q4_1", 2),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "token_embd.weight", T.Q8_0, "smollm_q8_0", 3),
    ("gemma-3-270m-Q4_K_M.gguf", "blk.0.attn_output.weight", T.Q4_K, "gemma_q4_k", 2),
    ("gemma-3-270m-Q4_K_M.gguf", "blk.0.attn_k.weight", T.Q5_0, "gemma_q5_0", 3),
    ("gemma-3-270m-Q4_K_M.gguf", "blk.0.ffn_down.weight", T.Q6_K, "gemma_q6_k", 2),
    ("gemma-3-270m-Q4_K_M.gguf", "token_embd.weight", T.Q8_0, "gemma_q8_0", 3),
]


def save(name: str, raw: np.ndarray, values: np.ndarray) -> None:
    (OUT / f"{name}.bin").write_bytes(np.ascontiguousarray(raw).view(np.uint8).tobytes())
    (OUT / f"{name}.f32").write_bytes(np.ascontiguousarray(values, dtype="<f4").tobytes())


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    readers = {}
    for file, tensor, ty, name, rows in FROM_MODELS:
        reader = readers.setdefault(file, GGUFReader(MODELS / file))
        t = next(t for t in reader.tensors if t.name == tensor)
        assert t.tensor_type == ty, (tensor, t.tensor_type)
        raw = np.asarray(t.data)[:rows]  # (rows, row bytes) for quantized tensors
        values = dequantize(raw, ty)
        save(name, raw, values)
        print(name, raw.shape, values.shape)

    rng = np.random.default_rng(20240611)
    for ty, name, cols in [
        (T.F16, "rand_f16", 96),
        (T.BF16, "rand_bf16", 96),
        (T.Q4_0, "rand_q4_0", 128),
        (T.Q8_0, "rand_q8_0", 128),
    ]:
        src = (rng.standard_normal((3, cols)) * 0.7).astype(np.float32)
        src[1, 5] = 0.0  # exact zero inside a block
        src[2, :32] = 0.0  # an all-zero block: scale 0 path
        raw = quantize(src, ty)
        values = dequantize(raw, ty)
        save(name, raw, values)
        (OUT / f"{name}.src.f32").write_bytes(src.astype("<f4").tobytes())
        print(name, raw.shape, values.shape)


if __name__ == "__main__":
    main()
