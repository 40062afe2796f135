"""The workers of one ``gateway serve --workers N``, and which of them died.

A worker killed while an agent's write is on its way leaves an intent that may
have landed. The agent sees its connection reset and, like most SDKs, sends the
write again, and the kernel hands the resend to a live worker (or the dead one's
replacement). To stop it there, the live workers must know at once that a sibling
died: the heartbeat lease that tells the processes of a store (``Recovery``) takes
seconds to lapse, and an SDK resends in half of one. The master knows first (it
waits on its children), so it says so here: a shared mapping the master makes
before it forks, as ``SharedCounts`` is, holding

- a generation, one more per death, that a worker reads before each write (one
  read of shared memory; no lock, no system call);
- the names of the last ``RING`` workers that died;
- each worker's process name (``Store.process``, as its intents carry it), written
  by the worker once it has one and read by the master when the worker dies.

A worker that sees the generation move reads the names it has not seen, under the
file's lock, and marks the dead workers' writes as left (``WriteResends.strand``).
"""

from __future__ import annotations

import struct

from gateway.services.inflight_shared import SharedMap

RING = 64  # deaths remembered: more between two writes of a worker are looked up by lease
NAME = 64  # bytes of a process name (``Store.process``: a pid and 8 hex digits)
_GENERATION = struct.Struct("<Q")


class Siblings(SharedMap):
    """Made by the master before it forks; each worker calls ``as_worker`` then ``named``."""

    def __init__(self, workers: int) -> None:
        self._slots = _GENERATION.size + RING * NAME  # the workers' names start here
        super().__init__("gateway-siblings", workers, self._slots + workers * NAME)

    def named(self, name: str) -> None:
        """This worker's process name, for the master to tell the others when it dies."""
        assert self.worker is not None, "as_worker() first"
        with self._locked():
            self._put(self._slots + self.worker * NAME, name)

    @property
    def generation(self) -> int:
        """How many workers died so far (read without the lock: a torn read can only
        differ from the last one seen, which sends the reader to ``dead_since``)."""
        return int(_GENERATION.unpack_from(self._map, 0)[0])

    def died(self, index: int) -> str | None:
        """The master: worker ``index`` is gone; its name (None if it had none yet)."""
        with self._locked():
            at = self._slots + index * NAME
            name = self._get(at)
            if name:
                (generation,) = _GENERATION.unpack_from(self._map, 0)
                self._put(_GENERATION.size + (generation % RING) * NAME, name)
                _GENERATION.pack_into(self._map, 0, generation + 1)
                self._put(at, "")
            return name or None

    def dead_since(self, seen: int) -> tuple[int, list[str]]:
        """The generation now and the names of the workers that died since ``seen`` (the
        last ``RING`` of them)."""
        with self._locked():
            (generation,) = _GENERATION.unpack_from(self._map, 0)
            first = max(seen, generation - RING)
            return generation, [self._get(_GENERATION.size + (n % RING) * NAME)
                                for n in range(first, generation)]

    def _put(self, at: int, name: str) -> None:
        data = name.encode()[:NAME]
        self._map[at:at + NAME] = data + b"\0" * (NAME - len(data))

    def _get(self, at: int) -> str:
        return bytes(self._map[at:at + NAME]).rstrip(b"\0").decode()
