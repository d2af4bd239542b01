"""Answer extraction, normalisation and the task registry (no worker processes)."""

import json
import pathlib
import sys

import pytest

from ttrl_jax.rewards import answers, extraction

MATH_TEST = pathlib.Path("/work/shared/data/benchmarks/MATH-TTT/test.json")


# --- extraction ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("so x = 2 and the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("first \\boxed{3} then \\boxed{4}", "4"),  # the last box
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("nested \\boxed{\\frac{a^{2}}{\\sqrt{b_{1}}}} end", "\\frac{a^{2}}{\\sqrt{b_{1}}}"),
        ("set \\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces are not grouping
        ("\\fbox{7}", "7"),
        ("Thus $\\boxed 5$.", "5"),
        ("truncated \\boxed{\\frac{1}{2", None),  # the last box never closes
        ("The final answer is $\\frac{3}{4}$. Done", "\\frac{3}{4}"),
        ("Therefore, the answer is 42.\nI hope it is correct.", "42"),
        ("Answer: 17", "17"),
        ("we get 3 apples, then 5, and finally 12.5", "12.5"),
        ("the sum is -7", "-7"),
        ("1,000 people and 2,500 more", "2,500"),
        ("ratio 3/4", "3/4"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_math_answer(completion, expected):
    assert answers.extract_math_answer(completion) == expected


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("\\dfrac{14}{3}", "\\frac{14}{3}"),
        ("\\tfrac{1}{2}", "\\frac{1}{2}"),
        ("\\frac12", "\\frac{1}{2}"),
        ("\\frac1{2}", "\\frac{1}{2}"),
        ("1/2", "\\frac{1}{2}"),
        ("-1/2", "-\\frac{1}{2}"),
        ("11\\sqrt2", "11\\sqrt{2}"),
        ("90^\\circ", "90"),
        ("90^{\\circ}", "90"),
        ("5\\text{ cm}", "5"),
        ("12 \\text{ inches}", "12"),
        ("5 cm^2", "5"),
        ("\\text{Evelyn}", "Evelyn"),
        ("(a,b)", "(a,b)"),  # the reference's unit stripping turns this into (,b)
        ("(a, b, c)", "(a,b,c)"),
        ("x=5", "5"),
        ("x = -3", "-3"),
        ("x=1,y=2", "x=1,y=2"),
        ("1,000", "1000"),
        ("10,\\!000", "10000"),
        ("1{,}000", "1000"),
        ("025", "25"),
        ("142.0", "142"),
        ("0.50", "0.5"),
        (".5", "0.5"),
        ("1,-2", "1,-2"),
        ("3, 5, 07", "3,5,7"),
        ("50\\%", "50"),
        ("\\$18.90", "18.9"),
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        ("\\boxed{5}", "5"),
        ("{5}", "5"),
        ("\\pi r^2", "\\pi r^2"),  # the space between \pi and r is meaningful
        ("x^5 - x^4 + 1", "x^5-x^4+1"),
        ("3\\mathrm{i}", "3i"),
        ("p - q", "p-q"),
        ("", None),
        (None, None),
    ],
)
def test_normalize_math(raw, canonical):
    assert answers.normalize_math(raw) == canonical


def test_normalize_is_idempotent_on_math500_answers():
    golds = [row["answer"] for row in json.loads(MATH_TEST.read_text())]
    assert len(golds) == 500
    for g in golds:
        once = answers.normalize_math(g)
        assert once, g
        assert answers.normalize_math(once) == once, g


def test_math_task_extracts_canonical_strings():
    task = answers.get_task("math")
    assert task.extract("so \\boxed{\\dfrac{1}{2}}") == "\\frac{1}{2}"
    assert task.extract("The answer is $1/2$.") == "\\frac{1}{2}"
    assert task.extract("nothing") is None
    assert answers.extract_answers([["\\boxed{2}", None], ["x", "is 3"]]) == [
        ["2", None],
        [None, "3"],
    ]


def test_untrusted_text_is_cleaned():
    nul = "\\boxed{1\x00 2}"
    assert answers.extract_math_answer(nul) == "1 2"
    assert answers.get_task("math").extract(nul) == "12"
    bad = b"\xed\xa0\x80 \\boxed{5} \xff".decode("utf-8", "surrogateescape")
    assert answers.extract_math_answer(bad) == "5"
    assert answers.extract_math_answer(b"\\boxed{7}\xff") == "7"
    assert answers.clean_text("\ud800x") == "?x"


def test_extraction_is_linear_time_on_hostile_inputs():
    cases = [
        "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
        "\\boxed{" * 50_000,
        "1" * 1_000_000,
        "answer is" + " " * 200_000 + "x",
        "A " * 200_000,
        "1," * 300_000,
        "\\text{" * 100_000 + "}" * 100_000,
    ]
    # ~1e6-character inputs: a quadratic scan would take hours, so a regression hangs
    # here rather than passing (no clock is asserted: a loaded machine must not fail it)
    for text in cases:
        a = answers.extract_math_answer(text)
        answers.normalize_math(a)
        answers.extract_choice(text)
    deep = answers.extract_math_answer(cases[0])
    assert deep == "{" * 10_000 + "1" + "}" * 10_000


# --- multiple choice -----------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("This is a tricky one; the answer is C", "C"),
        ("Therefore the answer is (B).", "B"),
        ("Answer: D", "D"),
        ("Final answer: \\boxed{A}", "A"),
        ("\\boxed{\\text{(B)}}", "B"),
        ("I pick (D) after checking (A).", "A"),
        ("a planet of a given mass is a sphere", None),  # the article is never option A
        ("A planet with a mass of 2 earths wins", None),  # capitalised article
        ("compare a) and b): so c) is densest", None),  # GPQA sub-items, not options
        ("The correct option is B because it is denser.", "B"),
        ("so D", "D"),
        ("", None),
    ],
)
def test_extract_choice(completion, expected):
    assert answers.extract_choice(completion) == expected


def test_multiple_choice_task():
    task = answers.get_task("multiple_choice")
    assert task.equivalence == "exact"
    assert task.normalize("(C)") == "C"
    assert task.normalize("E") is None
    assert task.extract("the answer is a") is None
    assert answers.extract_choice("answer is I", letters="ABCDEFGHIJ") == "I"
    assert answers.extract_choice("I think so", letters="ABCDEFGHIJ") is None


# --- registry ------------------------------------------------------------------------


def test_user_task_from_module_function(tmp_path, monkeypatch):
    (tmp_path / "my_labels.py").write_text(
        "from ttrl_jax.rewards.answers import Task\n"
        "LABELS = ('positive', 'negative', 'neutral')\n"
        "def sentiment(text):\n"
        "    words = [w.strip('.,!').lower() for w in text.split()]\n"
        "    found = [w for w in words if w in LABELS]\n"
        "    return found[-1] if found else None\n"
        "TASK = Task('sentiment', sentiment, str.lower, lambda g, p: g == p)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fn_task = answers.get_task("my_labels:sentiment")
    assert fn_task.extract("I'd say Positive!") == "positive"
    assert fn_task.extract("no idea") is None
    assert fn_task.equivalence == "exact"
    obj_task = answers.get_task("my_labels:TASK")
    assert obj_task.name == "sentiment" and callable(obj_task.equivalence)
    assert "my_labels:sentiment" not in answers.TASKS  # resolving does not register
    sys.modules.pop("my_labels", None)


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown task 'gsm9k'"):
        answers.get_task("gsm9k")
    with pytest.raises(ValueError, match="cannot load task"):
        answers.get_task("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="cannot load task"):
        answers.get_task("json:no_such_attr")
    with pytest.raises(ValueError, match="neither a Task nor a callable"):
        answers.get_task("math:pi")
    with pytest.raises(ValueError, match="already registered"):
        answers.register_task(answers.TASKS["math"])
    task = answers.Task("upper_test", str.upper, str.upper)
    try:
        assert answers.register_task(task) is answers.get_task("upper_test")
    finally:
        answers.TASKS.pop("upper_test")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("see /tmp/pytest-of-root/pytest-0/test_model_text_never_executes0/pwned", None),
        ("run0 v2 x_1 x-1-y", None),
        ("see file run_3/out", None),
        ("x2", None),
        ("abc-5", None),
        ("the value -5 is abc-5", "-5"),
        ("x_1 = 5", "5"),
        ("The value is -3.", "-3"),
        ("so 3/4", "3/4"),
        ("total 1,000 apples", "1,000"),
        ("is 10-3=7", "7"),
        ("first 12, then /tmp/run-0", "12"),
        ("[c for c in x][0]; done", None),
        ("x = -4.5, so (7)", "7"),
        ("about 12% of 3.14abc", "12"),
        ("**42**.", "42"),
    ],
)
def test_last_number_fallback_skips_digits_glued_to_words(text, expected):
    """Digits inside identifiers and paths are not answers (a temp path such as
    pytest-0/..._executes0 once graded as the answer 0)."""
    assert answers.extract_math_answer(text) == expected


def test_injection_test_passes_with_a_basetemp_numbered_0(tmp_path):
    """The security test must not depend on pytest's temp numbering: run it with a
    --basetemp whose path ends in 0, as on a fresh machine's first pytest run."""
    import subprocess

    root = pathlib.Path(__file__).resolve().parent
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'pytest-0'}",
            f"{root / 'test_grading.py'}::test_model_text_never_executes",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root.parent,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


# --- what the trainer process decides, what goes to math-verify ---------------------


@pytest.mark.parametrize(
    "completion, decided",
    [
        ("so \\boxed{5} and 7", ("5", None)),  # the box, here
        ("\\boxed{\\frac{1}{2", (None, None)),  # an unclosed box: no answer
        ("  42 ", ("42", None)),  # a plain number
        (".4", (".4", None)),
        ("6 - 5i", ("6 - 5i", None)),  # one short formula without prose
        ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", None)),
        ("$[0,1)$", (None, "$[0,1)$")),  # delimiters: math-verify's extraction
        ("The answer is 3.", (None, "The answer is 3.")),
        ("abc-5", (None, "abc-5")),  # a word: not a bare formula
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_extraction_plan(completion, decided):
    assert extraction.plan(completion) == decided


def test_extraction_plan_sends_only_the_tail_from_a_line_start():
    text = "$x$ " * 2000 + "\nso the answer is $5$"
    answer, tail = extraction.plan(text)
    assert answer is None and tail == "so the answer is $5$"
    assert len(extraction.plan("w " * 10_000)[1]) <= extraction.MAX_WORKER_CHARS


def test_extraction_finish_falls_back_to_answer_is_then_last_number():
    assert extraction.finish("The answer is Evelyn.", None) == "Evelyn"
    assert extraction.finish("we tried 4 then 9 times", None) == "9"
    assert extraction.finish("see file run_3/out", None) is None
    assert extraction.finish("The answer is Evelyn.", "3") == "3"


@pytest.mark.parametrize(
    "gold, decided",
    [
        ("$\\frac{1}{2}$", (None, "$\\frac{1}{2}$")),
        ("\\(3\\)", (None, "\\(3\\)")),
        ("\\frac{1}{2}", ("\\frac{1}{2}", None)),
        ("$\\boxed{5}$", ("$\\boxed{5}$", None)),
        ("  ", (None, None)),
    ],
)
def test_gold_plan(gold, decided):
    assert extraction.gold_plan(gold) == decided


@pytest.mark.parametrize(
    "raw, alternative",
    [
        ("50\\%", "\\frac{1}{2}"),
        ("50%", "\\frac{1}{2}"),
        ("$25\\%$", "\\frac{1}{4}"),
        ("200 percent", "2"),
        ("-7.5\\%", "-\\frac{3}{40}"),
        ("50", None),
        ("x\\%", None),
        (None, None),
    ],
)
def test_percent_alternative(raw, alternative):
    assert extraction.percent_alternative(raw) == alternative
