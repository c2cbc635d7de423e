"""The echoes of an error already reported are not printed again: the command's one line stays last.

A failed checkpoint read or a full disk is reported once, in one line (grace_jax/infra/cli.py,
grace_jax/run/checkpointing.py). The libraries underneath go on reporting the same failure from other
places, each with a full traceback:

- TensorStore's reads and writes still in flight complete into orbax's event loop, already closed:
  "RuntimeError: Event loop is closed", printed through `sys.excepthook` from TensorStore's threads,
  or as unraisable, at any time up to and during the interpreter's teardown;
- orbax's abandoned read tasks print their read error when they are collected;
- every writer thread that met the full disk prints its own OSError.

This module owns the three hooks those go through (`sys.excepthook`, `threading.excepthook`,
`sys.unraisablehook`). Callers say what an echo looks like (`drop_when`) and when closed-loop echoes
are expected (while a checkpoint read or save is in flight, `io_started`/`io_finished`, and for
good after one failed, `expect_closed_loop_echoes`); everything else is printed as before. In a command's
process (`cli.run` calls `in_command`), once the error line is written nothing more reaches stderr,
and once an echo is expected the interpreter's teardown writes nothing more to it: some echoes come
after Python's hooks are gone.

Standard library only (imported by infra.cli, which must start without jax).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator

_filters: list[Callable[[BaseException], bool]] = []
_expect_closed_loop = False
_in_flight = 0  # checkpoint reads and saves not yet finished
_in_command = False
_silence_registered = False
_previous_excepthook = sys.__excepthook__
_previous_thread_hook = threading.__excepthook__
_previous_unraisable_hook = sys.__unraisablehook__


def drop_when(predicate: Callable[[BaseException], bool]) -> None:
    """Exceptions for which `predicate` is true are not printed by the three hooks (it may record them)."""
    _install()
    if predicate not in _filters:
        _filters.append(predicate)


def expect_closed_loop_echoes() -> None:
    """From now on "Event loop is closed" is an echo of a reported failure; in a command, teardown is quiet."""
    global _expect_closed_loop
    _install()
    _expect_closed_loop = True
    silence_teardown()


def io_started() -> None:
    """A checkpoint read or save began. Until `io_finished`, "Event loop is closed" can only be one of
    its parts aborted after another failed (TensorStore prints it from its own threads, possibly
    before the failure reaches the caller and is reported)."""
    global _in_flight
    _install()
    _in_flight += 1


def io_finished(failed: bool = False) -> None:
    """The read or save ended; if it `failed`, closed-loop echoes are expected from now on."""
    global _in_flight
    _in_flight = max(0, _in_flight - 1)
    if failed:
        expect_closed_loop_echoes()


@contextlib.contextmanager
def asynchronous_read() -> Iterator[None]:
    """`io_started` / `io_finished` around a checkpoint read."""
    io_started()
    failed = True
    try:
        yield
        failed = False
    finally:
        io_finished(failed)


def in_command() -> None:
    """Marks this process as a command's (not a test's or a notebook's): teardown may be silenced."""
    global _in_command
    _in_command = True
    _install()


def silence_teardown() -> None:
    """In a command's process, stderr (Python's and the file descriptor) is closed at exit, after the
    atexit handlers registered before it: nothing printed during teardown can follow the last line."""
    global _silence_registered
    if _in_command and not _silence_registered:
        _silence_registered = True
        atexit.register(_close_stderr)


def last_line_written() -> None:
    """In a command's process, once its error line is written, stderr (Python's and the file
    descriptor) is closed: orbax's background saves, still running when the process exits, log the
    interpreter's shutdown under them ("cannot schedule new futures after shutdown") with tracebacks."""
    if _in_command:
        _close_stderr()


def is_echo(error: BaseException | None) -> bool:
    if error is None:
        return False
    closed_loop = isinstance(error, RuntimeError) and str(error) == "Event loop is closed"
    if closed_loop and (_expect_closed_loop or _in_flight > 0):
        return True
    return any(predicate(error) for predicate in list(_filters))


def _close_stderr() -> None:
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 -- for the rest of the process's life


def _excepthook(exc_type, exc, tb) -> None:
    if not is_echo(exc):
        _previous_excepthook(exc_type, exc, tb)


def _thread_hook(args) -> None:
    if not is_echo(args.exc_value):
        _previous_thread_hook(args)


def _unraisable_hook(unraisable) -> None:
    if not is_echo(unraisable.exc_value):
        _previous_unraisable_hook(unraisable)


def _install() -> None:
    """Each hook wraps whatever is there, unless it is already this module's (a test runner may
    restore its own hooks between tests)."""
    global _previous_excepthook, _previous_thread_hook, _previous_unraisable_hook
    if sys.excepthook is not _excepthook:
        _previous_excepthook, sys.excepthook = sys.excepthook, _excepthook
    if threading.excepthook is not _thread_hook:
        _previous_thread_hook, threading.excepthook = threading.excepthook, _thread_hook
    if sys.unraisablehook is not _unraisable_hook:
        _previous_unraisable_hook, sys.unraisablehook = sys.unraisablehook, _unraisable_hook
