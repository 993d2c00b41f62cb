"""Typed configs, their command lines, and the one-line error convention.

Every concern has one dataclass config (``WorldConfig``, ``ModelConfig``,
``SFTConfig``, ``GRPOConfig``). Each field is declared once with :func:`arg`,
which carries its one-line help; :func:`add_config_args` maps the dataclass onto
an ``argparse`` parser (``n_products`` -> ``--n-products``) and
:func:`config_from_args` maps it back. A field declared ``arg(..., advanced=True)``
is an advanced knob: ``--help`` lists only the flags a user touches first and
counts the others, ``--help-all`` lists every flag (:class:`Parser`); an advanced
flag works like any other. Configs validate themselves in
``__post_init__`` and raise :class:`UserError`; scripts run under
:func:`run_main`, which turns a ``UserError`` into one line on stderr and exit
code 2 (a :class:`NonFiniteLossError` into one line and exit code 1), never a
stack trace.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any, Callable


class UserError(ValueError):
    """A mistake in what the user asked for (bad flag, bad file, bad query).

    Reported as a single line ``error: <message>``; never a traceback.
    """


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss (or gradient norm); the optimizer was not stepped.

    Scripts report it as one line (exit code 1): the last good checkpoint on disk is kept.
    """


def arg(default: Any, help: str, *, advanced: bool = False, **kwargs: Any) -> Any:
    """A dataclass field with its one-line documentation (used for ``--help``).

    ``advanced=True``: a knob past the first ones a user touches (a stage's
    optimiser and logging settings, a reward's sub-weights): listed by
    ``--help-all`` only. ``kwargs`` (``choices``, ``metavar``) go to argparse.
    """
    metadata = {"help": help, "advanced": advanced, **kwargs}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds: for what a *user* got wrong.

    Flags, files and queries are checked with this; the scripts print the message
    as one line. A broken internal invariant (a tensor of the wrong shape) is a
    bug, not a user mistake: it uses :func:`invariant` and keeps its traceback.
    """
    if not condition:
        raise UserError(message)


def invariant(condition: bool, message: str | Callable[[], str]) -> None:
    """Raise ``ValueError`` with ``message`` unless ``condition`` holds: for the caller's code, not the user.

    Shapes, dtypes and API arguments inside the library. Not a :class:`UserError`,
    so the scripts let it through with its traceback. ``message`` may be a function that
    builds it, called only when the check fails (hot paths: no string formatting per call).
    """
    if not condition:
        raise ValueError(message() if callable(message) else message)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help with defaults shown once (not for None/False, nor when the help already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "(default:" in text:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block) and whose --help shows defaults.

    Advanced flags (``add_argument(..., advanced=True)``, or a config field declared
    ``arg(..., advanced=True)``) are left out of ``--help``, which ends with a line
    counting them; ``--help-all`` (added with the first advanced flag) lists every
    flag. Both print and exit; parsing treats advanced flags like the others.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.advanced_actions: list[argparse.Action] = []
        self._show_all = False

    def add_argument(self, *args: Any, advanced: bool = False, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if advanced:
            self.mark_advanced(action)
        return action

    def mark_advanced(self, action: argparse.Action) -> None:
        """List ``action`` under ``--help-all`` only (adds ``--help-all`` the first time)."""
        if not self.advanced_actions and self.add_help:
            super().add_argument("--help-all", action=_HelpAll, help="show every flag, the advanced ones too, and exit")
        self.advanced_actions.append(action)

    def format_help(self) -> str:
        """--help: every flag but the advanced ones, then a line counting those (--help-all: every flag)."""
        hidden = [] if self._show_all else [a for a in self.advanced_actions if a.help is not argparse.SUPPRESS]
        saved = [a.help for a in hidden]
        for action in hidden:
            action.help = argparse.SUPPRESS
        try:
            text = super().format_help()
        finally:
            for action, help_text in zip(hidden, saved):
                action.help = help_text
        if hidden:
            text += f"\n{len(hidden)} advanced flags: see --help-all\n"
        return text

    def error(self, message: str) -> typing.NoReturn:  # noqa: D401 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


class _HelpAll(argparse.Action):
    """``--help-all``: print the help with every flag, then exit."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> typing.NoReturn:
        parser._show_all = True
        parser.print_help()
        parser.exit()


def _field_type(cls: type, field: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(cls)
    t = hints[field.name]
    origin = typing.get_origin(t)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        t = args[0]
    return t


def add_config_args(parser: argparse.ArgumentParser, cls: type, *, prefix: str = "",
                    skip: tuple[str, ...] = (), group_title: str | None = None, base: Any = None,
                    advanced: bool = False, shown: tuple[str, ...] | None = None) -> None:
    """Add one ``--flag`` per field of dataclass ``cls`` (defaults shown in --help).

    Booleans become ``--flag`` / ``--no-flag``; ``choices`` in the field's
    metadata restrict the values. ``prefix`` namespaces the flags
    (``prefix="model"`` -> ``--model-n-layer``). ``base``, an instance of ``cls``,
    supplies the defaults shown in --help when a script's defaults differ from the
    dataclass's. A field is an advanced flag (``--help-all`` only, on a
    :class:`Parser`) when declared ``arg(..., advanced=True)``, when ``advanced``
    is True (the whole config), or when ``shown`` is given and does not name it
    (a config used several times, one stage's knobs more advanced than another's).
    """
    target = parser.add_argument_group(group_title) if group_title else parser
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        name = (f"{prefix}_{f.name}" if prefix else f.name).replace("_", "-")
        t = _field_type(cls, f)
        help_text = f.metadata.get("help", "")
        if base is not None:
            default = getattr(base, f.name)
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        dest = (f"{prefix}_{f.name}" if prefix else f.name)
        if t is bool:
            action = target.add_argument(f"--{name}", dest=dest, action=argparse.BooleanOptionalAction,
                                         default=None, help=f"{help_text} (default: {default})")
        else:
            kind = t if t in (int, float, str) else str
            action = target.add_argument(f"--{name}", dest=dest, type=kind, default=None,
                                         choices=f.metadata.get("choices"), metavar=f.metadata.get("metavar"),
                                         help=f"{help_text} (default: {default})")
        is_advanced = f.metadata.get("advanced", False) or advanced or (shown is not None and f.name not in shown)
        if is_advanced and isinstance(parser, Parser):
            parser.mark_advanced(action)


def config_from_args(cls: type, args: argparse.Namespace, *, prefix: str = "", base: Any = None, **overrides: Any) -> Any:
    """Build ``cls`` from parsed args: flags the user gave override ``base`` (or the defaults)."""
    values = dataclasses.asdict(base) if base is not None else {}
    for f in dataclasses.fields(cls):
        dest = f"{prefix}_{f.name}" if prefix else f.name
        v = getattr(args, dest, None)
        if v is not None:
            values[f.name] = v
    values.update(overrides)
    return cls(**values)


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config from ``dataclasses.asdict`` output; unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    check(not unknown, f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    return cls(**data)


def run_main(main: Callable[[], Any]) -> None:
    """Run a command-line entry point; user mistakes become one line and exit code 2."""
    try:
        code = main()
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2)
    except NonFiniteLossError as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130)
    raise SystemExit(code or 0)


def resolve_device(name: str):
    """``auto`` -> cuda if available, else mps if available, else cpu; otherwise the named device."""
    import torch

    check(name in ("auto", "cpu", "cuda", "mps"), f"--device must be auto, cpu, cuda or mps (got {name!r})")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise UserError("--device mps requested but MPS is not available")
    return torch.device(name)
