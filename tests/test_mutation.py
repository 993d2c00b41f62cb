"""The mutation runner itself (qrw.bench.mutation): the mutants it plants, and that a weak test lets one live.

Cheap: a three-line module in a temporary tree, never the library.
"""

import hashlib
from pathlib import Path

from qrw.bench.mutation import MutationConfig, PytestServer, copy_tree, generate_mutants, score_module
from qrw.bench.mutation_targets import TARGETS, Target

TINY = '''def clip(x, low):
    """Docstring: 1 + 1 here is not code."""
    return max(x - 1, low)


def other(y):
    return y + 1
'''


def test_the_mutants_of_a_tiny_function_by_hand():
    """Every standard operator that applies, once each; the docstring and unlisted functions are left alone."""
    mutants = generate_mutants(TINY, "qrw/tiny.py", {"clip": None})
    assert {(m.operator, m.mutated) for m in mutants} == {
        ("return value", "return None"),
        ("call swapped", "return (min(x - 1, low))"),
        ("clamp removed", "return (x - 1)"),
        ("clamp removed", "return (low)"),
        ("arguments swapped", "return (max(low, x - 1))"),
        ("arithmetic", "return max((x + 1), low)"),
        ("constant", "return max(x - (2), low)"),
        ("constant", "return max(x - (0), low)"),
        ("constant", "return max(x - (-1), low)"),
    }
    assert all(m.line == 3 and m.original == "return max(x - 1, low)" and m.function == "clip" for m in mutants)
    assert all(m.source.count("def other(y):\n    return y + 1") == 1 for m in mutants)
    namespace: dict = {}
    exec(next(m for m in mutants if m.operator == "arithmetic").source, namespace)  # the mutant is real code
    assert namespace["clip"](5, 0) == 6


def test_comparisons_booleans_conditions_and_statement_filters():
    source = "def f(a, b):\n    if a < b and b:\n        a += 1\n    return a\n"
    mutated = {m.mutated for m in generate_mutants(source, "m.py", {"f": None})}
    assert {"if (a <= b) and b:", "if (a > b) and b:", "if (a < b or b):", "if (not (a < b and b)):",
            "a -= 1", "a += (2)", "a += (0)", "a += (-1)", "return None"} == mutated
    only_if = generate_mutants(source, "m.py", {"f": ("if ",)})  # only statements whose line holds "if "
    assert {m.line for m in only_if} == {2}


def test_a_weak_test_lets_a_mutant_survive_and_the_checkout_is_untouched(tmp_path):
    """The planted test checks only the sign of one value: the runner reports the mutants it cannot see."""
    checkout = tmp_path / "checkout"
    (checkout / "qrw").mkdir(parents=True)
    (checkout / "tests").mkdir()
    (checkout / "qrw" / "__init__.py").write_text("")
    (checkout / "qrw" / "tiny.py").write_text(TINY)
    (checkout / "tests" / "test_tiny.py").write_text(
        "from qrw.tiny import clip\n\n\ndef test_weak():\n    assert clip(5, 0) > 0\n")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in checkout.rglob("*") if p.is_file()}
    server = PytestServer(copy_tree(tmp_path / "copy", root=checkout), preload=())
    try:
        row = score_module(Target("tiny", "qrw/tiny.py", {"clip": None}, ("tests/test_tiny.py",)), [server],
                           MutationConfig(module="grpo", jobs=1, timeout=60.0), root=checkout,
                           equivalent={("qrw/tiny.py", "return max(x - 1, low)", "return max(x - (0), low)"): "why"})
    finally:
        server.close()
    survived = {m.mutated for m in row["survivors"]}
    # clip(5, 0) is 4; the weak test cannot tell 4 from 6, 3, 5, max(0, 4) or 4 - 0 + ...: all these live
    assert survived == {"return (x - 1)", "return (max(low, x - 1))", "return max((x + 1), low)",
                        "return max(x - (2), low)", "return max(x - (0), low)", "return max(x - (-1), low)"}
    # killed: None (TypeError), min(4, 0) = 0, low = 0
    assert (row["generated"], row["killed"], row["equivalent"], row["survived"]) == (9, 3, 1, 5)
    assert row["score"] == 3 / 8
    assert before == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in checkout.rglob("*") if p.is_file()}
    assert (tmp_path / "copy" / "qrw" / "tiny.py").read_text() == TINY  # each mutant was reverted in the copy


def test_every_declared_target_function_exists():
    """A renamed or moved function would silently drop out of the score: each declared name must be defined."""
    from qrw.bench.mutation import missing_functions

    root = Path(__file__).resolve().parents[1]
    for target in TARGETS:
        assert missing_functions((root / target.path).read_text(), target.functions) == [], target.path
        for test in target.tests:
            assert (root / test.split("::")[0]).is_file(), test
