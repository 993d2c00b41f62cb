"""Docs that cannot drift: what README.md and docs/*.md state about flags is what the commands do.

The pages write a flag's default in one of three forms, and this test reads all three:

    `--beta` (default 0.04)                   prose: the flag, then its default
    `--rewrite-data mined` (default)          prose: the flag with the value that is the default
    | flag | default | ...                    a table with a "flag" and a "default" column

Each stated default is checked against the command's own parser, built at test time
by calling the command's ``main`` and stopping it where it parses its arguments: for
flags generated from a config dataclass (:func:`qrw.config.add_config_args`) that is
the dataclass default the ``--help`` line states, so a default changed in the code
alone fails here. Every ``--flag`` any page names must exist in some command's parser
(a removed or renamed flag fails), and every ``tests/test_x.py::test_name`` a page
cites must be a test of that file; every ``qrw/...``, ``tests/...`` or ``docs/...`` path a
page names must exist, and the README's ``qrw.module.name`` references must resolve.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
SCRIPTS = ("train_sft", "train_grpo")  # the commands a page means when it names no other
EXTERNAL_FLAGS = {"--nproc_per_node"}  # torchrun's


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def command_modules() -> dict[str, str]:
    """Command name -> module, for the scripts and every qrw module whose ``main`` builds a parser.

    A package's ``cli`` module run by its ``__main__`` is named as the user runs it (``qrw.bench``).
    """
    found = {name: name for name in SCRIPTS}
    for path in sorted((ROOT / "qrw").rglob("*.py")):
        text = path.read_text()
        if path.name == "__main__.py" or "def main(" not in text or "Parser(" not in text:
            continue
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        package_main = path.parent / "__main__.py"
        command = module.rsplit(".", 1)[0] if path.stem == "cli" and package_main.exists() else module
        found[command] = module
    return found


def _subcommands(name: str, parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    parsers = {name: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                parsers.update(_subcommands(f"{name} {sub}", subparser))
    return parsers


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Command name (``train_grpo``, ``qrw.evaluate``, ``qrw.bench generate``) -> its parser, as built now."""
    parsers = {}
    real = argparse.ArgumentParser.parse_known_args

    def capture(self, args=None, namespace=None):
        raise _Captured(self)

    argparse.ArgumentParser.parse_known_args = capture
    argv = sys.argv
    try:
        for name, module in command_modules().items():
            main = importlib.import_module(module).main
            sys.argv = [name, "--help"]
            try:
                try:
                    main(["--help"])
                except TypeError:
                    main()
            except _Captured as got:
                parsers.update(_subcommands(name, got.parser))
                continue
            raise AssertionError(f"{name}.main() returned without parsing its arguments")
    finally:
        argparse.ArgumentParser.parse_known_args = real
        sys.argv = argv
    return parsers


def stated_default(action: argparse.Action) -> str | None:
    """The default ``--help`` states for ``action``: the ``(default: X)`` of its help, else its parser default."""
    text = action.help if isinstance(action.help, str) and action.help != argparse.SUPPRESS else ""
    start = text.rfind("(default: ")
    if start >= 0:
        return text[start + len("(default: "):text.rindex(")")]
    if action.default is None or action.default == argparse.SUPPRESS:
        return None
    return str(action.default)


def flag_table(parsers: dict[str, argparse.ArgumentParser]) -> dict[str, dict[str, str | None]]:
    """flag -> {command: stated default}; ``--no-x`` of a boolean flag maps to the negated default."""
    table: dict[str, dict[str, str | None]] = {}
    for name, parser in parsers.items():
        for action in parser._actions:
            default = stated_default(action)
            for option in action.option_strings:
                value = default
                if isinstance(action, argparse.BooleanOptionalAction) and option.startswith("--no-"):
                    value = {"True": "False", "False": "True"}.get(default or "", default)
                table.setdefault(option, {})[name] = value
    return table


# ---------------------------------------------------------------------------------------- reading the pages

PROSE_DEFAULT = re.compile(r"`(--[a-z][a-z0-9-]*)`\s*\(default ([^()]*(?:\([^()]*\)[^()]*)*)\)")
PROSE_VALUE = re.compile(r"`(--[a-z][a-z0-9-]*)(?: ([^`]+))?`\s*\((?:the )?default\)")  # no value: the flag is on
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9_-]*)")
COMMAND = re.compile(r"(train_sft|train_grpo)\.py|python -m (qrw(?:\.[a-z_]+)+)")


@dataclasses.dataclass
class Statement:
    page: str
    line: int
    flag: str
    value: str
    context: str  # its paragraph or table up to the flag, to find the command it speaks of


def paragraphs(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each block between blank lines (a table is one block)."""
    blocks, start, lines = [], 1, []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            if not lines:
                start = number
            lines.append(line)
        elif lines:
            blocks.append((start, "\n".join(lines)))
            lines = []
    if lines:
        blocks.append((start, "\n".join(lines)))
    return blocks


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name


def statements(page: Path) -> list[Statement]:
    """Every default ``page`` states, in any of the three forms."""
    text, name = page.read_text(), _name(page)
    found = []
    for start, block in paragraphs(text):
        flat = block.replace("\n", " ")  # prose wraps anywhere; same offsets as the block
        for pattern in (PROSE_DEFAULT, PROSE_VALUE):
            for m in pattern.finditer(flat):
                found.append(Statement(name, start + block[:m.start()].count("\n"), m.group(1),
                                       m.group(2) or "on", block[:m.start()]))
        rows = block.splitlines()
        if len(rows) >= 3 and all(r.lstrip().startswith("|") for r in rows):
            header = [c.lower() for c in _cells(rows[0])]
            if "flag" in header and "default" in header:
                fi, di = header.index("flag"), header.index("default")
                for offset, row in enumerate(rows[2:], 2):
                    cells = _cells(row)
                    flags = re.findall(r"`(--[a-z][a-z0-9-]*)`", cells[fi])
                    values = [v.strip() for v in cells[di].split(",")] if len(flags) > 1 else [cells[di]]
                    if len(values) != len(flags):
                        values = [cells[di]] * len(flags)
                    context = "\n".join(rows[:offset])
                    found += [Statement(name, start + offset, f, v, context) for f, v in zip(flags, values)]
    return found


def _normal(value: str) -> str:
    value = re.sub(r"\s*\(.*\)\s*$", "", value.strip()).strip().strip("`").strip()
    return " ".join(value.lower().split())


def same_value(stated: str, actual: str | None) -> bool:
    """Whether a page's ``stated`` default says what the parser's ``actual`` one is."""
    s, a = _normal(stated), (actual or "none").strip().lower()
    truth = {"on": "true", "yes": "true", "true": "true", "off": "false", "no": "false", "false": "false"}
    if a in ("true", "false") and s in truth:
        return truth[s] == a
    if a == "none" and s.startswith("="):  # "= low": unset means another flag's value (--clip-high)
        return True
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):  # "60,000": thousands written as prose writes them
        s = s.replace(",", "")
    try:
        return float(s) == float(a)
    except ValueError:
        pass
    return s == a or s in (a.split(", ")[0], a.split("; ")[0], a.split(" (")[0])


def command_of(statement: Statement, candidates: dict[str, str | None]) -> list[str]:
    """The commands whose default the statement is about: the last one its paragraph names before the flag,
    else the training scripts that have the flag, else every command that has it."""
    named = [m.group(1) or m.group(2) for m in COMMAND.finditer(statement.context)]
    for name in reversed(named):
        hits = [c for c in candidates if c == name or c.startswith(name + " ") or c.startswith(name + ".")]
        if hits:
            return hits
    scripts = [c for c in candidates if c in SCRIPTS]
    return scripts or list(candidates)


def default_mismatches(parsers=None, pages=PAGES) -> list[str]:
    """One line per stated default that no parser of its command agrees with (empty: the pages are true)."""
    table = flag_table(command_parsers() if parsers is None else parsers)
    bad = []
    for page in pages:
        for st in statements(page):
            candidates = table.get(st.flag)
            if not candidates:
                bad.append(f"{st.page}:{st.line}: {st.flag} is stated a default ({st.value}) but no command has it")
                continue
            commands = command_of(st, candidates)
            if not any(same_value(st.value, candidates[c]) for c in commands):
                actual = ", ".join(f"{c}: {candidates[c]}" for c in commands)
                bad.append(f"{st.page}:{st.line}: {st.flag} stated default {st.value!r}, the code says {actual}")
    return bad


def unknown_flags(parsers=None, pages=PAGES) -> list[str]:
    """One line per ``--flag`` a page names that no command accepts (unless the page marks it removed)."""
    table = flag_table(command_parsers() if parsers is None else parsers)
    bad = []
    for page in pages:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for m in FLAG.finditer(line):
                flag = m.group(1)
                if flag in table or flag in EXTERNAL_FLAGS or "(removed" in line[m.end():m.end() + 12]:
                    continue
                bad.append(f"{_name(page)}:{number}: {flag} is no command's flag")
    return bad


# ------------------------------------------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def parsers():
    return command_parsers()


def test_every_command_parser_is_found(parsers):
    assert {"train_sft", "train_grpo", "qrw.evaluate", "qrw.explain", "qrw.reproduce"} <= set(parsers)
    assert {"qrw.bench generate", "qrw.bench train"} <= set(parsers)  # subcommands are walked


def test_every_stated_default_is_the_codes(parsers):
    found = sum(len(statements(p)) for p in PAGES)
    assert found >= 10, f"only {found} stated defaults found: has the convention changed?"
    assert default_mismatches(parsers) == []


def test_every_flag_the_docs_name_exists(parsers):
    assert unknown_flags(parsers) == []


def test_the_readme_states_what_training_reads_of_the_hidden_truth(parsers):
    """The wall's section states the door's budget and disagreement and the monitor as defaults (so the check above
    holds them to the code), and names the test that pins the wall."""
    readme = ROOT / "README.md"
    stated = {s.flag: s.value for s in statements(readme)}
    assert {"--label-budget", "--label-disagreement", "--oracle-monitor"} <= set(stated)
    assert not [line for line in default_mismatches(parsers, [readme])
                if any(f in line for f in ("--label-budget", "--label-disagreement", "--oracle-monitor"))]
    assert "`pytest tests/test_wall.py`" in readme.read_text()


def test_a_default_changed_in_the_code_alone_fails(monkeypatch):
    """Change GRPOConfig's beta (README: `--beta` (default 0.2)) in the code only: the check must object."""
    from qrw.update import GRPOConfig

    field = GRPOConfig.__dataclass_fields__["beta"]
    assert any(s.flag == "--beta" for s in statements(ROOT / "README.md"))
    readme = [ROOT / "README.md"]
    assert default_mismatches(pages=readme) == []
    monkeypatch.setattr(field, "default", field.default + 0.01)
    assert {m.split(": ")[1].split()[0] for m in default_mismatches(pages=readme)} == {"--beta"}


def test_the_reader_by_hand(tmp_path, parsers):
    page = tmp_path / "page.md"
    page.write_text(
        "`--beta` (default 0.2) and `--mu` (default 7), `--rewrite-data mined` (default), `--dynamic-sampling`\n"
        "(default off). `python -m qrw.explain --group-size 8` gives `--group-size` (default 8).\n\n"
        "| flag | default | what |\n|---|---|---|\n| `--clip-low`, `--clip-high` | 0.2, none (= low) | x |\n"
        "| `--lr` | 3e-4 | y |\n\n`--no-such-flag`, `--top-q` (removed), and `--no-dynamic-sampling` (default).\n")
    found = [(s.line, s.flag, s.value) for s in statements(page)]
    assert found == [(1, "--beta", "0.2"), (1, "--mu", "7"), (1, "--dynamic-sampling", "off"),  # across a line break
                     (2, "--group-size", "8"), (1, "--rewrite-data", "mined"), (6, "--clip-low", "0.2"),
                     (6, "--clip-high", "none (= low)"), (7, "--lr", "3e-4"), (9, "--no-dynamic-sampling", "on")]
    bad = default_mismatches(parsers, [page])
    assert [line.split(": ")[1].split()[0] for line in bad] == ["--mu", "--group-size"]  # explain's G is 4
    assert unknown_flags(parsers, [page]) == ["page.md:9: --no-such-flag is no command's flag"]


def test_same_value_by_hand():
    assert same_value("3e-4", "0.0003") and same_value("off", "False") and same_value("on", "True")
    assert same_value("runs/grpo", "runs/grpo, or runs/grpo-REWARD for a single reward")
    assert not same_value("category", "category,anchors,brand,vocabulary")
    assert same_value("= low", "None") and not same_value("= low", "0.2")
    assert not same_value("0", "0.04") and not same_value("on", "False") and not same_value("none", "group")
    assert same_value("60,000", "60000") and not same_value("60,000", "6000") and not same_value("6,00", "600")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def missing_tests(pages=PAGES) -> list[str]:
    """The ``tests/test_x.py::test_name`` citations of ``pages`` that name no test of that file."""
    bad = []
    for page in pages:
        for file, name in re.findall(r"(tests/test_\w+\.py)::(test_\w+)\b(?!\.\.\.)", page.read_text()):
            if not (ROOT / file).exists() or name not in _test_names(ROOT / file):
                bad.append(f"{_name(page)}: {file}::{name}")
    return bad


def missing_paths(pages=PAGES) -> list[str]:
    """The ``qrw/...``, ``tests/...``, ``docs/...`` paths in code spans of ``pages`` that do not exist."""
    return [f"{_name(page)}: {path}" for page in pages
            for path in re.findall(r"`((?:qrw|tests|docs)/[\w./-]*)`", page.read_text()) if not (ROOT / path).exists()]


def test_every_cited_test_and_file_exists():
    assert missing_tests() == []
    assert missing_paths() == []


def test_the_reference_checks_by_hand(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("`tests/test_docs.py::test_same_value_by_hand`, `tests/test_docs.py::test_no_such_thing`,\n"
                    "`tests/test_nothing.py::test_x`, `test_p16_...` in `qrw/grpo.py`, not in `qrw/no_such.py`.\n")
    assert missing_tests([page]) == ["page.md: tests/test_docs.py::test_no_such_thing",
                                     "page.md: tests/test_nothing.py::test_x"]
    assert missing_paths([page]) == ["page.md: qrw/no_such.py"]


def test_the_readmes_functions_exist():
    bad = []
    for ref in sorted(set(re.findall(r"`(qrw(?:\.\w+)+)", (ROOT / "README.md").read_text()))):
        parts = ref.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                bad.append(ref)
            break
        else:
            bad.append(ref)
    assert bad == []

