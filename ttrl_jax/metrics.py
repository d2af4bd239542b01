"""Metric writers: JSONL (one object per step), TensorBoard event files, optional wandb.

Only process 0 writes (multi-host runs create the writer everywhere; the others no-op).
A resumed run passes ``resume_step``: rows past the checkpoint it resumed from (written
by the interrupted run, and about to be written again) are cut off first, so every
step appears once.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping

import jax
import numpy as np


def _scalar(value) -> float | None:
    try:
        v = float(np.asarray(value))
    except (TypeError, ValueError):
        return None
    return v


class MetricWriter:
    """Writes scalar metrics per step to ``<dir>/metrics.jsonl`` and TensorBoard.

    Args:
      directory: the run directory (created).
      tensorboard: also write TensorBoard event files under ``<dir>/tensorboard``.
      wandb_project: if set, also log to wandb (imported lazily; never required).
      config: a dict logged once (JSON file and wandb config).
      resume_step: the step a resumed run continues after: ``metrics.jsonl`` keeps only
        rows with ``step <= resume_step`` and TensorBoard drops later events; -1 (a
        fresh start) empties it; None leaves the file as it is.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        config: Mapping | None = None,
        resume_step: int | None = None,
    ):
        self.directory = os.fspath(directory)
        self.active = jax.process_index() == 0
        self._tb = None
        self._wandb = None
        self._jsonl = None
        if not self.active:
            return
        os.makedirs(self.directory, exist_ok=True)
        self.path = os.path.join(self.directory, "metrics.jsonl")
        if resume_step is not None:
            truncate_jsonl(self.path, resume_step)
        self._jsonl = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else max(int(resume_step) + 1, 0)
            # a unique suffix: a writer reopened within the same second (a quick resume)
            # would otherwise truncate the earlier file, whose name has whole seconds
            self._tb = SummaryWriter(
                os.path.join(self.directory, "tensorboard"),
                purge_step=purge,
                filename_suffix=f".{time.time_ns()}",
            )
        if config is not None:
            _write_atomic(
                os.path.join(self.directory, "config.json"),
                json.dumps(config, indent=2, default=str),
            )
        if wandb_project:
            import wandb  # optional dependency

            self._wandb = wandb.init(
                project=wandb_project, config=dict(config or {}), dir=self.directory
            )

    def write(self, step: int, metrics: Mapping[str, object]) -> None:
        """Logs scalar metrics for ``step`` (non-scalars are skipped; NaN kept as null)."""
        if not self.active:
            return
        scalars = {k: v for k, v in ((k, _scalar(v)) for k, v in metrics.items()) if v is not None}
        record = {
            "step": int(step),
            **{k: (v if math.isfinite(v) else None) for k, v in scalars.items()},
        }
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in scalars.items():  # TensorBoard tags allow no '@'
                self._tb.add_scalar(k.replace("@", "_at_"), v, int(step))
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def truncate_jsonl(path: str | os.PathLike, max_step: int) -> int:
    """Keeps the rows of a metrics JSONL file with ``step <= max_step`` (atomically).

    A line that does not parse (a row cut short by a kill) is dropped too. A missing
    file is left missing.

    Returns:
      How many lines were dropped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        return 0
    kept, dropped = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                step = int(json.loads(line)["step"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                dropped += 1
                continue
            if step <= max_step:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        _write_atomic(path, "".join(kept))
    return dropped


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Reads a metrics JSONL file (the last record wins for a repeated step)."""
    by_step: dict[int, dict] = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: malformed JSON ({e})") from None
            by_step.setdefault(rec["step"], {}).update(rec)
    return [by_step[s] for s in sorted(by_step)]


def read_tensorboard_scalars(directory: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Reads scalar summaries back from TensorBoard event files (tests, plots), as
    TensorBoard shows them: a resumed writer's purge hides the earlier run's later steps."""
    import struct

    from tensorboardX.proto import event_pb2

    streams = []  # (wall time of the first event, file name, events)
    for root, _, files in os.walk(directory):
        for name in files:
            if "tfevents" not in name:
                continue
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            events, pos = [], 0
            while pos + 12 <= len(data):
                (length,) = struct.unpack("<Q", data[pos : pos + 8])
                body = data[pos + 12 : pos + 12 + length]
                pos += 12 + length + 4
                event = event_pb2.Event()
                event.ParseFromString(body)
                events.append(event)
            if events:
                streams.append((events[0].wall_time, name, events))
    out: dict[str, list[tuple[int, float]]] = {}
    for _, _, events in sorted(streams, key=lambda t: t[:2]):
        for event in events:
            if event.session_log.status == event_pb2.SessionLog.START:
                # a resumed writer's purge: later steps of the earlier run are void
                out = {k: [(s, v) for s, v in vals if s < event.step] for k, vals in out.items()}
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out
