"""Per-device memory planning for a run: what the sampler and the update hold.

`estimate` adds up, per device, the buffers one RL step keeps alive, from the shapes of
`models.transformer`, `sampling` and `train_step` and the rules of
`sharding.DEFAULT_RULES` (a dimension its mesh axes do not divide is replicated, as
there). With b(x) the bytes of dtype x, L_m layers, K kv heads, Dh head dim, D width, F
MLP width, V vocabulary, every array counted on one device::

  resident (the whole run)
    params, fp32 master, Adam mu + nu, reference   N_params (b(param) + 4 + 2 b(opt) + b(param))
  sampling (prefill + decode loop)
    prompt KV cache     2 L_m B P K Dh b(cache)    each prompt prefilled once, shared by M
    response KV cache   2 L_m R T K Dh b(cache)    R = S decode slots (the engine), or
                                                   R = B M, one row per vote (static)
    token buffers       B M T (4 + 4)              int32 tokens, fp32 log-probs
    sampler logits      c_s B M V 4                fp32 logits + sampling temporaries
    layer copy          N_blocks b(param)          decode slices the stacked layers once
    fsdp gathers        (N_blocks + D V) b(param) / tensor   whole weights, hoisted out of
                                                   the decode loop (fsdp > 1 only)
  training (micro-batches of m sequences of L = P + T tokens)
    gradients           N_params (4 + b(param))    fp32 accumulator + one micro-batch's
    saved block inputs  L_m m L D b(param)         remat keeps one input per block
    one block backward  m L (H L (c_a + b) + c_f F b + c_h D 4)   fp32 attention scores
    log-prob chunk      c_l m C V 4                `lm_head.fused_token_logprobs` chunks
    fsdp gathers        (2 blocks + D V) b(param) / tensor
    rollout batch       S (8 L + 4 k T)            tokens, masks, log-probs, advantages
  log-probs (old / reference recomputation): the forward-only share of the above

and the peak is ``resident + max(sampling, training, log-probs)``. The constants c_*
were fitted to XLA's buffer assignment (`compiled_memory`, on CPU); params, optimizer
state and KV caches are exact.

`compiled_memory` compiles the real prefill, decode, train-step and log-prob programs on
`jax.ShapeDtypeStruct` inputs (nothing is allocated) and reads
``jit(f).lower(...).compile().memory_analysis()``; `compare` puts both side by side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
from collections.abc import Iterator

import jax
import jax.numpy as jnp

from ttrl_jax import sharding
from ttrl_jax.models import transformer as tfm
from ttrl_jax.models.config import ModelConfig

GIB = 1024**3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# Per-chip HBM of the accelerators the planner knows (GiB).
HBM_GIB = {
    "v4": 32,
    "v5e": 16,
    "v5p": 95,
    "v6e": 32,
    "a100-40g": 40,
    "a100-80g": 80,
    "h100": 80,
    "h200": 141,
}

# Fitted multipliers (see the module docstring): fp32 [rows, V] buffers of the sampler;
# bytes per attention-score element of one block's backward (fp32 scores, their
# gradient, probabilities in the activation dtype) and forward; [m, L, F] and [m, L, D]
# buffers of one block's backward; fp32 [m, C, V] buffers of the log-prob chunk.
SAMPLER_LOGIT_BUFFERS = 4
ATTN_BWD_BYTES = 8  # + b(param)
ATTN_FWD_BYTES = 4  # + b(param)
MLP_BUFFERS = 6
HIDDEN_BUFFERS = 8
LOGIT_CHUNK_BUFFERS = 4
GATHERED_LAYERS = 2
PHASES = ("resident", "sampling", "training", "logprobs")


def _arch(kind, hidden, layers, heads, kv_heads, mlp, vocab, tied, **extra) -> ModelConfig:
    return ModelConfig(
        model_type=kind,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=mlp,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=extra.pop("head_dim", hidden // heads),
        tie_word_embeddings=tied,
        **extra,
    )


_QWEN2 = {"qkv_bias": True, "rope_theta": 10000.0, "max_position_embeddings": 4096}
_QWEN3 = {"qk_norm": True, "rope_theta": 1000000.0, "max_position_embeddings": 40960}

# Published architectures (config.json of Qwen/Qwen2.5-Math-1.5B and -7B, Qwen/Qwen3-1.7B),
# for planning without a download.
PRESETS = {
    "qwen2.5-math-1.5b": _arch("qwen2", 1536, 28, 12, 2, 8960, 151936, True, **_QWEN2),
    "qwen2.5-math-7b": _arch("qwen2", 3584, 28, 28, 4, 18944, 152064, False, **_QWEN2),
    "qwen3-1.7b": _arch("qwen3", 2048, 28, 16, 8, 6144, 151936, True, head_dim=128, **_QWEN3),
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Mesh, precision and batch settings of a run (the config keys in brackets).

    Attributes:
      data, fsdp, tensor: mesh axis sizes [mesh.*].
      param_dtype: parameter / activation dtype [model.dtype].
      cache_dtype: KV-cache dtype; "" = the param dtype (the sampler's default on
        GPU / TPU; on CPU it stores bf16 caches in float32).
      master_weights: fp32 master copy of low-precision params [model.fp32_master_weights].
      adam: AdamW moments kept (the trainer always uses AdamW).
      reference: a frozen reference copy is kept [algo.kl_coef > 0].
      remat: blocks rematerialised in the backward pass [model.remat].
      prompts: B [data.prompts_per_step].
      votes: M [rollout.n_votes].
      trained: N [rollout.n_train].
      prompt_len: P, the padded prompt length (multiple of data.prompt_bucket).
      response_len: T [rollout.max_new_tokens].
      minibatches: optimizer updates per RL step [algo.updates_per_step].
      micro_batch: sequences per micro-batch, global; 0 = the whole mini-batch
        [algo.micro_batch_size]; also the chunk of the log-prob recomputation.
      logprob_chunk: time steps per chunk of `lm_head.fused_token_logprobs`.
      unstack_layers: the decode loop slices the layer weights once (`sampling.decode`).
      decode_slots: S, the slots of the decode engine (`rollout.engine`), at most B x M;
        0 = the static decoder [rollout.decode_slots, resolved by `sampling.slots_for`].
    """

    data: int = 1
    fsdp: int = 1
    tensor: int = 1
    param_dtype: str = "bfloat16"
    cache_dtype: str = ""
    master_weights: bool = True
    adam: bool = True
    reference: bool = True
    remat: bool = True
    prompts: int = 8
    votes: int = 64
    trained: int = 32
    prompt_len: int = 512
    response_len: int = 3072
    minibatches: int = 8
    micro_batch: int = 0
    logprob_chunk: int = 128
    unstack_layers: bool = True
    decode_slots: int = 0

    def __post_init__(self):
        positive = "data fsdp tensor prompts votes prompt_len response_len minibatches"
        for name in (positive + " logprob_chunk").split():
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.decode_slots <= self.prompts * self.votes:
            raise ValueError(
                f"decode_slots must be in [0, B x M = {self.prompts * self.votes}], "
                f"got {self.decode_slots}"
            )
        if not 0 <= self.trained <= self.votes:
            raise ValueError(f"trained must be in [0, votes={self.votes}], got {self.trained}")
        for name in ("param_dtype", "cache_dtype"):
            value = getattr(self, name)
            if value and value not in DTYPE_BYTES:
                raise ValueError(f"{name} must be one of {sorted(DTYPE_BYTES)}, got {value!r}")
        seqs = self.sequences
        if seqs % self.minibatches:
            raise ValueError(f"minibatches={self.minibatches} must divide B x N = {seqs}")
        if self.micro_batch < 0 or (
            self.micro_batch and (seqs // self.minibatches) % self.micro_batch
        ):
            raise ValueError(
                f"micro_batch={self.micro_batch} must divide the mini-batch of "
                f"{seqs // self.minibatches} sequences"
            )

    @property
    def devices(self) -> int:
        return self.data * self.fsdp * self.tensor

    @property
    def sequences(self) -> int:
        """S = B x N, the sequences trained per RL step."""
        return self.prompts * (self.trained or self.votes)

    @property
    def micro(self) -> int:
        """Global sequences per micro-batch."""
        return self.micro_batch or self.sequences // self.minibatches

    @property
    def cache(self) -> str:
        return self.cache_dtype or self.param_dtype


@dataclasses.dataclass(frozen=True)
class Term:
    """One buffer (group) of the estimate, in bytes per device."""

    name: str
    phase: str
    nbytes: int
    formula: str


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The per-device terms of one `Plan`; `peak` is what must fit."""

    terms: tuple[Term, ...]

    def term(self, name: str) -> int:
        """Bytes of the term called ``name`` (0 if absent)."""
        return sum(t.nbytes for t in self.terms if t.name == name)

    def phase(self, phase: str) -> int:
        """Total bytes of one phase (see `PHASES`)."""
        return sum(t.nbytes for t in self.terms if t.phase == phase)

    @property
    def peak(self) -> int:
        """resident + max(sampling, training, log-probs)."""
        return self.phase("resident") + max(self.phase(p) for p in PHASES[1:])

    def table(self) -> str:
        """A readable breakdown (GiB per device, with the formula of every term)."""
        note = "split over the mesh axes that divide each dimension"
        lines = [f"  (per device; the formulas give global sizes, {note})"]
        for phase in PHASES:
            lines.append(f"  {phase:<36}{self.phase(phase) / GIB:9.3f} GiB")
            for t in self.terms:
                if t.phase == phase:
                    lines.append(f"    {t.name:<34}{t.nbytes / GIB:9.3f}   {t.formula}")
        lines.append(f"  {'peak = resident + max(other phases)':<36}{self.peak / GIB:9.3f} GiB")
        return "\n".join(lines)


def _mesh(plan: Plan):
    """A stand-in with the ``shape`` mapping that `sharding.spec_for` reads."""
    return types.SimpleNamespace(
        shape={"data": plan.data, "fsdp": plan.fsdp, "tensor": plan.tensor}
    )


def local_elements(shape, axes, plan: Plan) -> int:
    """Elements of a ``shape`` array with logical ``axes`` held by one device."""
    mesh = _mesh(plan)
    spec = tuple(sharding.spec_for(shape, axes, mesh))
    n = 1
    for i, size in enumerate(shape):
        entry = spec[i] if i < len(spec) else None
        names = () if entry is None else (entry,) if isinstance(entry, str) else entry
        n *= size // math.prod(mesh.shape[a] for a in names)
    return n


def _param_leaves(shapes, axes) -> Iterator[tuple[str, tuple, tuple]]:
    for key, value in shapes.items():
        if isinstance(value, dict):
            yield from ((f"{key}/{k}", s, a) for k, s, a in _param_leaves(value, axes[key]))
        else:
            yield key, value, axes[key]


def param_elements(cfg: ModelConfig, plan: Plan, layers_only: bool = False) -> int:
    """Parameter elements held by one device (all of them on a 1-device mesh)."""
    leaves = _param_leaves(tfm.param_shapes(cfg), tfm.param_logical_axes(cfg))
    return sum(
        local_elements(s, a, plan)
        for name, s, a in leaves
        if not layers_only or name.startswith("layers/")
    )


def _batch_local(n: int, plan: Plan) -> int:
    """Rows of an ``n``-row batch array on one device."""
    return local_elements((n,), ("batch",), plan)


def _fsdp_gathers(cfg: ModelConfig, plan: Plan, phase: str) -> list[Term]:
    """Weights all-gathered over ``fsdp`` before their matmuls (nothing when fsdp = 1).

    The LM head (``[D, V / tensor]``) is gathered once per program. The training and
    log-prob programs scan over the blocks, so ``GATHERED_LAYERS`` blocks (the current and
    the prefetched next) are whole at a time; the sampler's blocks are unrolled and XLA
    hoists their loop-invariant gathers out of the decode loop, so while sampling all
    blocks are whole (as its buffer assignment shows).
    """
    if plan.fsdp == 1:
        return []
    pb = DTYPE_BYTES[plan.param_dtype]
    whole = dataclasses.replace(plan, data=1, fsdp=1)
    head = local_elements((cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), whole)
    blocks = param_elements(cfg, whole, layers_only=True)
    n = cfg.num_layers if phase == "sampling" else min(GATHERED_LAYERS, cfg.num_layers)
    return [
        Term("fsdp-gathered LM head", phase, head * pb, f"D x V / tensor x {pb} B"),
        Term("fsdp-gathered block weights", phase, blocks * n // cfg.num_layers * pb,
             f"{n} blocks / tensor x {pb} B"),
    ]  # fmt: skip


def estimate(cfg: ModelConfig, plan: Plan) -> Estimate:
    """Per-device memory of one RL step of ``plan`` with model ``cfg`` (see module doc)."""
    pb, cb = DTYPE_BYTES[plan.param_dtype], DTYPE_BYTES[plan.cache]
    nl, kh, dh, d = cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, cfg.hidden_size
    b, m, t, p = plan.prompts, plan.votes, plan.response_len, plan.prompt_len
    n_dev = param_elements(cfg, plan)
    terms: list[Term] = []
    add = lambda phase, name, nbytes, formula: terms.append(Term(name, phase, nbytes, formula))

    # resident
    master = plan.master_weights and pb < 4
    opt_b = 4 if master else pb
    add("resident", "params", n_dev * pb, f"N_params x {pb} B")
    if master:
        add("resident", "fp32 master weights", n_dev * 4, "N_params x 4 B")
    if plan.adam:
        add("resident", "Adam mu + nu", 2 * n_dev * opt_b, f"2 x N_params x {opt_b} B")
    if plan.reference:
        add("resident", "reference params", n_dev * pb, f"N_params x {pb} B")

    # sampling: prefix [B, K, P, Dh] and own caches per layer, k and v: [S, 1, K, Dh, T]
    # over the engine's slots (the slot axis split over the batch axes), or [B, M, K, Dh, T]
    pre = local_elements((b, kh, p, dh), ("batch", "kv_heads", "seq", "head_dim"), plan)
    own_axes = ("kv_heads", "head_dim", "cache_seq")
    if plan.decode_slots:
        own = local_elements((plan.decode_slots, 1, kh, dh, t), ("batch", None) + own_axes, plan)
        own_rows = f"S={plan.decode_slots} slots"
    else:
        own = local_elements((b, m, kh, dh, t), ("batch", "samples") + own_axes, plan)
        own_rows = f"B={b} x M={m}"
    rows = _batch_local(b * m, plan)  # token 0 of all B M samples is drawn at the prefill
    kv = f"K={kh} x Dh={dh} x {cb} B"
    add("sampling", "prompt KV cache", 2 * nl * pre * cb,
        f"2 x {nl} x B={b} x P={p} x {kv} (one per prompt, shared by its M votes)")  # fmt: skip
    add("sampling", "response KV cache", 2 * nl * own * cb,
        f"2 x {nl} x {own_rows} x T={t} x {kv}")  # fmt: skip
    bmt = local_elements((b, m, t), ("batch", "samples", None), plan)
    add("sampling", "token + log-prob buffers", 8 * bmt, "B x M x T x (4 + 4) B")
    add("sampling", "sampler logits", SAMPLER_LOGIT_BUFFERS * rows * cfg.vocab_size * 4,
        f"{SAMPLER_LOGIT_BUFFERS} x B x M x V x 4 B")  # fmt: skip
    if plan.unstack_layers or plan.decode_slots:  # the engine always slices them once
        blocks = param_elements(cfg, plan, layers_only=True)
        add("sampling", "decode layer copy", blocks * pb, f"N_block_params x {pb} B")
    terms += _fsdp_gathers(cfg, plan, "sampling")

    # training: micro-batches of mb sequences of L tokens (mf in the log-prob pass)
    seq_len = p + t
    mb, mf = _batch_local(plan.micro, plan), _batch_local(plan.micro_batch or plan.sequences, plan)
    s_dev = _batch_local(plan.sequences, plan)
    h_dev = local_elements((cfg.num_heads,), ("heads",), plan)
    f_dev = local_elements((cfg.intermediate_size,), ("mlp",), plan)
    v_dev = local_elements((cfg.vocab_size,), ("vocab",), plan)
    chunk = min(plan.logprob_chunk, t)
    attn = h_dev * seq_len**2  # score elements per sequence
    mlp = seq_len * (MLP_BUFFERS * f_dev * pb + HIDDEN_BUFFERS * d * 4)  # per sequence
    arrays = 4 if plan.reference else 3
    add("training", "gradients", n_dev * (4 + pb), f"N_params x (4 + {pb}) B")
    if plan.remat:
        add("training", "saved block inputs", nl * mb * seq_len * d * pb,
            f"{nl} x m={mb} x L={seq_len} x D x {pb} B")  # fmt: skip
    else:
        add("training", "all block activations", nl * mb * (attn * (ATTN_BWD_BYTES + pb) + mlp),
            f"{nl} x the block backward")  # fmt: skip
    add("training", "block backward: attention", mb * attn * (ATTN_BWD_BYTES + pb),
        f"m x H={h_dev} x L^2 x ({ATTN_BWD_BYTES} + {pb}) B")  # fmt: skip
    add("training", "block backward: MLP + hidden", mb * mlp,
        f"m x L x ({MLP_BUFFERS} x F={f_dev} x {pb} + {HIDDEN_BUFFERS} x D x 4) B")  # fmt: skip
    add("training", "logits chunk", LOGIT_CHUNK_BUFFERS * mb * chunk * v_dev * 4,
        f"{LOGIT_CHUNK_BUFFERS} x m x C={chunk} x V={v_dev} x 4 B")  # fmt: skip
    add("training", "rollout batch", s_dev * (8 * seq_len + 4 * arrays * t),
        f"S={plan.sequences} x (8 L + {4 * arrays} T) B")  # fmt: skip
    terms += _fsdp_gathers(cfg, plan, "training")

    # log-probs: forward only, one block at a time
    add("logprobs", "forward: attention", mf * attn * (ATTN_FWD_BYTES + pb),
        f"m'={mf} x H x L^2 x ({ATTN_FWD_BYTES} + {pb}) B")  # fmt: skip
    add("logprobs", "forward: MLP + hidden", mf * mlp // 2, "half the backward's, for m'")
    add("logprobs", "forward: logits chunk", 2 * mf * chunk * v_dev * 4, "2 x m' x C x V x 4 B")
    add("logprobs", "forward: rollout batch", s_dev * (8 * seq_len + 4 * t), "S x (8 L + 4 T) B")
    terms += _fsdp_gathers(cfg, plan, "logprobs")
    return Estimate(tuple(terms))


# ------------------------------------------------------------------ what fits


def _largest(fits, lo: int, hi: int) -> int:
    """The largest x in [lo, hi] with ``fits(x)`` (monotone), or lo - 1 if none."""
    if not fits(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def with_votes(plan: Plan, votes: int, trained: int) -> Plan:
    """``plan`` with M = ``votes`` and N = ``trained``; the engine's slots keep their share
    of the B x M samples, rounded up as `sampling.slots_for`'s default rounds them
    (`sampling.round_slots`)."""
    from ttrl_jax.rollout import sampling

    slots = plan.decode_slots
    if slots:
        slots = min(plan.prompts * votes, sampling.round_slots(slots * votes / plan.votes))
    return dataclasses.replace(plan, votes=votes, trained=trained, decode_slots=slots)


def max_votes(cfg: ModelConfig, plan: Plan, budget: int, limit: int = 1 << 16) -> int:
    """Largest M (>= N, T fixed) whose peak fits ``budget`` bytes; < N if none does."""
    n = plan.trained or plan.votes
    fits = lambda m: estimate(cfg, with_votes(plan, m, n)).peak <= budget
    return _largest(fits, max(n, 1), limit)


def max_response_len(cfg: ModelConfig, plan: Plan, budget: int, limit: int = 1 << 17) -> int:
    """Largest T (M fixed) whose peak, training included, fits ``budget``; 0 if none."""
    fits = lambda t: estimate(cfg, dataclasses.replace(plan, response_len=t)).peak <= budget
    return _largest(fits, 1, limit)


def max_votes_times_tokens(cfg: ModelConfig, plan: Plan, budget: int) -> int:
    """Largest M x T per prompt the sampling phase can hold next to the resident state.

    Everything but the response cache and token buffers (which grow with M x T) is held at
    ``plan``'s values; the training phase is not part of this bound (check `estimate`).
    """
    est = estimate(cfg, plan)
    grows = est.term("response KV cache") + est.term("token + log-prob buffers")
    fixed = est.phase("resident") + est.phase("sampling") - grows
    per_unit = grows / (plan.votes * plan.response_len)
    return max(0, int((budget - fixed) // per_unit))


# ------------------------------------------------------------- compiled programs


def _stats(compiled) -> dict[str, int]:
    """``memory_analysis()`` of a compiled program as a dict, with a ``peak`` entry."""
    ma = compiled.memory_analysis()
    if ma is None:
        return {}
    keys = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "alias_size_in_bytes",
        "temp_size_in_bytes",
    )
    out = {k.replace("_size_in_bytes", ""): int(getattr(ma, k, 0)) for k in keys}
    live = out["argument"] + out["output"] - out["alias"] + out["temp"]
    out["peak"] = max(int(getattr(ma, "peak_memory_in_bytes", 0) or 0), live)
    return out


def _struct(shape, dtype, axes, mesh):
    sh = None if mesh is None else sharding.named_sharding(shape, axes, mesh)
    return jax.ShapeDtypeStruct(shape, jnp.dtype(dtype), sharding=sh)


def _with_shardings(lowered, compiled):
    """The outputs of a compiled program as sharded ShapeDtypeStructs."""
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        lowered.out_info,
        compiled.output_shardings,
    )


def _opt_structs(opt, params, mesh):
    """Optimizer-state structs sharded like the params of the same shape (scalars
    replicated): what an fsdp run must hold (``jit(opt.init)`` alone leaves XLA free to
    replicate zero-initialised moments)."""
    state = jax.eval_shape(opt.init, params)
    if mesh is None:
        return state
    by_shape = {}
    for leaf in jax.tree.leaves(params):
        by_shape.setdefault(leaf.shape, leaf.sharding)
    rep = sharding.replicated(mesh)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=by_shape.get(s.shape, rep)), state
    )


PROGRAMS = ("prefill", "decode", "train_step", "logprobs")


def compiled_memory(
    cfg: ModelConfig, plan: Plan, mesh=None, programs=PROGRAMS
) -> dict[str, dict[str, int]]:
    """Compiles the run's jitted programs for ``plan`` and returns their memory stats.

    Inputs are `jax.ShapeDtypeStruct`s (sharded on ``mesh`` when given), so nothing is
    allocated. Programs: ``prefill`` and ``decode`` (`sampling`), ``train_step``
    (`train_step.make_train_step`, AdamW with or without fp32 master weights) and
    ``logprobs`` (`train_step.make_logprob_fn`). Each maps to the `memory_analysis`
    sizes (``argument``, ``output``, ``alias``, ``temp``) and ``peak`` (per device);
    an empty dict where the backend reports nothing. ``programs`` picks a subset.
    """
    unknown = set(programs) - set(PROGRAMS)
    if unknown:
        raise ValueError(f"unknown programs {sorted(unknown)}; known: {PROGRAMS}")
    from ttrl_jax.rollout import engine, sampling
    from ttrl_jax.update import train_step as ts

    pdt = jnp.dtype(plan.param_dtype)
    shapes, axes = tfm.param_shapes(cfg), tfm.param_logical_axes(cfg)
    is_shape = lambda x: isinstance(x, tuple) and all(isinstance(i, int) for i in x)
    params = jax.tree.map(lambda s, a: _struct(s, pdt, a, mesh), shapes, axes, is_leaf=is_shape)
    b, m, t, p = plan.prompts, plan.votes, plan.response_len, plan.prompt_len
    bat = lambda shape, dtype: _struct(shape, dtype, ("batch",) + (None,) * (len(shape) - 1), mesh)
    out: dict[str, dict[str, int]] = {}
    ctx = jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()
    with ctx:
        if "prefill" in programs or "decode" in programs:
            lowered = engine.start.lower(
                params,
                cfg,
                bat((b, p), jnp.int32),
                bat((b, p), jnp.int32),
                jax.random.key(0),
                sampling.sampling_params(),
                bat((b, 8), jnp.int32),
                jnp.int32(0),
                jnp.int32(t),
                num_samples=m,
                max_len=t,
                block=256,
                cache_dtype=jnp.dtype(plan.cache),
                slots=plan.decode_slots,
            )
            if "prefill" in programs or mesh is not None:  # decode needs its shardings
                compiled = lowered.compile()
                out["prefill"] = _stats(compiled)
                state = _with_shardings(lowered, compiled)
            else:
                state = lowered.out_info
            if "decode" in programs:
                if plan.decode_slots:
                    run = engine.run.lower(params, cfg, state, num_samples=m)
                else:
                    run = sampling.decode.lower(
                        params, cfg, state, unstack_layers=plan.unstack_layers
                    )
                out["decode"] = _stats(run.compile())

        tx = ts.make_optimizer(1e-6)
        master = plan.master_weights and pdt.itemsize < 4
        opt = ts.MasterWeights(tx) if master else ts.Plain(tx)
        opt_state = _opt_structs(opt, params, mesh)
        s, seq_len = plan.sequences, p + t
        batch = {
            "tokens": bat((s, seq_len), jnp.int32),
            "attn_mask": bat((s, seq_len), jnp.int32),
            "resp_mask": bat((s, t), jnp.float32),
            "old_logprobs": bat((s, t), jnp.float32),
            "advantages": bat((s, t), jnp.float32),
        }
        if plan.reference:
            batch["ref_logprobs"] = bat((s, t), jnp.float32)
        loss = ts.LossConfig(
            kl_as_loss=plan.reference,
            num_minibatches=plan.minibatches,
            micro_batch_size=plan.micro_batch,
            remat=plan.remat,
            logprob_chunk=plan.logprob_chunk,
        )
        hyper = {k: jnp.float32(0.0) for k in ("temperature", "kl_coef", "entropy_coef")}
        if "train_step" in programs:
            step = ts.make_train_step(cfg, loss, opt)
            out["train_step"] = _stats(step.lower(params, opt_state, batch, hyper).compile())
        if "logprobs" in programs:
            lp = ts.make_logprob_fn(cfg, t, chunk=plan.logprob_chunk, micro_batch=plan.micro_batch)
            out["logprobs"] = _stats(
                lp.lower(params, batch["tokens"], batch["attn_mask"], jnp.float32(1.0)).compile()
            )
    return {k: v for k, v in out.items() if k in programs}


def estimated_programs(cfg: ModelConfig, plan: Plan) -> dict[str, int]:
    """The estimate's counterpart of each `compiled_memory` program (bytes per device).

    A program holds its arguments, outputs and temporaries: the sampler programs hold the
    params and the sampling phase, the train step the params, optimizer state and the
    training phase, the log-prob program the params and the log-prob phase.
    """
    est = estimate(cfg, plan)
    params = est.term("params")
    opt = est.term("fp32 master weights") + est.term("Adam mu + nu")
    sampling_ = est.phase("sampling")
    return {
        "prefill": params + sampling_ - est.term("decode layer copy"),
        "decode": params + sampling_,
        "train_step": params + opt + est.phase("training"),
        "logprobs": params + est.phase("logprobs"),
    }


def compare(
    cfg: ModelConfig, plan: Plan, mesh=None, programs=PROGRAMS
) -> list[tuple[str, int, int]]:
    """``[(program, measured peak bytes, estimated bytes)]`` per device; a measured 0
    means the backend has no `memory_analysis`."""
    measured = compiled_memory(cfg, plan, mesh, programs)
    est = estimated_programs(cfg, plan)
    return [(name, measured[name].get("peak", 0), est[name]) for name in programs]
