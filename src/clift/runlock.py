"""The run-folder lock: one launcher trains a run folder at a time (``<run_dir>/clift.lock``).

The runner holds ``clift.lock`` (JSON: host, pid, start time, command) while it trains. A second runner is
refused with a message naming the holder. A lock left by a process that died is stale: on the same host
clift sees that the pid is gone and takes the lock over; a lock from another host cannot be checked from
here, so the message says to delete the file once that job is known to be dead (``scancel``/``squeue``
tell). Suites fanned out over many launchers rely on it (:mod:`clift.fanout`).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clift.errors import ResumeError
from clift.safety import LOCK_FILE, UnsafePathError, write_error

# --------------------------------------------------------------------------------------------------
# the run-folder lock
# --------------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class RunLock:
    """A held ``clift.lock`` in a run folder; :meth:`release` removes it (only if it is still ours)."""

    path: Path
    holder: dict[str, Any]

    def ensure(self) -> None:
        """Write the lock again if the folder was emptied under us (``--force`` starts a run over)."""
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_new(self.path, self.holder)

    def release(self) -> None:
        try:
            if json.loads(self.path.read_text(encoding="utf-8")) == self.holder:
                self.path.unlink()
        except (OSError, ValueError):
            pass


def _write_new(path: Path, holder: dict[str, Any]) -> bool:
    """Create ``path`` holding ``holder`` unless it exists (atomic: O_CREAT | O_EXCL)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(holder, fh)
    return True


def _describe(holder: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')!r} since {started} ({holder.get('command', '?')})"


def acquire_run_lock(run_dir: Path) -> RunLock:
    """Take ``run_dir/clift.lock`` (see :func:`_acquire`).

    Raises:
        ResumeError: another live process (or a process on another host) holds the lock.
        UnsafePathError: the run folder or its lock cannot be written (read-only, permission, disk full).
    """
    try:
        return _acquire(run_dir)
    except OSError as err:
        if isinstance(err, UnsafePathError):
            raise
        raise write_error(run_dir, err, "run folder", "use a new output_dir (or name)") from None


def _acquire(run_dir: Path) -> RunLock:
    """Take ``run_dir/clift.lock`` for this process, or refuse naming the process that holds it.

    A lock whose holder is this very process (a run that failed earlier in the same interpreter) or a
    process on this host that no longer exists is stale and taken over.

    Raises:
        ResumeError: another live process (or a process on another host) holds the lock.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "command": shlex.join(sys.argv)}
    for _ in range(3):
        if _write_new(path, me):
            return RunLock(path, me)
        try:
            holder = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            holder = {}
        local = holder.get("host") == me["host"]
        if local and (holder.get("pid") == me["pid"] or not _alive(int(holder.get("pid", -1)))):
            path.unlink(missing_ok=True)  # stale: its process is gone (or is us); take it over
            continue
        where = "" if local else " (on another host: clift cannot check it is alive)"
        raise ResumeError(
            f"run folder {str(run_dir)!r} is being trained by {_describe(holder)}{where}. Two launchers must not "
            f"train one run at once: wait for it, or, if that process is dead, delete {str(path)!r} and rerun."
        )
    raise ResumeError(f"could not take the lock {str(path)!r}; another launcher keeps replacing it. Rerun.")


def lock_run(accelerator: Any, run_dir: Path) -> RunLock | None:
    """The run-folder lock, held by the main process; a refusal is raised on every process (none hangs).

    Raises:
        ResumeError: another launcher holds the folder (see :func:`acquire_run_lock`).
        UnsafePathError: the run folder cannot be written.
    """
    lock, error = None, None
    if accelerator.is_main_process:
        try:
            lock = acquire_run_lock(run_dir)
        except (ResumeError, UnsafePathError) as err:
            error = (isinstance(err, UnsafePathError), str(err))
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error])[0]
    if error is not None:
        unsafe, text = error
        raise UnsafePathError(text) if unsafe else ResumeError(text)
    return lock
