"""``python -m qrw.bench.mutation``: how many deliberate bugs in the method's math the tests catch.

A *mutant* is the library with one small bug planted by rule: ``+`` for ``-``,
``<`` for ``<=``, ``min`` for ``max``, two arguments swapped, a clamp removed, a
constant off by one. The mutant is *killed* when the tests that cover its module
fail (or run past the time limit) and *survives* when they all pass: then either
no test can tell the bug from the method, or the mutant is *equivalent* (it
computes the same thing, e.g. ``x.clamp(min=1)`` of a count that is never 0 on the
path a caller can reach). The mutation score of a module is
``killed / (generated - equivalent)``; docs/GRPO_TESTS.md records it and gives
each surviving mutant's reason.

The targets (:data:`TARGETS`) are the method's math: all of ``qrw/grpo.py``, the
update's loss normalisers, the rewards' fusion and format rule, the multi-task SFT
loss and its normaliser, and the page metrics. Each target is tested by the test
files that cover it (its declared list), with ``pytest -x``, fastest first.

The operators are the standard ones of mutmut and cosmic-ray, applied to the
abstract syntax tree of each target function (docstrings, strings, annotations
and ``raise`` statements are left alone):

- arithmetic ``+ -``, ``* /``, ``// /``, ``** *``, augmented ``+= -=``, ``*= /=``;
- comparisons ``< <=``, ``< >``, ``> >=``, ``> <``, ``== !=``, ``is``/``is not``,
  ``in``/``not in``; ``and``/``or``; a condition negated (``if not ...``);
- constants: a number n -> n + 1, 1 -> 0, n -> -n; ``True``/``False`` swapped;
- unary operators dropped (``-x`` -> ``x``, ``not x`` -> ``x``);
- calls: ``min``/``max`` (``minimum``/``maximum``, ``amin``/``amax``), ``sum``/``mean``,
  ``any``/``all``, ``zeros_like``/``ones_like``; a clamp removed (``x.clamp(...)`` -> ``x``,
  ``max(x, 1)`` -> ``x``); two neighbouring positional arguments of the same kind swapped;
- ``return value`` -> ``return None``.

The user's checkout is never modified: the sources and tests are copied to a
temporary directory (one copy per job) and each mutant is written there, run and
restored; the child processes import the copy (``PYTHONPATH``) and write no
bytecode, so no stale ``.pyc`` can hide a mutant.

Usage::

    python -m qrw.bench.mutation                       # every module, 2 jobs
    python -m qrw.bench.mutation --module grpo --list  # the mutants of qrw/grpo.py, not run
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from qrw.bench.mutation_targets import EQUIVALENT, TARGETS, Target
from qrw.config import Parser, add_config_args, arg, check, config_from_args, invariant, run_main

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("qrw", "tests", "train_sft.py", "train_grpo.py", "pyproject.toml")  # what the tests need

BINARY_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
                ast.FloorDiv: ast.Div, ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv}
COMPARE_SWAPS = {ast.Lt: (ast.LtE, ast.Gt), ast.LtE: (ast.Lt, ast.GtE), ast.Gt: (ast.GtE, ast.Lt),
                 ast.GtE: (ast.Gt, ast.LtE), ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,), ast.Is: (ast.IsNot,),
                 ast.IsNot: (ast.Is,), ast.In: (ast.NotIn,), ast.NotIn: (ast.In,)}
NAME_SWAPS = {"min": "max", "max": "min", "minimum": "maximum", "maximum": "minimum", "amin": "amax",
              "amax": "amin", "sum": "mean", "mean": "sum", "any": "all", "all": "any",
              "zeros_like": "ones_like", "ones_like": "zeros_like"}
CLAMPS = ("clamp", "clip", "clamp_min", "clamp_max")


@dataclass
class MutationConfig:
    """Which modules to mutate and how to run their tests."""

    module: str = arg("all", "comma-separated target modules (grpo, update, ranks, rewards, sft, metrics) or 'all'")
    jobs: int = arg(2, "mutants tested in parallel (each in its own copy of the tree)")
    timeout: float = arg(0.0, "seconds a mutant's tests may run before it counts as killed "
                         "(0: three times the unmutated tests' time, plus 10 s)", advanced=True)
    list: bool = arg(False, "print the mutants without running them")
    limit: int = arg(0, "test only the first N mutants of each module (0: all); for a quick look", advanced=True)
    cache: str = arg("", "a JSON file of outcomes, written after every mutant: a mutant it records as killed "
                     "for the same module source is not run again (survivors always are); for iterating",
                     advanced=True)

    def __post_init__(self) -> None:
        check(self.jobs >= 1, "--jobs must be >= 1")
        check(self.timeout >= 0, "--timeout must be >= 0")
        check(self.limit >= 0, "--limit must be >= 0")
        unknown = sorted(set(self.modules) - {t.name for t in TARGETS})
        check(not unknown, f"--module: unknown module(s) {', '.join(unknown)}; "
                           f"choose from {', '.join(t.name for t in TARGETS)} or all")

    @property
    def modules(self) -> list[str]:
        names = [m.strip() for m in self.module.split(",") if m.strip()]
        return [t.name for t in TARGETS] if names in ([], ["all"]) else names


@dataclass
class Mutant:
    """One planted bug: where, what the line was, what it became, and the whole mutated file."""

    path: str  # relative to the repository root, e.g. "qrw/grpo.py"
    function: str
    line: int
    operator: str
    original: str  # the source line, stripped
    mutated: str  # the same line in the mutant, stripped
    source: str  # the mutated file

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies a mutant across edits elsewhere in the file (line numbers move)."""
        return self.path, self.original, self.mutated


# ---------------------------------------------------------------------------
# Generating mutants
# ---------------------------------------------------------------------------


def _expression_mutations(node: ast.AST) -> list[tuple[str, ast.AST]]:
    """(operator, replacement node) for an expression node; the replacement is unparsed in parentheses."""
    out: list[tuple[str, ast.AST]] = []

    def variant(name: str, edit) -> None:
        new = copy.deepcopy(node)
        result = edit(new)
        out.append((name, new if result is None else result))

    if isinstance(node, ast.BinOp) and type(node.op) in BINARY_SWAPS:
        variant("arithmetic", lambda n: setattr(n, "op", BINARY_SWAPS[type(node.op)]()))
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for swap in COMPARE_SWAPS.get(type(op), ()):
                variant("comparison", lambda n, i=i, swap=swap: n.ops.__setitem__(i, swap()))
    elif isinstance(node, ast.BoolOp):
        variant("boolean", lambda n: setattr(n, "op", ast.Or() if isinstance(node.op, ast.And) else ast.And()))
    elif isinstance(node, ast.UnaryOp):
        variant("unary dropped", lambda n: n.operand)
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        variant("constant", lambda n: ast.Constant(not node.value))
    elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        value = node.value
        variant("constant", lambda n: ast.Constant(value + 1))
        if value == 1:
            variant("constant", lambda n: ast.Constant(0))
        if value != 0:
            variant("constant", lambda n: ast.UnaryOp(ast.USub(), ast.Constant(value)))
    elif isinstance(node, ast.Call):
        out.extend(_call_mutations(node))
    return out


def _call_mutations(node: ast.Call) -> list[tuple[str, ast.AST]]:
    out: list[tuple[str, ast.AST]] = []
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if name in NAME_SWAPS and (isinstance(func, ast.Attribute) or name in ("min", "max", "any", "all")):
        new = copy.deepcopy(node)
        if isinstance(func, ast.Name):
            new.func.id = NAME_SWAPS[name]
        else:
            new.func.attr = NAME_SWAPS[name]
        out.append(("call swapped", new))
    if isinstance(func, ast.Attribute) and name in CLAMPS:
        out.append(("clamp removed", copy.deepcopy(func.value)))
    if isinstance(func, ast.Name) and name in ("min", "max") and len(node.args) == 2 and not node.keywords:
        out.extend(("clamp removed", copy.deepcopy(a)) for a in node.args if not isinstance(a, ast.Constant))
    args = node.args
    for i in range(len(args) - 1):
        a, b = args[i], args[i + 1]
        same_kind = isinstance(a, ast.Constant) == isinstance(b, ast.Constant)
        if same_kind and not any(isinstance(x, (ast.Starred, ast.JoinedStr)) or _is_string(x) for x in (a, b)) \
                and ast.dump(a) != ast.dump(b):
            new = copy.deepcopy(node)
            new.args[i], new.args[i + 1] = new.args[i + 1], new.args[i]
            out.append(("arguments swapped", new))
    return out


def _is_string(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _statement_mutations(node: ast.stmt) -> list[tuple[str, ast.AST]]:
    """(operator, replacement statement) for statements: augmented assignments and returns."""
    swaps = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
    if isinstance(node, ast.AugAssign) and type(node.op) in swaps:
        new = copy.deepcopy(node)
        new.op = swaps[type(node.op)]()
        return [("arithmetic", new)]
    if isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None):
        return [("return value", ast.Return(ast.Constant(None)))]
    return []


def _skipped_children(node: ast.AST) -> set[int]:
    """ids of the subtrees of ``node`` that are never mutated: docstrings, annotations, decorators, messages."""
    skip: set[int] = set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        skip.update(id(d) for d in node.decorator_list)
        skip.update(id(a.annotation) for a in ast.walk(node.args) if isinstance(a, ast.arg) and a.annotation)
        if node.returns is not None:
            skip.add(id(node.returns))
        first = node.body[0] if node.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            skip.add(id(first))
    if isinstance(node, ast.AnnAssign):
        skip.add(id(node.annotation))
    return skip


def _mutation_points(root: ast.AST, in_scope) -> list[tuple[ast.AST, str, ast.AST]]:
    """Every (node, operator, replacement) under ``root`` whose statement ``in_scope`` accepts."""
    points: list[tuple[ast.AST, str, ast.AST]] = []

    def visit(node: ast.AST, statement: ast.stmt | None) -> None:
        if isinstance(node, (ast.Raise, ast.JoinedStr)):
            return
        if isinstance(node, ast.stmt):
            statement = node
        if statement is not None and in_scope(statement) and not isinstance(node, ast.FunctionDef):
            if isinstance(node, ast.stmt):
                points.extend((node, op, new) for op, new in _statement_mutations(node))
            elif isinstance(node, ast.expr) and not isinstance(getattr(node, "ctx", None), ast.Store):
                points.extend((node, op, new) for op, new in _expression_mutations(node))
            if isinstance(node, (ast.If, ast.While, ast.IfExp, ast.Assert)):
                test = node.test
                points.append((test, "condition negated", ast.UnaryOp(ast.Not(), copy.deepcopy(test))))
        skip = _skipped_children(node)
        for child in ast.iter_child_nodes(node):
            if id(child) not in skip:
                visit(child, statement)

    visit(root, None)
    return points


def _replace(source: bytes, line_starts: list[int], node: ast.AST, text: str) -> bytes:
    """``source`` with ``node``'s span (ast offsets count UTF-8 bytes) replaced by ``text``."""
    start = line_starts[node.lineno - 1] + node.col_offset
    end = line_starts[node.end_lineno - 1] + node.end_col_offset
    return source[:start] + text.encode() + source[end:]


def generate_mutants(source: str, path: str, functions: dict[str, tuple[str, ...] | None]) -> list[Mutant]:
    """The mutants of the ``functions`` of one module's ``source``.

    ``functions``: name -> None (the whole function) or substrings, in which case only
    the statements whose source line contains one of them are mutated. The name
    ``"*"`` means every top-level function, ``"<module>"`` the module-level assignments
    (constants). Functions the file does not define are skipped (see :func:`missing_functions`).
    """
    tree = ast.parse(source)
    data = source.encode()
    lines = source.splitlines()
    line_starts = [0]
    for raw in data.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(raw))
    chosen: list[tuple[str, ast.AST, tuple[str, ...] | None]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and ("*" in functions or node.name in functions):
            chosen.append((node.name, node, functions.get(node.name)))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and "<module>" in functions:
            chosen.append(("<module>", node, None))
    mutants: list[Mutant] = []
    seen: set[str] = set()
    for name, root, patterns in chosen:
        def in_scope(statement: ast.stmt, patterns=patterns) -> bool:
            return patterns is None or any(p in lines[statement.lineno - 1] for p in patterns)

        for node, operator, new in _mutation_points(root, in_scope):
            if isinstance(node, ast.stmt):
                text = ast.unparse(new)
            else:
                text = f"({ast.unparse(new)})"
            mutated = _replace(data, line_starts, node, text).decode()
            if mutated in seen or ast.dump(ast.parse(mutated)) == ast.dump(tree):
                continue
            seen.add(mutated)
            mutants.append(Mutant(path, name, node.lineno, operator, lines[node.lineno - 1].strip(),
                                  mutated.splitlines()[node.lineno - 1].strip(), mutated))
    return mutants


def missing_functions(source: str, functions: dict[str, tuple[str, ...] | None]) -> list[str]:
    """The declared function names that ``source`` does not define at the top level."""
    defined = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    return sorted(set(functions) - defined - {"*", "<module>"})


# ---------------------------------------------------------------------------
# Running the tests against each mutant, in copies of the tree
# ---------------------------------------------------------------------------


def copy_tree(destination: Path, root: Path = ROOT) -> Path:
    """Copy what the tests need (:data:`COPIED`) from ``root`` into ``destination``, without bytecode."""
    for name in COPIED:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            shutil.copy2(source, destination / name)
    return destination


PYTEST_FLAGS = ("-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=")

# The test server of one tree: it imports the heavy dependencies once (about 2 s of each
# pytest start on 2 cores), then forks a fresh child per request, which imports the
# (mutated) library from the tree, runs pytest and exits. The server itself never imports
# qrw, so every child sees the files as they are now.
SERVER = """
import importlib, json, os, signal, sys, time
import pytest
for name in sys.argv[1:]:
    importlib.import_module(name)
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.setpgrp()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        for args in request["stages"]:  # one pytest session per test file, in order, until one fails
            code = int(pytest.main(args))
            if code != 0:
                os._exit(code)
        os._exit(0)
    outcome = "timeout"
    while time.perf_counter() - start < request["timeout"]:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            outcome = "passed" if os.waitstatus_to_exitcode(status) == 0 else "failed"
            break
        time.sleep(0.02)
    else:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    print(json.dumps([outcome, time.perf_counter() - start]), flush=True)
"""


def _environment(tree: Path) -> dict[str, str]:
    """The children import the copy (``PYTHONPATH``), write no bytecode and use one thread."""
    return dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float | None) -> tuple[str, float, str]:
    """Run ``pytest -x`` on ``tests`` inside ``tree`` in a new process: ("passed" | "failed" | "timeout",
    seconds, the output's tail). Used for the unmutated baseline, whose output matters when it fails."""
    command = [sys.executable, "-m", "pytest", *PYTEST_FLAGS, *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=tree, env=_environment(tree), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    outcome = "passed" if done.returncode == 0 else "failed"
    return outcome, time.perf_counter() - start, (done.stdout + done.stderr)[-2000:]


class PytestServer:
    """A :data:`SERVER` process bound to one copy of the tree (``server.run(tests, timeout)``).

    ``preload``: the modules it imports once for all its children (never ``qrw``).
    """

    def __init__(self, tree: Path, preload: tuple[str, ...] = ("numpy", "torch", "tokenizers")):
        self.tree = tree
        self.process = subprocess.Popen([sys.executable, "-c", SERVER, *preload], cwd=tree, env=_environment(tree),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        invariant(self.process.stdout.readline().strip() == "ready", "the mutation test server did not start")

    def run(self, tests: tuple[str, ...], timeout: float) -> str:
        """"passed" | "failed" | "timeout" for the tree as it is now.

        Each test file is its own pytest session, in the order given (node ids of one file
        share a session): a mutant that the first, fast file kills never costs the
        collection of the slower ones.
        """
        stages: list[list[str]] = []
        for test in tests:
            if stages and stages[-1][-1].split("::")[0] == test.split("::")[0]:
                stages[-1].append(test)
            else:
                stages.append([test])
        request = {"stages": [[*PYTEST_FLAGS, *stage] for stage in stages], "timeout": timeout}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())[0]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def run_mutants(mutants: list[Mutant], tests: tuple[str, ...], servers: list[PytestServer],
                 timeout: float, on_result=None) -> list[str]:
    """Each mutant's outcome, "killed" | "timeout" | "survived", testing ``len(servers)`` mutants at once.

    ``on_result(mutant, outcome)``, if given, is called as each outcome arrives (from the worker threads).
    """
    free, done = list(servers), []

    def one(mutant: Mutant) -> str:
        server = free.pop()  # list.pop is atomic: each worker thread holds its own tree
        target = server.tree / mutant.path
        original = target.read_text()
        try:
            target.write_text(mutant.source)
            outcome = server.run(tests, timeout)
        finally:
            target.write_text(original)
            free.append(server)
            done.append(mutant)
            print(f"  {mutant.path}: {len(done)}/{len(mutants)} tested", end="\r", file=sys.stderr, flush=True)
        if outcome == "passed":
            print(f"  survived: {mutant.path}:{mutant.line} {mutant.mutated}", file=sys.stderr, flush=True)
        result = {"passed": "survived", "failed": "killed", "timeout": "timeout"}[outcome]
        if on_result is not None:
            on_result(mutant, result)
        return result

    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        outcomes = list(pool.map(one, mutants))
    print(file=sys.stderr)
    return outcomes


def score_module(target: Target, servers: list[PytestServer], cfg: MutationConfig, root: Path = ROOT,
                 equivalent: dict | None = None) -> dict:
    """Generate, run and count the mutants of one target; returns the row of the table and the survivors."""
    equivalent = EQUIVALENT if equivalent is None else equivalent
    source = (root / target.path).read_text()
    mutants = generate_mutants(source, target.path, target.functions)
    if cfg.limit:
        mutants = mutants[:cfg.limit]
    baseline, seconds, output = run_tests(servers[0].tree, target.tests, None)
    check(baseline == "passed", f"{target.name}: the unmutated tests fail in the copy; fix them first:\n{output}")
    timeout = cfg.timeout or 3 * seconds + 10
    for server in servers:  # the unmutated tree through the server too: a mutant is killed only by its bug
        check(server.run(target.tests, timeout) == "passed", f"{target.name}: the unmutated tests fail "
              f"when run one file a session; run them with pytest in {server.tree} to see why")
    cache_path = Path(cfg.cache) if cfg.cache else None
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.exists() else {}
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]

    def cache_key(m: Mutant) -> str:
        return "\t".join((digest, *m.key))

    cached = {i: cache[cache_key(m)] for i, m in enumerate(mutants) if cache.get(cache_key(m)) in ("killed", "timeout")}
    lock = threading.Lock()

    def record(mutant: Mutant, outcome: str) -> None:
        with lock:
            cache[cache_key(mutant)] = outcome
            cache_path.write_text(json.dumps(cache, indent=0, sort_keys=True))

    todo = [m for i, m in enumerate(mutants) if i not in cached]
    fresh = iter(run_mutants(todo, target.tests, servers, timeout, record if cache_path else None))
    outcomes = [cached[i] if i in cached else next(fresh) for i in range(len(mutants))]
    survivors = [m for m, o in zip(mutants, outcomes) if o == "survived"]
    declared = [m for m in survivors if m.key in equivalent]
    generated, equivalents = len(mutants), len(declared)
    killed = sum(o != "survived" for o in outcomes)
    return {"module": target.name, "path": target.path, "generated": generated, "killed": killed,
            "timeouts": outcomes.count("timeout"), "survived": len(survivors) - equivalents,
            "equivalent": equivalents, "score": killed / max(generated - equivalents, 1),
            "survivors": survivors, "equivalents": declared, "baseline_s": seconds, "cached": len(cached),
            "missing": missing_functions(source, target.functions)}


def format_row(row: dict) -> str:
    return (f"{row['module']:<8} {row['path']:<20} {row['generated']:>9} {row['killed']:>6} {row['survived']:>8} "
            f"{row['equivalent']:>10} {100 * row['score']:>6.1f}%")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m qrw.bench.mutation", description=__doc__.split("\n\n")[0])
    add_config_args(parser, MutationConfig)
    cfg = config_from_args(MutationConfig, parser.parse_args(argv))
    targets = [t for t in TARGETS if t.name in cfg.modules]
    if cfg.list:
        for target in targets:
            for m in generate_mutants((ROOT / target.path).read_text(), target.path, target.functions):
                print(f"{m.path}:{m.line} [{m.function}] {m.operator}: {m.mutated}")
        return 0
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="qrw-mutation-") as scratch:
        trees = [copy_tree(Path(scratch) / f"job{j}") for j in range(cfg.jobs)]
        found = subprocess.run([sys.executable, "-c", "import qrw; print(qrw.__file__)"], cwd=trees[0],
                               env=_environment(trees[0]), capture_output=True, text=True).stdout.strip()
        invariant(found.startswith(str(trees[0])), f"the copy imports qrw from {found}, not from the copy")
        servers = [PytestServer(tree) for tree in trees]
        try:
            for target in targets:
                row = score_module(target, servers, cfg)
                rows.append(row)
                print(f"{target.name}: {row['generated']} mutants, {row['killed']} killed "
                      f"({row['timeouts']} by the time limit, {row['cached']} from the cache), "
                      f"tests {row['baseline_s']:.1f} s", flush=True)
        finally:
            for server in servers:
                server.close()
    print(f"\n{'module':<8} {'file':<20} {'generated':>9} {'killed':>6} {'survived':>8} {'equivalent':>10} {'score':>7}")
    for row in rows:
        print(format_row(row))
    total = {k: sum(r[k] for r in rows) for k in ("generated", "killed", "survived", "equivalent")}
    print(format_row({"module": "all", "path": "", **total,
                      "score": total["killed"] / max(total["generated"] - total["equivalent"], 1)}))
    for row in rows:
        for name in row["missing"]:
            print(f"note: {row['path']} defines no {name} (moved?)")
        for m in row["survivors"]:
            why = EQUIVALENT.get(m.key)
            label = f"equivalent: {why}" if why else "SURVIVED"
            print(f"{m.path}:{m.line} [{m.function}] {m.operator}: {m.mutated}\n    was: {m.original}\n    {label}")
    print(f"\n{total['generated']} mutants in {time.perf_counter() - start:.0f} s with --jobs {cfg.jobs}")
    return 0


if __name__ == "__main__":
    run_main(main)
