#!/usr/bin/env python3
"""Writes tests/reference/gguf_fixture.gguf with the `gguf` Python package (llama.cpp's own
writer): one metadata key per GGUF value type, arrays of several element types (one nested),
and small tensors of types f32, f16, bf16, q8_0 and q4_0 holding x[i] = (i - 32) / 8.

The Rust test `gguf::tests::reference` reads the file back and checks every value against the
literals below. Run: .venv/bin/python tests/reference/make_gguf_fixture.py
"""
from pathlib import Path

import numpy as np
import gguf
from gguf import GGUFValueType as T, GGMLQuantizationType as Q

OUT = Path(__file__).with_name("gguf_fixture.gguf")


def ramp(n: int) -> np.ndarray:
    return ((np.arange(n, dtype=np.float32) - 32.0) / 8.0).astype(np.float32)


def main() -> None:
    w = gguf.GGUFWriter(OUT, arch="fixture")  # writes general.architecture = "fixture"
    w.add_key_value("test.u8", 200, T.UINT8)
    w.add_key_value("test.i8", -100, T.INT8)
    w.add_key_value("test.u16", 60000, T.UINT16)
    w.add_key_value("test.i16", -30000, T.INT16)
    w.add_key_value("test.u32", 4000000000, T.UINT32)
    w.add_key_value("test.i32", -2000000000, T.INT32)
    w.add_key_value("test.u64", 18000000000000000000, T.UINT64)
    w.add_key_value("test.i64", -9000000000000000000, T.INT64)
    w.add_key_value("test.f32", 3.25, T.FLOAT32)
    w.add_key_value("test.f64", -1.0e-300, T.FLOAT64)
    w.add_key_value("test.bool_true", True, T.BOOL)
    w.add_key_value("test.bool_false", False, T.BOOL)
    w.add_key_value("test.string", "h\u00e9llo \u2713", T.STRING)
    w.add_key_value("test.empty_string", "", T.STRING)
    w.add_array("test.arr_i32", [1, -2, 3])
    w.add_key_value("test.arr_u8", [0, 127, 255], T.ARRAY, sub_type=T.UINT8)
    w.add_key_value("test.arr_u64", [1, 2**40], T.ARRAY, sub_type=T.UINT64)
    w.add_array("test.arr_f32", [0.5, -1.5])
    w.add_key_value("test.arr_f64", [2.5], T.ARRAY, sub_type=T.FLOAT64)
    w.add_array("test.arr_str", ["a", "", "\u00fc"])
    w.add_array("test.arr_bool", [True, False, True])
    w.add_array("test.arr_nested", [[1, 2], [3]])

    # numpy shapes are reversed ggml dims: (3, 4) is ggml [4, 3].
    w.add_tensor("t.f32", ramp(12).reshape(3, 4))
    w.add_tensor("t.f16", ramp(8).astype(np.float16))
    w.add_tensor("t.bf16", gguf.quants.quantize(ramp(8), Q.BF16), raw_dtype=Q.BF16)
    w.add_tensor("t.q8_0", gguf.quants.quantize(ramp(64).reshape(2, 32), Q.Q8_0), raw_dtype=Q.Q8_0)
    w.add_tensor("t.q4_0", gguf.quants.quantize(ramp(32), Q.Q4_0), raw_dtype=Q.Q4_0)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
