"""PROJECTION (not a measurement): one TTRL step of Qwen2.5-Math-7B on GPUs and TPUs.

Counts FLOPs and HBM bytes of the step from the model shapes, as the library computes
it (`sampling`: prefill once, decode with a per-vote KV cache over a shared prompt
prefix; `train_step`: remat, dense attention), and turns them into time with published
peak specs and stated efficiencies. It first compares the FLOP formulas with
XLA's own count (``compiled.cost_analysis()``) of the library's jitted programs on a
tiny model.

Notation: D width, L_m layers, H heads, K kv heads, Dh head dim, F MLP width, V
vocabulary; N_blk = L_m (2 D H Dh + 2 D K Dh + 3 D F) block matmul params, N_head = D V,
N_all all params. Workload (TTRL on AIME): B prompts, M votes, N trained votes, prompt P,
response T, S = B N sequences of length L = P + T, U optimizer updates per step. With
R = B M rows and b = 2 bytes (bf16 params and KV cache)::

  decode step t (t = 1..T), every row attends to P prompt + T' own cache slots, where
  T' = T as `sampling.decode` does it (all slots read, the unfilled ones masked) or
  T' = t for a length-aware kernel (the second rollout column):
    FLOPs_t = R (2 N_blk + 2 N_head + 4 L_m H Dh (P + T'))
    bytes_t = b (N_blk + N_head) / tp                 weights, once per step per chip
            + b 2 L_m K Dh (R T' + B P) / n           KV reads (prefix once per prompt)
            + 8 R V / n                               fp32 logits written + read
    time_t  = max(FLOPs_t / (n mfu_dec peak), bytes_t / (eta BW))
  the slot-refill engine (`rollout.engine`, the third rollout column): S slots over the
    R samples, whose lengths L_i are drawn from a stated law (an assumption, printed); the
    schedule is simulated step by step, each step costing the formula above with R -> the
    live slots and R T' -> the sum of their filled slots (a length-aware kernel)
  forward over S sequences (reference log-probs; dense L x L attention as XLA computes):
    FLOPs_fwd = S (2 N_blk L + 2 N_head T + 4 L_m H Dh L^2)
  update: forward + rematerialised forward + backward (2 x forward) of the blocks, the
    LM head without remat: 4 (FLOPs_fwd - 2 N_head S T) + 3 (2 N_head S T)
    time = FLOPs / (n mfu peak)
  optimizer: U AdamW updates reading and writing fp32 master, mu, nu, an fp32
    gradient and bf16 params: 30 N_all bytes per update / n at eta BW.

n chips (tp of them on the tensor axis) is the smallest mesh `ttrl_jax.planner.memory.estimate`
says fits the step in the chip's HBM. Communication is assumed overlapped with compute
(ideal scaling), so these are lower bounds on time; the efficiencies are assumptions.

Run: ``python benchmarks/project_costs.py [--no-check] [--mfu 0.4 --bw-eff 0.6]``
(``--smoke``: the projection only, no check).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common

from ttrl_jax.models.config import ModelConfig
from ttrl_jax.planner import memory
from ttrl_jax.rollout import sampling


@dataclasses.dataclass(frozen=True)
class Chip:
    """Published peak dense bf16 FLOP/s, HBM bandwidth (B/s) and the HBM `memory` plans with."""

    name: str
    flops: float
    bandwidth: float
    hbm_key: str


CHIPS = (
    Chip("H100 SXM", 989e12, 3.35e12, "h100"),
    Chip("TPU v5e", 197e12, 0.819e12, "v5e"),
    Chip("TPU v5p", 459e12, 2.76e12, "v5p"),
    Chip("TPU v6e", 918e12, 1.64e12, "v6e"),
)


@dataclasses.dataclass(frozen=True)
class Workload:
    """One TTRL step (the defaults: the AIME recipe, `config.default_config`)."""

    prompts: int = 8  # B
    votes: int = 64  # M
    trained: int = 32  # N
    prompt_len: int = 256  # P (AIME prompts with the chat template, bucketed)
    response_len: int = 3072  # T
    updates: int = 8  # U, optimizer updates (mini-batches) per step
    reference: bool = True  # kl_coef > 0: reference log-probs each step


def block_params(cfg: ModelConfig) -> int:
    """N_blk: matmul parameters of the blocks (biases and norms left out)."""
    d, h, k, dh, f = (
        cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size,
    )  # fmt: skip
    return cfg.num_layers * (2 * d * h * dh + 2 * d * k * dh + 3 * d * f)


def all_params(cfg: ModelConfig) -> int:
    """N_all: every parameter (embedding and untied head, biases, norms)."""
    embed = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)
    bias = cfg.num_layers * (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim
    norms = (2 * cfg.num_layers + 1) * cfg.hidden_size
    return block_params(cfg) + embed + bias * cfg.qkv_bias + norms


def forward_parts(cfg: ModelConfig, seqs: int, length: int, resp: int) -> tuple[float, float]:
    """FLOPs of one forward over ``seqs`` sequences of ``length`` tokens as (blocks with
    dense attention, LM head on the last ``resp`` positions)."""
    attn = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * length**2
    blocks = seqs * (2 * block_params(cfg) * length + attn)
    return float(blocks), float(seqs * 2 * cfg.hidden_size * cfg.vocab_size * resp)


def forward_flops(cfg: ModelConfig, seqs: int, length: int, resp: int) -> float:
    """FLOPs_fwd = S (2 N_blk L + 2 N_head T + 4 L_m H Dh L^2)."""
    return sum(forward_parts(cfg, seqs, length, resp))


def update_flops(cfg: ModelConfig, seqs: int, length: int, resp: int) -> float:
    """4 x the blocks' forward (forward, remat forward, backward = 2 forwards) + 3 x the
    LM head's (not rematerialised)."""
    blocks, head = forward_parts(cfg, seqs, length, resp)
    return 4 * blocks + 3 * head


def decode_step(cfg: ModelConfig, w: Workload, chips: int, tp: int, chip: Chip, mfu, eta,
                rows: int, attending: int, own: int):  # fmt: skip
    """One decode step's roofline: ``rows`` rows computed, ``attending`` of them attending
    to their prompt (P slots each), ``own`` own cache slots read in all. Returns (compute
    seconds, memory seconds, FLOPs, HBM bytes)."""
    b, p = w.prompts, w.prompt_len
    nl, h, k, dh = cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    weights = 2 * (block_params(cfg) + cfg.hidden_size * cfg.vocab_size)
    f = rows * (2 * block_params(cfg) + 2 * cfg.hidden_size * cfg.vocab_size)
    f += 4 * nl * h * dh * (attending * p + own)
    kv = 2 * 2 * nl * k * dh * (own + b * p)
    logits = 8 * rows * cfg.vocab_size
    by_chip = weights / tp + (kv + logits) / chips
    tc, tm = f / chips / (mfu * chip.flops), by_chip / (eta * chip.bandwidth)
    return tc, tm, f, weights + kv + logits


def decode_costs(
    cfg: ModelConfig, w: Workload, chips: int, tp: int, chip: Chip, mfu, eta, full=True
):
    """Sums the decode roofline over the T steps; returns (seconds, FLOPs, bytes, the
    fraction of steps bound by bandwidth). ``full``: every step attends over (and reads)
    all T cache slots, masked, as `sampling.decode` does; else only the t filled ones."""
    r = w.prompts * w.votes
    secs = flops = nbytes = 0.0
    mem_bound = 0
    for t in range(1, w.response_len + 1):
        own = w.response_len if full else t
        tc, tm, f, by = decode_step(cfg, w, chips, tp, chip, mfu, eta, r, r, r * own)
        secs += max(tc, tm)
        mem_bound += tm >= tc
        flops += f
        nbytes += by
    return secs, flops, nbytes, mem_bound / w.response_len


def engine_decode_costs(
    cfg: ModelConfig, w: Workload, chips: int, tp: int, chip: Chip, mfu, eta, lengths, slots
):
    """The slot-refill engine's decode roofline for per-sample ``lengths [R]``: S slots
    take the samples in order and a slot whose sample ends takes the next one; each step
    computes all S slots (static shapes: an idle slot still costs its matmuls), each
    live one reading P + its own filled slots (a length-aware kernel). The schedule is
    simulated step by step. Returns (seconds, steps)."""
    todo = [int(n) - 1 for n in lengths]  # decode steps per sample (token 0: prefill)
    queue = [i for i, n in enumerate(todo) if n > 0][::-1]
    pos = {}  # slot -> [sample, tokens done]
    for s in range(slots):
        if queue:
            pos[s] = [queue.pop(), 1]
    secs, steps = 0.0, 0
    while pos:
        own = sum(t for _, t in pos.values())  # own slots read this step, live slots
        tc, tm, _, _ = decode_step(cfg, w, chips, tp, chip, mfu, eta, slots, len(pos), own)
        secs += max(tc, tm)
        steps += 1
        for s in list(pos):
            g, t = pos[s]
            if t >= todo[g]:
                del pos[s]
                if queue:
                    pos[s] = [queue.pop(), 1]
            else:
                pos[s][1] = t + 1
    return secs, steps


def smallest_mesh(cfg: ModelConfig, w: Workload, chip: Chip) -> tuple[int, int, float] | None:
    """Smallest (chips, tensor, peak GiB) whose `memory.estimate` fits the chip's HBM:
    bf16 params, fp32 master + Adam, a reference copy, remat, one sequence per device
    per micro-batch; tensor in (1, 2, 4), fsdp = chips / tensor."""
    budget = memory.HBM_GIB[chip.hbm_key] * memory.GIB
    mini = w.prompts * w.trained // w.updates
    for n in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        for tp in (1, 2, 4):
            fsdp = n // tp
            if fsdp < 1 or n % tp or mini % fsdp:
                continue
            plan = memory.Plan(
                fsdp=fsdp, tensor=tp, prompts=w.prompts, votes=w.votes, trained=w.trained,
                prompt_len=w.prompt_len, response_len=w.response_len, minibatches=w.updates,
                micro_batch=fsdp, reference=w.reference,
            )  # fmt: skip
            peak = memory.estimate(cfg, plan).peak
            if peak <= budget:
                return n, tp, peak / memory.GIB
    return None


def project(
    cfg: ModelConfig, w: Workload, mfu: float, mfu_dec: float, eta: float, lengths, slots
) -> list:
    s, seq = w.prompts * w.trained, w.prompt_len + w.response_len
    fwd = forward_flops(cfg, s, seq, w.response_len)
    upd = update_flops(cfg, s, seq, w.response_len)
    prefill = forward_flops(cfg, w.prompts, w.prompt_len, 1)
    rows = []
    for chip in CHIPS:
        mesh = smallest_mesh(cfg, w, chip)
        if mesh is None:
            rows.append((chip.name, "does not fit", *[""] * 9))
            continue
        n, tp, peak = mesh
        dec_s, _, _, bound = decode_costs(cfg, w, n, tp, chip, mfu_dec, eta)
        aware_s = decode_costs(cfg, w, n, tp, chip, mfu_dec, eta, full=False)[0]
        eng_s = engine_decode_costs(cfg, w, n, tp, chip, mfu_dec, eta, lengths, slots)[0]
        pre_s = prefill / n / (mfu * chip.flops)
        dec_s, aware_s, eng_s = dec_s + pre_s, aware_s + pre_s, eng_s + pre_s
        ref_s = (fwd if w.reference else 0.0) / n / (mfu * chip.flops)
        upd_s = upd / n / (mfu * chip.flops)
        opt_s = w.updates * 30 * all_params(cfg) / n / (eta * chip.bandwidth)
        total = dec_s + ref_s + upd_s + opt_s
        rows.append(
            (chip.name, f"{n} (fsdp {n // tp} x tp {tp})", f"{peak:.0f}", dec_s, aware_s,
             eng_s, f"{bound:.0%}", ref_s, upd_s, opt_s, total, total * n / 3600,
             total - dec_s + eng_s)
        )  # fmt: skip
    return rows


def check() -> None:
    """FLOP formulas vs XLA's count (``cost_analysis()``) of the library's compiled
    log-prob and train-step programs on `common.TINY_QWEN2`.

    XLA counts a while loop's body once, so the programs are built with one iteration
    per loop: one log-prob chunk (chunk = T), one mini-batch, one micro-batch; the decode
    program's count is one decode step (its sampler's few FLOPs per logit are left out
    of the formula).
    """
    import tempfile

    import jax
    import jax.numpy as jnp

    from ttrl_jax import models
    from ttrl_jax.update import train_step as ts

    with tempfile.TemporaryDirectory() as tmp:
        common.write_qwen2(tmp, **common.TINY_QWEN2)
        model = models.load_hf(tmp, dtype="float32")
    params, cfg = model.params(), model.config

    def xla_flops(lowered) -> float:
        ca = lowered.compile().cost_analysis()
        return float((ca[0] if isinstance(ca, list) else ca).get("flops", 0.0))

    rows = []
    for s, p, t in ((4, 32, 128), (2, 384, 128)):
        tokens = jnp.ones((s, p + t), jnp.int32)
        fwd = forward_flops(cfg, s, p + t, t)
        lp = ts.make_logprob_fn(cfg, t, chunk=t)
        xla = xla_flops(lp.lower(params, tokens, tokens, jnp.float32(1.0)))
        rows.append(
            (f"log-probs S={s} L={p + t}", "forward", f"{xla:.3g}", f"{fwd:.3g}", xla / fwd)
        )
        opt = ts.Plain(ts.make_optimizer(1e-6))
        step = ts.make_train_step(cfg, ts.LossConfig(logprob_chunk=t), opt)
        f32 = jnp.ones((s, t), jnp.float32)
        batch = {"tokens": tokens, "attn_mask": tokens, "resp_mask": f32, "old_logprobs": f32,
                 "advantages": f32}  # fmt: skip
        hyper = {k: jnp.float32(1.0) for k in ("temperature", "kl_coef", "entropy_coef")}
        xla = xla_flops(step.lower(params, opt.init(params), batch, hyper))
        upd = update_flops(cfg, s, p + t, t)
        rows.append(
            (f"train step S={s} L={p + t}", "update", f"{xla:.3g}", f"{upd:.3g}", xla / upd)
        )
    from ttrl_jax.rollout import sampling

    for b, m, p, t in ((2, 4, 32, 128), (2, 8, 32, 512)):
        pr = np.ones((b, p), np.int32)
        args = (params, pr, pr, jax.random.key(0), sampling.sampling_params(),
                sampling.eos_table((), b), np.int32(0), np.int32(t))  # fmt: skip
        pre = sampling.prefill.lower(
            params, cfg, *args[1:], num_samples=m, max_len=t, block=256, cache_dtype=None
        ).compile()
        dec = sampling.decode.lower(params, cfg, pre(*args), unstack_layers=True, block=256)
        xla = xla_flops(dec)  # the loop body: one decode step
        heads = cfg.num_layers * cfg.num_heads * cfg.head_dim
        per = b * m * (2 * block_params(cfg) + 2 * cfg.hidden_size * cfg.vocab_size)
        per += b * m * 4 * heads * (p + t)
        rows.append((f"decode step R={b * m} P={p} T={t}", "FLOPs_t, T'=T", f"{xla:.3g}",
                     f"{per:.3g}", xla / per))  # fmt: skip
    jax.clear_caches()
    print("\nformula check on the tiny model (XLA cost_analysis of the compiled programs):")
    common.table(["program", "formula", "XLA FLOPs", "formula FLOPs", "XLA / formula"], rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mfu", type=float, default=0.4, help="training / prefill FLOP efficiency")
    ap.add_argument("--mfu-decode", type=float, default=0.4, help="decode FLOP efficiency")
    ap.add_argument("--bw-eff", type=float, default=0.6, help="HBM bandwidth efficiency")
    ap.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip comparing the formulas with XLA's count (~30 s)",
    )
    ap.add_argument("--smoke", action="store_true", help="the projection only (a second)")
    ap.add_argument("--median-len", type=int, default=800, help="median response length")
    args = ap.parse_args(argv)
    common.banner("project_costs: PROJECTION of a TTRL step of Qwen2.5-Math-7B (not measured)")
    if args.check and not args.smoke:
        check()
    cfg, w = memory.PRESETS["qwen2.5-math-7b"], Workload()
    print(
        f"\nmodel qwen2.5-math-7b: D={cfg.hidden_size} L_m={cfg.num_layers} H={cfg.num_heads} "
        f"K={cfg.num_kv_heads} F={cfg.intermediate_size} V={cfg.vocab_size} untied; "
        f"N_all={all_params(cfg) / 1e9:.2f}B, N_blk={block_params(cfg) / 1e9:.2f}B"
    )
    print(
        f"step: B={w.prompts} prompts x M={w.votes} votes, P={w.prompt_len}, "
        f"T={w.response_len}, train N={w.trained} (S={w.prompts * w.trained}), "
        f"U={w.updates} updates, reference log-probs {w.reference}; bf16 params and KV, "
        f"fp32 master + Adam"
    )
    r = w.prompts * w.votes
    lengths, mu, sigma = common.length_law(r, w.response_len, args.median_len, 0.10, seed=0)
    slots = sampling.slots_for(r, None, w.response_len, backend="gpu")
    print(
        f"response lengths (an ASSUMPTION for the engine column): lognormal(mu {mu:.3f}, "
        f"sigma {sigma:.3f}), median {args.median_len}, P(L > T) = 0.10 before clipping "
        f"at T={w.response_len}; drawn for R={r}: mean {lengths.mean():.0f}, max "
        f"{lengths.max()}, {np.mean(lengths == w.response_len):.1%} at T. The static "
        f"decoder runs every row until the longest is done (max = T here), reading all "
        f"T cache slots; the engine runs S={slots} slots over the queue "
        f"(`sampling.slots_for`), each live slot reading only its filled slots."
    )
    s, seq = w.prompts * w.trained, w.prompt_len + w.response_len
    fwd = forward_flops(cfg, s, seq, w.response_len)
    _, dec_f, dec_b, _ = decode_costs(cfg, w, 1, 1, CHIPS[0], args.mfu_decode, args.bw_eff)
    common.table(
        ["phase", "FLOPs", "HBM bytes (1 chip)", "FLOP / byte"],
        [
            ("rollout decode (all T steps)", f"{dec_f:.3g}", f"{dec_b:.3g}", dec_f / dec_b),
            ("reference log-probs (forward)", f"{fwd:.3g}", "", ""),
            (
                "update (fwd + remat fwd + bwd)",
                f"{update_flops(cfg, s, seq, w.response_len):.3g}",
                "",
                "",
            ),
            ("optimizer (U AdamW updates)", "", f"{w.updates * 30 * all_params(cfg):.3g}", ""),
        ],
    )
    print(
        f"\nPROJECTED seconds per step (assumptions: {args.mfu:.0%} MFU for training and "
        f"prefill, {args.mfu_decode:.0%} for decode matmuls, {args.bw_eff:.0%} of HBM "
        f"bandwidth, communication fully overlapped):"
    )
    common.table(
        ["chip", "chips (mesh)", "peak GiB/chip", "rollout s, static",
         "rollout s, static, length-aware reads", f"rollout s, engine S={slots}, real lengths",
         "decode steps BW-bound (static)", "ref log-probs s", "update s", "optimizer s",
         "step s (static)", "chip-hours/step (static)", "step s (engine)"],
        project(cfg, w, args.mfu, args.mfu_decode, args.bw_eff, lengths, slots),
    )  # fmt: skip
    print("\nPROJECTED engine rollout seconds (decode only) over S, on each chip's mesh:")
    curve, sizes = [], (r // 8, r // 4, r // 2, r)
    for chip in CHIPS:
        mesh = smallest_mesh(cfg, w, chip)
        if mesh is None:
            continue
        n, tp, _ = mesh
        row = [chip.name]
        for s in sizes:
            secs, steps = engine_decode_costs(
                cfg, w, n, tp, chip, args.mfu_decode, args.bw_eff, lengths, s
            )
            row.append(f"{secs:.1f} ({steps} steps)")
        curve.append(row)
    common.table(["chip"] + [f"S={s}" for s in sizes], curve)


if __name__ == "__main__":
    main()
