"""Reference implementations the tests compare the library against (not shipped).

An oracle here is the plain, unoptimised form of something the library computes a
faster way; keeping it out of ``ttrl_jax/`` keeps the library to one implementation
of each thing.
"""

import jax
import jax.numpy as jnp

from ttrl_jax.models import transformer as tfm


def token_logprobs(
    params,
    cfg,
    hidden: jax.Array,
    targets: jax.Array,
    temperature: float | jax.Array = 1.0,
    chunk: int = 128,
    with_entropy: bool = False,
):
    """Per-token log-probs of ``targets`` without materialising ``[B, T, V]`` logits.

    log p(y_t) = z_t[y_t]/tau - logsumexp(z_t/tau),  z_t = W_head^T h_t (fp32);
    entropy_t = logsumexp(z_t/tau) - sum_v softmax(z_t/tau)_v z_t[v]/tau.

    Time is processed in chunks of ``chunk`` steps under `lax.map`; each chunk is
    rematerialised in the backward pass, so peak memory is ``B * chunk * V`` floats.

    Args:
      hidden: ``[B, T, D]`` hidden states whose next token is ``targets``.
      targets: ``[B, T]`` int32.
      temperature: softmax temperature tau.
      chunk: time steps per chunk.
      with_entropy: also return per-token entropies.

    Returns:
      logprobs ``[B, T]`` fp32 (and entropies ``[B, T]`` if requested).
    """
    b, t, d = hidden.shape
    c = min(chunk, t)
    pad = (-t) % c
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(b, -1, c, d).swapaxes(0, 1)
    y = jnp.pad(targets, ((0, 0), (0, pad))).reshape(b, -1, c).swapaxes(0, 1)

    @jax.checkpoint
    def one(args):
        hc, yc = args  # [B, c, D], [B, c]
        z = tfm.head_logits(hc, tfm.lm_head_weight(params, cfg)) / temperature  # [B, c, V]
        lse = jax.nn.logsumexp(z, axis=-1)
        lp = jnp.take_along_axis(z, yc[..., None], axis=-1)[..., 0] - lse
        if not with_entropy:
            return lp, jnp.zeros_like(lp)
        ent = lse - jnp.sum(jax.nn.softmax(z, axis=-1) * z, axis=-1)
        return lp, ent

    lp, ent = jax.lax.map(one, (h, y))
    lp = lp.swapaxes(0, 1).reshape(b, -1)[:, :t]
    if not with_entropy:
        return lp
    return lp, ent.swapaxes(0, 1).reshape(b, -1)[:, :t]


def autodiff_objective(p, m, hyper, *, cfg, loss, resp_len, micro):
    """`train_step.fused_objective`'s plain form: log-probs and entropies from the
    fused LM-head pass (`sequence_logprobs`), the loss differentiated through their
    VJP (4 head matmuls per token). Same value and gradient, for comparison."""
    import math

    from ttrl_jax.update import rl
    from ttrl_jax.update import train_step as ts

    ref = m.get("ref_logprobs") if loss.kl_as_loss else None
    coefs = {
        "kl_coef": hyper["kl_coef"] if loss.kl_as_loss else 0.0,
        "entropy_coef": hyper["entropy_coef"] if loss.use_entropy else 0.0,
    }
    lp, ent = ts.sequence_logprobs(
        p,
        cfg,
        m["tokens"],
        m["attn_mask"],
        resp_len,
        hyper["temperature"],
        chunk=loss.logprob_chunk,
        with_entropy=True,
        remat=loss.remat,
        head_dtype=loss.head_dtype,
        prompt_group=math.gcd(loss.prompt_group, micro),
    )
    num, _, stats = rl.policy_objective(
        lp,
        m["old_logprobs"],
        m["advantages"],
        m["resp_mask"],
        ref_logprobs=ref,
        entropies=ent,
        agg_mode=loss.agg_mode,
        loss_scale_factor=loss.loss_scale_factor,
        clip_eps_low=loss.clip_eps_low,
        clip_eps_high=loss.clip_eps_high,
        dual_clip_c=loss.dual_clip_c,
        kl_type=loss.kl_type,
        kl_clamp=loss.kl_clamp,
        **coefs,
    )
    return num, stats
