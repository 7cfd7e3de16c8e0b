"""The command line speaks the command line: --help shows every default, messages name flags, a closed pipe is quiet."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from kneel.cli import SUBCOMMANDS, HelpFormatter, main


def _available() -> list[str]:
    return [name for name, (module, _) in SUBCOMMANDS.items() if importlib.util.find_spec(module) is not None]


def _commands() -> list[tuple[str, ...]]:
    """Every (sub)command line whose --help a user can ask for: ``("predict",)``, ``("experiments", "run")``..."""
    out = []
    for name in _available():
        parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
        importlib.import_module(SUBCOMMANDS[name][0]).add_arguments(parser)
        out.append((name,))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                out.extend((name, sub) for sub in action.choices)
    return out


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_every_option_says_what_it_does_and_its_default(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # the help as printed, line breaks undone
    name = " ".join(command)
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    importlib.import_module(SUBCOMMANDS[command[0]][0]).add_arguments(parser)
    for sub in command[1:]:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[sub]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help, f"kneel {name} {label} has no help"
        shows_default = action.option_strings and action.default not in (None, False, argparse.SUPPRESS, [])
        if shows_default and not isinstance(action, argparse._StoreConstAction):
            said = "default" in action.help.lower() or f"(default: {action.default})" in text
            assert said, f"kneel {name} {label}: --help does not show the default {action.default!r}"


def test_messages_name_flags_on_the_command_line_and_arguments_in_python(tmp_path, capsys):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "inference"))
    from inference_helpers import write_dicom

    from kneel.io import MissingSpacingError, read_radiograph

    path = write_dicom(tmp_path / "no_spacing.dcm", np.full((64, 64), 100, np.uint16), spacing=None)
    assert main(["info", str(path)]) == 1
    line = capsys.readouterr().out
    assert "pass --spacing MM (mm per pixel) to override" in line and "spacing=" not in line
    with pytest.raises(MissingSpacingError) as error:
        read_radiograph(path)
    assert "pass spacing=MM (mm per pixel) to override" in str(error.value) and "--spacing" not in str(error.value)


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    for i in range(5):
        (tmp_path / f"file{i}.txt").write_text("not an image\n")
    proc = subprocess.Popen([sys.executable, "-m", "kneel", "info", "--json", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()  # like `| head` that has read what it wanted (here: nothing) before kneel writes
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
    assert proc.returncode == 1


def test_the_laterality_hint_names_the_flag_or_the_argument():
    from kneel.errors import use_cli_forms
    from kneel.inference.presence import KneesMode, PresenceRule, plan_knees

    def hint() -> str:
        film, _, notes = plan_knees(200.0, KneesMode.AUTO, None, PresenceRule())
        assert film == "single"
        return " ".join(notes)

    assert "(pass knees=R or knees=L)" in hint()
    use_cli_forms()
    try:
        assert "(pass --knees R or --knees L)" in hint()
    finally:
        use_cli_forms(False)
