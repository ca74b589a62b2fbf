"""What the ``eqsat`` command line's modules share: the consoles, the argument parser (one-line
usage errors, defaults in ``--help``), the model a command reads and the checks of an output
path. The commands live in :mod:`eqsat.cli` and the ``cli_*`` modules beside it."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.text import Text

from eqsat.errors import InputError


class Quiet(Console):
    """A rich Console whose broken pipe (the reader went away: ``| head``) reaches
    :func:`eqsat.cli.main`, which exits quietly with 141; rich's own handling exits 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


out = Quiet(highlight=False, soft_wrap=True)
err = Quiet(stderr=True, highlight=False)

# in a help text, replaced by the rule families when the help is printed (only then is the rule
# registry, with egglog, imported)
FAMILIES = "{families}"


class UsageError(InputError):
    """A command was called wrongly (exit 2); printed like argparse's errors, on one line."""


def usage_line(prog: str, message: str) -> str:
    return f"{prog}: error: {message} ({prog} --help)"


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with each option's default appended (unless the help already
    says it, or there is none to show) and :data:`FAMILIES` expanded to the rule families."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if FAMILIES in text:
            from eqsat.rules import schedule

            text = text.replace(FAMILIES, ", ".join(schedule.FAMILIES))
        default = action.default
        if (
            action.option_strings
            and "default" not in text
            and default not in (None, False, "", [], argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit 2
    (``eqsat optimize: error: ... (eqsat optimize --help)``) instead of the usage block; its
    sub-commands' parsers are of this class too (argparse makes them of the parent's class)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, usage_line(self.prog, message) + "\n")


def shape_text(shape) -> Text:
    """A shape as a table cell: plain text (``[batch, 128]`` is not rich markup); ``?`` for a
    value whose shape the file does not declare (``None``)."""
    if shape is None:
        return Text("?")
    return Text("[" + ", ".join(str(d) for d in shape) + "]")


def add_input_shape(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D0,D1,...",
        help=f"an input's shape (repeatable; onnxsim's convention): {what}",
    )


def input_shapes(specs: list[str]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``--input-shape`` values (``images=1,3,640,640``) as ``((name, dims), ...)``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, eq, value = spec.rpartition("=")
        dims = value.split(",")
        if not eq or not name or not all(d.strip().isdigit() and int(d) > 0 for d in dims):
            raise InputError(
                f"--input-shape {spec}: write NAME=D0,D1,... with positive sizes "
                "(images=1,3,640,640)"
            )
        if name in shapes:
            raise InputError(f"--input-shape {name}: given twice")
        shapes[name] = tuple(int(d) for d in dims)
    return tuple(shapes.items())


def positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"not a number: {text}") from e
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return v

    return parse


def source(args) -> tuple[object, str]:
    """The model a command reads: a file, or a bundled example (``--example NAME``); one of
    them is required (a usage error otherwise)."""
    from eqsat import pipeline

    if args.model and args.example:
        raise UsageError("give a model file or --example, not both")
    if args.model:
        return Path(args.model), args.model
    if not args.example:
        raise UsageError("give a model file or --example NAME (see `eqsat examples`)")
    return pipeline.example_model(args.example), f"example:{args.example}"


def check_output(output: str, model: str | None = None) -> None:
    """An output path that can be written: not a folder, in a folder that exists, not the input."""
    if Path(output).is_dir():
        raise InputError(f"{output} is a directory")
    if not Path(output).resolve().parent.is_dir():
        raise InputError(f"{output}: the directory {Path(output).parent} does not exist")
    if model and Path(output).resolve() == Path(model).resolve():
        raise InputError("the output would overwrite the input; choose another -o")


class nullctx:  # noqa: N801 (used like contextlib.nullcontext)
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def status(message: str, show: bool):
    """A spinner on stderr when ``show`` (a terminal, no --json), else a context of None."""
    return err.status(message, spinner="dots") if show else nullctx()
