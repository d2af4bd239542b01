"""Mathematical equivalence of answers, in worker processes with hard deadlines.

Model text is untrusted. ``sympy.sympify``, ``sympy.S`` and ``parse_expr`` execute
Python (``__import__('os').system(...)`` runs), so this module never calls them, nor
``eval``, on model text in the calling (trainer) process. The parent only runs regular
expressions and :class:`fractions.Fraction` on validated digit strings.

Semantic comparisons go to :class:`GradingPool`: ``num_workers`` processes running
:mod:`ttrl_jax.rewards.grading_worker` (math-verify's LaTeX parser and ``verify``, an
audit hook refusing process creation / sockets / file writes, a memory cap). The parent
runs JAX, which is not fork-safe, so no worker is a fork of it. By default one fresh
interpreter per parent process, the zygote, imports math-verify and warms it up once,
and every worker of every pool in that process is a fork of the zygote: ready in
milliseconds, where a fresh interpreter spends 1-3 s of CPU (a replacement for a killed
worker used to cost that much each time). ``start="spawn"`` starts each worker as its
own fresh interpreter instead (and is what a system without ``fork`` gets). Workers talk
over a socket pair with :class:`multiprocessing.connection.Connection` framing;
``multiprocessing``'s own spawn and forkserver contexts are not used because they
re-import the parent's ``__main__`` (the trainer script, hence JAX and its module-level
code) in every worker: 1-2 s more per start.

Deadlines. Work is sent in batches; a worker reports each comparison as it finishes.
A SIGALRM soft timeout (by default ``0.75 * timeout``) inside the worker abandons slow
Python code cheaply; the guarantee is the parent: when a worker makes no progress for
``timeout`` seconds the parent SIGKILLs it, counts the comparison in flight as "not
equivalent", starts a replacement and re-queues the rest of the batch. A crashed
worker is handled the same way. Results (timeouts included) are cached.

Grading a completion (``grade`` / ``grade_many``, ``math`` task): its final answer is
the last ``\\boxed{}``; without a box, math-verify's own extraction on a worker (LaTeX
in ``$...$``, ``\\(...\\)``, ``\\[...\\]``, then plain numbers and expressions), and
only when that finds nothing the "answer is" text or the last number standing on its
own (:mod:`ttrl_jax.rewards.extraction` has the rules). Gold strings with math
delimiters are read by the same math-verify extraction, others whole. A percentage
also matches its value over 100, as in math-verify. Votes use the same answers:
:meth:`GradingPool.extract_many` (what :func:`answers.extract_answers` calls for the
``math`` task), so a sample's vote and its grade agree.

Fast path (no sympy, no worker; :mod:`ttrl_jax.rewards.fast_path`): identical
canonical strings, two plain numbers as exact rationals, two plain words
case-insensitively. Equivalent answers are cached, and so are extractions.
"""

from __future__ import annotations

import atexit
import collections
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as _wait_connections
from typing import Self

from ttrl_jax.rewards import answers as answers_lib
from ttrl_jax.rewards import extraction, grading_worker
from ttrl_jax.rewards.fast_path import fast_equivalent

__all__ = [
    "GradingPool",
    "compare_in_process",
    "default_pool",
    "equivalent",
    "equivalent_many",
    "fast_equivalent",
    "grade",
    "grade_many",
    "shutdown_default_pool",
]

# ---------------------------------------------------------------------------------
# Pool (parent process)
# ---------------------------------------------------------------------------------


_WORKER_CMD = (
    "import sys; from ttrl_jax.rewards.grading_worker import serve; "
    "serve(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))"
)
_ZYGOTE_CMD = (
    "import sys; from ttrl_jax.rewards.grading_worker import zygote; zygote(int(sys.argv[1]))"
)
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAN_FORK = hasattr(os, "fork") and hasattr(socket, "send_fds")


def _start_python(cmd: str, fd: int, *args: str) -> subprocess.Popen:
    """A fresh interpreter running ``cmd`` with ``fd`` inherited (this package on its
    path; JAX is not fork-safe, so never a fork of this process)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-c", cmd, str(fd), *args],
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
        env=env,
    )


class _Zygote:
    """This process's warm template of grading workers (`grading_worker.zygote`):
    started once, shared by every pool of the process, restarted if it dies. A worker
    forked from it is ready in milliseconds instead of the 1-3 s of CPU that a fresh
    interpreter spends importing sympy and math-verify and warming ANTLR up."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._ctrl: socket.socket | None = None
        self._owner = -1

    def _start(self) -> None:
        self.close()
        ctrl, child = socket.socketpair()
        with child:
            self._proc = _start_python(_ZYGOTE_CMD, child.fileno())
        self._ctrl, self._owner = ctrl, os.getpid()

    def _alive(self) -> bool:
        """Started by this process (not inherited over a fork) and still running."""
        return (
            self._ctrl is not None and self._owner == os.getpid() and self._proc.poll() is None
        )

    def request(self, soft_timeout: float, memory_limit: int) -> Connection:
        """Asks for a worker; returns the parent's end of its socket (the worker sends
        ``("ready", pid)`` on it once forked, after the zygote's own warm-up)."""
        mine, theirs = socket.socketpair()
        msg = grading_worker.REQUEST.pack(soft_timeout, memory_limit)
        with self._lock, theirs:
            for attempt in range(2):
                if not self._alive():
                    self._start()
                try:
                    socket.send_fds(self._ctrl, [msg], [theirs.fileno()])
                    break
                except OSError:  # it died since: start another once
                    if attempt:
                        raise
                    self._ctrl.close()
                    self._ctrl = None
        return Connection(mine.detach())

    def close(self) -> None:
        """Stops the zygote (its workers stop at EOF on their own sockets)."""
        if self._owner == os.getpid():
            if self._ctrl is not None:
                self._ctrl.close()  # EOF: the zygote exits
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=5.0)
        self._ctrl, self._proc = None, None


_ZYGOTE = _Zygote()
atexit.register(_ZYGOTE.close)


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie counts: an orphaned worker's new
    parent may never reap it)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # PermissionError: pid reused
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


class _Worker:
    """One worker: a `subprocess.Popen` (``start="spawn"``) or a zygote's fork, known
    by the pid in its ready message (the zygote's kernel-reaped child, not ours). A
    fork is signalled through a pidfd where Linux has them (taken at its ready message,
    while it waits for work), so a kill can never reach another process that reused
    its pid; elsewhere by pid."""

    __slots__ = ("batch", "born", "conn", "deadline", "pid", "pidfd", "pos", "proc", "ready")

    def __init__(self, proc, conn):
        self.proc, self.conn, self.pidfd = proc, conn, None
        self.pid = proc.pid if proc is not None else None
        self.ready, self.batch, self.pos = False, [], 0
        self.deadline, self.born = math.inf, time.monotonic()

    def on_ready(self, msg) -> bool:
        if msg[0] != "ready":
            return False
        self.ready, self.pid = True, int(msg[1])
        if self.proc is None and hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(self.pid)
            except OSError:  # already gone (or no pidfd support): signal by pid
                self.pidfd = None
        return True

    def wait(self, timeout: float) -> bool:
        """Whether the process ended within ``timeout`` seconds."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        end = time.monotonic() + timeout
        if self.pidfd is not None and not select.select([self.pidfd], [], [], timeout)[0]:
            return False  # a pidfd turns readable when its process exits
        while self.pid is not None and not _gone(self.pid):  # then until it is reaped
            if time.monotonic() > end:
                return False
            time.sleep(0.002)
        return True

    def kill(self) -> None:
        """SIGKILL, then waits until the process is gone (reaped)."""
        try:
            if self.proc is not None:
                self.proc.kill()
            elif self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            elif self.pid is not None:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait(5.0)

    def release(self) -> None:
        """Closes the socket and the pidfd (the process must be gone or going)."""
        self.conn.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class GradingPool:
    """Worker processes that decide answer equivalence within a hard deadline.

    Usable as a context manager; :meth:`close` stops the workers. Thread-safe (calls
    are serialised).

    Args:
        num_workers: worker processes (each one CPU core at most).
        timeout: hard deadline in seconds for one comparison; past it the worker is
            killed and the comparison counts as not equivalent.
        max_chars: answers longer than this are not equivalent to anything but an
            identical string, without being sent to a worker (None: no limit).
        cache_size: entries of the parent-side result cache (0 disables it).
        memory_limit_bytes: address-space limit of each worker (None: no limit).
        soft_timeout_fraction: the worker abandons a comparison itself (SIGALRM) after
            this fraction of ``timeout``, which is cheaper than being killed; 0 disables
            it, leaving only the parent's hard kill.
        batch_size: most comparisons sent to a worker in one message.
        startup_timeout: seconds a new worker may take to import and warm up.
        start: how workers start: ``"fork"`` from this process's warm zygote (a
            fresh interpreter that imported math-verify and warmed up once, shared by
            every pool here; a new or replacement worker is ready in milliseconds),
            ``"spawn"`` as a fresh interpreter each (1-3 s of CPU per start), or
            ``"auto"``: fork where the OS can (``os.fork`` and ``socket.send_fds``).
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout: float = 0.8,
        *,
        max_chars: int | None = 4096,
        cache_size: int = 1 << 16,
        memory_limit_bytes: int | None = 4 << 30,
        soft_timeout_fraction: float = 0.75,
        batch_size: int = 64,
        startup_timeout: float = 120.0,
        start: str = "auto",
    ):
        if num_workers < 1 or timeout <= 0:
            raise ValueError("num_workers must be >= 1 and timeout > 0")
        self.num_workers, self.timeout = num_workers, float(timeout)
        self.max_chars, self.cache_size = max_chars, cache_size
        self.memory_limit_bytes, self.batch_size = memory_limit_bytes, batch_size
        self.startup_timeout = startup_timeout
        if start not in ("auto", "fork", "spawn"):
            raise ValueError(f"start must be 'auto', 'fork' or 'spawn', not {start!r}")
        if start == "fork" and not CAN_FORK:
            raise ValueError("start='fork' needs os.fork and socket.send_fds")
        self.start = start if start != "auto" else ("fork" if CAN_FORK else "spawn")
        self.soft_timeout = max(0.0, soft_timeout_fraction) * self.timeout
        self.stats: collections.Counter = collections.Counter()
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.RLock()
        self._closed = False
        self._workers = [self._spawn() for _ in range(num_workers)]

    # -- lifecycle -----------------------------------------------------------------

    def _spawn(self) -> _Worker:
        memory_limit = self.memory_limit_bytes or 0
        if self.start == "fork":
            return _Worker(None, _ZYGOTE.request(self.soft_timeout, memory_limit))
        parent_sock, child_sock = socket.socketpair()
        with child_sock:
            args = (repr(self.soft_timeout), str(memory_limit))
            proc = _start_python(_WORKER_CMD, child_sock.fileno(), *args)
        return _Worker(proc, Connection(parent_sock.detach()))

    def _kill(self, w: _Worker) -> None:
        try:
            w.kill()
        finally:
            w.release()

    def _replace(self, i: int) -> None:
        self._kill(self._workers[i])
        self._workers[i] = self._spawn()
        self.stats["restarts"] += 1

    def wait_ready(self) -> Self:
        """Blocks until every worker has started and warmed up (else they start lazily)."""
        with self._lock:
            while True:
                starting = [w for w in self._workers if not w.ready]
                if not starting:
                    return self
                limit = min(w.born for w in starting) + self.startup_timeout - time.monotonic()
                for conn in _wait_connections([w.conn for w in starting], max(0.0, limit)):
                    i = next(k for k, w in enumerate(self._workers) if w.conn is conn)
                    try:
                        msg = conn.recv()
                        self._workers[i].on_ready(msg)
                    except (EOFError, OSError):
                        self._fail(i, {}, collections.deque(), "crashes")
                if time.monotonic() > min(w.born for w in starting) + self.startup_timeout:
                    raise RuntimeError(f"grading worker failed to start in {self.startup_timeout}s")

    @property
    def worker_pids(self) -> list[int | None]:
        """Process ids of the current workers (None: a forked one not yet ready)."""
        return [w.pid for w in self._workers]

    def close(self) -> None:
        """Stops the workers (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for w in self._workers:
                try:
                    w.conn.send(None)
                except (OSError, ValueError):
                    pass
            for w in self._workers:
                if not w.wait(2.0):
                    w.kill()
                w.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- scheduling ----------------------------------------------------------------

    def _run(self, items: list[tuple[int, str, str, str]]) -> dict[int, bool | str | None]:
        """Runs ``(idx, op, a, b)`` items on the workers; returns idx -> result."""
        pending = collections.deque(items)
        results: dict[int, bool | str | None] = {}
        while len(results) < len(items):
            now = time.monotonic()
            for i, w in enumerate(self._workers):  # hand out work to idle, ready workers
                if w.ready and not w.batch and pending:
                    k = min(self.batch_size, -(-len(pending) // self.num_workers))
                    w.batch = [pending.popleft() for _ in range(k)]
                    w.pos, w.deadline = 0, now + self.timeout
                    try:
                        w.conn.send(w.batch)
                    except (OSError, ValueError):  # died while idle: retry elsewhere
                        pending.extendleft(reversed(w.batch))
                        w.batch = []
                        self._replace(i)
            waiting = [w for w in self._workers if w.batch or not w.ready]
            if not waiting:  # cannot happen: unfinished items are always in a batch
                raise RuntimeError("grading pool scheduler lost track of work")
            deadlines = [w.deadline if w.ready else w.born + self.startup_timeout for w in waiting]
            ready = _wait_connections([w.conn for w in waiting], max(0.0, min(deadlines) - now))
            for i, w in enumerate(self._workers):
                if w.conn not in ready:
                    continue
                try:
                    while w.conn.poll():
                        msg = w.conn.recv()
                        if w.on_ready(msg):
                            continue
                        idx, ok = msg
                        results[idx] = ok
                        w.pos += 1
                        w.deadline = time.monotonic() + self.timeout
                        if w.pos == len(w.batch):
                            w.batch = []
                            break
                except (EOFError, OSError):
                    self._fail(i, results, pending, "crashes")
            now = time.monotonic()
            for i, w in enumerate(self._workers):
                if w.batch and now >= w.deadline:
                    self._fail(i, results, pending, "timeouts")
                elif not w.ready and now >= w.born + self.startup_timeout:
                    raise RuntimeError(f"grading worker failed to start in {self.startup_timeout}s")
        return results

    def _fail(self, i: int, results: dict, pending: collections.deque, why: str) -> None:
        """Kills worker i: its item in flight fails (False / no answer), the rest is
        re-queued."""
        w = self._workers[i]
        if not w.ready:
            self.stats["start_failures"] += 1
            if self.stats["start_failures"] > 3 * self.num_workers + 3:
                raise RuntimeError(
                    "grading workers keep dying while starting"
                    + (f" (exit code {w.proc.poll()})" if w.proc is not None else "")
                )
        if w.batch:
            idx, op = w.batch[w.pos][:2]
            results[idx] = False if op == "cmp" else None
            pending.extendleft(reversed(w.batch[w.pos + 1 :]))
            self.stats[why] += 1
        self._replace(i)

    # -- public API ----------------------------------------------------------------

    def equivalent_many(
        self, pairs: Sequence[tuple[str | None, str | None]], *, normalize: bool = True
    ) -> list[bool]:
        """Equivalence of many ``(gold, pred)`` answer pairs in one round trip.

        Each answer is normalised (:func:`answers.normalize_math`) first unless
        ``normalize=False`` (answers already canonical); an empty or missing answer is
        equivalent to nothing. ``gold`` is math-verify's gold side (it matters only for
        asymmetric cases such as an equation against a number).
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("GradingPool is closed")
            out: list[bool | None] = [None] * len(pairs)
            todo: dict[tuple[str, str], list[int]] = {}
            for i, (gold, pred) in enumerate(pairs):
                if normalize:
                    g, p = answers_lib.normalize_math(gold), answers_lib.normalize_math(pred)
                else:
                    g, p = _clean_or_none(gold), _clean_or_none(pred)
                if g is None or p is None:
                    out[i] = False
                    continue
                fast = fast_equivalent(g, p)
                if fast is not None:
                    out[i] = fast
                    self.stats["fast"] += 1
                elif self.max_chars is not None and max(len(g), len(p)) > self.max_chars:
                    out[i] = False
                    self.stats["too_long"] += 1
                elif (g, p) in self._cache:
                    self._cache.move_to_end((g, p))
                    out[i] = self._cache[(g, p)]
                    self.stats["cached"] += 1
                else:
                    todo.setdefault((g, p), []).append(i)
            keys = sorted(todo)  # same gold side -> same batch -> one parse per worker
            if keys:
                self.stats["worker"] += len(keys)
                results = self._run([(k, "cmp", g, p) for k, (g, p) in enumerate(keys)])
                for k, key in enumerate(keys):
                    for i in todo[key]:
                        out[i] = results[k]
                    if self.cache_size > 0 and len(key[0]) + len(key[1]) <= 8192:
                        self._cache[key] = results[k]
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            return out  # type: ignore[return-value]

    def equivalent(self, a: str | None, b: str | None) -> bool:
        """Whether answers ``a`` (gold side) and ``b`` are mathematically equivalent."""
        return self.equivalent_many([(a, b)])[0]

    def _worker_extract(self, texts: list[str]) -> list[str | None]:
        """math-verify's extraction of each text, on the workers (cached)."""
        out: list[str | None] = [None] * len(texts)
        todo: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            key = ("ext", text)
            if key in self._cache:
                self._cache.move_to_end(key)
                out[i] = self._cache[key]
                self.stats["cached"] += 1
            else:
                todo.setdefault(text, []).append(i)
        keys = list(todo)
        if keys:
            self.stats["extract"] += len(keys)
            results = self._run([(k, "ext", t, "") for k, t in enumerate(keys)])
            for k, text in enumerate(keys):
                for i in todo[text]:
                    out[i] = results[k]
                if self.cache_size > 0:
                    self._cache[("ext", text)] = results[k]
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def _raw_answers(self, completions: Sequence, golds: Sequence = ()) -> list[str | None]:
        """Raw answers of completions, then of gold strings (see :mod:`extraction`)."""
        n = len(completions)
        plans = [extraction.plan(c) for c in completions]
        plans += [extraction.gold_plan(g) for g in golds]
        raw = [answer for answer, _ in plans]
        asks = [k for k, (_, text) in enumerate(plans) if text is not None]
        if asks:
            with self._lock:
                if self._closed:
                    raise RuntimeError("GradingPool is closed")
                got = self._worker_extract([plans[k][1] for k in asks])
            for k, extracted in zip(asks, got):
                if k < n:
                    raw[k] = extraction.finish(completions[k], extracted)
                else:  # a gold string math-verify cannot read is read whole
                    raw[k] = extracted or plans[k][1]
        return raw

    def extract_many(
        self, completions: Sequence[str | bytes | None], *, canonical: bool = True
    ) -> list[str | None]:
        """Final answers of math completions (see :mod:`ttrl_jax.rewards.extraction`).

        Completions without a box go through math-verify's extraction on the workers
        (one round trip for the batch); the rest is decided in this process.

        Args:
            completions: completion texts (None: no answer).
            canonical: return :func:`answers.normalize_math` strings (what voting
                clusters); False returns the raw answer text.
        """
        raw = self._raw_answers(completions)
        return [answers_lib.normalize_math(r) for r in raw] if canonical else raw

    def grade_many(
        self,
        responses: Sequence[str | None],
        golds: Sequence[str | None],
        task: str | answers_lib.Task = "math",
    ) -> list[bool]:
        """Whether each response's extracted answer matches its gold answer.

        For the ``math`` task, answers are extracted as :meth:`extract_many` does and
        gold strings with math delimiters are read by math-verify's extraction; a
        percentage also matches its value divided by 100 (as in math-verify).
        """
        if len(responses) != len(golds):
            raise ValueError(f"{len(responses)} responses but {len(golds)} gold answers")
        t = answers_lib.get_task(task)
        if t is not answers_lib.TASKS.get("math"):
            preds = [t.extract(r) if r is not None else None for r in responses]
            refs = [t.normalize(g) if g is not None else None for g in golds]
            if t.equivalence == "math":
                return self.equivalent_many(list(zip(refs, preds)))
            return [compare_in_process(t, g, p) for g, p in zip(refs, preds)]
        raw = self._raw_answers(responses, golds)
        pairs = list(zip(raw[len(responses) :], raw[: len(responses)]))  # (gold, pred)
        alternatives: list[tuple[int, str | None, str | None]] = []
        for i, (g, p) in enumerate(pairs):
            alt_g, alt_p = extraction.percent_alternative(g), extraction.percent_alternative(p)
            if alt_g is not None:
                alternatives.append((i, alt_g, p))
            if alt_p is not None:
                alternatives.append((i, g, alt_p))
        got = self.equivalent_many(pairs + [(g, p) for _, g, p in alternatives])
        out = got[: len(pairs)]
        for (i, _, _), ok in zip(alternatives, got[len(pairs) :]):
            out[i] = out[i] or ok
        return out

    def grade(self, response: str | None, gold: str | None, task="math") -> bool:
        """Whether ``response`` (a completion) answers ``gold`` correctly."""
        return self.grade_many([response], [gold], task)[0]


def _clean_or_none(s: str | None) -> str | None:
    return None if s is None else (answers_lib.clean_text(s) or None)


def compare_in_process(task: answers_lib.Task, gold: str | None, pred: str | None) -> bool:
    """Exact or user-callable equivalence (trusted code, run in this process)."""
    if gold is None or pred is None:
        return False
    if task.equivalence == "exact":
        return gold == pred
    if callable(task.equivalence):
        try:
            return bool(task.equivalence(gold, pred))
        except Exception:  # noqa: BLE001 -- a failing user comparison means "not equal"
            return False
    raise ValueError(f"task {task.name!r}: unknown equivalence {task.equivalence!r}")


# ---------------------------------------------------------------------------------
# Default pool and module-level helpers
# ---------------------------------------------------------------------------------

_default: GradingPool | None = None
_default_lock = threading.Lock()


def default_pool() -> GradingPool:
    """The process-wide pool, created on first use and closed at exit."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = GradingPool(num_workers=max(2, min(8, (os.cpu_count() or 2) // 2)))
            atexit.register(shutdown_default_pool)
        return _default


def shutdown_default_pool() -> None:
    """Closes the default pool if it exists."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
            _default = None


def equivalent(a: str | None, b: str | None, *, pool: GradingPool | None = None) -> bool:
    """Whether answers ``a`` (gold side) and ``b`` are equivalent (default pool)."""
    return (pool or default_pool()).equivalent(a, b)


def equivalent_many(pairs, *, pool: GradingPool | None = None) -> list[bool]:
    """Batched :func:`equivalent` over ``(gold, pred)`` pairs."""
    return (pool or default_pool()).equivalent_many(pairs)


def grade(response: str | None, gold: str | None, task="math", *, pool=None) -> bool:
    """Whether a completion's final answer equals ``gold`` (math-verify semantics)."""
    return (pool or default_pool()).grade(response, gold, task)


def grade_many(responses, golds, task="math", *, pool=None) -> list[bool]:
    """Batched :func:`grade`."""
    return (pool or default_pool()).grade_many(responses, golds, task)
