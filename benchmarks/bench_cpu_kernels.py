"""Side by side: `ttrl_jax.models.cpu_kernels` against the plain forms they replace.

For each kernel, the forward and backward pass (``jax.vjp`` then the VJP, one jitted
function) of the plain math under autodiff and of the kernel, on the same inputs in the
same process, at the shapes of the 11M-parameter RL-step model (tokens N = 8192, D = 256,
F = 704) and of a larger one (N = 2048, D = 768, F = 2048); fp32 and bf16. Prints the
times, the ratio plain / kernel (> 1: the kernel is faster), whether this CPU has native
bf16 dots, and which forms `cpu_kernels.select` picks here. Best of ``--repeats``.

Run: ``python benchmarks/bench_cpu_kernels.py [--smoke]``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import jax
import jax.numpy as jnp
import numpy as np

from ttrl_jax.models import cpu_kernels
from ttrl_jax.models import transformer as tfm


def _vjp_fn(f, nargs):
    """jit(inputs, dy) -> (y, grads): one forward and its VJP."""

    def run(*args):
        ins, dy = args[:nargs], args[nargs]
        y, vjp = jax.vjp(f, *ins)
        return y, vjp(dy)

    return jax.jit(run)


def _time(fn, args, repeats: int) -> float:
    return common.timed(lambda: jax.block_until_ready(fn(*args)), repeats)


def _cases(n, d, f, dtype, rng):
    def arr(*shape):
        return jnp.asarray(rng.randn(*shape), dtype)

    x, w, dy = arr(n, d), arr(d, f), arr(n, f)
    n3, y3 = arr(n // 8, 8, d), arr(n // 8, 8, d)
    b = arr(d)
    wg, wu, wd, dyd = arr(d, f), arr(d, f), arr(f, d), arr(n, d)
    return [
        (
            "projection x W (weight grad)",
            lambda x, w: tfm.mm("nd,df->nf", x, w),
            cpu_kernels.dense,
            (x, w),
            dy,
        ),
        (
            "bias add (bias grad)",
            lambda x, b: x + b,
            cpu_kernels.bias_add,
            (n3, b),
            y3,
        ),
        (
            "gain mul (gain grad)",
            lambda x, g: g * x,
            cpu_kernels.gain_mul,
            (n3, b),
            y3,
        ),
        ("SwiGLU MLP", tfm.PLAIN.swiglu, cpu_kernels.swiglu, (x, wg, wu, wd), dyd),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, 1 repeat")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    common.banner("CPU kernels vs the plain forms (forward + VJP)")
    native = cpu_kernels.native_bf16_dots()
    print(f"backend {jax.default_backend()}; native bf16 dots on this CPU: {native}")
    for dtype in (jnp.float32, jnp.bfloat16):
        picked = cpu_kernels.select(dtype, tfm.PLAIN)
        names = [k for k, v in picked._asdict().items() if v is not getattr(tfm.PLAIN, k)]
        print(f"select({jnp.dtype(dtype).name}) uses the kernels for: {names or 'none'}")
    shapes = [(256, 32, 64)] if args.smoke else [(8192, 256, 704), (2048, 768, 2048)]
    repeats = 1 if args.smoke else args.repeats
    rows = []
    rng = np.random.RandomState(0)
    for n, d, f in shapes:
        for dtype in (jnp.float32, jnp.bfloat16):
            for name, plain, kernel, ins, dy in _cases(n, d, f, dtype, rng):
                tp = _time(_vjp_fn(plain, len(ins)), (*ins, dy), repeats)
                tk = _time(_vjp_fn(kernel, len(ins)), (*ins, dy), repeats)
                rows.append(
                    [name, f"{n}x{d}x{f}", jnp.dtype(dtype).name, tp * 1e3, tk * 1e3, tp / tk]
                )
    common.table(["op", "N x D x F", "dtype", "plain ms", "kernel ms", "plain / kernel"], rows)


if __name__ == "__main__":
    main()
