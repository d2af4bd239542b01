"""Grading: golden equivalences, the fast path, security, deadlines, pool recovery."""

import os
import signal
import subprocess
import sys
import time

import procs
import pytest

from ttrl_jax.rewards import grading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pool():
    # Generous deadline: golden cases must not flake on a loaded machine.
    with grading.GradingPool(num_workers=2, timeout=10.0) as p:
        yield p.wait_ready()


@pytest.fixture(scope="module")
def strict_pool():
    # The production-like deadline; no length cap, so hostile inputs reach the workers.
    with grading.GradingPool(num_workers=2, timeout=1.0, max_chars=None, cache_size=0) as p:
        yield p.wait_ready()  # start-up time is not part of any deadline


# --- golden cases --------------------------------------------------------------------

EQUIVALENT = [
    ("0.5", "\\frac{1}{2}"),
    ("\\frac12", "1/2"),
    ("(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("[1,2)", "[1, 2)"),
    ("(-\\infty, 3]", "\\left(-\\infty,3\\right]"),
    ("\\{1,2,3\\}", "\\{3,1,2\\}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("3\\sqrt{13}", "\\sqrt{117}"),
    ("x^2+2x+1", "(x+1)^2"),
    ("-\\frac{\\pi}{6}", "-\\pi/6"),
    ("6 - 5i", "6-5i"),
    ("90^\\circ", "90"),
    ("x=5", "5"),
    ("1,000", "1000"),
    ("\\dfrac{3}{56}", "\\frac{3}{56}"),
    ("5\\text{ cm}", "5"),
    ("\\text{Evelyn}", "evelyn"),
    ("1,-2", "-2, 1"),
    ("11\\sqrt2", "11\\sqrt{2}"),
    ("142", "142.0"),
]

NOT_EQUIVALENT = [
    ("[1,2)", "[1,2]"),
    ("(1,2)", "(2,1)"),
    ("2", "3"),
    ("\\frac{1}{3}", "\\frac{1}{4}"),
    ("x+1", "x-1"),
    ("\\sqrt{2}", "1.41"),
    ("Evelyn", "Evenly"),  # math-verify alone multiplies the letters and says equal
    ("7", "seven"),
    ("\\pi", "3.14"),
    ("1,2", "1,2,3"),
    ("", "0"),
    (None, "1"),
]


def test_golden_equivalent(pool):
    got = pool.equivalent_many(EQUIVALENT)
    assert [p for p, ok in zip(EQUIVALENT, got) if not ok] == []


def test_golden_not_equivalent(pool):
    got = pool.equivalent_many(NOT_EQUIVALENT)
    assert [p for p, ok in zip(NOT_EQUIVALENT, got) if ok] == []


@pytest.mark.parametrize(
    "response, gold, expected",
    [
        ("so the answer is $\\boxed{\\dfrac{1}{2}}$.", "0.5", True),
        ("so the answer is $\\boxed{\\dfrac{1}{2}}$.", "\\frac{1}{3}", False),
        ("The answer is $\\left( 3, \\frac{\\pi}{2} \\right)$", "(3,\\frac{\\pi}{2})", True),
        ("It takes 12 days, so \\boxed{12\\text{ days}}", "12", True),
        ("no answer at all", "12", False),
        ("\\boxed{4}", None, False),
    ],
)
def test_grade(pool, response, gold, expected):
    assert pool.grade(response, gold) is expected


def test_grade_other_tasks(pool):
    assert pool.grade_many(
        ["the answer is a prime, so (C)", "a tricky one", "Answer: B"],
        ["C", "A", "C"],
        task="multiple_choice",
    ) == [True, False, False]
    with pytest.raises(ValueError, match="2 responses but 1 gold"):
        pool.grade_many(["a", "b"], ["c"])


# --- fast path and cache -------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("3", "3", True),
        ("3", "4", False),
        ("-12", "\\frac{-24}{2}", True),
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac{1}{3}", "\\frac{2}{6}", True),
        ("\\frac{1}{3}", "\\frac{1}{4}", False),
        ("\\frac{1}{3}", "0.333333", None),  # math-verify rounds decimals: its call
        ("0.5", "0.25", None),
        ("Evelyn", "evelyn", True),
        ("Evelyn", "Evenly", False),
        ("seven", "7", False),
        ("x+1", "1+x", None),
        ("\\frac{1}{0}", "1", None),
        ("1" * 100, "1" * 100 + "0", None),  # too long for the exact fast path
    ],
)
def test_fast_equivalent(a, b, expected):
    assert grading.fast_equivalent(a, b) is expected


def test_fast_path_and_cache_skip_workers(pool):
    before = pool.stats["worker"]
    assert pool.equivalent_many([("12", "12.0"), ("7", "8"), ("1/2", "0.5")]) == [
        True,
        False,
        True,
    ]
    assert pool.stats["worker"] == before  # no sympy, no IPC
    assert pool.equivalent("\\sqrt{8}", "2\\sqrt{2}")
    worker_calls = pool.stats["worker"]
    cached = pool.stats["cached"]
    assert pool.equivalent("\\sqrt{8}", "2\\sqrt{2}")
    assert pool.stats["worker"] == worker_calls and pool.stats["cached"] == cached + 1


def test_batch_spreads_over_workers_and_keeps_order(pool):
    pairs = [(f"\\sqrt{{{k * k * 2}}}", f"{k}\\sqrt{{2}}") for k in range(2, 40)]
    pairs += [(f"\\sqrt{{{k * k * 3}}}", f"{k}\\sqrt{{2}}") for k in range(2, 40)]
    assert pool.equivalent_many(pairs) == [True] * 38 + [False] * 38


# --- security ------------------------------------------------------------------------


def _payloads(marker):
    cmd = f"__import__('os').system('touch {marker}')"
    raw = [
        cmd,
        f'eval("{cmd}")',
        f"exec('{cmd}')",
        "().__class__.__base__.__subclasses__()",
        f"[c for c in ().__class__.__base__.__subclasses__()][0]; {cmd}",
    ]
    return raw + [f"\\boxed{{{p}}}" for p in raw] + [f"The answer is {p}" for p in raw]


def test_payload_is_live_in_sympy_parse_expr(tmp_path):
    """The payload does execute under parse_expr: the security tests can fail."""
    marker = tmp_path / "pwned_by_parse_expr"
    code = (
        "from sympy.parsing.sympy_parser import parse_expr\n"
        f"parse_expr(\"__import__('os').system('touch {marker}')\")\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False, timeout=120)
    assert marker.exists()


def test_model_text_never_executes(pool, tmp_path):
    marker = tmp_path / "pwned"
    payloads = _payloads(marker)
    assert pool.grade_many(payloads, ["0"] * len(payloads)) == [False] * len(payloads)
    assert not any(pool.equivalent_many([(p, "0") for p in payloads]))
    assert not any(pool.equivalent_many([("0", p) for p in payloads]))
    pool.equivalent_many([(p, p + "+1") for p in payloads])
    assert not marker.exists()


def test_worker_audit_hook_blocks_side_effects(tmp_path):
    """Defence in depth: even code that did run in a worker cannot spawn or write."""
    marker = tmp_path / "hooked"
    code = (
        "import os, sys\n"
        "from ttrl_jax.rewards.grading_worker import audit_hook\n"
        "sys.addaudithook(audit_hook)\n"
        "blocked = 0\n"
        f"for attempt in (lambda: os.system('touch {marker}'),\n"
        f"                lambda: open('{marker}', 'w'),\n"
        f"                lambda: os.open('{marker}', os.O_CREAT | os.O_WRONLY),\n"
        "                lambda: __import__('subprocess').run(['true']),\n"
        "                lambda: __import__('socket').socket().connect(('127.0.0.1', 9))):\n"
        "    try:\n"
        "        attempt()\n"
        "    except PermissionError:\n"
        "        blocked += 1\n"
        "open(os.devnull).close()  # reading stays allowed\n"
        "print(blocked)\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.stdout.strip() == "5", out.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_parent_process_never_imports_sympy():
    """Grading, voting and rewards run in the trainer without sympy or math-verify."""
    code = (
        "import sys\n"
        "from ttrl_jax.rewards import grading, voting, modes\n"
        "with grading.GradingPool(num_workers=1) as p:\n"
        "    assert p.grade('so \\\\boxed{\\\\sqrt{4}}', '2')\n"
        "    assert not p.equivalent(\"__import__('os').system('true')\", '0')\n"
        "    v, _ = voting.build_votes([['1/2', '0.5', 'x+1']], golds=['\\\\frac12'], pool=p)\n"
        "    assert v.ids.tolist() == [[0, 0, 1]], v.ids\n"
        "    modes.ttrl(modes.Votes(v.ids))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sympy', 'math_verify')))\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- deadlines and recovery ----------------------------------------------------------

HOSTILE = [
    ("power tower", "9^{9^{9^{9}}}", "7"),
    ("power tower 2", "2^{2^{2^{2^{2^{2}}}}}", "5"),
    ("huge factorial", "(10^{100})!", "2"),
    ("10^6 digits", "1" * 1_000_000, "2"),
    ("10^6 letters", "x" * 1_000_000, "x" * 999_999 + "y"),
    ("10^4 nested braces", "{" * 10_000 + "1" + "}" * 10_000, "2"),
    ("nested fractions", "\\frac{" * 3_000 + "1" + "}{2}" * 3_000, "1"),
    ("long sum", "1+" * 50_000 + "1", "50002"),
    ("NUL bytes", "1\x00+\x001", "3"),
    ("surrogates", b"\xed\xa0\x80\xff1".decode("utf-8", "surrogateescape"), "2"),
]


@pytest.mark.parametrize("name, a, b", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_inputs_return_within_deadline(strict_pool, name, a, b):
    # The deadline is the pool's (worker SIGALRM, then the parent's kill); its firing is
    # checked without a clock in test_stuck_worker_is_killed_and_batch_resubmitted. A
    # hostile input that escaped it would hang here, not pass.
    assert strict_pool.equivalent(a, b) is False, name
    assert strict_pool.equivalent("\\sqrt{4}", "2")  # the pool keeps grading (on a worker)


def test_hostile_inputs_in_one_batch(strict_pool):
    hostile = HOSTILE[::2]  # tower, factorial, 10^6 letters, nested fractions, NUL
    pairs = [("2", "\\sqrt{4}")] + [(a, b) for _, a, b in hostile] + [("\\sqrt{9}", "3")]
    # Each comparison has its own deadline; a killed worker's batch is re-queued, so the
    # sound pairs after a hostile one are still graded.
    got = strict_pool.equivalent_many(pairs)
    assert got == [True] + [False] * len(hostile) + [True]


HOSTILE_COMPLETIONS = [  # no box: math-verify's extraction reads them, on a worker
    "\\(" * 50_000,
    "$\\frac{" + "{" * 3_000 + "$",
    "$(10^{100})!$",
    "$" + "1+" * 1_500 + "1$",
    "answer: " * 20_000,
    "$1$ and " * 10_000,
]


@pytest.mark.parametrize("text", HOSTILE_COMPLETIONS, ids=range(len(HOSTILE_COMPLETIONS)))
def test_hostile_completions_without_box_return_within_deadlines(strict_pool, text):
    # an extraction and then a comparison, each under its own deadline
    assert strict_pool.grade(text, "7") is False
    assert strict_pool.grade("so we get $\\sqrt{4}$", "2")


def test_length_cap_answers_without_workers(pool):
    assert pool.max_chars == 4096
    before = dict(pool.stats)
    assert pool.equivalent("9" * 100_000, "9" * 99_999 + "8") is False
    assert pool.equivalent("9" * 100_000, "9" * 100_000) is True  # identical strings
    assert pool.stats["too_long"] == before.get("too_long", 0) + 1
    assert pool.stats["worker"] == before["worker"]


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_stuck_worker_is_killed_and_batch_resubmitted(start):
    # Soft timeout off: only the parent's hard kill can stop 1000000! vs 3 (~5 s).
    kw = dict(soft_timeout_fraction=0.0, start=start)
    with grading.GradingPool(num_workers=1, timeout=1.0, **kw) as p:
        assert p.equivalent("1", "1.0")
        assert p.equivalent("\\sqrt{4}", "2")
        pid = p.worker_pids[0]
        pairs = [("\\sqrt{9}", "3"), ("1000000!", "3"), ("\\sqrt{16}", "4"), ("\\pi", "3")]
        assert p.equivalent_many(pairs) == [True, False, True, False]
        # the parent's deadline fired once (not the factorial finishing) and the rest of
        # the batch went to the replacement worker
        assert p.stats["timeouts"] == 1 and p.stats["restarts"] == 1
        assert p.worker_pids[0] != pid
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the stuck worker is gone (and reaped)


def test_pool_survives_externally_killed_workers(strict_pool):
    for pid in strict_pool.worker_pids:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    pairs = [(f"\\sqrt{{{k * k}}}", str(k)) for k in range(2, 12)]
    assert strict_pool.equivalent_many(pairs) == [True] * 10
    assert strict_pool.stats["restarts"] >= 2


# --- worker start: forks of one warm zygote per process ------------------------------


def _address_limit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        return next(line.split()[3] for line in f if line.startswith("Max address space"))


def _wait_gone(pids, seconds=20.0) -> list[int]:
    """The pids still running (not zombies) after up to ``seconds``."""
    end = time.monotonic() + seconds
    while True:
        alive = [pid for pid in pids if procs.alive(pid)]
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.05)


linux_fork = pytest.mark.skipif(
    not (grading.CAN_FORK and os.path.exists("/proc/self/limits")), reason="needs Linux"
)


@linux_fork
def test_pools_fork_their_workers_from_one_zygote_with_their_own_limits():
    a = grading.GradingPool(num_workers=2, timeout=10.0, memory_limit_bytes=3 << 30)
    b = grading.GradingPool(num_workers=1, timeout=10.0, memory_limit_bytes=2 << 30)
    with a, b:
        a.wait_ready(), b.wait_ready()
        pids = a.worker_pids + b.worker_pids
        (zygote,) = {int(procs.proc_stat(pid)[1]) for pid in pids}  # one parent for all
        assert zygote not in (os.getpid(), *pids)
        assert [_address_limit(pid) for pid in pids] == [str(3 << 30)] * 2 + [str(2 << 30)]
        assert _address_limit(zygote) == "unlimited"  # the cap is each worker's own
        # each fork grades (and installed the audit hook only in itself: the zygote
        # keeps forking, which the hook would refuse)
        assert a.equivalent_many([("\\sqrt{4}", "2"), ("x^2-1", "(x-1)(x+1)")]) == [True, True]
        assert b.extract_many(["so $x = \\frac{3}{4}$"]) == ["\\frac{3}{4}"]
        first = b.worker_pids[0]
        os.kill(first, signal.SIGKILL)
        assert not _wait_gone([first])  # reaped by the zygote's kernel, no zombie left
        assert b.equivalent("\\sqrt{16}", "4") and b.stats["restarts"] == 1
        assert int(procs.proc_stat(b.worker_pids[0])[1]) == zygote
    assert not _wait_gone(pids)  # closed pools' workers exit (the zygote stays)
    assert _wait_gone([zygote], 0.0) == [zygote]


@linux_fork
def test_pools_leave_no_process_or_descriptor_behind():
    def cycle() -> list[int]:
        with grading.GradingPool(num_workers=2, timeout=10.0, cache_size=0) as p:
            p.wait_ready()
            first = p.worker_pids[0]
            os.kill(first, signal.SIGKILL)
            assert not _wait_gone([first])
            pairs = [(f"\\sqrt{{{k * k}}}", str(k)) for k in range(2, 6)]
            assert p.equivalent_many(pairs) == [True] * 4  # a replacement was forked
            assert p.stats["restarts"] == 1
            return [first, *p.worker_pids]

    cycle()  # opens the zygote's control socket if this process has none yet
    before = sorted(os.listdir("/proc/self/fd"))
    pids = cycle() + cycle()
    assert sorted(os.listdir("/proc/self/fd")) == before  # sockets and pidfds closed
    assert not _wait_gone(pids)


@linux_fork
def test_pool_recovers_when_its_zygote_dies():
    with grading.GradingPool(num_workers=1, timeout=10.0, cache_size=0) as p:
        p.wait_ready()
        worker = p.worker_pids[0]
        zygote = int(procs.proc_stat(worker)[1])
        os.kill(zygote, signal.SIGKILL)
        os.kill(worker, signal.SIGKILL)
        # both gone first (else a request may still reach the dying zygote: then that
        # start fails too and a second replacement follows, which also recovers)
        assert not _wait_gone([zygote, worker])
        assert p.equivalent_many([("\\sqrt{9}", "3"), ("\\pi", "3")]) == [True, False]
        assert int(procs.proc_stat(p.worker_pids[0])[1]) not in (zygote, os.getpid())
        assert p.stats["restarts"] == 1


@linux_fork
def test_zygote_and_workers_exit_when_their_parent_is_killed():
    code = (
        "import time\n"
        "from ttrl_jax.rewards import grading\n"
        "p = grading.GradingPool(num_workers=2, timeout=10.0).wait_ready()\n"
        "print(*p.worker_pids, grading._ZYGOTE._proc.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        pids = [int(x) for x in proc.stdout.readline().split()]
        assert len(pids) == 3
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert not _wait_gone(pids)  # EOF on their sockets: no orphan keeps running


def test_default_pool_lifecycle():
    grading.shutdown_default_pool()
    try:
        p = grading.default_pool()
        assert grading.default_pool() is p
        assert grading.equivalent("0.5", "\\frac{1}{2}")
        assert grading.grade("thus \\boxed{\\sqrt{4}}", "2")
        assert grading.grade_many(["\\boxed{1}", "\\boxed{2}"], ["1", "1"]) == [True, False]
        assert grading.equivalent_many([("2", "2"), ("x", "y")]) == [True, False]
    finally:
        grading.shutdown_default_pool()
    assert p._closed
    with pytest.raises(RuntimeError, match="closed"):
        p.equivalent("1", "1")


# --- extraction without a box (math-verify's, in the workers) -----------------------

ISSUE_TABLE = [  # response, gold, right verdict
    ("\\frac{10}{9}", "10/9", True),
    ("$[0,1)$", "$[0,1)$", True),
    (".4", "0.4", True),
    ("1 000", "1000", True),
    ("$-[0,1)$", "$1$", False),  # the last number "1" would be a false positive
]


@pytest.mark.parametrize("response, gold, expected", ISSUE_TABLE)
def test_issue_table(pool, response, gold, expected):
    assert pool.grade(response, gold) is expected


@pytest.mark.parametrize(
    "response, gold, expected",
    [
        ("so the answer is $\\frac{1}{2}$", "$0.5$", True),
        ("so the answer is $\\frac{1}{2}$", "\\(0.5\\)", True),
        ("so the answer is $\\frac{1}{2}$", "$\\frac{1}{3}$", False),
        ("The roots are $1$ and $2$.", "$2$ and $1$", True),  # math-verify's gold: a set
        ("The roots are $1$ and $2$.", "$2$", False),
        ("\\(\\{2,1\\}\\)", "\\(\\{1,2\\}\\)", True),
        ("It is $25\\%$.", "$0.25$", True),  # a percentage is also its value / 100
        ("It is 25%.", "25", True),
        ("It is 25%.", "0.35", False),
        ("We get $x = 7$.", "\\[7\\]", True),
    ],
)
def test_gold_in_math_delimiters(pool, response, gold, expected):
    assert pool.grade(response, gold) is expected


@pytest.mark.parametrize(
    "response, gold",
    [("see file run_3/out", "3"), ("x2", "2"), ("abc-5", "-5"), ("abc-5", "5")],
)
def test_digits_glued_to_words_are_not_answers(pool, response, gold):
    assert pool.grade(response, gold) is False


def test_extract_many_order_of_rules(pool):
    got = pool.extract_many(
        [
            "We get $3$ first, then \\boxed{4}.",  # the box wins
            "We get $x = 3$, and finally \\(\\frac{5}{6}\\).",  # math-verify: rightmost
            "The answer is 3 apples, not 5.",  # math-verify: the "answer" anchor
            "The answer is Evelyn.",  # math-verify finds nothing: "answer is"
            "we tried 4 then 9 times",  # nothing either: the last number
            "see file run_3/out",  # glued digits: no answer
            "6 - 5i",  # a bare formula is its own answer
            "\\boxed{\\frac{1}{2",  # an unclosed last box: no answer
            None,
            "Thus $m+n = 7 + 9 = 16$.",  # a chain of equalities: its last part
            "The roots are $1$, $2$ and $3$.",  # joined by "and": a list
        ]
    )
    assert got == ["4", "\\frac{5}{6}", "3", "Evelyn", "9", None, "6-5i", None, None, "16", "1,2,3"]


def test_votes_use_the_grading_extraction(pool):
    from ttrl_jax.rewards import answers

    rows = [["$[0,1)$", "1 000", "\\boxed{7}"], ["\\frac{10}{9}", "$-[0,1)$", ".4"]]
    got = answers.extract_answers(rows, pool=pool)
    assert got == [pool.extract_many(rows[0]), pool.extract_many(rows[1])]
    assert got == [["[0,1)", "1000", "7"], ["\\frac{10}{9}", None, "0.4"]]


def test_worker_extraction_never_calls_parse_expr():
    """math-verify's plain-expression extraction runs sympy's parse_expr (eval); the
    worker's extractor reads those expressions with the LaTeX parser instead."""
    code = (
        "import logging; logging.disable(logging.CRITICAL)\n"
        "import math_verify.parser as mv\n"
        "calls = []\n"
        "mv.parse_expr = lambda *a, **k: calls.append(a)\n"
        "from ttrl_jax.rewards.grading_worker import _make_extractor\n"
        "extract = _make_extractor()\n"
        "print(extract('The answer is 2*3'), extract('so 10/4.'), extract('x = (1+2)^2'))\n"
        "print(len(calls))\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.stdout.split("\n")[:2] == ["2\\cdot 3 10/4 (1+2)^2", "0"], out.stderr


# --- agreement on a math-verify-style corpus -----------------------------------------


def _assert_corpus_agreement(label, cases, got, every):
    """Agreement of ``got`` with the expected verdicts of ``cases`` (>= 95 % of true pairs,
    >= 90 % of false ones, >= 150 of each), and every ``every``-th pair graded alone on a
    fresh pool without a result cache gets the batch's verdict. The slowest single call
    is printed for the record, not asserted (a loaded machine must not fail the suite)."""
    alone, worst = [], 0.0
    with grading.GradingPool(timeout=10.0, cache_size=0) as p:
        p.wait_ready()
        for response, gold, _ in cases[::every]:
            start = time.perf_counter()
            alone.append(p.grade(response, gold))
            worst = max(worst, time.perf_counter() - start)
        assert p.stats["timeouts"] == 0
    assert alone == list(got[::every])
    true_ok = [ok for (_, _, want), ok in zip(cases, got) if want]
    false_ok = [not ok for (_, _, want), ok in zip(cases, got) if not want]
    true_rate, false_rate = sum(true_ok) / len(true_ok), sum(false_ok) / len(false_ok)
    wrong = [c for c, ok in zip(cases, got) if ok != c[2]]
    print(
        f"\n{label}: {len(true_ok)} true pairs, {true_rate:.1%} agree; {len(false_ok)} false "
        f"pairs, {false_rate:.1%} agree; max single grade call {worst * 1e3:.0f} ms"
    )
    assert len(true_ok) >= 150 and len(false_ok) >= 150
    assert true_rate >= 0.95, wrong
    assert false_rate >= 0.90, wrong


def test_corpus_agreement_and_single_calls():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from grading_corpus import CASES

    grading.shutdown_default_pool()
    try:
        got = grading.grade_many([c[0] for c in CASES], [c[1] for c in CASES])
    finally:
        grading.shutdown_default_pool()
    _assert_corpus_agreement("corpus", CASES, got, every=7)


@pytest.mark.slow
def test_heldout_corpus_agreement():
    """A second corpus, written apart from the code (see grading_corpus_heldout)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from grading_corpus_heldout import CASES

    with grading.GradingPool(num_workers=2, timeout=10.0) as p:
        got = p.wait_ready().grade_many([c[0] for c in CASES], [c[1] for c in CASES])
    _assert_corpus_agreement("held-out corpus", CASES, got, every=5)


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        # sentence punctuation inside display math
        ("Hence\n\\[\nx = \\frac{7}{2}.\n\\]", "3.5", True),
        ("so $$\\{-2, 2\\}.$$", "\\{2,-2\\}", True),
        ("so \\(\\begin{pmatrix} 5 \\\\ -1 \\end{pmatrix},\\) done", "(5,-1)", False),
        ("so $[4, 9).$", "[4,9)", True),
        ("so $x = 5\\,$", "5", True),
        # undelimited LaTeX around a plain number
        ("The final answer is 3\\sqrt{2}.", "3\\sqrt{2}", True),
        ("The final answer is 3\\sqrt{2}.", "3", False),
        ("The answer is 2 \\sqrt{3}.", "2\\sqrt3", True),
        ("Hence x = 5\\pi/6.", "\\frac{5\\pi}{6}", True),
        ("The answer is 3\\text{ cm}.", "3", True),
        # e-notation, Unicode math, Markdown bold
        ("The answer is 2.5e6.", "2500000", True),
        ("The answer is 1e-3.", "0.001", True),
        ("The area is 16\u03c0.", "16\\pi", True),
        ("The area is 16\u03c0.", "16", False),
        ("The answer is \u22127/2.", "-3.5", True),
        ("The answer is: **7/8**", "\\frac{7}{8}", True),
        ("The answer is 2 ** 3", "8", True),
        ("$\\boxed{\\varnothing}$", "\\emptyset", True),
    ],
)
def test_plain_text_answer_forms(pool, response, gold, expected):
    assert pool.grade(response, gold) is expected
