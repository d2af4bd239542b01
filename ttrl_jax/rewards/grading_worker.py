"""The grading worker process: math-verify behind a soft timeout and an audit hook.

Started by :class:`ttrl_jax.rewards.grading.GradingPool` as a fresh interpreter
(``python -c "...; serve(fd, soft_timeout, memory_limit)"``); imports only the standard
library and math-verify (never JAX, never the trainer). Protocol on the socket ``fd``
(:class:`multiprocessing.connection.Connection` framing): the worker sends
``("ready", pid)`` once warmed up, then for each batch ``[(idx, gold, pred), ...]`` it
sends ``(idx, bool)`` per comparison as soon as it is decided; ``None`` stops it.

Answers are parsed with ``LatexExtractionConfig`` only: math-verify's
``ExprExtractionConfig`` calls sympy's ``parse_expr`` (Python ``eval``) and is never
used. Before taking work the worker caps its address space and installs
:func:`audit_hook`, which refuses process creation, signals, sockets and file writes.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
from multiprocessing.connection import Connection

__all__ = ["audit_hook", "serve"]


class _SoftTimeout(BaseException):
    """Raised by SIGALRM in a worker (a BaseException so library code cannot eat it)."""


_BLOCKED_EVENTS = frozenset(
    """os.system os.exec os.posix_spawn os.spawn os.fork os.forkpty os.kill os.killpg
    signal.pthread_kill subprocess.Popen pty.spawn os.remove os.rename os.rmdir os.mkdir
    os.chmod os.chown os.link os.symlink os.truncate os.utime os.putenv os.unsetenv
    shutil.rmtree shutil.copyfile shutil.move shutil.make_archive ctypes.dlopen
    ctypes.dlsym ctypes.call_function webbrowser.open""".split()  # noqa: SIM905
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def audit_hook(event: str, args: tuple) -> None:
    """Refuses side effects that answer grading never needs."""
    if event in _BLOCKED_EVENTS or event.startswith("socket."):
        raise PermissionError(f"grading worker: {event} is not allowed")
    if event == "open":
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        ):
            raise PermissionError("grading worker: opening files for writing is not allowed")


# Typical answer shapes, compared pairwise when a worker starts: ANTLR builds its
# prediction DFA lazily; warm, it parses typical answers about twice as fast.
_WARM_UP = tuple(
    r"""\frac{1}{2} 0.5 (1,\pi) \{1,2\} x^2-1 (x-1)(x+1) 3\sqrt{13} \sqrt{117}
    -\frac{\pi}{6} \frac{-\pi}{6} 6-5i -5i+6 [1,2) (-\infty,3]
    \begin{pmatrix}1\\2\end{pmatrix} \begin{pmatrix}1\\2\end{pmatrix}
    \sin^2x+\cos^2x 1 \dfrac{14}{3} 4\frac{2}{3} x\in[2,5) [2,5) \text{Evelyn} Evelyn""".split()  # noqa: SIM905
)


def serve(fd: int, soft_timeout: float, memory_limit: int) -> None:
    """Worker entry point: serves batches ``[(idx, gold, pred), ...]`` on socket ``fd``.

    Answers ``("ready", pid)`` once warmed up, then ``(idx, bool)`` per comparison.
    """
    import signal

    conn = Connection(fd)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]
    parsed_cache: collections.OrderedDict = collections.OrderedDict()

    def parsed(s: str):
        hit = parsed_cache.get(s)
        if hit is None:
            hit = parse(
                "\\boxed{" + s + "}", config, fallback_mode="no_fallback", parsing_timeout=None
            )
            parsed_cache[s] = hit
            if len(parsed_cache) > 4096:
                parsed_cache.popitem(last=False)
        return hit

    def compare(gold: str, pred: str) -> bool:
        pg, pp = parsed(gold), parsed(pred)
        return bool(pg and pp and verify(pg, pp, timeout_seconds=None))

    for i in range(0, len(_WARM_UP), 2):  # warm ANTLR's DFA cache and sympy's paths
        compare(_WARM_UP[i], _WARM_UP[i + 1])
    parsed_cache.clear()
    if memory_limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    def on_alarm(signum, frame):
        raise _SoftTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    sys.addaudithook(audit_hook)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        for idx, gold, pred in batch:
            ok = False
            try:
                try:
                    if soft_timeout > 0:
                        signal.setitimer(signal.ITIMER_REAL, soft_timeout)
                    ok = compare(gold, pred)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except _SoftTimeout:
                ok = False
            except Exception:  # noqa: BLE001 -- any failure to compare means "not equal"
                ok = False
            conn.send((idx, ok))
