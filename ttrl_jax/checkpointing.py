"""Orbax checkpoints of a training run: params, optimizer state and run metadata.

Each checkpoint step directory holds three items:

* ``params``     the policy parameters (restorable on their own, for evaluation),
* ``opt_state``  the optax state,
* ``meta``       JSON: RL step, RNG seed/key data, data-iterator position, config, metrics.

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames
it when complete), so a crash mid-save leaves the previous checkpoints intact. The
preservation policy keeps the last ``keep_last`` steps plus the best step by a metric.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm


def _abstract(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) describing a tree of arrays."""

    def leaf(x):
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(leaf, tree)


class Checkpointer:
    """A thin wrapper over `ocp.CheckpointManager` for one run directory.

    Args:
      directory: the run's checkpoint directory (created).
      keep_last: how many most recent steps to keep.
      best_metric: name of a metric in ``metrics`` passed to `save`; the best such step
        is kept as well (None: only the last steps).
      best_mode: "max" or "min".
      async_save: write in a background thread (call `wait` before reading).
      read_only: open an existing directory for restoring only.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        keep_last: int = 3,
        best_metric: str | None = None,
        best_mode: str = "max",
        async_save: bool = True,
        read_only: bool = False,
    ):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        if read_only and not os.path.isdir(self.directory):
            raise FileNotFoundError(f"checkpoint directory not found: {self.directory}")
        self.best_metric = best_metric
        self.best_mode = best_mode
        policies = [cm.LatestN(n=keep_last)]
        if best_metric:
            policies.append(
                cm.BestN(
                    get_metric_fn=lambda m: m[best_metric],
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=cm.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("params", "opt_state", "meta")
        )

    def save(
        self,
        step: int,
        params: Any,
        opt_state: Any,
        meta: dict,
        metrics: dict[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        """Saves one step (asynchronously). ``metrics`` feed the best-step policy."""
        if metrics is not None and self.best_metric and self.best_metric not in metrics:
            metrics = None
        meta = {**meta, "metrics": metrics}
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            opt_state=ocp.args.StandardSave(opt_state),
            meta=ocp.args.JsonSave(meta),
        )
        return self._manager.save(step, args=args, metrics=metrics, force=force)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are committed."""
        self._manager.wait_until_finished()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the best ``best_metric`` (read from each step's meta)."""
        if not self.best_metric:
            return None
        scored = []
        for step in self.all_steps():
            value = (self.read_meta(step).get("metrics") or {}).get(self.best_metric)
            if value is not None:
                scored.append((value if self.best_mode == "max" else -value, step))
        return max(scored)[1] if scored else None

    def resolve(self, which: int | str | None) -> int:
        """A step number from an int, "latest" / None, or "best"."""
        if which is None or which == "latest":
            step = self.latest_step()
        elif which == "best":
            step = self.best_step()
        else:
            step = int(which)
            if step not in self.all_steps():
                raise FileNotFoundError(
                    f"{self.directory}: no checkpoint for step {step} (have {self.all_steps()})"
                )
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no {which or 'latest'} checkpoint")
        return step

    def restore(
        self,
        which: int | str | None = "latest",
        params_like: Any = None,
        opt_state_like: Any = None,
        with_opt_state: bool = True,
    ):
        """Restores ``(step, params, opt_state, meta)``.

        Args:
          which: step number, "latest" or "best".
          params_like / opt_state_like: trees of arrays whose shapes, dtypes and shardings
            the restored arrays take (None: as saved). A checkpoint written on another
            topology (a TPU slice, several processes) needs them.
          with_opt_state: False skips the optimizer state (evaluation).
        """
        step = self.resolve(which)
        items = {
            "params": ocp.args.StandardRestore(
                None if params_like is None else _abstract(params_like)
            ),
            "meta": ocp.args.JsonRestore(),
        }
        if with_opt_state:
            items["opt_state"] = ocp.args.StandardRestore(
                None if opt_state_like is None else _abstract(opt_state_like)
            )
        out = self._manager.restore(step, args=ocp.args.Composite(**items))
        return step, out["params"], out.get("opt_state") if with_opt_state else None, out["meta"]

    def read_meta(self, which: int | str | None = "latest") -> dict:
        step = self.resolve(which)
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
