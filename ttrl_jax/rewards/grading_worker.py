"""The grading worker process: math-verify behind a soft timeout and an audit hook.

Started by :class:`ttrl_jax.rewards.grading.GradingPool`, either forked by the
zygote (:func:`zygote`: a fresh interpreter that warmed up once and forks a worker per
request) or as a fresh interpreter of its own (:func:`serve`); either way it imports
only the standard library and math-verify (never JAX, never the trainer). Protocol on
the worker's socket (:class:`multiprocessing.connection.Connection` framing): it sends
``("ready", pid)`` once warmed up, then for each batch ``[(idx, op, a, b), ...]`` it
sends ``(idx, result)`` per item as soon as it is done; ``None`` stops it. Operations:

* ``"cmp"`` (``a`` gold, ``b`` prediction, canonical answers): each is parsed as the
  content of a ``\\boxed{}``, then math-verify's ``verify``; the result is a bool.
* ``"ext"`` (``a`` a completion or a delimited gold string, ``b`` unused):
  math-verify's own extraction (LaTeX in ``$...$``, ``$$...$$``, ``\\(...\\)``,
  ``\\[...\\]``, bare ``\\frac{p}{q}``, "answer:" anchors, then plain numbers and
  expressions, rightmost first); the result is the extracted answer's text (several
  expressions joined by "and" become one comma list, a chain ``a = b = c`` its last
  part, a percentage keeps ``\\%``) or None when nothing parses. Before extraction,
  Unicode math (``\u2212 \u221a \u03c0 \u221e``) becomes LaTeX and sentence punctuation
  just inside a closing delimiter (``\\[x = 1.\\]``) is dropped; a plain number that is
  part of undelimited LaTeX (``3\\sqrt{2}``, ``5\\pi/6``) or of e-notation (``2.5e6``)
  is read with the rest of it.

math-verify's plain-expression extraction calls sympy's ``parse_expr`` (Python
``eval``). Here it never does: :func:`_expr_as_latex` replaces it and reads the matched
text (digits, ``.``, spaces and ``+ - * / ^ ( ) × ÷`` only, by math-verify's own regex)
with the LaTeX parser instead. Before taking work the worker caps its address space
and installs :func:`audit_hook`, which refuses process creation, signals, sockets and
file writes.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import struct
import sys
from multiprocessing.connection import Connection

__all__ = ["REQUEST", "audit_hook", "serve", "zygote"]


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
_WARM_UP_TEXTS = (
    "We find $x = \\frac{3}{4}$, so the answer is $\\left[0, 1\\right)$.",
    "The total is 1 000 dollars, i.e. .4 of it: 400.",
    "Thus \\(\\{1, 2\\}\\) and \\[\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}\\] hold; 2*3 = 6.",
)


_PLAIN_EXPR_RE = re.compile("[-0-9.\\s+*/^()\u00d7\u00f7]+")
# Unicode math that models write in plain text, as the LaTeX math-verify reads.
_UNICODE_MATH = (
    ("\u2212", "-"),
    ("\u221a", "\\sqrt"),
    ("\u03c0", "\\pi "),
    ("\u221e", "\\infty "),
    ("\u00b7", "\\cdot "),
    ("\u2264", "\\le "),
    ("\u2265", "\\ge "),
)
_UNICODE_MATH_RE = re.compile("[" + "".join(c for c, _ in _UNICODE_MATH) + "]")
_UNICODE_MATH_MAP = dict(_UNICODE_MATH)
# A number math-verify read from plain text may be the start or the end of undelimited
# LaTeX: "3\sqrt{2}", "16\pi", "\sqrt2/2". The run of text around it without
# whitespace or "$" (or whitespace before a command) is tried as LaTeX instead.
_LATEX_RUN_BEFORE_RE = re.compile(r"[^\s$]{0,100}$")
_LATEX_RUN_AFTER_RE = re.compile(r"(?:[^\s$]|\s{1,3}(?=\\[A-Za-z]))*")
_MAX_LATEX_RUN = 200
# Sentence punctuation at the end of a formula: "\[ x = \frac12. \]" (math-verify
# cannot parse "\frac12." and falls back to a number elsewhere in the text); never the
# "," of a "\," command.
_CLOSING_PUNCT_RE = re.compile(r"(?<=[^\s\\])[.,;]\s*(?=\\\]|\\\)|\$\$)|(?<=[^\s$\\])[.,;](?=\$)")
_E_NOTATION_RE = re.compile(r"(-?\d{1,30}(?:\.\d{1,30})?)[eE]([-+]?\d{1,4})")
_NUMBER_GROUPS = ("integer", "decimal", "expr", "percent")


def _plain_unicode_math(text: str) -> str:
    """``16π`` -> ``16\\pi``, ``√2`` -> ``\\sqrt2``, ``−5`` -> ``-5`` (linear time)."""
    return _UNICODE_MATH_RE.sub(lambda m: _UNICODE_MATH_MAP[m.group()], text)


def _latex_run(match: re.Match) -> str | None:
    """The undelimited LaTeX run around a plain number match, or None."""
    spans = [
        match.span(name)
        for name, value in match.groupdict().items()
        if value and name.lstrip("_").startswith(_NUMBER_GROUPS)
    ]
    if not spans:
        return None
    text = match.string
    start, end = min(a for a, _ in spans), max(b for _, b in spans)
    before = _LATEX_RUN_BEFORE_RE.search(text, max(0, start - 100), start)
    after = _LATEX_RUN_AFTER_RE.match(text, end, min(len(text), end + _MAX_LATEX_RUN))
    run = text[before.start() : after.end()].rstrip(".,;:!?*").lstrip("*")
    sci = _E_NOTATION_RE.fullmatch(run)
    if sci is not None:  # "1.5e-3" (math-verify reads "1.5")
        return f"{sci.group(1)}\\times 10^{{{sci.group(2)}}}"
    if "\\" not in run or any(d in run for d in ("\\(", "\\)", "\\[", "\\]")):
        return None
    return run


def _expr_as_latex(expr: str) -> str:
    """math-verify's plain-expression text as LaTeX (it arrives with ``^`` as ``**``).

    Trailing ``*`` are Markdown bold markers (``**7/8**``), not products."""
    expr = (
        expr.strip()
        .rstrip(".*")
        .replace("**", "^")
        .replace("\u00d7", "\\times ")
        .replace("\u00f7", "\\div ")
    )
    return expr.replace("*", "\\cdot ")


def _make_extractor():
    """math-verify's extraction (LaTeX, then plain expressions) without ``parse_expr``.

    Returns ``extract(text) -> str | None``.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig
    from math_verify import parser as mv_parser

    def safe_expr(expr: str):  # replaces sympy's parse_expr (eval) in math-verify
        return mv_parser.parse_latex_cached(_expr_as_latex(expr))

    mv_parser.parse_expr_cached = safe_expr
    found: list = []
    extract_match = mv_parser.extract_match

    def recording_extract_match(match, target):
        out = extract_match(match, target)
        if out[0] is not None:
            found.append((*out, match, target))
        return out

    mv_parser.extract_match = recording_extract_match
    targets = mv_parser.get_extraction_regexes([LatexExtractionConfig(), ExprExtractionConfig()])
    from sympy import Mul, Rational, UnevaluatedExpr

    pct = UnevaluatedExpr(Rational(1, 100))

    def extract(text: str) -> str | None:
        found.clear()
        text = _CLOSING_PUNCT_RE.sub("", _plain_unicode_math(text))
        if not mv_parser.extract_target_from_pred(text, targets, fallback_mode="no_fallback"):
            return None
        expr, s, match, target = found[-1]
        if _PLAIN_EXPR_RE.fullmatch(s):  # a plain expression: LaTeX for the "cmp" parse
            s = _expr_as_latex(s)
        run = _latex_run(match) if isinstance(target, ExprExtractionConfig) else None
        if run is not None and run != s:
            whole = mv_parser.parse_latex_cached(run)
            if whole is not None:
                expr, s = whole, run
        # "m+n = 7+9 = 16" -> "16" (math-verify's reading); "1 and 2" -> "1,2"
        s = ",".join(mv_parser.get_last_eq(part) for part in s.split(" and "))
        if isinstance(expr, Mul) and len(expr.args) == 2 and expr.args[1] == pct and "%" not in s:
            s += "\\%"
        return s.strip() or None

    return extract


def _warm_graders():
    """Imports math-verify, builds ``(compare, extract)`` and warms them up on
    `_WARM_UP` (ANTLR's DFA cache, sympy's paths); the parse cache starts empty."""
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]
    parsed_cache: collections.OrderedDict = collections.OrderedDict()

    def parsed(s: str):
        hit = parsed_cache.get(s)
        if hit is None:
            latex = "\\boxed{" + _plain_unicode_math(s) + "}"
            hit = parse(latex, config, fallback_mode="no_fallback", parsing_timeout=None)
            parsed_cache[s] = hit
            if len(parsed_cache) > 4096:
                parsed_cache.popitem(last=False)
        return hit

    def compare(gold: str, pred: str) -> bool:
        pg, pp = parsed(gold), parsed(pred)
        return bool(pg and pp and verify(pg, pp, timeout_seconds=None))

    extract = _make_extractor()
    for i in range(0, len(_WARM_UP), 2):
        compare(_WARM_UP[i], _WARM_UP[i + 1])
    for text in _WARM_UP_TEXTS:
        extract(text)
    parsed_cache.clear()
    return compare, extract


def _serve_batches(conn: Connection, graders, soft_timeout: float, memory_limit: int) -> None:
    """Caps the address space, installs the soft timeout and `audit_hook`, answers
    ``("ready", pid)``, then serves batches on ``conn`` until ``None`` or EOF."""
    import signal

    compare, extract = graders
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
        for idx, op, a, b in batch:
            result = False if op == "cmp" else None
            try:
                try:
                    if soft_timeout > 0:
                        signal.setitimer(signal.ITIMER_REAL, soft_timeout)
                    result = compare(a, b) if op == "cmp" else extract(a)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except _SoftTimeout:
                result = False if op == "cmp" else None
            except Exception:  # noqa: BLE001 -- any failure means "not equal" / no answer
                result = False if op == "cmp" else None
            conn.send((idx, result))


def serve(fd: int, soft_timeout: float, memory_limit: int) -> None:
    """Entry point of a worker started on its own (``start="spawn"``): warms up, then
    serves batches ``[(idx, op, a, b), ...]`` on socket ``fd``."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    _serve_batches(Connection(fd), _warm_graders(), soft_timeout, memory_limit)


REQUEST = struct.Struct("!dq")  # a zygote request: soft timeout (s), memory limit (bytes)


def zygote(fd: int) -> None:
    """Entry point of the zygote (``start="fork"``): warms up once, then forks one
    worker per request on the control socket ``fd``.

    A request is `REQUEST`'s bytes with one file descriptor attached (SCM_RIGHTS): the
    new worker's end of its socket pair. The forked worker starts warm (it shares the
    zygote's imports and ANTLR's DFA cache copy-on-write), caps its own address space,
    installs its soft timeout and `audit_hook` (never the zygote: it must fork) and
    serves batches as a spawned worker does. The zygote ignores SIGCHLD, so the kernel
    reaps its workers; it exits at EOF on ``fd`` (the parent is gone), and so do its
    workers at EOF on theirs. It is single-threaded, which makes ``fork`` safe."""
    import signal
    import socket

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    ctrl = socket.socket(fileno=fd)
    graders = _warm_graders()
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctrl, REQUEST.size, 1)
            while fds and len(msg) < REQUEST.size:  # a stream socket may split the bytes
                more = ctrl.recv(REQUEST.size - len(msg))
                if not more:
                    break
                msg += more
        except OSError:
            return
        if len(msg) < REQUEST.size or not fds:
            for extra in fds:
                os.close(extra)
            return
        soft_timeout, memory_limit = REQUEST.unpack(msg)
        if os.fork() == 0:  # the worker: never returns into this loop
            code = 1
            try:
                ctrl.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _serve_batches(Connection(fds[0]), graders, soft_timeout, memory_limit)
                code = 0
            finally:
                os._exit(code)
        os.close(fds[0])
