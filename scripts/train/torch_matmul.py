#!/usr/bin/env python3
"""f32 matrix-product speed of torch on the CPU at the shapes of one training step of the
default model (2,048 packed tokens, hidden 576, MLP 1,536; 300 loss rows for the output
layer), for comparison with `cargo run -p gatt-runtime --example gemm_speed`.

    python scripts/train/torch_matmul.py [THREADS]

GFLOP/s, best of 6 after 2 warm-up runs.
"""
import sys
import time

import torch

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)


def bench(name, f, flop):
    for _ in range(2):
        f()
    best = float("inf")
    for _ in range(6):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    print(f"{name}: {flop / best / 1e9:.1f} GFLOP/s")


T = 2048
x, x2 = torch.randn(T, 576), torch.randn(T, 1536)
w, w2, wq = torch.randn(576, 1536), torch.randn(1536, 576), torch.randn(576, 576)
dy, h, lm = torch.randn(T, 1536), torch.randn(300, 576), torch.randn(576, 49152)
bench("x W (up/gate)", lambda: x @ w, 2 * T * 576 * 1536)
bench("x W (down)", lambda: x2 @ w2, 2 * T * 576 * 1536)
bench("x W (q/o)", lambda: x @ wq, 2 * T * 576 * 576)
bench("xT dy (weight grad)", lambda: x.t() @ dy, 2 * T * 576 * 1536)
bench("lm head", lambda: h @ lm, 2 * 300 * 576 * 49152)
