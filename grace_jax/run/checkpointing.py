"""Checkpoints of the whole training state: model, optimizer, step, RNG and the data iterator.

Two orbax `CheckpointManager`s live under `<workdir>/checkpoints`: `last/` (the newest few, for
resuming after a crash exactly where training stopped, data order included) and `best/` (the one with
the best validation UAR, for prediction). The directory may be local (made absolute: orbax refuses
relative paths) or a gs:// URI (orbax writes it through tensorstore and etils.epath). Saves are
asynchronous; `wait()` before the process exits.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from grace_jax.infra import aftermath, cli, errors, paths

_large_slices_only = False

DAMAGED = "damaged"  # <checkpoints>/damaged/: steps that could not be read, set aside, never deleted
_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's name for a save not yet finalised
_DAMAGED_REMEDY = {
    "best": "Use --checkpoint=last, or copy the run again from where it was made.",
    "last": "Use --checkpoint=best, or copy the run again; resuming training in this --workdir sets the "
    "damaged step aside and goes on from the newest readable one.",
}
# Storage that did not answer, or a machine out of memory: the files may well be whole.
_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "UNAUTHENTICATED")


def damage_reason(exc: BaseException) -> str | None:
    """A short reason when `exc` (or an exception it came from) says a checkpoint file is missing, cut
    short or unreadable; None for anything else (the caller re-raises it).

    TensorStore reports a truncated array file as a ValueError ("OUT_OF_RANGE: Error reading ...",
    "DATA_LOSS: ..."), wrapped by orbax in a bare Exception; a step folder emptied by a cut copy is a
    FileNotFoundError (no _METADATA); a cut JSON item (the data iterator, the metrics) a ValueError.
    """
    seen = set()
    found = None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        if any(code in text for code in _TRANSIENT) or isinstance(exc, (PermissionError, MemoryError)):
            return None
        if isinstance(exc, (FileNotFoundError, ValueError, EOFError, KeyError)):
            found = exc  # the innermost such exception says most
        exc = exc.__cause__ or exc.__context__
    if found is None:
        return None
    aftermath.expect_closed_loop_echoes()  # the reads still in flight
    line = (str(found).strip().splitlines() or [type(found).__name__])[0]
    return f"{type(found).__name__}: {line[:400]}{'...' if len(line) > 400 else ''}"


_READ_ERROR = "Encountered error while reading array index"  # orbax's wrapper of a failed array read
_TENSORSTORE_READ_ERROR = re.compile(r"^[A-Z_]+: Error reading ")  # "OUT_OF_RANGE: Error reading ..."


def _is_read_error(error: BaseException | None) -> bool:
    return error is not None and (_READ_ERROR in str(error) or bool(_TENSORSTORE_READ_ERROR.match(str(error))))


class _ReadErrorEchoFilter(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" tracebacks of orbax's array reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not ("never retrieved" in str(record.msg) and _is_read_error(error))


def _quiet_unretrieved_read_errors() -> None:
    """orbax reads a checkpoint's arrays in concurrent asyncio tasks. When several fail (a damaged
    file holds many arrays), one error is raised, and `restore` reports it in one line; the reads
    still pending are abandoned, and whenever they are collected (often at exit) each printed a full
    traceback: asyncio logs a failed task or future never awaited (orbax's read error, or TensorStore's
    own), and a pending read closed turns the GeneratorExit into orbax's read error (it catches
    BaseException), which Python prints as "Exception ignored in: <coroutine ...>". These echoes of
    the read error are dropped here; any other error is printed as before."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _ReadErrorEchoFilter) for f in logger.filters):
        logger.addFilter(_ReadErrorEchoFilter())
    aftermath.drop_when(_is_read_error)


def _move(source: str, target: str) -> None:
    if paths.is_uri(source):
        # gs://: fsspec (gcsfs) moves the folder's objects one by one (copy, then delete); etils'
        # rename refuses a target whose parent "folder" does not exist, and object stores have none.
        import fsspec

        fs, _ = fsspec.core.url_to_fs(source)
        fs.mv(source, target, recursive=True)
    else:
        os.rename(source, target)


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _agreed_step(step: int) -> int:
    """The oldest of the steps each process could read (with one process, `step`): each process reads
    its own array files, so one may find a step damaged that another reads."""
    if jax.process_count() == 1:
        return step
    import numpy as np
    from jax.experimental import multihost_utils

    return int(np.min(multihost_utils.process_allgather(np.asarray(step, np.int64))))


def _replica_parallel_only_for_large_slices() -> None:
    """Replicated arrays are split across their replicas for writing ("replica-parallel", orbax's
    default) only where each replica's slice is at least 4 MiB; smaller ones are written whole by
    their first replica.

    Replica-parallel saving slices each array on device, and every distinct slice shape is an op
    compiled on first use: with 8 devices the first save of 300 small replicated arrays took 49 s
    instead of 0.5 s, that of the tiny training state 10 s. Arrays whose slices pass the threshold
    (e.g. ViT-B/16's token embedding) are few and worth splitting across hosts.
    """
    global _large_slices_only
    if _large_slices_only:
        return
    handler = ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=4 << 20)
    try:
        # The override is deliberate: orbax's public register_type_handler(override=True) logs
        # "Type handler registry type ... overriding jax.Array" at WARNING on every run, which told
        # users nothing. The registry's own `ignore_warnings` (what orbax passes for its defaults)
        # says the override is meant; it is only reachable through orbax's private module.
        from orbax.checkpoint._src.serialization import type_handler_registry

        type_handler_registry.GLOBAL_TYPE_HANDLER_REGISTRY.add(jax.Array, handler, override=True, ignore_warnings=True)
    except (ImportError, AttributeError, TypeError):  # another orbax layout: same effect, warning and all
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    _large_slices_only = True


class Checkpoints:
    """`last` and `best` checkpoint managers under one directory."""

    def __init__(self, directory: str, *, max_to_keep: int = 2):
        self.directory = directory = paths.resolve(directory)
        _replica_parallel_only_for_large_slices()
        _quiet_unretrieved_read_errors()

        def manager(name, keep):
            # Each manager's own barrier names: orbax names its cross-process barriers after the
            # step ("_async_write_complete.6"), so `best` and `last` saving one step at once (after an
            # evaluation) met in one barrier, and several processes aborted with "Barrier ... is
            # already ongoing".
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name),
            )
            return ocp.CheckpointManager(paths.join(directory, name), options=options)

        self.last = manager("last", max_to_keep)
        self.best = manager("best", 1)
        self._saves_in_flight = 0  # saves started and not yet waited for (aftermath.io_started)

    def latest_step(self) -> int | None:
        return self.last.latest_step()

    def save(
        self,
        step: int,
        state: Any,
        *,
        data_iterator=None,
        metrics: dict | None = None,
        best: bool = False,
    ) -> None:
        """Saves `state` (a pytree of arrays) and, when given, the grain iterator and metrics JSON."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        if metrics is not None:
            items["metrics"] = ocp.args.JsonSave(metrics)
        aftermath.io_started()  # orbax writes in the background until `wait`
        self._saves_in_flight += 1
        try:
            (self.best if best else self.last).save(step, args=ocp.args.Composite(**items), force=True)
        except BaseException:
            self._saves_finished(failed=True)
            raise

    def restore(
        self,
        abstract_state: Any,
        *,
        data_iterator=None,
        step: int | None = None,
        best: bool = False,
        on_damage: str = "set_aside",
    ) -> tuple[int, Any]:
        """Restores into the shapes, dtypes and shardings of `abstract_state`; returns (step, state).

        The data iterator, when given and saved with the checkpoint, is restored in place.

        A step that cannot be read (a truncated array file, a folder emptied by a cut copy) is, with
        `on_damage="set_aside"` (the trainer), named in one warning line, moved into
        `<checkpoints>/damaged/` (never deleted) once an older step has been read, and the newest
        readable step is used; where none is readable a UserError says how to start fresh and nothing
        is moved. With `on_damage="raise"` (predict, evaluate, export: they leave a run as they found
        it) the damaged step is a UserError naming it. `step` given: only that step is tried.
        """
        if on_damage not in ("set_aside", "raise"):
            raise ValueError(f"on_damage must be 'set_aside' or 'raise', got {on_damage!r}")
        manager, name = (self.best, "best") if best else (self.last, "last")
        if on_damage == "set_aside" and step is None:
            self._set_aside_interrupted_saves(manager, name)
        steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
        if not steps:
            raise errors.NotFoundError(
                f"{paths.join(self.directory, name)}: no checkpoint; the run has not saved one yet."
            )
        damaged = []  # (step, reason) of the steps tried before the one read
        for candidate in steps:
            try:
                state = self._restore_step(manager, candidate, abstract_state, data_iterator)
            except errors.UserError:
                raise  # the checkpoint is whole but does not fit this config
            except Exception as e:
                reason = damage_reason(e)
                if reason is None:
                    raise  # not a damaged file: e.g. out of memory, or storage unreachable
                if on_damage == "raise":
                    raise errors.UserError(
                        f"{paths.join(str(manager.directory), str(candidate))}: this checkpoint is damaged and "
                        f"cannot be read ({reason}). {_DAMAGED_REMEDY[name]}"
                    ) from None
                damaged.append((candidate, reason))
                continue
            step = _agreed_step(candidate)
            if step != candidate:  # another process could not read `candidate`: all take the older step
                state = self._restore_step(manager, step, abstract_state, data_iterator)
            break
        else:
            tried = "; ".join(f"step {s}: {r}" for s, r in damaged)
            raise errors.UserError(
                f"{manager.directory}: no checkpoint can be read, each is damaged ({tried}). Nothing was "
                f"moved. To start fresh, train into another --workdir, or move {self.directory} away "
                "(e.g. to checkpoints.damaged) and run the same command again."
            )
        # Every newer step, on every process alike (each calls _set_aside's barrier once per step).
        reasons = dict(damaged)
        for candidate in (s for s in steps if s > step):
            moved = self._set_aside(manager, name, candidate)
            if jax.process_index() == 0:
                reason = reasons.get(candidate, "another process could not read its part")
                cli.warn(
                    f"{paths.join(str(manager.directory), str(candidate))} cannot be read ({reason}); moved to "
                    f"{moved} (nothing deleted). Resuming from step {step}, the newest readable checkpoint."
                )
        return step, state

    def _restore_step(self, manager, step: int, abstract_state: Any, data_iterator) -> Any:
        step_dir = paths.join(str(manager.directory), str(step))
        self._check_fits(abstract_state, paths.join(step_dir, "state"))
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        # A checkpoint written outside training (grace_jax.convert, at step 0) holds no data iterator:
        # the iterator is then left as it is, at the start of the data, where a run at step 0 is.
        if data_iterator is not None and paths.exists(paths.join(step_dir, "data")):
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        with aftermath.asynchronous_read():
            return manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def _set_aside(self, manager, name: str, step: int | str) -> str:
        """Moves `<manager>/<step>` to `<checkpoints>/damaged/<name>-<step>[-n]` (process 0 only; the
        others wait for it) and makes the manager forget it; returns where it went."""
        source = paths.join(str(manager.directory), str(step))
        folder = paths.join(self.directory, DAMAGED)
        target = paths.join(folder, f"{name}-{step}")
        n = 1
        while paths.exists(target):
            n += 1
            target = paths.join(folder, f"{name}-{step}-{n}")
        if jax.process_index() == 0:
            paths.makedirs(folder)
            _move(source, target)
        _sync(f"grace_jax_set_aside_{name}_{step}")
        manager.reload()
        return target

    def _set_aside_interrupted_saves(self, manager, name: str) -> None:
        """A save cut off before orbax finalised it (`<step>.orbax-checkpoint-tmp`): orbax already
        skips it; it is moved aside so that it neither lingers nor meets a new save of that step."""
        directory = str(manager.directory)
        if not paths.isdir(directory):
            return
        for entry in paths.listdir(directory):
            if _TMP_SUFFIX in entry:
                moved = self._set_aside(manager, name, entry)
                if jax.process_index() == 0:
                    cli.warn(
                        f"{paths.join(directory, entry)}: a save that never finished (the process stopped "
                        f"during it); moved to {moved} (nothing deleted)."
                    )

    @staticmethod
    def _check_fits(abstract_state: Any, state_dir: str) -> None:
        """Compares shapes with the checkpoint's metadata before restoring: orbax's own error for a
        mismatch comes out of its worker threads, buried in hundreds of lines of tracebacks."""

        def by_path(tree) -> dict[str, tuple]:
            def name(keys):
                return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in keys)

            return {name(p): tuple(leaf.shape) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}

        from etils import epath

        # The item's handler reads the array metadata of this item folder directly; a Checkpointer
        # would also look for a step's _CHECKPOINT_METADATA here and log a warning that it is missing.
        handler = ocp.StandardCheckpointHandler()
        try:
            stored = by_path(handler.metadata(epath.Path(state_dir)))
        finally:
            handler.close()
        wanted = by_path(abstract_state)
        problems = [
            f"{k}: stored {stored.get(k, 'nothing')}, the config makes {wanted.get(k, 'nothing')}"
            for k in sorted(set(stored) | set(wanted))
            if stored.get(k) != wanted.get(k)
        ]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise errors.ConfigError(
                f"{state_dir}: the checkpoint does not fit the model of this config: {'; '.join(problems[:3])}"
                f"{more}. Use the config it was made with (its run's config.json), or train into another "
                "--workdir."
            )

    def best_metrics(self) -> dict | None:
        """The metrics saved with `best`; None without one. A damaged `best` is moved aside with a
        warning (the trainer's next evaluation saves a new one)."""
        step = self.best.latest_step()
        if step is None:
            return None
        try:
            with aftermath.asynchronous_read():
                return self.best.restore(step, args=ocp.args.Composite(metrics=ocp.args.JsonRestore()))["metrics"]
        except Exception as e:
            reason = damage_reason(e)
            if reason is None:
                raise
        moved = self._set_aside(self.best, "best", step)
        if jax.process_index() == 0:
            cli.warn(
                f"{paths.join(str(self.best.directory), str(step))} cannot be read ({reason}); moved to {moved} "
                "(nothing deleted). The next evaluation saves a new best checkpoint."
            )
        return None

    def wait(self) -> None:
        self._finishing(lambda: (self.last.wait_until_finished(), self.best.wait_until_finished()))

    def close(self) -> None:
        self._finishing(lambda: (self.last.close(), self.best.close()))

    def _finishing(self, finish) -> None:
        try:
            finish()
        except BaseException:
            self._saves_finished(failed=True)
            raise
        self._saves_finished(failed=False)

    def _saves_finished(self, failed: bool) -> None:
        for _ in range(self._saves_in_flight):
            aftermath.io_finished()
        self._saves_in_flight = 0
        if failed:  # with no save in flight too: a failed wait or close
            aftermath.expect_closed_loop_echoes()
