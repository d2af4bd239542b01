"""A grading corpus in the spirit of math-verify's regression suite (written here).

``CASES`` is a list of ``(response, gold, expected)``: bare expressions, LaTeX in
``$...$`` / ``\\(...\\)`` / ``\\[...\\]``, boxed answers, plain-text final answers,
units, percentages, ``\\text{}``, sets, intervals, matrices, thousands separators,
decimals such as ``.4``, and decoys (wrong numbers earlier in the text, signs, glued
digits). ``expected`` is the mathematically right verdict.
"""

# (answer forms that all mean the same, forms that are wrong for it)
_SAME = [
    (["\\frac{10}{9}", "10/9", "\\dfrac{10}{9}", "\\frac{20}{18}"], ["\\frac{9}{10}", "9", "10"]),
    (["0.4", ".4", "\\frac{2}{5}", "2/5"], ["4", "0.04", "\\frac{1}{4}"]),
    (["1000", "1 000", "1,000", "1{,}000", "10^3"], ["100", "1001", "000"]),
    (["[0,1)", "[0, 1)", "\\left[0,1\\right)"], ["[0,1]", "(0,1)", "1", "(0,1]"]),
    (["\\{1,2\\}", "\\{2,1\\}", "\\{1, 2\\}"], ["\\{1,2,3\\}", "\\{1\\}", "\\{2,3\\}"]),
    (["3\\sqrt{2}", "\\sqrt{18}", "3\\sqrt2"], ["2\\sqrt{3}", "\\sqrt{6}", "3"]),
    (["-\\frac{1}{2}", "-0.5", "-1/2", "\\frac{-1}{2}"], ["\\frac{1}{2}", "0.5", "-2"]),
    (["\\pi", "\\pi"], ["3.14", "2\\pi", "\\frac{\\pi}{2}"]),
    (["(-\\infty, 3]", "(-\\infty,3]"], ["(-\\infty,3)", "[3,\\infty)"]),
    (["x^2+2x+1", "(x+1)^2", "1+2x+x^2"], ["x^2+1", "(x-1)^2"]),
    (
        ["\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"],
        ["\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}"],
    ),
    (
        ["(3, \\frac{\\pi}{2})", "\\left(3,\\frac{\\pi}{2}\\right)"],
        ["(\\frac{\\pi}{2},3)", "(3,\\pi)"],
    ),
    (["12", "12.0", "012"], ["13", "-12", "1.2", "120"]),
    (["-7", "-7.0"], ["7", "-6"]),
    (["6-5i", "6 - 5i", "-5i+6"], ["6+5i", "5i-6"]),
    (["2.5", "\\frac{5}{2}", "5/2", "2\\frac{1}{2}"], ["2.05", "25", "\\frac{2}{5}"]),
    (["144", "12^2"], ["145", "14"]),
]

_CONTEXTS = [
    "{}",
    "${}$",
    "\\({}\\)",
    "\\[{}\\]",
    "The answer is ${}$.",
    "Thus we get \\({}\\), which is the final result.",
    "First we try $x = 3$, which fails, and $17$ as well. Finally, the answer is ${}$",
    "Final answer: ${}$",
    "Putting it together:\n\\[{}\\]",
    "We conclude: $\\boxed{{{}}}$",
]


def _generated():
    cases = []
    for same, wrong in _SAME:
        gold = same[0]
        for k, form in enumerate(same):
            for c, ctx in enumerate(_CONTEXTS):
                if (k + c) % 3 == 0 or c == 0 or k == 0:
                    cases.append((ctx.format(form), gold, True))
        for k, form in enumerate(wrong):
            for c, ctx in enumerate(_CONTEXTS):
                if (k + c) % 3 == 0 or c in (0, 1):
                    cases.append((ctx.format(form), gold, False))
        # delimited golds, read as math-verify reads gold
        cases.append((f"The answer is ${same[-1]}$.", f"${gold}$", True))
        cases.append((f"so \\({same[-1]}\\)", f"\\({gold}\\)", True))
        cases.append((f"The answer is ${wrong[0]}$.", f"${gold}$", False))
    return cases


_HAND = [
    # the table
    ("\\frac{10}{9}", "10/9", True),
    ("$[0,1)$", "$[0,1)$", True),
    (".4", "0.4", True),
    ("1 000", "1000", True),
    ("$-[0,1)$", "$1$", False),
    # plain-text final answers, no box
    ("The answer is 42.", "42", True),
    ("Adding them gives 17 apples in total.", "17", True),
    ("Not 12: counting again, there are 24 ways.", "24", True),
    ("Not 12: counting again, there are 24 ways.", "12", False),
    ("Answer: 7", "7", True),
    ("Answer: 7", "8", False),
    ("We need 3 steps at first, but after the fix the total is 11.", "11", True),
    ("We need 3 steps at first, but after the fix the total is 11.", "3", False),
    ("The final answer is 5. I hope it is correct.", "5", True),
    ("The final answer is $\\frac{3}{4}$. I hope it is correct.", "0.75", True),
    ("Therefore the answer is Evelyn.", "Evelyn", True),
    ("Therefore the answer is Evelyn.", "Evenly", False),
    ("The winner is $\\text{Evelyn}$", "\\text{Evelyn}", True),
    # earlier decoys
    ("Let $a = 5$ and $b = 8$. Then $a + b = 13$.", "13", True),
    ("Let $a = 5$ and $b = 8$. Then $a + b = 13$.", "5", False),
    ("Trying $n=2$ gives 10, and $n=4$ gives 36, so $n=4$.", "4", True),
    ("After 3 hours and 20 minutes she has walked $12$ km.", "12", True),
    ("At first I thought 9, but it is actually 8.", "8", True),
    ("At first I thought 9, but it is actually 8.", "9", False),
    ("There were 100 marbles; 37 remain.", "37", True),
    # units
    ("The length is $5\\text{ cm}$.", "5", True),
    ("The answer is $12$ meters.", "12", True),
    ("It takes \\(90^\\circ\\).", "90", True),
    ("The area is $25 \\text{ cm}^2$", "25", True),
    ("The area is $25 \\text{ cm}^2$", "5", False),
    ("She pays $\\$18.90$ in total.", "18.90", True),
    # percentages
    ("The discount is 50%.", "50", True),
    ("The discount is 50%.", "0.5", True),
    ("The discount is $50\\%$", "50\\%", True),
    ("The rate is 25 percent", "25", True),
    ("The rate is $25\\%$", "$0.25$", True),
    ("The rate is $25\\%$", "35", False),
    ("about 12% of it", "12", True),
    # thousands separators and decimals
    ("The population is 1,234,567.", "1234567", True),
    ("The population is 1 234 567.", "1234567", True),
    ("The sum is $10{,}000$", "10000", True),
    ("The sum is $10{,}000$", "10", False),
    ("He saved $1,500$ dollars.", "1500", True),
    ("We get .75 of the pie.", "\\frac{3}{4}", True),
    ("We get 0.750 of the pie.", "0.75", True),
    ("The probability is .4", "0.04", False),
    # sets, tuples, intervals
    ("The solutions are $x = 1$ and $x = 2$.", "\\{1,2\\}", True),
    ("The roots are $1$, $2$ and $3$.", "\\{3,2,1\\}", True),
    ("The roots are $1$ and $2$.", "\\{1,2,3\\}", False),
    ("The set is $\\{1,2\\}$", "$\\{2,1\\}$", True),
    ("The point is $(1,2)$", "(2,1)", False),
    ("The point is $(1,2)$", "(1,2)", True),
    ("The interval is $(2,5]$", "(2,5]", True),
    ("The interval is $(2,5]$", "[2,5]", False),
    ("so $x \\in [2,5)$", "[2,5)", True),
    # matrices
    (
        "$\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}$",
        "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
        True,
    ),
    (
        "$\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}$",
        "\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}",
        False,
    ),
    # signs
    ("The minimum is $-3$.", "-3", True),
    ("The minimum is $-3$.", "3", False),
    ("The value is -3.", "3", False),
    ("the slope is $-\\frac{2}{3}$", "-2/3", True),
    ("the slope is $-\\frac{2}{3}$", "2/3", False),
    ("$-[0,1)$", "$[0,1)$", False),
    # glued digits are not answers
    ("see file run_3/out", "3", False),
    ("x2", "2", False),
    ("abc-5", "-5", False),
    ("abc-5", "5", False),
    ("the variable is called v2", "2", False),
    ("see /tmp/pytest-0/case0", "0", False),
    # expressions
    ("The answer is $x^2 - 1$", "(x-1)(x+1)", True),
    ("The answer is $x^2 - 1$", "(x-1)^2", False),
    ("so $y = 2x + 3$", "2x+3", True),
    ("The answer is $\\sqrt{8}$", "2\\sqrt{2}", True),
    ("The answer is 2*3", "6", True),
    ("The answer is 10/4", "2.5", True),
    ("The answer is 2^10", "1024", True),
    ("$\\frac{\\sqrt{3}}{2}$", "\\frac{\\sqrt3}{2}", True),
    ("$\\frac{\\sqrt{3}}{2}$", "\\frac{1}{2}", False),
    ("\\(\\frac12\\)", "$0.5$", True),
    ("\\[\\dfrac{7}{3}\\]", "7/3", True),
    ("$$\\frac{7}{3}$$", "\\frac73", True),
    ("$$\\frac{7}{3}$$", "\\frac37", False),
    ("$\\log_2 8$", "3", True),
    ("$\\binom{5}{2}$", "10", True),
    # boxed keeps priority
    ("We get $7$, so the answer is $\\boxed{8}$.", "8", True),
    ("We get $7$, so the answer is $\\boxed{8}$.", "7", False),
    ("\\boxed{\\frac{1}{2}} and later 5", "0.5", True),
    ("The answer is \\boxed{12\\text{ days}}", "12", True),
    # nothing to extract
    ("I could not solve this problem.", "3", False),
    ("", "1", False),
    ("The answer is not determined.", "0", False),
    # more of math-verify's kinds
    ("{1,2}", "{2,1}", True),
    ("$\\{1,2\\}$", "{2,1}", True),
    ("{1,2}", "{1,3}", False),
    ("$100 \\text{ m}$", "$100$", True),
    ("$5\\mathrm{cm}$", "5", True),
    ("$10\\%$", "$10$", True),
    ("$10\\%$", "$0.1$", True),
    ("$10\\%$", "$0.2$", False),
    ("I got $7.5\\%$", "0.075", True),
    ("$\\sqrt{2}/2$", "$\\frac{\\sqrt{2}}{2}$", True),
    ("$30^\\circ$", "$30$", True),
    ("$x=5$", "$5$", True),
    ("$5$", "$x=5$", True),
    ("$2x+1$", "$y=2x+1$", True),
    ("$1+i$", "$i+1$", True),
    ("$1+i$", "$1-i$", False),
    ("$(1,2)\\cup(3,4)$", "$(3,4)\\cup(1,2)$", True),
    ("$(1,2)\\cup(3,4)$", "$(1,2)\\cup(3,5)$", False),
    (
        "$\\begin{bmatrix}1&0\\\\0&1\\end{bmatrix}$",
        "$\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}$",
        True,
    ),
    ("$0.33$", "$\\frac13$", False),
    ("$\\$5$", "5", True),
    ("5 dollars", "5", True),
    ("$\\frac{\\pi}{3}$", "$60^\\circ$", False),
    ("$a=2, b=3$", "$a=2,b=3$", True),
    ("$x \\in \\{1, 2\\}$", "$\\{1,2\\}$", True),
    ("$3$ or $4$", "$\\{3,4\\}$", True),
    ("The answer is 1/2.", "$\\frac12$", True),
    ("The answer is -1/2.", "$\\frac12$", False),
    ("$-\\frac12$", "$\\frac{1}{2}$", False),
    ("The answer is $x^{2}$.", "x^2", True),
    ("so, the total is $1,\\!000$", "1000", True),
    ("1.5", "$\\frac{3}{2}$", True),
    ("$1\\frac{1}{2}$", "1.5", True),
    ("The answer is 5, so it is 5 cm long", "5", True),
    ("The answer is $\\infty$", "\\infty", True),
    ("$-\\infty$", "\\infty", False),
    ("We have $f(x)=x^2$, so $f(3) = 9$.", "9", True),
    ("We have $f(x)=x^2$, so $f(3) = 9$.", "3", False),
    ("$\\sin^2 x + \\cos^2 x$", "1", True),
    ("The answer is 3 \u00d7 4", "12", True),
    ("The answer is 2 ** 3", "8", True),
]

CASES = _generated() + _HAND
