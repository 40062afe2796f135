"""``max_in_flight`` counted across the workers of one ``gateway serve --workers N``.

The master makes this before it forks: a shared mapping of an in-memory file
(``memfd_create``: nothing on disk, a read-only root is fine), inherited by every
worker, holding per upstream one count per worker; the file's ``fcntl`` lock
guards it. A worker takes a slot when the counts of all workers
add up to less than the limit, and adds one to its own count; it gives the slot
back by taking one off. The lock is the kernel's record lock, which dies with
its holder: a worker killed while holding it blocks nobody. A worker that dies
holding slots has its count zeroed by the master before it starts another
(``forget``), so the slots it held are free again.

An upstream is found by a 64-bit hash of its name, in a table of ``ENTRIES``; a
worker that finds it full (more upstreams with ``max_in_flight`` than that)
counts that upstream for itself alone, and says so once.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("gateway.pipeline")
ENTRIES = 256
_KEY = struct.Struct("<Q")


class SharedMap:
    """``size`` bytes of memory the master maps before it forks, shared with each of its
    ``workers`` (``as_worker`` once after the fork), and the file's lock."""

    def __init__(self, name: str, workers: int, size: int) -> None:
        self.workers = workers
        self._lock = anonymous_file(name)
        os.ftruncate(self._lock, size)
        self._map = mmap.mmap(self._lock, size)  # MAP_SHARED: the forks see it
        self.worker: int | None = None

    def as_worker(self, index: int) -> None:
        if not 0 <= index < self.workers:
            raise ValueError(f"worker {index} of {self.workers}")
        self.worker = index

    def close(self) -> None:
        self._map.close()
        os.close(self._lock)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self._lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._lock, fcntl.LOCK_UN)


class SharedCounts(SharedMap):
    """Each worker calls ``as_worker`` once after the fork; the master calls ``forget``."""

    def __init__(self, workers: int) -> None:
        self._row = struct.Struct(f"<{workers}i")
        self._width = _KEY.size + self._row.size
        super().__init__("gateway-in-flight", workers, ENTRIES * self._width)
        self._full_said = False

    def take(self, name: str, limit: int) -> bool | None:
        """One slot of ``name`` for this worker if the workers hold fewer than ``limit``;
        None when the table has no room for ``name`` (count it in this process)."""
        assert self.worker is not None, "as_worker() first"
        with self._locked():
            at = self._entry(name)
            if at is None:
                return None
            counts = list(self._row.unpack_from(self._map, at))
            if sum(counts) >= limit:
                return False
            counts[self.worker] += 1
            self._row.pack_into(self._map, at, *counts)
            return True

    def give_back(self, name: str) -> None:
        assert self.worker is not None, "as_worker() first"
        with self._locked():
            at = self._entry(name)
            if at is None:
                return
            counts = list(self._row.unpack_from(self._map, at))
            counts[self.worker] = max(0, counts[self.worker] - 1)
            self._row.pack_into(self._map, at, *counts)

    def in_flight(self, name: str) -> int:
        with self._locked():
            at = self._entry(name, add=False)
            return 0 if at is None else sum(self._row.unpack_from(self._map, at))

    def forget(self, worker: int) -> None:
        """A dead worker's slots, freed (the master, before it starts another)."""
        with self._locked():
            for entry in range(ENTRIES):
                at = entry * self._width + _KEY.size
                counts = list(self._row.unpack_from(self._map, at))
                if counts[worker]:
                    counts[worker] = 0
                    self._row.pack_into(self._map, at, *counts)

    def _entry(self, name: str, add: bool = True) -> int | None:
        """Where ``name``'s counts are (open addressing on its hash; 0 marks a free
        entry), added if ``add``; None when absent, or the table is full."""
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
        key = key or 1
        start = key % ENTRIES
        for probe in range(ENTRIES):
            offset = ((start + probe) % ENTRIES) * self._width
            (found,) = _KEY.unpack_from(self._map, offset)
            if found == key:
                return offset + _KEY.size
            if found == 0:
                if not add:
                    return None
                _KEY.pack_into(self._map, offset, key)
                return offset + _KEY.size
        if not self._full_said:
            self._full_said = True
            log.warning("more than %d upstreams have max_in_flight: %s is counted per "
                        "worker", ENTRIES, name)
        return None


def anonymous_file(name: str) -> int:
    """A file nobody can name: in memory where the system has ``memfd_create`` (Linux),
    else a temporary file unlinked at once."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create(name, os.MFD_CLOEXEC)
    fd, path = tempfile.mkstemp(prefix=f"{name}-")
    os.unlink(path)
    return fd
