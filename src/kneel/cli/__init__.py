"""The ``kneel`` command: a thin shell whose subcommands each parse arguments and call one library function.

Each subcommand lives in its own module ``kneel.cli.<name>`` (imported only when used, so ``kneel --help`` is fast)
with ``add_arguments(parser)`` and ``run(args) -> int``. Errors derived from ``KneelError`` are printed as one line;
``--debug`` shows the traceback. ``--help`` of every subcommand shows each option's default; a reader that goes away
(``kneel info --json . | head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

from kneel import __version__
from kneel.errors import KneelError, cli_forms, use_cli_forms

# name -> (module, one-line help). Order is the order shown by --help.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("kneel.cli.info", "print spacing, photometry, bits and transfer syntax of radiographs (or the error)"),
    "synth": ("kneel.cli.synth", "generate synthetic bilateral knee radiographs with exact ground truth"),
    "prepare": ("kneel.cli.prepare", "build the low-cost and high-cost training datasets from DICOMs + annotations"),
    "train": ("kneel.cli.train", "train a low-cost or high-cost model (cross-validation, transfer, DDP)"),
    "experiments": ("kneel.cli.experiments", "run a grid of training experiments (one per GPU, or in turn)"),
    "predict": ("kneel.cli.predict", "find landmarks in radiographs (files, folders, globs, lists)"),
    "evaluate": ("kneel.cli.evaluate", "compare predicted landmarks with ground truth: tables, curves, examples"),
    "evaluate-cv": ("kneel.cli.evaluate_cv", "report on the out-of-fold predictions of a training run"),
    "calibrate": ("kneel.cli.calibrate", "fit a model's uncertainty radius (stated coverage) on annotated films"),
    "measure": ("kneel.cli.measure", "joint-space widths, plateau/condyle widths and joint-line angles per knee"),
    "crop": ("kneel.cli.crop", "standard knee ROIs (16-bit PNG/npz) with exact affine transforms for graders"),
    "review": ("kneel.cli.review", "check and correct landmarks in the browser; export them as ground truth"),
    "serve": ("kneel.cli.serve", "HTTP service for landmark prediction"),
    "models": ("kneel.cli.models", "fetch the published models by name (kneel-2019) into the cache; list them"),
    "convert-snapshot": ("kneel.cli.convert_snapshot", "convert reference KNEEL snapshots to kneel's model format"),
    "export-onnx": ("kneel.cli.export_onnx", "export a model to ONNX (soft-argmax inside, dynamic batch)"),
    "demo": ("kneel.cli.demo", "synthetic cohort -> prepare -> train -> predict -> evaluate -> report.html"),
}


class HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help unless the help already speaks of its default, or it has none to
    show (flags that are off unless given, options that are unset unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            not action.option_strings
            or "default" in text.lower()
            or action.default in (None, False, argparse.SUPPRESS, [])
            or isinstance(action, argparse._StoreConstAction | argparse._HelpAction | argparse._VersionAction)
        ):
            return text
        return f"{text} (default: %(default)s)"


def _available() -> dict[str, tuple[str, str]]:
    """Subcommands whose module exists (parts of the project can be missing in a partial install)."""
    found = {}
    for name, (module, help_text) in SUBCOMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = (module, help_text)
    return found


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog="kneel",
        description="Anatomical landmarks in knee radiographs (KNEEL, arXiv 1907.12237, re-implemented).",
    )
    parser.add_argument("--version", action="version", version=f"kneel {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, str] = {}
    for name, (module, help_text) in _available().items():
        modules[name] = module
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, modules = build_parser()
    # Two-phase parse: find the subcommand, then let its module build its own parser.
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    if not argv or argv[0] not in modules:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(modules[name])
    sub_parser = argparse.ArgumentParser(
        prog=f"kneel {name}", description=SUBCOMMANDS[name][1], formatter_class=HelpFormatter
    )
    module.add_arguments(sub_parser)
    sub_args = sub_parser.parse_args(rest)
    from kneel.io.radiograph import quiet_reader_warnings

    quiet_reader_warnings()  # this process is kneel's: pydicom's notes on odd values are noise here
    api_forms = not cli_forms()
    use_cli_forms()  # messages name flags (--spacing MM), not Python arguments (spacing=MM)
    try:
        code = int(module.run(sub_args) or 0)
        sys.stdout.flush()  # here, not at exit, so that a reader gone away is handled below
        return code
    except BrokenPipeError:
        # The reader of our output went away (kneel info --json . | head): stop quietly, like other Unix tools, and
        # send what is still buffered nowhere so that Python's own flush at exit does not fail again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KneelError as exc:
        if debug:
            raise
        print(f"kneel {name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"kneel {name}: interrupted", file=sys.stderr)
        return 130
    finally:
        if api_forms:
            use_cli_forms(False)  # main() called from Python (tests, scripts): leave the process as it was


if __name__ == "__main__":
    sys.exit(main())
