"""Per-device memory plan of a run: the breakdown, whether it fits, the largest M x T.

  python -m experiments.plan_memory --preset=qwen2.5-math-7b --fsdp=2 --tensor=4 \
      --accelerator=v5e --prompts=8 --votes=64 --trained=32 --response_len=3072

  python -m experiments.plan_memory --model_config=/models/Qwen2.5-Math-1.5B/config.json \
      --fsdp=8 --hbm_gib=32 --measure      # also compile the real programs (CPU, slow)

Flags mirror the run config: --data/--fsdp/--tensor are mesh.*, --prompts is
data.prompts_per_step (B), --votes rollout.n_votes (M), --trained rollout.n_train (N),
--response_len rollout.max_new_tokens (T), --prompt_len the padded prompt length (P),
--minibatches algo.updates_per_step, --micro_batch algo.micro_batch_size. Bad values
(a missing config, mesh or batch sizes that do not divide) print one error line and exit
2.
"""

import json
import os
import sys

from absl import flags

from experiments.cli import run_main

flags.DEFINE_string("model_config", None, "An HF config.json (or the model directory).")
flags.DEFINE_enum(
    "preset",
    None,
    ["qwen2.5-math-1.5b", "qwen2.5-math-7b", "qwen3-1.7b"],
    "A built-in architecture instead of --model_config.",
)
flags.DEFINE_integer("data", 1, "mesh.data")
flags.DEFINE_integer("fsdp", 1, "mesh.fsdp")
flags.DEFINE_integer("tensor", 1, "mesh.tensor")
flags.DEFINE_enum("param_dtype", "bfloat16", ["bfloat16", "float32"], "model.dtype")
flags.DEFINE_enum("cache_dtype", "", ["", "bfloat16", "float32"], "KV cache ('' = params)")
flags.DEFINE_bool("master_weights", True, "fp32 master weights (with bf16 params)")
flags.DEFINE_bool("adam", True, "AdamW moments")
flags.DEFINE_bool("reference", True, "a frozen reference model (algo.kl_coef > 0)")
flags.DEFINE_bool("remat", True, "model.remat")
flags.DEFINE_integer("prompts", 8, "B, prompts per step")
flags.DEFINE_integer("votes", 64, "M, samples per prompt")
flags.DEFINE_integer("trained", 32, "N, samples trained per prompt (0: all M)")
flags.DEFINE_integer("prompt_len", 512, "P, padded prompt tokens")
flags.DEFINE_integer("response_len", 3072, "T, response tokens")
flags.DEFINE_integer("minibatches", 8, "optimizer updates per step")
flags.DEFINE_integer("micro_batch", 0, "sequences per micro-batch (0: whole mini-batch)")
flags.DEFINE_integer(
    "decode_slots", -1, "rollout.decode_slots: S engine slots (-1: the default rule, 0: static)"
)
flags.DEFINE_float("hbm_gib", None, "per-device memory budget in GiB")
flags.DEFINE_enum(
    "accelerator",
    None,
    ["v4", "v5e", "v5p", "v6e", "a100-40g", "a100-80g", "h100", "h200"],
    "sets --hbm_gib to the per-chip HBM of this accelerator",
)
flags.DEFINE_bool("measure", False, "also compile the programs and compare (slow on CPU)")
FLAGS = flags.FLAGS


def _model_config():
    from ttrl_jax.models.config import config_from_hf, read_hf_config
    from ttrl_jax.planner import memory

    if bool(FLAGS.model_config) == bool(FLAGS.preset):
        raise ValueError("give exactly one of --model_config and --preset")
    if FLAGS.preset:
        return FLAGS.preset, memory.PRESETS[FLAGS.preset]
    path = FLAGS.model_config
    if os.path.isdir(path):
        return path, read_hf_config(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--model_config: no such file or directory: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: malformed JSON ({e})") from None
    return path, config_from_hf(raw, where=path)


def _describe(name, cfg, plan) -> str:
    opt = (
        "fp32 master + Adam"
        if plan.master_weights and plan.param_dtype != "float32"
        else ("Adam" if plan.adam else "no optimizer state")
    )
    model = (
        f"model: {name}: {cfg.num_params() / 1e9:.3f} B params, {cfg.num_layers} layers, "
        f"D={cfg.hidden_size}, H={cfg.num_heads}, K={cfg.num_kv_heads}, "
        f"F={cfg.intermediate_size}, V={cfg.vocab_size}"
        f"{', tied' if cfg.tie_word_embeddings else ''}"
    )
    mesh = (
        f"mesh: data={plan.data} fsdp={plan.fsdp} tensor={plan.tensor} "
        f"({plan.devices} devices); params {plan.param_dtype}, KV cache {plan.cache}, {opt}"
        f"{', reference model' if plan.reference else ''}"
    )
    batch = (
        f"batch: B={plan.prompts} x M={plan.votes} (N={plan.trained or plan.votes} trained), "
        f"P={plan.prompt_len}, T={plan.response_len}; {plan.minibatches} mini-batches of "
        f"{plan.sequences // plan.minibatches}, micro-batch {plan.micro}; "
        + (f"decode engine, S={plan.decode_slots} slots" if plan.decode_slots else "static decoder")
    )
    return f"{model}\n{mesh}\n{batch}"


def _backend() -> str | None:
    """The backend the plan is for: the --accelerator's (the default slot rule differs
    between CPU and GPU / TPU), else None (this machine's)."""
    if not FLAGS.accelerator:
        return None
    return "tpu" if FLAGS.accelerator.startswith("v") else "gpu"


def main(argv):
    del argv
    from ttrl_jax.planner import memory
    from ttrl_jax.rollout import sampling

    name, cfg = _model_config()
    plan = memory.Plan(
        data=FLAGS.data,
        fsdp=FLAGS.fsdp,
        tensor=FLAGS.tensor,
        param_dtype=FLAGS.param_dtype,
        cache_dtype=FLAGS.cache_dtype,
        master_weights=FLAGS.master_weights,
        adam=FLAGS.adam,
        reference=FLAGS.reference,
        remat=FLAGS.remat,
        prompts=FLAGS.prompts,
        votes=FLAGS.votes,
        trained=FLAGS.trained,
        prompt_len=FLAGS.prompt_len,
        response_len=FLAGS.response_len,
        minibatches=FLAGS.minibatches,
        micro_batch=FLAGS.micro_batch,
        decode_slots=sampling.slots_for(
            FLAGS.prompts * FLAGS.votes,
            None if FLAGS.decode_slots < 0 else FLAGS.decode_slots,
            FLAGS.response_len,
            backend=_backend(),
        ),
    )
    hbm = FLAGS.hbm_gib or (memory.HBM_GIB[FLAGS.accelerator] if FLAGS.accelerator else None)
    if hbm is not None and hbm <= 0:
        raise ValueError(f"--hbm_gib must be > 0, got {hbm}")
    est = memory.estimate(cfg, plan)
    print(_describe(name, cfg, plan))
    print("\nper-device memory (GiB):")
    print(est.table())
    if hbm:
        budget = int(hbm * memory.GIB)
        verdict = "fits" if est.peak <= budget else "does NOT fit"
        print(
            f"\n{hbm:g} GiB per device: {verdict} (peak {est.peak / memory.GIB:.2f} GiB, "
            f"{100 * est.peak / budget:.0f}%)"
        )
        mt = memory.max_votes_times_tokens(cfg, plan, budget)
        print(
            f"largest M x T per prompt the sampler can hold: {mt} "
            f"(M={plan.votes} -> T <= {mt // plan.votes}; T={plan.response_len} -> "
            f"M <= {mt // plan.response_len})"
        )
        m = memory.max_votes(cfg, plan, budget)
        t = memory.max_response_len(cfg, plan, budget)
        n = plan.trained or plan.votes
        print(
            f"whole step (training included): largest M at T={plan.response_len}: "
            f"{m if m >= n else 'none'}; largest T at M={plan.votes}: {t or 'none'}"
        )
    if FLAGS.measure:
        _measure(cfg, plan)
    return 0


def _measure(cfg, plan):
    import jax

    from ttrl_jax import sharding
    from ttrl_jax.planner import memory

    mesh = None
    if plan.devices > 1:
        if jax.device_count() < plan.devices:
            raise ValueError(f"--measure needs {plan.devices} devices, found {jax.device_count()}")
        mesh = sharding.make_mesh(plan.data, plan.fsdp, plan.tensor)
    print(f"\ncompiled on {jax.default_backend()} (memory_analysis, per device):")
    if jax.default_backend() == "cpu" and "bfloat16" in (plan.param_dtype, plan.cache):
        print("  note: the CPU upcasts bf16 dots and cache updates to fp32, so it needs more")
        print("  than a TPU / GPU would; --param_dtype=float32 compares like with like")
    for prog, measured, estimated in memory.compare(cfg, plan, mesh):
        ratio = f"{measured / estimated:.2f}" if measured else "n/a"
        print(
            f"  {prog:<12} measured {measured / memory.GIB:8.3f} GiB   "
            f"estimated {estimated / memory.GIB:8.3f} GiB   ratio {ratio}"
        )


def run():
    """Entry point: one error line and exit status 2 on bad flags or values."""
    measure = [a for a in sys.argv if a.startswith("--measure")]
    if measure and measure[-1] in ("--measure", "--measure=true") and "XLA_FLAGS" not in os.environ:
        # enough fake CPU devices for the mesh (only used when the backend is the CPU)
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=64"
    run_main(main, (ValueError, FileNotFoundError, flags.Error))


if __name__ == "__main__":
    run()
