"""The error policy of every command line of the pack: ``python -m chameleon_core`` (the stream),
``python -m chameleon_core.training`` and ``python -m chameleon_core.eval``.

- **A user error** -- a wrong path, value, file or setting: anything the person running the command can fix -- prints
  one message on stderr, ``<prog>: error: <what was wrong, the value received, the fix>``, and exits with code 2
  (:data:`EXIT_USER_ERROR`, argparse's code for a bad argument). The exception types that mean a user error are
  :data:`USER_ERRORS`: ``ValueError`` (every loader's own error type subclasses it: ``CheckpointError``,
  ``DataError``, ``VideoFileError``, ``ConfigError`` ...), ``OSError`` (a path that is missing, a folder, not
  writable, a full disk: the OS names the path) and ``ImportError`` (an optional package that is not installed).
- **An interrupt** (Ctrl-C) prints one line and exits with 130.
- **Anything else is a defect of the pack**: it keeps its traceback (exit code 1), so that it can be reported.
- With ``verbose`` (``-v`` / ``--log-level DEBUG``) a user error's traceback is logged too.

Every check that can be made before work starts is made before it, by each command (its ``plan`` / ``preflight``
step), so a user error never costs an hour of training first.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

logger = logging.getLogger(__name__)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError)
"""Exception types whose message is shown alone (no traceback) with exit code 2."""


class UsageError(ValueError):
    """A command-line value the user must change; the message names the option, the value and the fix."""


def say(stream: TextIO, text: str) -> None:
    """The command's own terminal output (a summary on stdout, an error on stderr), apart from the log."""
    stream.write(text + "\n")
    stream.flush()


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """``parser.parse_args(argv)``, or the exit code when argparse stopped (it has printed the usage and the error,
    or the help), so that ``main(argv)`` returns a code instead of raising ``SystemExit`` when called in-process."""
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USER_ERROR


def run_command(prog: str | None, body: Callable[[], int | None], *, verbose: bool = False,
                interrupted: str = "interrupted") -> int:
    """Run ``body`` under the policy above; returns the exit code (``body``'s, or 2 / 130). Messages start with
    ``<prog>: `` (argparse's form), or with nothing when ``prog`` is None."""
    lead = f"{prog}: " if prog else ""
    try:
        return int(body() or 0)
    except USER_ERRORS as e:
        if verbose:
            logger.debug("details of the error below", exc_info=True)
        say(sys.stderr, f"{lead}error: {user_message(e)}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        say(sys.stderr, f"{lead}{interrupted}")
        return EXIT_INTERRUPTED


def user_message(e: BaseException) -> str:
    """The message of a user error; an ``OSError`` without one is given its path and reason."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        target = f" -> {e.filename2}" if e.filename2 is not None else ""
        return f"{e.strerror}: {e.filename}{target}; check the path and its permissions"
    return str(e) or type(e).__name__


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable_ancestor(path: Path, flag: str, what: str) -> None:
    """The nearest existing folder above ``path`` is a folder this process may write in."""
    anc = _first_existing(path.parent)
    if anc.exists() and not anc.is_dir():
        raise UsageError(f"{flag} {path}: {anc} is a file, not a folder, so the {what} cannot be made there; pass a "
                         "path inside a folder")
    if anc.is_dir() and not os.access(anc, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: the folder {anc} is not writable by this user; pass a path you can write, "
                         "or fix its permissions")


def check_output_file(path: str | os.PathLike[str], flag: str = "--out", example: str = "results.json") -> Path:
    """``path`` can be written as a file (not a folder; no file where one of its folders should be; writable)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{flag} {p} is a folder; pass the path of the file to write, e.g. {p / example}")
    _writable_ancestor(p, flag, "file")
    return p


def check_output_folder(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """``path`` is a folder, or can be made one (no file in its place or above it; writable)."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {p} is an existing file, not a folder; pass a folder path (it is created if "
                         "missing), or move the file away")
    _writable_ancestor(p / "x", flag, "folder")
    return p


__all__ = ["EXIT_INTERRUPTED", "EXIT_USER_ERROR", "USER_ERRORS", "UsageError", "check_output_file",
           "check_output_folder", "parse_args", "run_command", "say", "user_message"]
