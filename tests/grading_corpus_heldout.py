"""A second, held-out grading corpus, written apart from :mod:`grading_corpus`.

``CASES`` is a list of ``(response, gold, expected)``. The responses are phrased the
way model completions are (several sentences of working, answers stated early and then
checked, decoy numbers after the answer, ``\\boxed{}`` with nested braces, answers in
``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` without a box) and cover the answer kinds of
math-verify's regression suite: integers, decimals, fractions (``\\dfrac``,
``\\tfrac``, mixed numbers), scientific notation, thousands separators against lists,
degrees, units, percentages, ``\\pi``, radicals, intervals, sets, tuples, matrices,
equations, inequalities, option letters and signs. ``expected`` follows math-verify
where its verdict is sensible (e.g. ``50\\%`` equals both ``50`` and ``0.5``), else the
mathematical truth.
"""

# --- answers wrapped in a realistic \boxed{} completion --------------------------------

_BOXED_TEMPLATE = (
    "Let's work through this carefully.\n\nFirst, we set up the problem and simplify "
    "the expression step by step. After combining like terms we obtain the result.\n\n"
    "Therefore, the final answer is $\\boxed{{{}}}$."
)

# (gold, [equal forms], [different forms])
_BOXED = [
    (
        "\\frac{3}{8}",
        ["\\dfrac{3}{8}", "\\tfrac{3}{8}", "0.375", "\\frac{6}{16}"],
        ["\\frac{8}{3}", "0.38", "3/80"],
    ),
    (
        "\\frac{7}{3}",
        ["2\\frac{1}{3}", "\\dfrac{14}{6}", "7/3"],
        ["2\\frac{1}{4}", "\\frac{3}{7}", "2.3"],
    ),
    (
        "-\\frac{5}{12}",
        ["\\frac{-5}{12}", "-\\dfrac{5}{12}", "-\\frac{10}{24}"],
        ["\\frac{5}{12}", "-\\frac{12}{5}"],
    ),
    (
        "2\\sqrt{3}",
        ["\\sqrt{12}", "2 \\sqrt 3", "\\sqrt{3} \\cdot 2"],
        ["3\\sqrt{2}", "\\sqrt{6}", "2\\sqrt{2}"],
    ),
    (
        "\\frac{\\sqrt{2}}{2}",
        ["\\frac{1}{\\sqrt{2}}", "\\dfrac{\\sqrt2}{2}", "\\sqrt{\\frac{1}{2}}"],
        ["\\sqrt{2}", "\\frac{\\sqrt{3}}{2}"],
    ),
    ("4\\pi", ["4 \\pi", "\\pi \\cdot 4", "\\frac{8\\pi}{2}"], ["2\\pi", "4", "\\pi^4"]),
    (
        "\\frac{\\pi}{3}",
        ["\\dfrac{\\pi}{3}", "\\pi/3", "\\frac{1}{3}\\pi"],
        ["\\frac{\\pi}{6}", "\\frac{3}{\\pi}"],
    ),
    (
        "3 \\times 10^{5}",
        ["300000", "300{,}000", "3\\cdot 10^5", "3 \\times 10^5"],
        ["3 \\times 10^{6}", "30000"],
    ),
    ("(2, -1)", ["\\left(2,-1\\right)", "(2,-1)"], ["(-1, 2)", "(2, 1)"]),
    (
        "\\{-3, 4\\}",
        ["\\{4,-3\\}", "\\left\\{-3, 4\\right\\}"],
        ["\\{3,-4\\}", "\\{-3\\}", "\\{-3,4,5\\}"],
    ),
    ("[-2, 5)", ["\\left[-2, 5\\right)", "[-2,5)"], ["(-2, 5)", "[-2, 5]", "(-2, 5]"]),
    (
        "(-\\infty, -1) \\cup (3, \\infty)",
        ["(3,\\infty)\\cup(-\\infty,-1)", "(-\\infty,-1)\\cup(3,\\infty)"],
        ["(-1, 3)", "(-\\infty,-1]\\cup[3,\\infty)"],
    ),
    (
        "\\begin{pmatrix} 2 & -1 \\\\ 0 & 3 \\end{pmatrix}",
        [
            "\\begin{pmatrix}2&-1\\\\0&3\\end{pmatrix}",
            "\\begin{bmatrix} 2 & -1 \\\\ 0 & 3 \\end{bmatrix}",
        ],
        [
            "\\begin{pmatrix} 2 & 0 \\\\ -1 & 3 \\end{pmatrix}",
            "\\begin{pmatrix} 2 & 1 \\\\ 0 & 3 \\end{pmatrix}",
        ],
    ),
    (
        "\\begin{pmatrix} -4 \\\\ 7 \\end{pmatrix}",
        ["\\begin{pmatrix}-4\\\\7\\end{pmatrix}"],
        ["\\begin{pmatrix} 7 \\\\ -4 \\end{pmatrix}", "\\begin{pmatrix} 4 \\\\ 7 \\end{pmatrix}"],
    ),
    ("x^2 - 5x + 6", ["(x-2)(x-3)", "x^{2}-5x+6", "6 - 5x + x^2"], ["(x+2)(x+3)", "x^2-5x-6"]),
    ("45", ["45^\\circ", "45^{\\circ}", "45^{\\circ}"], ["135^\\circ", "54"]),
    ("12", ["12 \\text{ cm}", "12\\mbox{ inches}", "12\\text{ dollars}"], ["13\\text{ cm}", "1.2"]),
    ("-8", ["-8", "-8.0", "- 8"], ["8", "-7", "-0.8"]),
    ("2023", ["2023", "2{,}023", "2,023"], ["2024", "202"]),
    ("\\frac{1}{6}", ["\\frac{1}{6}", "\\frac16", "\\dfrac{2}{12}"], ["\\frac{1}{5}", "0.16", "6"]),
    ("5 + 2i", ["2i + 5", "5+2i"], ["5-2i", "2+5i"]),
    ("e^{2}", ["e^2", "e^{2}"], ["2e", "e^{3}"]),
    ("\\ln 2", ["\\ln(2)", "\\ln{2}"], ["\\ln 3", "2"]),
    (
        "\\frac{3\\sqrt{5}}{5}",
        ["\\frac{3}{\\sqrt{5}}", "\\dfrac{3\\sqrt{5}}{5}"],
        ["\\frac{5}{\\sqrt{3}}", "\\frac{3\\sqrt{5}}{25}"],
    ),
]


def _boxed_cases():
    cases = []
    for gold, same, different in _BOXED:
        for form in same:
            cases.append((_BOXED_TEMPLATE.format(form), gold, True))
        for form in different:
            cases.append((_BOXED_TEMPLATE.format(form), gold, False))
    return cases


# --- answers without a box, in varied phrasings ----------------------------------------

_PHRASINGS = [
    "After simplifying, we find that the value is ${}$.",
    "Putting everything together, the result is \\({}\\).",
    "Hence\n\\[\n{}\n\\]",
    "So the final answer is ${}$. I hope it is correct.",
    "**Final Answer**\n\n${}$",
    "Answer: \\( {} \\)",
]

# (gold, answer written in the completion, expected)
_UNBOXED = [
    ("\\frac{9}{4}", "\\dfrac{9}{4}", True),
    ("2.25", "\\frac{9}{4}", True),
    ("\\frac{9}{4}", "\\frac{4}{9}", False),
    ("16\\pi", "16 \\pi", True),
    ("16\\pi", "8\\pi", False),
    ("[1, 4]", "[1,4]", True),
    ("[1, 4]", "(1,4)", False),
    ("\\{0, 2, 5\\}", "\\{5, 0, 2\\}", True),
    ("\\{0, 2, 5\\}", "\\{0, 2\\}", False),
    ("(1, 3)", "(1,3)", True),
    ("(1, 3)", "(3,1)", False),
    ("3\\sqrt{3}", "\\sqrt{27}", True),
    ("3\\sqrt{3}", "\\sqrt{18}", False),
    ("-\\frac{1}{4}", "-0.25", True),
    ("-\\frac{1}{4}", "0.25", False),
]


def _unboxed_cases():
    cases = []
    for i, (gold, form, expected) in enumerate(_UNBOXED):
        for j, phrasing in enumerate(_PHRASINGS):
            if (i + j) % 2 == 0 or j == 0:
                cases.append((phrasing.format(form), gold, expected))
    return cases


# --- hand-written completions ----------------------------------------------------------

_HAND = [
    # nested braces in the box
    ("Thus $\\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt3}{2}", True),
    ("Thus $\\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{1}{2}", False),
    ("The answer is $\\boxed{\\left\\{ \\frac{1}{2}, 2 \\right\\}}$", "\\{2, \\frac12\\}", True),
    ("The answer is $\\boxed{\\left\\{ \\frac{1}{2}, 2 \\right\\}}$", "\\{2, \\frac13\\}", False),
    ("$\\boxed{{{7}}}$", "7", True),
    ("$\\boxed{{{7}}}$", "17", False),
    ("\\boxed{\\text{(C)}}", "C", True),
    ("\\boxed{\\text{(C)}}", "D", False),
    ("\\boxed{x = \\frac{-b}{2a}}", "-\\frac{b}{2a}", True),
    ("\\boxed{x = \\frac{-b}{2a}}", "\\frac{b}{2a}", False),
    # several boxes: the last one counts
    (
        "We first get $\\boxed{10}$ but that ignores the overlap; correcting, $\\boxed{8}$.",
        "8",
        True,
    ),
    (
        "We first get $\\boxed{10}$ but that ignores the overlap; correcting, $\\boxed{8}$.",
        "10",
        False,
    ),
    # multi-sentence completions, answer stated then checked
    (
        (
            "Let the number be $n$. Then $3n + 4 = 19$, so $3n = 15$ and $n = 5$.\n\n"
            "Check: $3 \\cdot 5 + 4 = 19$. Correct.\n\nThe answer is $\\boxed{5}$."
        ),
        "5",
        True,
    ),
    (
        (
            "Let the number be $n$. Then $3n + 4 = 19$, so $3n = 15$ and $n = 5$.\n\n"
            "Check: $3 \\cdot 5 + 4 = 19$. Correct.\n\nThe answer is $\\boxed{5}$."
        ),
        "19",
        False,
    ),
    (
        (
            "Each box holds 24 pencils and there are 15 boxes, so there are "
            "$24 \\times 15 = 360$ pencils. The answer is 360."
        ),
        "360",
        True,
    ),
    (
        (
            "Each box holds 24 pencils and there are 15 boxes, so there are "
            "$24 \\times 15 = 360$ pencils. The answer is 360."
        ),
        "15",
        False,
    ),
    (
        "The train covers 180 miles in 3 hours, so its speed is 60 miles per hour.",
        "60",
        True,
    ),
    (
        "The train covers 180 miles in 3 hours, so its speed is 60 miles per hour.",
        "180",
        False,
    ),
    (
        (
            "Maria had 48 stickers. She gave away a quarter, which is 12, leaving 36. "
            "Then she bought 9 more, so she now has 45 stickers."
        ),
        "45",
        True,
    ),
    (
        (
            "Maria had 48 stickers. She gave away a quarter, which is 12, leaving 36. "
            "Then she bought 9 more, so she now has 45 stickers."
        ),
        "36",
        False,
    ),
    (
        (
            "We need the smallest positive integer $k$ with $k^2 > 200$. Since $14^2 = 196$ "
            "and $15^2 = 225$, we get $k = 15$."
        ),
        "15",
        True,
    ),
    (
        (
            "We need the smallest positive integer $k$ with $k^2 > 200$. Since $14^2 = 196$ "
            "and $15^2 = 225$, we get $k = 15$."
        ),
        "14",
        False,
    ),
    (
        (
            "Using the quadratic formula,\n$$x = \\frac{-4 \\pm \\sqrt{16 + 20}}{2} = "
            "\\frac{-4 \\pm 6}{2},$$\nso the positive root is $x = 1$."
        ),
        "1",
        True,
    ),
    (
        (
            "Using the quadratic formula,\n$$x = \\frac{-4 \\pm \\sqrt{16 + 20}}{2} = "
            "\\frac{-4 \\pm 6}{2},$$\nso the positive root is $x = 1$."
        ),
        "-5",
        False,
    ),
    # decoy numbers after the answer
    ("The final answer is $\\boxed{42}$. (This took 3 steps.)", "42", True),
    ("The final answer is $\\boxed{42}$. (This took 3 steps.)", "3", False),
    ("**Answer:** 27\n\nVerification: 3^3 = 27 and 27 / 9 = 3.", "27", True),
    ("So the probability is $\\boxed{\\frac{2}{9}}$, about 22%.", "\\frac{2}{9}", True),
    ("So the probability is $\\boxed{\\frac{2}{9}}$, about 22%.", "0.22", False),
    # thousands separators against lists
    ("The total cost is \\$1,250.", "1250", True),
    ("The total cost is \\$1,250.", "125", False),
    ("The population grew to 2,500,000 people.", "2500000", True),
    ("$\\boxed{12{,}345}$", "12345", True),
    ("$\\boxed{12,345}$", "12345", True),
    ("The roots are $\\boxed{1, 2}$", "1,2", True),
    ("The roots are $\\boxed{1, 2}$", "12", False),
    ("The roots are $\\boxed{1, 2}$", "\\{1,2\\}", True),
    ("The roots are $\\boxed{2, 1}$", "1, 2", True),
    ("The roots are $\\boxed{1, 2, 3}$", "1, 2", False),
    ("$\\boxed{3, 5, 7}$", "3,5,7", True),
    ("$\\boxed{3, 5, 7}$", "3,5,8", False),
    # scientific notation
    ("The answer is $6.02 \\times 10^{23}$.", "6.02\\times10^{23}", True),
    ("The answer is $6.02 \\times 10^{23}$.", "6.02\\times10^{22}", False),
    ("$\\boxed{1.5 \\times 10^{-3}}$", "0.0015", True),
    ("$\\boxed{1.5 \\times 10^{-3}}$", "0.015", False),
    ("\\boxed{2.5 \\cdot 10^4}", "25000", True),
    ("\\boxed{10^{6}}", "1000000", True),
    ("\\boxed{10^{6}}", "100000", False),
    # mixed numbers
    ("She walked $\\boxed{3\\frac{1}{2}}$ miles.", "\\frac{7}{2}", True),
    ("She walked $\\boxed{3\\frac{1}{2}}$ miles.", "\\frac{3}{2}", False),
    ("The answer is $1\\tfrac{3}{4}$.", "1.75", True),
    ("The answer is $1\\tfrac{3}{4}$.", "\\frac{3}{4}", False),
    # degrees
    ("So $\\angle ABC = \\boxed{120^\\circ}$.", "120", True),
    ("So $\\angle ABC = \\boxed{120^\\circ}$.", "60", False),
    ("The angle measures $\\boxed{36^{\\circ}}$.", "36^\\circ", True),
    ("The angle measures 72°.", "72", True),
    ("The angle measures 72°.", "18", False),
    # units
    ("The perimeter is $\\boxed{28\\text{ cm}}$.", "28", True),
    ("The perimeter is $\\boxed{28\\text{ cm}}$.", "28\\text{ cm}", True),
    ("The perimeter is $\\boxed{28\\text{ cm}}$.", "14", False),
    ("\\boxed{15\\mbox{ dollars}}", "15", True),
    ("\\boxed{15\\mbox{ dollars}}", "\\$15", True),
    ("\\boxed{\\$15.50}", "15.5", True),
    ("\\boxed{\\$15.50}", "15.05", False),
    ("The volume is $\\boxed{64\\text{ cm}^3}$.", "64", True),
    ("The area is \\(48 \\, \\text{m}^2\\).", "48", True),
    ("The area is \\(48 \\, \\text{m}^2\\).", "24", False),
    ("It takes \\boxed{2 \\text{ hours}}.", "2", True),
    ("It takes \\boxed{2 \\text{ hours}}.", "120", False),
    ("He runs $\\boxed{8\\,\\text{km}}$", "8", True),
    # percentages vs decimals (math-verify: 50% is 50 and also 0.5)
    ("The percent increase is $\\boxed{25\\%}$.", "25", True),
    ("The percent increase is $\\boxed{25\\%}$.", "0.25", True),
    ("The percent increase is $\\boxed{25\\%}$.", "25\\%", True),
    ("The percent increase is $\\boxed{25\\%}$.", "20", False),
    ("The percent increase is $\\boxed{25\\%}$.", "0.2", False),
    ("The answer is 40%.", "40\\%", True),
    ("The answer is 40%.", "0.4", True),
    ("The answer is 40%.", "4", False),
    ("\\boxed{12.5\\%}", "12.5", True),
    ("\\boxed{12.5\\%}", "0.125", True),
    ("\\boxed{12.5\\%}", "1.25", False),
    ("The probability is $\\boxed{0.3}$.", "30\\%", True),
    ("The probability is $\\boxed{0.3}$.", "3\\%", False),
    # pi
    ("The area is $\\boxed{9\\pi}$ square units.", "9\\pi", True),
    ("The area is $\\boxed{9\\pi}$ square units.", "9", False),
    ("The area is $\\boxed{9\\pi}$ square units.", "28.27", False),
    ("The circumference is $\\boxed{2\\pi r}$", "2 \\pi r", True),
    ("The circumference is $\\boxed{2\\pi r}$", "\\pi r^2", False),
    ("\\boxed{\\frac{3\\pi}{4}}", "\\frac{3}{4}\\pi", True),
    ("\\boxed{\\frac{3\\pi}{4}}", "135^\\circ", False),
    ("\\boxed{\\pi - 2}", "-2 + \\pi", True),
    ("\\boxed{\\pi - 2}", "2 - \\pi", False),
    # radicals
    ("The distance is $\\boxed{\\sqrt{50}}$.", "5\\sqrt{2}", True),
    ("The distance is $\\boxed{\\sqrt{50}}$.", "5\\sqrt{5}", False),
    ("$\\boxed{\\sqrt[3]{8}}$", "2", True),
    ("$\\boxed{\\sqrt[3]{16}}$", "2\\sqrt[3]{2}", True),
    ("$\\boxed{\\sqrt[3]{16}}$", "2\\sqrt{2}", False),
    ("$\\boxed{2+\\sqrt{5}}$", "\\sqrt{5}+2", True),
    ("$\\boxed{2+\\sqrt{5}}$", "2-\\sqrt{5}", False),
    ("$\\boxed{\\frac{1+\\sqrt{5}}{2}}$", "\\frac{\\sqrt5+1}{2}", True),
    ("$\\boxed{\\frac{1+\\sqrt{5}}{2}}$", "\\frac{1-\\sqrt5}{2}", False),
    # intervals, open and closed
    ("The solution set is $\\boxed{(0, \\infty)}$.", "(0,\\infty)", True),
    ("The solution set is $\\boxed{(0, \\infty)}$.", "[0,\\infty)", False),
    ("The domain is $x \\in [-3, 3]$.", "[-3,3]", True),
    ("The domain is $x \\in [-3, 3]$.", "(-3,3)", False),
    ("\\boxed{(-\\infty, 2]}", "(-\\infty, 2]", True),
    ("\\boxed{(-\\infty, 2]}", "(-\\infty, 2)", False),
    ("\\boxed{\\left( -1, 1 \\right]}", "(-1,1]", True),
    ("\\boxed{\\left( -1, 1 \\right]}", "[-1,1)", False),
    # inequalities and equations
    ("So $\\boxed{x > 3}$.", "x > 3", True),
    ("So $\\boxed{x > 3}$.", "x < 3", False),
    ("So $\\boxed{x \\geq -2}$.", "x \\ge -2", True),
    ("So $\\boxed{x \\geq -2}$.", "x > -2", False),
    ("Solving gives $\\boxed{x = 3}$.", "3", True),
    ("Solving gives $\\boxed{x = 3}$.", "x=3", True),
    ("Solving gives $\\boxed{x = 3}$.", "-3", False),
    ("The line is $\\boxed{y = -2x + 7}$.", "y=7-2x", True),
    ("The line is $\\boxed{y = -2x + 7}$.", "-2x+7", True),
    ("The line is $\\boxed{y = -2x + 7}$.", "y=2x+7", False),
    ("The answer is $k = 4$.", "4", True),
    ("The answer is $k = 4$.", "k=5", False),
    ("We find $a = 2$, $b = -3$.", "a=2, b=-3", True),
    # multiple-choice letters graded as math answers
    ("The correct option is $\\boxed{B}$.", "B", True),
    ("The correct option is $\\boxed{B}$.", "C", False),
    ("The correct option is $\\boxed{(B)}$.", "B", True),
    ("Answer: $\\boxed{\\textbf{(D)}}$", "D", True),
    ("Answer: $\\boxed{\\textbf{(D)}}$", "A", False),
    ("\\boxed{E}", "(E)", True),
    # negative numbers and signs
    ("The minimum value is $\\boxed{-\\frac{9}{4}}$.", "-2.25", True),
    ("The minimum value is $\\boxed{-\\frac{9}{4}}$.", "2.25", False),
    ("The temperature dropped to $-12$ degrees.", "-12", True),
    ("The temperature dropped to $-12$ degrees.", "12", False),
    ("The answer is \\(-0.5\\).", "-\\frac12", True),
    ("The answer is \\(-0.5\\).", "\\frac12", False),
    ("$\\boxed{-(-3)}$", "3", True),
    ("$\\boxed{-|{-4}|}$", "-4", True),
    # decimals, rounding
    ("The answer is $\\boxed{0.125}$.", "\\frac18", True),
    ("The answer is $\\boxed{0.125}$.", "\\frac{1}{7}", False),
    ("The answer is $\\boxed{3.50}$.", "3.5", True),
    ("The answer is $\\boxed{3.50}$.", "35", False),
    ("The answer is $\\boxed{0.07}$.", "0.7", False),
    ("\\boxed{1.41}", "\\sqrt{2}", False),
    ("\\boxed{0.3333}", "\\frac{1}{3}", False),
    # sets written in words and other forms
    ("The solutions are $x = -1$ and $x = 4$.", "\\{-1, 4\\}", True),
    ("The solutions are $x = -1$ and $x = 4$.", "\\{1, -4\\}", False),
    ("The values are $\\boxed{-1, 4}$.", "4, -1", True),
    ("$\\boxed{\\{a, b, c\\}}$", "\\{c, a, b\\}", True),
    ("$\\boxed{\\{a, b, c\\}}$", "\\{a, b\\}", False),
    ("$\\boxed{\\varnothing}$", "\\emptyset", True),
    ("$\\boxed{\\emptyset}$", "\\{0\\}", False),
    # tuples and ordered pairs
    ("The vertex is at $\\boxed{(3, -4)}$.", "(3,-4)", True),
    ("The vertex is at $\\boxed{(3, -4)}$.", "(-4,3)", False),
    ("The vertex is at $\\boxed{(3, -4)}$.", "(3,4)", False),
    ("$(a, b, c) = \\boxed{(1, 2, 3)}$", "(1,2,3)", True),
    ("$(a, b, c) = \\boxed{(1, 2, 3)}$", "(3,2,1)", False),
    ("The center is $\\left(\\frac{1}{2}, -\\frac{3}{2}\\right)$.", "(0.5, -1.5)", True),
    ("The center is $\\left(\\frac{1}{2}, -\\frac{3}{2}\\right)$.", "(0.5, 1.5)", False),
    # matrices and vectors
    (
        "The product is $\\boxed{\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}}$.",
        "\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}",
        True,
    ),
    (
        "The product is $\\boxed{\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}}$.",
        "\\begin{pmatrix}0&1\\\\1&0\\end{pmatrix}",
        False,
    ),
    (
        (
            "Thus the inverse is\n\\[\n\\begin{pmatrix} \\frac{1}{2} & 0 \\\\ 0 & \\frac{1}{3} "
            "\\end{pmatrix}.\n\\]"
        ),
        "\\begin{pmatrix}0.5&0\\\\0&\\frac13\\end{pmatrix}",
        True,
    ),
    (
        (
            "Thus the inverse is\n\\[\n\\begin{pmatrix} \\frac{1}{2} & 0 \\\\ 0 & \\frac{1}{3} "
            "\\end{pmatrix}.\n\\]"
        ),
        "\\begin{pmatrix}2&0\\\\0&3\\end{pmatrix}",
        False,
    ),
    (
        "$\\boxed{\\begin{pmatrix} 3 \\\\ -1 \\\\ 2 \\end{pmatrix}}$",
        "\\begin{pmatrix}3\\\\-1\\\\2\\end{pmatrix}",
        True,
    ),
    (
        "$\\boxed{\\begin{pmatrix} 3 \\\\ -1 \\\\ 2 \\end{pmatrix}}$",
        "\\begin{pmatrix}3\\\\1\\\\2\\end{pmatrix}",
        False,
    ),
    # expressions
    ("The simplified form is $\\boxed{\\frac{x+1}{x-1}}$.", "\\frac{x+1}{x-1}", True),
    ("The simplified form is $\\boxed{\\frac{x+1}{x-1}}$.", "\\frac{x-1}{x+1}", False),
    ("$\\boxed{2(x+3)}$", "2x+6", True),
    ("$\\boxed{2(x+3)}$", "2x+3", False),
    ("$\\boxed{a^2 - b^2}$", "(a-b)(a+b)", True),
    ("$\\boxed{a^2 - b^2}$", "(a-b)^2", False),
    ("$\\boxed{\\frac{d}{dx} x^3 = 3x^2}$", "3x^2", True),
    ("The derivative is $f'(x) = 6x - 2$.", "6x-2", True),
    ("The derivative is $f'(x) = 6x - 2$.", "6x+2", False),
    ("$\\boxed{\\binom{6}{3}}$", "20", True),
    ("$\\boxed{\\binom{6}{3}}$", "18", False),
    ("$\\boxed{5!}$", "120", True),
    ("$\\boxed{2^{10}}$", "1024", True),
    ("$\\boxed{2^{10}}$", "1000", False),
    ("$\\boxed{\\log_3 81}$", "4", True),
    # bare completions
    ("-17", "-17", True),
    ("-17", "17", False),
    ("0.0", "0", True),
    ("3/4", "0.75", True),
    ("3/4", "4/3", False),
    ("\\frac{5}{6}", "\\dfrac{10}{12}", True),
    ("\\frac{5}{6}", "\\frac{6}{5}", False),
    ("\\sqrt{2}", "2^{1/2}", True),
    ("\\sqrt{2}", "2", False),
    ("(1, 2)", "(1,2)", True),
    ("[1, 2]", "(1,2)", False),
    # nothing usable
    ("I'm not sure how to solve this.", "0", False),
    ("The problem has no solution.", "1", False),
    ("Let me think about this step by step.", "2", False),
    ("\\boxed{}", "0", False),
    ("We get $\\boxed{12", "12", False),
]

_MORE = [
    # GSM8K / Minerva formats
    (
        "Natalia sold 48 clips in April and half as many, 24, in May. 48 + 24 = 72\n#### 72",
        "72",
        True,
    ),
    (
        "Natalia sold 48 clips in April and half as many, 24, in May. 48 + 24 = 72\n#### 72",
        "24",
        False,
    ),
    ("He earns 12 * 5 = 60 dollars.\n#### 60", "60", True),
    ("Final Answer: The final answer is $\\frac{5}{8}$. I hope it is correct.", "0.625", True),
    ("Final Answer: The final answer is $\\frac{5}{8}$. I hope it is correct.", "\\frac58", True),
    ("Final Answer: The final answer is $\\frac{5}{8}$. I hope it is correct.", "\\frac85", False),
    (
        "Final Answer: The final answer is $(-\\infty,0)$. I hope it is correct.",
        "(-\\infty,0)",
        True,
    ),
    (
        "Final Answer: The final answer is $(-\\infty,0)$. I hope it is correct.",
        "(-\\infty,0]",
        False,
    ),
    # markdown bold
    ("So she has **18** apples left.", "18", True),
    ("So she has **18** apples left.", "81", False),
    ("**Answer: 250**", "250", True),
    ("The answer is: **7/8**", "\\frac{7}{8}", True),
    ("The answer is: **7/8**", "\\frac{8}{7}", False),
    # unicode minus and symbols
    ("The answer is \u22125.", "-5", True),
    ("The answer is \u22125.", "5", False),
    ("The answer is $\u22123$.", "-3", True),
    ("The result is \u221a2/2.", "\\frac{\\sqrt{2}}{2}", True),
    ("The angle is 30\u00b0.", "30", True),
    ("The area is 16\u03c0.", "16\\pi", True),
    ("The area is 16\u03c0.", "16", False),
    # approximately
    ("So $x = \\frac{1}{3} \\approx 0.333$.", "\\frac13", True),
    # answer stated, then verification with other numbers
    ("The answer is 12.\n\nTo verify: 12 \u00d7 3 = 36 and 36 - 24 = 12.", "12", True),
    ("The answer is 12.\n\nTo verify: 12 \u00d7 3 = 36 and 36 - 24 = 12.", "36", False),
    ("The answer is $\\boxed{9}$.\n\nCheck: $9^2 = 81$, which matches.", "9", True),
    ("The answer is $\\boxed{9}$.\n\nCheck: $9^2 = 81$, which matches.", "81", False),
    ("Therefore $m = 7$. Checking, $7 \\cdot 8 = 56$ as required.", "7", True),
    ("Therefore $m = 7$. Checking, $7 \\cdot 8 = 56$ as required.", "56", False),
    # plus-minus and alternatives
    ("The solutions are $x = \\pm 3$.", "\\{-3, 3\\}", True),
    ("The solutions are $x = \\pm 3$.", "3", False),
    ("So $x = 2$ or $x = -3$.", "\\{2,-3\\}", True),
    ("So $x = 2$ or $x = -3$.", "\\{2,3\\}", False),
    ("$\\boxed{2, -3}$", "-3, 2", True),
    # text answers
    ("The function is $\\boxed{\\text{odd}}$.", "\\text{odd}", True),
    ("The function is $\\boxed{\\text{odd}}$.", "\\text{even}", False),
    ("The statement is \\boxed{\\text{False}}", "False", True),
    ("The answer is $\\boxed{\\text{No}}$.", "\\text{Yes}", False),
    ("The shape is a \\boxed{\\text{parallelogram}}.", "parallelogram", True),
    ("The shape is a \\boxed{\\text{parallelogram}}.", "rectangle", False),
    # box followed by a unit outside
    ("The length is $\\boxed{15}$ cm.", "15", True),
    ("The length is $\\boxed{15}\\text{ cm}$.", "15", True),
    ("The length is $\\boxed{15}\\text{ cm}$.", "1.5", False),
    # spaces in big numbers
    ("The answer is $1\\,000\\,000$.", "1000000", True),
    ("The answer is $1\\,000\\,000$.", "1000", False),
    ("The answer is 1,000,000.", "10^6", True),
    # decimals and fractions inline without box, sentence final
    ("The probability is 0.35.", "\\frac{7}{20}", True),
    ("The probability is 0.35.", "\\frac{7}{2}", False),
    ("It is $\\tfrac{5}{2}$ hours.", "2.5", True),
    ("It is $\\tfrac{5}{2}$ hours.", "5", False),
    # infinity, no solution
    ("The limit is $\\boxed{\\infty}$.", "\\infty", True),
    ("The limit is $\\boxed{-\\infty}$.", "\\infty", False),
    ("The sum converges to $\\boxed{2}$.", "2", True),
    # percent written in words
    ("The percentage is 45 percent.", "45", True),
    ("The percentage is 45 percent.", "0.45", True),
    ("The percentage is 45 percent.", "55", False),
    # ratio / fractions of pi in degrees
    ("The ratio is $\\boxed{3:4}$.", "3:4", True),
    ("The ratio is $\\boxed{3:4}$.", "4:3", False),
    # equations with several variables
    ("$\\boxed{x=1, y=2}$", "(1,2)", True),
    ("$\\boxed{x=1, y=2}$", "(2,1)", False),
    # floats with many digits
    ("The answer is $\\boxed{3.14159}$.", "3.14159", True),
    ("The answer is $\\boxed{3.14159}$.", "\\pi", False),
    ("The answer is 0.000125.", "1.25\\times10^{-4}", True),
    ("The answer is 0.000125.", "1.25\\times10^{-5}", False),
    # lists with "and"
    ("The two numbers are $\\boxed{4 \\text{ and } 9}$.", "4, 9", True),
    ("The two numbers are $\\boxed{4 \\text{ and } 9}$.", "4, 8", False),
    # vectors in angle brackets
    ("$\\boxed{\\langle 1, -2, 3 \\rangle}$", "\\langle 1,-2,3\\rangle", True),
    ("$\\boxed{\\langle 1, -2, 3 \\rangle}$", "\\langle 1,2,3\\rangle", False),
    # money
    ("The total is $\\$ 4.50$.", "4.5", True),
    ("The total is $\\$ 4.50$.", "450", False),
    ("She paid \\$12 for the book.", "12", True),
    # degrees with \degree
    ("$\\boxed{60\\degree}$", "60", True),
    ("$\\boxed{60\\degree}$", "\\frac{\\pi}{3}", False),
    # fractions written with \over or a slash in latex
    ("$\\boxed{{1 \\over 4}}$", "\\frac14", True),
    ("$\\boxed{1/4}$", "0.25", True),
    ("$\\boxed{1/4}$", "4", False),
    # trig values
    ("$\\boxed{\\sin 30^\\circ}$", "\\frac12", True),
    ("$\\boxed{\\cos \\frac{\\pi}{3}}$", "0.5", True),
    ("$\\boxed{\\tan \\frac{\\pi}{4}}$", "0", False),
    # polynomial / function answers
    ("Thus $f(x) = \\boxed{x^2 + 1}$.", "x^2+1", True),
    ("Thus $f(x) = \\boxed{x^2 + 1}$.", "f(x)=x^2+1", True),
    ("Thus $f(x) = \\boxed{x^2 + 1}$.", "x^2-1", False),
    # leading zero and trailing zeros
    ("\\boxed{007}", "7", True),
    ("\\boxed{.50}", "\\frac{1}{2}", True),
    ("\\boxed{.50}", "50", False),
]

_MORE += [
    # undelimited LaTeX, e-notation, option letters, misc
    ("The final answer is 3\\sqrt{2}.", "3\\sqrt{2}", True),
    ("The final answer is 3\\sqrt{2}.", "3", False),
    ("The answer is 2 \\sqrt{3}.", "2\\sqrt3", True),
    ("The answer is \\sqrt{2}/2.", "\\frac{\\sqrt2}{2}", True),
    ("The answer is -\\sqrt{3}", "-\\sqrt3", True),
    ("The answer is -\\sqrt{3}", "\\sqrt3", False),
    ("Hence x = 5\\pi/6.", "\\frac{5\\pi}{6}", True),
    ("Hence x = 5\\pi/6.", "\\frac{5}{6}", False),
    ("We have $\\boxed{1}$ and $\\boxed{2}$ as the roots.", "2", True),
    ("The answer is 3.5 hours.", "3.5", True),
    ("The answer is 3.5 hours.", "35", False),
    ("$\\boxed{\\frac{\\sqrt{3}}{3}}$", "\\frac{1}{\\sqrt{3}}", True),
    ("$\\boxed{5\\sqrt{2}\\text{ units}}$", "5\\sqrt2", True),
    ("$\\boxed{\\text{Monday}}$", "Monday", True),
    ("$\\boxed{\\text{Monday}}$", "Tuesday", False),
    ("$\\boxed{a = 3}$", "3", True),
    ("$\\boxed{20\\%}$", "\\frac{1}{5}", True),
    ("$\\boxed{0.2}$", "20\\%", True),
    ("$\\boxed{0.2}$", "2\\%", False),
    ("$$\\boxed{x^2}$$", "x^{2}", True),
    ("\\[\\boxed{\\dfrac{\\pi}{2}}\\]", "\\frac{\\pi}{2}", True),
    ("The answer is $\\frac{3}{4}$, or 75%.", "0.75", True),
    ("The answer is 12 (twelve).", "12", True),
    ("So the answer is 5 and not 6.", "5", True),
    ("The value is 2.50 dollars.", "2.5", True),
    ("We get $$\\frac{22}{7}$$ as the ratio.", "\\frac{22}{7}", True),
    ("We get $$\\frac{22}{7}$$ as the ratio.", "\\pi", False),
    ("The answer is 1e-3.", "0.001", True),
    ("The number of ways is $\\boxed{\\dbinom{10}{3}}$.", "120", True),
    ("The number of ways is $\\boxed{\\dbinom{10}{3}}$.", "720", False),
    ("$\\boxed{\\frac{1}{2}\\text{ hour}}$", "30", False),
    ("So $|x| = 4$ gives $\\boxed{x = \\pm 4}$.", "\\pm 4", True),
    ("Answer: (C)", "C", True),
    ("Answer: (C)", "B", False),
    ("The answer is B.", "B", True),
    ("The answer is B.", "D", False),
    ("$\\boxed{-\\dfrac{3}{2}}$", "-1.5", True),
    ("$\\boxed{\\sqrt{x^2}}$", "|x|", True),
    ("$\\boxed{0}$", "-0", True),
    ("$\\boxed{[0, 1]}$", "0 \\le x \\le 1", True),
]

_MORE += [
    # display math ending in sentence punctuation
    ("Solving the system,\n\\[\nx = \\frac{7}{2}.\n\\]", "3.5", True),
    ("Solving the system,\n\\[\nx = \\frac{7}{2}.\n\\]", "7", False),
    ("Solving the system,\n\\[\nx = \\frac{7}{2}.\n\\]", "2", False),
    ("The set of solutions is\n$$\\{-2, 0, 2\\}.$$", "\\{0,2,-2\\}", True),
    ("The set of solutions is\n$$\\{-2, 0, 2\\}.$$", "\\{0,2\\}", False),
    (
        "Therefore the vector is \\(\\begin{pmatrix} 5 \\\\ -1 \\end{pmatrix}.\\)",
        "\\begin{pmatrix}5\\\\-1\\end{pmatrix}",
        True,
    ),
    (
        "Therefore the vector is \\(\\begin{pmatrix} 5 \\\\ -1 \\end{pmatrix}.\\)",
        "\\begin{pmatrix}-1\\\\5\\end{pmatrix}",
        False,
    ),
    ("Then the interval is $[4, 9).$", "[4,9)", True),
    ("Then the interval is $[4, 9).$", "(4,9)", False),
    # more decoys and false pairs
    ("There are 6 red and 4 blue balls, so the chance of red is $\\frac{3}{5}$.", "\\frac35", True),
    ("There are 6 red and 4 blue balls, so the chance of red is $\\frac{3}{5}$.", "6", False),
    (
        "There are 6 red and 4 blue balls, so the chance of red is $\\frac{3}{5}$.",
        "\\frac{2}{5}",
        False,
    ),
    ("In 2019 the price was 80; in 2020 it rose by 25%, to $\\boxed{100}$.", "100", True),
    ("In 2019 the price was 80; in 2020 it rose by 25%, to $\\boxed{100}$.", "2020", False),
    ("In 2019 the price was 80; in 2020 it rose by 25%, to $\\boxed{100}$.", "25", False),
    ("Step 1: 8 + 5 = 13. Step 2: 13 * 2 = 26. The answer is 26.", "13", False),
    ("Step 1: 8 + 5 = 13. Step 2: 13 * 2 = 26. The answer is 26.", "26", True),
    ("The answer is $\\boxed{-4}$.", "4", False),
    ("The answer is $\\boxed{-4}$.", "-\\frac{8}{2}", True),
    ("The answer is \\(x = 2\\).", "x=-2", False),
    ("$\\boxed{[2, 3]}$", "\\{2, 3\\}", False),
    ("$\\boxed{\\frac{1}{2}}$", "2", False),
    ("$\\boxed{10\\%}$", "1", False),
    ("$\\boxed{1000}$", "1,001", False),
    ("$\\boxed{1{,}500}$", "15", False),
    ("\\boxed{x^2 + 2x}", "x(x+2)", True),
    ("\\boxed{x^2 + 2x}", "x(x-2)", False),
    ("\\boxed{\\frac{\\pi}{2}}", "90", False),
    ("\\boxed{\\frac{\\pi}{2}}", "1.57", False),
    ("\\boxed{e}", "2.718", False),
    ("\\boxed{\\sqrt{3}}", "3", False),
    ("\\boxed{\\sqrt{3}}", "\\sqrt{3}", True),
    ("The answer is 0.", "0", True),
    ("The answer is 0.", "10", False),
    ("The result is $3 \\times 10^{8}$ m/s.", "3\\times10^8", True),
    ("The result is $3 \\times 10^{8}$ m/s.", "3\\times10^9", False),
    ("The answer is 2.5e6.", "2500000", True),
    ("The answer is 2.5e6.", "250000", False),
    ("The answer is \u22127/2.", "-3.5", True),
    ("The answer is \u22127/2.", "3.5", False),
    ("So the answer is **\u221216**.", "-16", True),
    ("So the answer is **\u221216**.", "16", False),
]

CASES = _boxed_cases() + _unboxed_cases() + _HAND + _MORE
