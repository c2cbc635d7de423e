"""One trainer per workdir: `<workdir>/lock.json`, created only if absent, names its holder.

    with workdir_lock.acquire(workdir):   # LockHeldError (a errors.UserError) if a live trainer holds it
        ... train ...

The lock holds the host name, pid, start time and command of its trainer (and, to tell this machine
and this pid from others that look the same, the kernel's boot id, the pid namespace and the
process's start time in clock ticks). While held, a background thread renews it every
`HEARTBEAT_S` (the file's mtime locally, the object's update time on Cloud Storage). A second
trainer finds it and stops with a message naming the holder, unless the lock is abandoned:

- written on this machine by a process that no longer exists (killed with SIGKILL, out of memory,
  the machine rebooted): taken over at once, with a warning;
- written on another machine (another host name, or another container's pid namespace), whose pids
  cannot be looked at from here: abandoned once it has gone `STALE_AFTER_S` without renewal, as after
  the preemption of a Spot VM or a SLURM requeue onto another node.

It is removed when training ends, by an exception too, and when SIGTERM or Ctrl-C stops the trainer,
in its start-up as in its loop (grace_jax/run/stops.py).

Creation is atomic: locally the record is written to a temporary file and hard-linked to lock.json
(the link fails if one exists, and a reader never sees a half-written record); on gs:// the object is
uploaded with the precondition ifGenerationMatch=0 (only if absent). Taking over deletes only the
lock that was judged abandoned (locally: renamed away and compared, put back if it changed; on gs://:
deleted with ifGenerationMatch of the generation that was read), then creates a new one the same way,
so two trainers taking over at once cannot both win.

Several processes (a multi-host job): only process 0 takes the lock (grace_jax.infra.distributed's
`on_process_0`; the others stop with the same message when it is refused). The job's other processes
write into the same workdir under process 0's coordination, so one lock per job is what excludes a
second job; per-process locks would only add a way to leave stale ones behind.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shlex
import socket
import sys
import threading
import time
import uuid

from grace_jax.infra import cli, errors, paths

LOCK_NAME = "lock.json"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0  # 10 missed heartbeats: longer than any stall of a live trainer


class LockHeldError(errors.UserError):
    """Another trainer holds the workdir."""


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), "" if unknown:
    with the boot id, it tells a pid from a later process that reuses the number."""
    stat = _read_text(f"/proc/{pid}/stat")
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _this_process() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([os.path.basename(sys.executable), *sys.argv]),
        "boot_id": _read_text("/proc/sys/kernel/random/boot_id"),
        "pid_namespace": _pid_namespace(),
        "pid_start": _process_start(os.getpid()),
        "token": uuid.uuid4().hex,
    }


def _on_this_machine(holder: dict) -> bool:
    """Whether the holder's pid can be looked up here: same host name, boot and pid namespace."""
    return (
        holder.get("host") == socket.gethostname()
        and holder.get("boot_id", "") == _read_text("/proc/sys/kernel/random/boot_id")
        and holder.get("pid_namespace", "") == _pid_namespace()
    )


def _running(holder: dict) -> bool:
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    start = holder.get("pid_start", "")
    return not start or _process_start(pid) in ("", start)


def abandoned_because(holder: dict, age_s: float) -> str | None:
    """Why the lock of `holder` (renewed `age_s` seconds ago) may be taken over, or None."""
    if not holder:
        return f"unreadable and not renewed for {age_s:.0f} s" if age_s > STALE_AFTER_S else None
    if _on_this_machine(holder):
        if not _running(holder):
            return f"its trainer (pid {holder.get('pid')} on this host) no longer runs"
        return None
    if age_s > STALE_AFTER_S:
        return f"not renewed for {age_s:.0f} s by host {holder.get('host')!r} (abandoned after {STALE_AFTER_S:.0f} s)"
    return None


def _held_message(path: str, holder: dict, age_s: float) -> str:
    if not holder:
        return (
            f"{path} exists but cannot be read; if no trainer uses this workdir, delete it, or train into "
            "another --workdir."
        )
    who = (
        f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started_utc')}: "
        f"{holder.get('command', '?')}"
    )
    message = f"{paths.dirname(path)} is in use by another trainer ({who}). Wait for it to finish or stop it"
    if _on_this_machine(holder):
        return message + f" (kill {holder.get('pid')}), or train into another --workdir."
    left = max(0.0, STALE_AFTER_S - age_s)
    return (
        message + ", or train into another --workdir. If that trainer is gone with its machine, its lock "
        f"counts as abandoned {left:.0f} s from now (renewed {age_s:.0f} s ago); or delete {path}."
    )


# ------------------------------------------------------------------------------------ storage
class _LocalFile:
    """lock.json on a local (or mounted) file system; a version is the record's bytes."""

    def __init__(self, path: str):
        self.path = path

    def create(self, data: bytes):
        tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return None
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                return self._create_without_links(data)
        except OSError as e:
            raise errors.ConfigError(
                f"--workdir={os.path.dirname(self.path)} cannot be written ({e.strerror or e}): choose a "
                "folder you can write."
            ) from None
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return data

    def _create_without_links(self, data: bytes):
        # File systems without hard links (some FUSE mounts): exclusive creation, then the record; a
        # reader in between sees an empty file, which it takes as held (it is only seconds old).
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return data

    def read(self):
        """(bytes, version, seconds since renewal), or None if there is no lock."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
            age = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None
        return data, data, age

    def renew(self, version):
        found = self.read()
        if found is None or found[1] != version:
            return None
        os.utime(self.path)
        return version

    def remove(self, version) -> bool:
        aside = f"{self.path}.{uuid.uuid4().hex}.removed"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            with open(aside, "rb") as f:
                moved = f.read()
            if moved != version:  # someone else's lock, created after the look: put it back
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
                return False
            return True
        finally:
            os.remove(aside)


class _CloudObject:
    """lock.json as a Cloud Storage object; a version is the object's generation."""

    def __init__(self, uri: str):
        from google.api_core import exceptions
        from google.cloud import storage

        self.uri = uri
        self._errors = exceptions
        bucket, _, self._name = uri[len("gs://") :].partition("/")
        # project=None: object calls need none, and the client would otherwise insist on finding one.
        self._bucket = storage.Client(project=None).bucket(bucket)

    def _blob(self):
        return self._bucket.blob(self._name)

    def create(self, data: bytes):
        blob = self._blob()
        try:
            blob.upload_from_string(data, content_type="application/json", if_generation_match=0)
        except self._errors.PreconditionFailed:
            return None
        except self._errors.NotFound:
            raise errors.NotFoundError(
                f"--workdir={paths.dirname(self.uri)}: no bucket {self._bucket.name!r}."
            ) from None
        except self._errors.Forbidden as e:
            raise errors.ConfigError(f"--workdir={paths.dirname(self.uri)} cannot be written: {e.message}") from None
        return blob.generation

    def read(self):
        blob = self._bucket.get_blob(self._name)
        if blob is None:
            return None
        try:
            data = blob.download_as_bytes(if_generation_match=blob.generation)
        except (self._errors.NotFound, self._errors.PreconditionFailed):
            return None
        age = time.time() - blob.updated.timestamp()
        return data, blob.generation, age

    def renew(self, version):
        found = self.read()
        if found is None or found[1] != version:
            return None
        blob = self._blob()
        try:
            blob.upload_from_string(found[0], content_type="application/json", if_generation_match=version)
        except self._errors.PreconditionFailed:
            return None
        return blob.generation

    def remove(self, version) -> bool:
        try:
            self._blob().delete(if_generation_match=version)
        except (self._errors.NotFound, self._errors.PreconditionFailed):
            return False
        return True


# ------------------------------------------------------------------------------------ the lock
class WorkdirLock:
    """The lock of one workdir, held by this process from `acquire()` to `release()`."""

    def __init__(self, workdir: str):
        self.path = paths.join(workdir, LOCK_NAME)
        self.record = _this_process()
        self._store = _CloudObject(self.path) if paths.is_gcs(self.path) else _LocalFile(self.path)
        self._version = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> WorkdirLock:
        data = (json.dumps(self.record, indent=2) + "\n").encode()
        for _ in range(10):  # the holder releasing, or another trainer taking over, while looking
            version = self._store.create(data)
            if version is not None:
                self._version = version
                self._thread = threading.Thread(target=self._renew, name="workdir-lock", daemon=True)
                self._thread.start()
                return self
            found = self._store.read()
            if found is None:
                continue
            content, found_version, age = found
            try:
                holder = json.loads(content)
            except ValueError:
                holder = {}
            reason = abandoned_because(holder, age)
            if reason is None:
                raise LockHeldError(_held_message(self.path, holder, age))
            if self._store.remove(found_version):
                cli.warn(f"taking over {self.path}: {reason} (it was {holder.get('command', 'unreadable')}).")
        raise LockHeldError(f"{self.path}: other trainers keep taking this lock; is one starting in a loop?")

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._mutex:
                if self._version is None:
                    return
                try:
                    version = self._store.renew(self._version)
                except Exception as e:  # noqa: BLE001 -- a failed renewal is retried at the next beat
                    cli.warn(f"could not renew {self.path} ({type(e).__name__}: {e}); trying again later.")
                    continue
                if version is None:
                    cli.warn(
                        f"{self.path} was taken over by another trainer; this one keeps running, but "
                        "both now write into the same workdir: stop one of them."
                    )
                    self._version = None
                    return
                self._version = version

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._mutex:
            if self._version is not None:
                self._store.remove(self._version)
                self._version = None

    def __enter__(self) -> WorkdirLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(workdir: str) -> WorkdirLock:
    """Takes `<workdir>/lock.json` (creating a local workdir); raises LockHeldError naming the holder."""
    if not paths.is_uri(workdir):
        try:
            os.makedirs(workdir, exist_ok=True)
        except OSError as e:
            raise errors.ConfigError(f"--workdir={workdir} cannot be created ({e.strerror or e}).") from None
    return WorkdirLock(workdir).acquire()
