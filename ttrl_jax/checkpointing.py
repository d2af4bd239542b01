"""Orbax checkpoints of a training run: params, optimizer state and run metadata.

Each checkpoint step directory holds three items:

* ``params``     the policy parameters (restorable on their own, for evaluation),
* ``opt_state``  the optax state,
* ``meta``       JSON: RL step, RNG seed/key data, data-iterator position, config, metrics.

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames
it when complete), so a crash mid-save leaves the previous checkpoints intact. The
preservation policy keeps the last ``keep_last`` steps plus the best step by a metric.

Deletions are atomic too: a step that the policy drops is first renamed into
``<directory>/.trash/`` (one `rename`), and the trash is emptied when no save is in
flight. A process killed while deleting therefore leaves either the whole step or
none of it in the listing, never a half-deleted step. A step that still cannot be
restored (written by an older version, a damaged disk) is skipped: restoring
"latest" falls back to the newest step that restores, with one warning line, and
moves the unreadable one aside into ``<directory>/.unreadable/`` (kept, not deleted).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

log = logging.getLogger(__name__)

TRASH = ".trash"  # steps being deleted (renamed here first, then removed)
UNREADABLE = ".unreadable"  # steps that failed to restore, moved aside
# files every committed step holds (orbax writes them before the final rename);
# a step without them is incomplete and never listed
_REQUIRED = ("_CHECKPOINT_METADATA", "params/_METADATA", "meta/metadata")


class CheckpointMismatchError(ValueError):
    """A checkpoint whose arrays do not fit this run (another model shape)."""


class UnreadableCheckpointError(ValueError):
    """A listed checkpoint step whose files cannot be restored."""


def _first_line(e: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of an error, without tensorstore's spec dump, capped."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    line = text.splitlines()[0].split(" [tensorstore_spec=")[0]
    line = line if len(line) <= limit else line[: limit - 3] + "..."
    return f"{type(e).__name__}: {line}"


def _key_str(path) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


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
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise NotADirectoryError(f"checkpoint directory is a file: {self.directory}")
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.read_only = read_only
        self._bad: dict[int, str] = {}  # step -> why it failed to restore (this process)
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
            # a dropped step is renamed into the trash (atomic), never removed in place
            todelete_subdir=None if read_only else TRASH,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("params", "opt_state", "meta")
        )
        self._empty_trash()

    # ------------------------------------------------------------------ housekeeping
    def _primary(self) -> bool:
        return not self.read_only and jax.process_index() == 0

    def _empty_trash(self) -> None:
        """Removes renamed-away steps (only while no save or deletion is in flight)."""
        trash = os.path.join(self.directory, TRASH)
        if self._primary() and os.path.isdir(trash):
            shutil.rmtree(trash, ignore_errors=True)

    def _complete(self, step: int) -> bool:
        d = os.path.join(self.directory, str(step))
        return all(os.path.exists(os.path.join(d, f)) for f in _REQUIRED)

    def _set_aside(self, step: int, why: str) -> None:
        """Moves an unreadable step out of the listing (kept under ``.unreadable``)."""
        self._bad[step] = why
        if not self._primary():
            return
        src = os.path.join(self.directory, str(step))
        dst_dir = os.path.join(self.directory, UNREADABLE)
        os.makedirs(dst_dir, exist_ok=True)
        if os.path.isdir(src):
            os.rename(src, os.path.join(dst_dir, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"))
        self._manager.reload()

    # ------------------------------------------------------------------ saving
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
        # orbax waits for the previous save (and its deletions) here anyway; emptying
        # the trash in between never races with a rename into it
        self._manager.wait_until_finished()
        self._empty_trash()
        self._bad.pop(step, None)
        return self._manager.save(step, args=args, metrics=metrics, force=force)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are committed."""
        self._manager.wait_until_finished()
        self._empty_trash()

    # ------------------------------------------------------------------ listing
    def all_steps(self) -> list[int]:
        """The committed, complete steps (a step that failed to restore is left out)."""
        return [s for s in self._manager.all_steps() if s not in self._bad and self._complete(s)]

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return max(steps) if steps else None

    def best_step(self) -> int | None:
        """The kept step with the best ``best_metric`` (read from each step's meta)."""
        if not self.best_metric:
            return None
        scored = []
        for step in self.all_steps():
            try:
                value = (self._read_meta(step).get("metrics") or {}).get(self.best_metric)
            except Exception as e:  # noqa: BLE001 -- an unreadable step is skipped
                self._warn_unreadable(step, e)
                continue
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
            try:
                step = int(which)
            except (TypeError, ValueError):
                raise ValueError(
                    f"step must be a number, 'latest' or 'best', got {which!r}"
                ) from None
            if step not in self.all_steps():
                why = f" ({self._bad[step]})" if step in self._bad else ""
                raise FileNotFoundError(
                    f"{self.directory}: no checkpoint for step {step}{why} "
                    f"(have {self.all_steps()})"
                )
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no {which or 'latest'} checkpoint")
        return step

    # ------------------------------------------------------------------ restoring
    def _warn_unreadable(self, step: int, e: BaseException) -> None:
        why = _first_line(e)
        where = "" if not self._primary() else f"; moved to {UNREADABLE}/"
        log.warning(
            "checkpoint step %d in %s cannot be restored (%s)%s; skipping it",
            step,
            self.directory,
            why,
            where,
        )
        self._set_aside(step, why)

    def check_compatible(self, step: int, params_like: Any = None, opt_state_like: Any = None):
        """Raises `CheckpointMismatchError` naming the first param whose stored shape
        differs from ``params_like`` (read from the checkpoint's metadata, no arrays)."""
        from etils import epath

        handler = ocp.StandardCheckpointHandler()
        step_dir = epath.Path(self.directory) / str(step)
        for item, like in (("params", params_like), ("opt_state", opt_state_like)):
            if like is None:
                continue
            stored = handler.metadata(step_dir / item).tree
            got = {
                _key_str(p): tuple(m.shape)
                for p, m in jax.tree_util.tree_flatten_with_path(stored)[0]
            }
            want = {
                _key_str(p): tuple(x.shape)
                for p, x in jax.tree_util.tree_flatten_with_path(like)[0]
            }
            if item == "params":
                for name in sorted(set(got) | set(want)):
                    if got.get(name) != want.get(name):
                        raise CheckpointMismatchError(
                            f"{step_dir}: param {name!r} has shape "
                            f"{got.get(name, 'missing')} in the checkpoint but "
                            f"{want.get(name, 'missing')} in this run's model "
                            "(another model.path or architecture?)"
                        )
            elif sorted(got.values()) != sorted(want.values()):
                raise CheckpointMismatchError(
                    f"{step_dir}: the optimizer state does not match this run's "
                    f"({len(got)} arrays stored, {len(want)} expected; another "
                    "model.dtype, fp32_master_weights or optimizer?)"
                )

    def _restore_step(self, step, params_like, opt_state_like, with_opt_state):
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

        Raises:
          CheckpointMismatchError: the stored shapes differ from ``params_like``.
          UnreadableCheckpointError: the requested step (a number or "best") cannot be
            restored, or no step can.

        For "latest", a step that fails to restore while an older one restores is
        skipped with one warning (and moved aside unless read-only).
        """
        step = self.resolve(which)
        opt_like = opt_state_like if with_opt_state else None
        latest = which is None or which == "latest"
        candidates = sorted((s for s in self.all_steps() if s <= step), reverse=True)
        if not latest:
            candidates = [step]

        def read(cand):
            self.check_compatible(cand, params_like, opt_like)
            return self._restore_step(cand, params_like, opt_state_like, with_opt_state)

        return self._newest_readable(candidates, read, list_others=not latest)

    def _newest_readable(self, candidates: list[int], read, list_others: bool = False):
        """``read(step)`` for the candidate steps in order until one succeeds; the steps
        that failed before it are reported (and set aside) once each. A
        `CheckpointMismatchError` (this run's model differs) is raised at once; when no
        step reads, `UnreadableCheckpointError` names the first that failed (and, with
        ``list_others``, the steps that remain)."""
        failures: list[tuple[int, BaseException]] = []
        for cand in candidates:
            try:
                out = read(cand)
            except CheckpointMismatchError:
                raise
            except Exception as e:  # noqa: BLE001 -- any failure means an unreadable step
                failures.append((cand, e))
                continue
            # an older step read with the same settings: the newer ones are damaged
            for bad, e in failures:
                self._warn_unreadable(bad, e)
            return out
        bad, e = failures[0]
        others = [s for s in self.all_steps() if s != bad]
        raise UnreadableCheckpointError(
            f"{self.directory}: checkpoint step {bad} cannot be restored ({_first_line(e)})"
            + (f"; restorable steps: {others}" if list_others else "")
        ) from e

    def _read_meta(self, step: int) -> dict:
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def read_meta(self, which: int | str | None = "latest") -> dict:
        """The run metadata of a step; for "latest", of the newest step whose metadata
        reads (an unreadable one is skipped with one warning, as in `restore`)."""
        if which is not None and which != "latest":
            return self._read_meta(self.resolve(which))
        self.resolve("latest")  # FileNotFoundError without any step
        return self._newest_readable(sorted(self.all_steps(), reverse=True), self._read_meta)

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._empty_trash()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
