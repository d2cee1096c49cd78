"""The command line as a shell user meets it: help for every argument, quiet in a pipeline."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Callable

from app.cli import _parser
from app.services.context import Context
from app.settings import Settings
from tests.helpers import ROOT, settings_env


def undocumented(parser: argparse.ArgumentParser, name: str) -> list[str]:
    """The commands and arguments under `parser` that `--help` would list without a text."""
    missing: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            texts = {choice.dest: choice.help for choice in action._choices_actions}
            for command, subparser in action.choices.items():
                if not texts.get(command):
                    missing.append(f"{name} {command}")
                missing += undocumented(subparser, f"{name} {command}")
        elif not action.help:
            missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_command_and_argument_has_help() -> None:
    assert undocumented(_parser(), "python -m app") == []
    # The walk sees what it should: a command or an argument without help is caught.
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    commands.add_parser("helped", help="x").add_argument("--quiet")
    commands.add_parser("bare").add_argument("name", help="x")
    assert undocumented(parser, "p") == ["p helped --quiet", "p bare"]


def test_a_closed_pipe_ends_a_command_quietly(
    settings: Settings, ctx: Context, make_key: Callable[..., str]
) -> None:
    make_key("acme")
    # A pipe nobody reads, as when `head` has exited: the first write fails with EPIPE.
    read, write = os.pipe()
    os.close(read)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "app", "keys", "list"],
            cwd=ROOT,
            env=settings_env(settings),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    # No traceback, and the status of a program that SIGPIPE stopped, as `yes | head` gives.
    assert (run.returncode, run.stderr) == (128 + signal.SIGPIPE, "")
