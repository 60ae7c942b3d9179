"""The server's private work folder, and removing the ones a killed server left behind.

Each running server holds an exclusive ``flock`` on ``<work root>.lock`` (beside the folder, so
the folder holds only jobs) for as long as it lives; the kernel drops the lock when the process dies, however it dies (kill -9 included).
On start, a server removes every ``zsdseg-serve-*`` folder of its own user in the same parent
whose lock it can take: no live server uses it, so it holds only a dead server's uploads and
results. A folder without a lock file is left alone for a minute (a server may be creating it).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, List, Optional

log = logging.getLogger("zsdseg.server")

PREFIX = "zsdseg-serve-"
LOCK_SUFFIX = ".lock"
UNLOCKED_GRACE_S = 60.0


def _take_lock(path: Path) -> Optional[IO]:
    """The open lock file with an exclusive lock, or None when another process holds it."""
    handle = open(path, "a+b")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def remove_stale_work_roots(parent: Path) -> List[Path]:
    """Remove the work folders in ``parent`` that no live server holds; returns what was removed."""
    removed = []
    for folder in sorted(Path(parent).glob(PREFIX + "*")):
        try:
            if folder.name.endswith(LOCK_SUFFIX) or not folder.is_dir() or folder.is_symlink() \
                    or folder.stat().st_uid != os.getuid():
                continue
            lock_path = _lock_path(folder)
            if not lock_path.exists():
                if time.time() - folder.stat().st_mtime < UNLOCKED_GRACE_S:
                    continue
                handle = None
            else:
                handle = _take_lock(lock_path)
                if handle is None:
                    continue  # a live server's folder
            try:
                shutil.rmtree(folder)
                if handle is not None:
                    lock_path.unlink()
            finally:
                if handle is not None:
                    handle.close()
            removed.append(folder)
        except OSError as error:
            log.warning("could not remove the stale work folder %s: %s", folder, error.strerror or error)
    return removed


def _lock_path(folder: Path) -> Path:
    return folder.with_name(folder.name + LOCK_SUFFIX)


class WorkRoot:
    """A live server's work folder and the lock that says so; ``release()`` removes both."""

    def __init__(self, parent: Optional[Path]):
        parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        removed = remove_stale_work_roots(parent)
        if removed:
            log.info("removed %d work folder(s) left by a server that is no longer running: %s",
                     len(removed), ", ".join(str(path) for path in removed))
        self.path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
        self._lock: Optional[IO] = _take_lock(_lock_path(self.path))

    def release(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock is not None:
            try:
                _lock_path(self.path).unlink()
            except OSError:
                pass
            self._lock.close()
            self._lock = None
