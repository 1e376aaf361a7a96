"""The `ddpm` command line: one module per sub-command (train, sample, interpolate, sweep, eval,
report, featnet, presets, bench, export, import: import_run.py; inpaint and edit:
edit_images.py), the flags several take in
`args`. User errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from ..errors import DDPMError
from . import (
    bench,
    edit_images,
    export,
    featnet,
    import_run,
    interpolate,
    presets,
    report,
    sample,
    sweep,
    train,
)
from . import eval as eval_command

MAX_MESSAGE = 1000  # characters of an error line; longer ones are cut (a value shown in full)
# the order `ddpm --help` lists them in
COMMANDS = (train, sample, edit_images, interpolate, sweep, eval_command, report, featnet, presets,
            bench, export, import_run)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        self.exit(2, f"ddpm: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `ddpm` parser; each sub-command's module adds its own (`add_command`)."""
    parser = _Parser(prog="ddpm", description="Denoising diffusion probabilistic models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `ddpm ARGV` -> exit code: 0 done, 2 a user error (one line on stderr), 130 stopped."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for the run's record
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="ddpm: %(message)s"
    )
    command: Callable[[argparse.Namespace], int] = args.func  # each add_command sets it
    try:
        return command(args)
    except DDPMError as error:
        from ..train.signals import TrainingStopped

        message = str(error)
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        print(
            f"ddpm: {'stopped' if isinstance(error, TrainingStopped) else 'error'}: {message}",
            file=sys.stderr,
        )
        return 130 if isinstance(error, TrainingStopped) else 2
    except KeyboardInterrupt:
        print("ddpm: interrupted", file=sys.stderr)
        return 130
