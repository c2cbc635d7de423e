"""What every command does with an error its user can fix: one line on stderr, a non-zero exit.

    from grace_jax.infra import cli

    if __name__ == "__main__":
        cli.run(main)            # absl commands (grace_jax.main, predict, ...)
        cli.run_plain(main)      # argparse commands (launch/*)

A `UserError` (or one of the standard-library-compatible subclasses below, or any exception class
that subclasses it, such as data_prep's BuildError or CLIP's CheckpointError) raised anywhere in a
command ends it with

    <prog>: error: <message>

on stderr and exit status 1; usage errors (`UsageError`, absl's `app.UsageError`, bad flags, an
unknown config field) exit with 2. The message names the file, flag or config field and what to do;
there is no traceback, because it would bury that line. Every other exception is a bug or an
environment problem nobody anticipated and keeps its traceback.

The subclasses that are also `FileNotFoundError` / `ValueError` keep `except` clauses (and tests)
written against the standard types working.

Two faults that are no user error still end in one line: a full disk (an OSError ENOSPC or EDQUOT
anywhere in the exception's chain, or met first by a writer thread such as orbax's: `no space left on
device writing PATH (free space; a checkpoint there takes about N MB) ...`, exit 1, the writer threads'
tracebacks dropped), and a syntax error in the user's own config file (the file, line and caret,
exit 2).

No jax here: data_prep and grace_jax.folds import this module and should start in a second.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import shutil
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from grace_jax.infra import aftermath
from grace_jax.infra.errors import ConfigError, NotFoundError, UsageError, UserError  # noqa: F401 (the CLI's own names)


def prog_name() -> str:
    """`grace_jax.main` for `python -m grace_jax.main`, else the script's file name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        # `python -m grace_jax.serve` runs the package's __main__ module: the command is the package.
        return spec.name.removesuffix(".__main__")
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "grace_jax"


def fail(message: str, exit_code: int = 1, prog: str | None = None) -> NoReturn:
    """Ends the process with `<prog>: error: <message>` on stderr."""
    sys.stdout.flush()
    sys.stderr.write(f"{prog or prog_name()}: error: {str(message).rstrip()}\n")
    sys.stderr.flush()
    aftermath.last_line_written()
    _quiet_shutdown()
    sys.exit(exit_code)


def _quiet_shutdown() -> None:
    """The error line stays the last one when worker processes are still being stopped: grain's
    prefetch thread stops its worker process while the interpreter's exit closes the same iterator
    again, and multiprocessing prints the loser's AttributeError traceback after the line."""
    import multiprocessing

    if multiprocessing.active_children():
        sys.stderr = open(os.devnull, "w")  # for the rest of the process's life


def warn(message: str) -> None:
    """`<prog>: warning: <message>` on stderr: something was done the user should know about."""
    sys.stderr.write(f"{prog_name()}: warning: {message}\n")
    sys.stderr.flush()


def guarded(main: Callable[..., Any], prog: str | None = None) -> Callable[..., Any]:
    """`main` with user errors turned into `fail(...)`; everything else propagates unchanged."""
    from absl import app

    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            fail(str(e), e.exit_code, prog)
        except app.UsageError as e:
            fail(str(e), 2, prog)
        except Exception as e:
            # A full disk, met by this thread or (first) by a writer thread: one line, not the
            # traceback of every thread that tried to write.
            full = disk_full(e) or _thread_disk_full
            if full is None:
                raise
            fail(disk_full_message(full), 1, prog)

    return wrapped


_TRACKER_QUIET = "ignore:resource_tracker:UserWarning"


def run(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> NoReturn:
    """absl's `app.run(main)`, with user errors (in flag parsing too) as one line and exit 1 or 2.

    The console shows the command's own lines: INFO logs of other libraries only with an explicit
    `--verbosity`, and no accelerator probing where none is installed (grace_jax/infra/console.py).
    """
    from absl import app

    from grace_jax.infra import console

    console.prefer_cpu()
    aftermath.in_command()
    aftermath.drop_when(_record_disk_full)
    # multiprocessing's resource tracker (started later, by grain's worker processes) takes its warning
    # filters from these options: when a command ends on an error while workers run, it cleans up
    # their shared memory without "There appear to be 12 leaked shared_memory objects" after the line.
    if _TRACKER_QUIET not in sys.warnoptions:
        sys.warnoptions.append(_TRACKER_QUIET)

    def quiet_main(argv):
        console.quiet_third_party_info()
        _quiet_disk_full_in_logs()
        return main(argv)

    app.run(guarded(quiet_main), argv=argv, flags_parser=_parse_flags)
    raise AssertionError("unreachable: app.run exits")


def run_plain(main: Callable[[], int | None]) -> NoReturn:
    """For commands without absl (argparse's own usage errors already exit 2 with one line)."""
    aftermath.in_command()
    sys.exit(guarded(main)())


# ------------------------------------------------------------------------------------ flag parsing
def _parse_flags(argv: list[str]) -> list[str]:
    from absl import flags

    try:
        rest = flags.FLAGS(argv)
        for flag in _config_flags().values():
            # ml_collections keeps a config file's IOError until the config is first read: read it
            # here, so that the error is reported as the flag's.
            getattr(flag.value, "keys", None)
        return rest
    except UserError as e:  # raised by a config file's get_config (e.g. configs/run.py:<missing dir>)
        fail(_with_config_flag(argv, str(e)), UsageError.exit_code)
    except flags.Error as e:
        message = _flag_error_message(argv, e)
        if message is None:
            raise
        fail(message, UsageError.exit_code)
    except (AttributeError, KeyError):  # ml_collections: an override names no field
        message = _unknown_config_field(argv)
        if message is None:
            raise
        fail(message, UsageError.exit_code)
    except SyntaxError as e:  # the user's own config file (or one it imports) does not parse
        if not _users_file(e.filename):
            raise
        fail(_with_config_flag(argv, _syntax_error_message(e)), UsageError.exit_code)
    except OSError as e:  # ml_collections defers a config file's IOError until the config is read
        if not str(e).startswith("Configuration is not available"):
            raise
        cause = e.__cause__ or e
        if isinstance(cause, SyntaxError) and _users_file(cause.filename):
            fail(_with_config_flag(argv, _syntax_error_message(cause)), UsageError.exit_code)
        fail(_with_config_flag(argv, _config_load_message(argv, cause)), UsageError.exit_code)


def _users_file(filename: str | None) -> bool:
    """A file outside the grace_jax package (configs/ is linked into it but lives beside it)."""
    if not filename or not os.path.isfile(filename):
        return False
    package = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return not os.path.realpath(filename).startswith(package + os.sep)


def _syntax_error_message(error: SyntaxError) -> str:
    """'syntax error in FILE, line N: invalid syntax' and, below it, the line and Python's caret."""
    head = f"syntax error in {error.filename}, line {error.lineno}: {error.msg}"
    # format_exception_only: '  File "...", line N', the source line, the caret line, 'SyntaxError: ...'.
    lines = traceback.format_exception_only(type(error), error)
    shown = [line.rstrip("\n") for line in lines[1:-1] if line.strip()]
    return "\n".join([head, *shown])


def _innermost(error: BaseException) -> BaseException:
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        nxt = error.__cause__ or error.__context__
        if nxt is None:
            break
        error = nxt
    return error


def _flag_error_message(argv: list[str], error: Exception) -> str | None:
    from absl import flags

    text = str(error)
    required = re.search(r"Flag --(\S+) must have a value other than None", text)
    if required:
        return f"--{required.group(1)} is required (--helpshort lists the flags)."
    if "Error whilst parsing config file" in text:
        # ml_collections re-raises a config file's ValueError with its traceback pasted into the
        # message; the original exception, at the end of the chain, holds the one line that matters.
        root = _innermost(error)
        if not isinstance(root, (ValueError, UserError)) or root is error:
            return None  # e.g. a TypeError: a bug in the config file, keep its traceback
        return _with_config_flag(argv, str(root))
    if isinstance(error, flags.UnrecognizedFlagError):  # its first line names the flag and a guess
        return f"{text.splitlines()[0]} (--helpshort lists the flags)."
    return text


def _config_load_message(argv: list[str], cause: BaseException) -> str:
    for name in _config_flags():
        value = _flag_value(argv, name)
        if value is not None and not os.path.exists(value.split(":", 1)[0]):
            return "no such config file."
    text = str(cause).strip()
    return text.splitlines()[-1] if text else type(cause).__name__


def _config_flags() -> dict[str, Any]:
    """{name: flag} of the config-file flags (ml_collections' DEFINE_config_file) of this program."""
    from absl import flags
    from ml_collections.config_flags import config_flags

    found = {}
    for name, flag in flags.FLAGS._flags().items():  # noqa: SLF001 -- absl has no public iterator
        if isinstance(getattr(flag, "parser", None), config_flags.ConfigFileFlagParser):
            found[name] = flag
    return found


def _with_config_flag(argv: list[str], message: str) -> str:
    for name in _config_flags():
        value = _flag_value(argv, name)
        if value is not None:
            return f"--{name}={value}: {message}"
    return message


def _flag_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        for prefix in (f"--{name}=", f"-{name}="):
            if arg.startswith(prefix):
                return arg[len(prefix) :]
        if arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _field_paths(config, prefix: str = "") -> list[str]:
    """Every field of a ConfigDict as a dotted path, sub-dicts included (they can be set whole)."""
    out = []
    for key, value in config.items():
        out.append(prefix + key)
        if hasattr(value, "items") and not isinstance(value, dict):
            out += _field_paths(value, f"{prefix}{key}.")
    return out


def _unknown_config_field(argv: list[str]) -> str | None:
    """'--config.optim.bach_size=8: configs/demo.py has no field optim.bach_size; did you mean
    optim.batch_size?', or None when every override names a field (the error was something else)."""
    for name, flag in _config_flags().items():
        source = _flag_value(argv, name)
        if source is None:
            continue
        try:
            config = flag.parser.parse(source)  # loads the file again: the first load succeeded
            fields = set(_field_paths(config))
        except Exception:  # noqa: BLE001 -- then nothing more can be said than the original error
            return None
        for arg in argv:
            match = re.match(rf"^--?{re.escape(name)}\.([^=]+)(=.*)?$", arg)
            if not match or match.group(1) in fields:
                continue
            path = match.group(1)
            close = difflib.get_close_matches(path, sorted(fields), n=2, cutoff=0.85)
            hint = f"did you mean {' or '.join(close)}?" if close else _siblings(path, fields)
            return f"{arg}: {source.split(':', 1)[0]} has no field {path}; {hint}"
    return None


def _siblings(path: str, fields: set[str]) -> str:
    parent = path.rpartition(".")[0]
    names = sorted(
        f[len(parent) + 1 :]
        for f in fields
        if parent and f.startswith(parent + ".") and "." not in f[len(parent) + 1 :]
    )
    if names:
        return f"the fields of {parent} are {', '.join(names)}."
    top = sorted(f for f in fields if "." not in f)
    return f"the top-level fields are {', '.join(top)}."


# ------------------------------------------------------------------------------------ a full disk
_NO_SPACE = re.compile(r"no space left on device|disk quota exceeded|\bENOSPC\b|\bEDQUOT\b", re.IGNORECASE)
# An absolute path or gs:// URI starting the text or after a quote or a space (not ".../value/0.0").
_PATH_IN_TEXT = re.compile(r"(?:^|(?<=[\s'\"]))(?:gs://|/)[^\s'\"(),;:]+")
_thread_disk_full: BaseException | None = None  # the first disk-full error a writer thread met


def disk_full(error: BaseException | None) -> BaseException | None:
    """The disk-full error in `error`'s chain (an OSError ENOSPC or EDQUOT, or an exception whose text
    says so, as tensorstore's and orbax's do), or None."""
    stack, seen = [error], set()
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        if _NO_SPACE.search(str(e)):
            return e
        stack += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
    return None


def disk_full_message(error: BaseException) -> str:
    """'no space left on device writing PATH (F free on its filesystem; ...): free space and run the
    same command again', with the space a checkpoint there takes when the path is one."""
    path = getattr(error, "filename", None)
    if not path:
        found = _PATH_IN_TEXT.findall(str(error))
        path = found[0] if found else None
    what = f"writing {path}" if path else "while writing"
    facts = []
    free = _free_bytes(path) if path else None
    if free is not None:
        facts.append(f"{_size(free)} free on its filesystem")
    needed = _checkpoint_size(path) if path else None
    if needed:
        facts.append(f"a checkpoint there takes about {_size(needed)}")
    detail = f" ({'; '.join(facts)})" if facts else ""
    ckpt = (
        "; the checkpoint being written is left unfinished and never used, the ones saved before are intact"
        if path and "checkpoint" in path
        else ""
    )
    return (
        f"no space left on device {what}{detail}{ckpt}. Free space there (or write elsewhere) and run the "
        "same command again."
    )


def _free_bytes(path: str) -> int | None:
    if "://" in path:
        return None
    folder = path
    while folder and not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent
    try:
        return shutil.disk_usage(folder or ".").free
    except OSError:
        return None


def _checkpoint_size(path: str) -> int | None:
    """Size of the newest finished step beside the orbax step folder `path` is in (`<dir>/<step>` or
    `<dir>/<step>.orbax-checkpoint-tmp...`): what the failed save needed, about. None elsewhere."""
    match = re.match(r"^(.*)/(\d+)\.orbax-checkpoint-tmp[^/]*(/|$)", path) if "://" not in path else None
    if match is None or not os.path.isdir(match.group(1)):
        return None
    # Finished steps beside it, else in the sibling folders (checkpoints/best beside checkpoints/last).
    parent = os.path.dirname(match.group(1))
    folders = [match.group(1)] + sorted(os.path.join(parent, n) for n in os.listdir(parent))
    for folder in folders:
        steps = (
            sorted((int(n) for n in os.listdir(folder) if n.isdigit()), reverse=True) if os.path.isdir(folder) else []
        )
        for step in steps:
            root = os.path.join(folder, str(step))
            total = sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(root) for f in files)
            if total:
                return total
    return None


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _record_disk_full(error: BaseException) -> bool:
    """For aftermath: writer threads (orbax, tensorstore, prefetch) that meet a full disk print no
    traceback each; the first such error is kept and reported once, as the command's one line, and
    tensorstore's callbacks into the aborted save's closed event loop are its echoes."""
    global _thread_disk_full
    full = disk_full(error)
    if full is None:
        return False
    if _thread_disk_full is None:
        _thread_disk_full = full
        aftermath.expect_closed_loop_echoes()
    return True


class _DiskFullFilter:
    """Drops log records about a full disk (orbax logs each failed write with its traceback)."""

    def filter(self, record) -> bool:
        global _thread_disk_full
        exc = record.exc_info[1] if record.exc_info else None
        full = disk_full(exc) if exc is not None else None
        if full is None and _NO_SPACE.search(str(record.msg)):
            full = OSError(errno.ENOSPC, str(record.getMessage()).splitlines()[0])
        if full is None:
            return True
        if _thread_disk_full is None:
            _thread_disk_full = full
            aftermath.expect_closed_loop_echoes()
        return False


def _quiet_disk_full_in_logs() -> None:
    import logging

    for handler in logging.getLogger().handlers:
        handler.addFilter(_DiskFullFilter())
