"""Room in the billing spool: how much it can still take, keeping it bounded, giving space back.

The spool (:class:`~airflow_dcache.server.storage.billing_spool.BillingSpool`, SQLite in WAL mode)
needs disk space for two things: the write-ahead log, where every append *and every delete* is
written first, and the database file, which the WAL is copied into at a checkpoint. A full file
system hurts it in a particular way: a spool that filled its file system by itself (broker down
for long) cannot delete what it has delivered once the broker returns, never drains, and replays
its head to Kafka over and over. Hence three rules, each with its own amount of space:

* **Bounded WAL** (``wal_limit``: an eighth of the reserve, 4 to 1000 pages). The WAL is
  checkpointed every ``wal_pages`` pages and cut back to that size afterwards
  (``wal_autocheckpoint`` / ``journal_size_limit``), so the data lives in the database file and the
  WAL stays a small working area that later writes reuse. A checkpoint only runs between
  transactions, so writes go in small ones: deletes of at most ``wal_pages // 2`` records
  (:meth:`SpaceAwareSpool.remove`), appends of at most ``append_budget`` bytes (the publisher cuts
  its batches so).
* **Uploads stop at the reserve** (``reserve``: 16 MiB, or an eighth of a smaller file system).
  :meth:`SpaceAwareSpool.shortage` reports a shortage when the free bytes of the file system plus
  the database's own free pages (left by deleted records, reused by new ones) are below the
  reserve, or the file system alone has less than the floor. The publisher then refuses uploads
  (507), so what remains is for the records of reads and of uploads already committed.
* **Appends stop at the floor** (``floor``: half the reserve, at least four WAL working sizes).
  :meth:`SpaceAwareSpool.append_shortage` keeps the last ``floor`` bytes for the drain: deleting
  delivered records and the checkpoints in between need at most about two WAL working sizes. Below
  it, records wait in the publisher's memory until deliveries free pages or space returns.
* **Compaction.** When the spool is empty again and holds at least half the reserve in free
  pages, :meth:`SpaceAwareSpool.compact` vacuums it and truncates the WAL, so the space an
  outage took goes back to the file system (by default the pools' file system too).

A failed append needs no repair: it is one SQLite transaction, rolled back as a whole when a
write fails (WAL frames without a commit record are ignored and overwritten), so the spool
keeps exactly the records of the appends that returned.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from airflow_dcache.server.storage.billing_spool import BillingSpool

log = logging.getLogger(__name__)

DEFAULT_RESERVE = 16 << 20
MIN_RESERVE = 128 << 10
MIN_WAL_PAGES = 4
MAX_WAL_PAGES = 1000  # SQLite's default wal_autocheckpoint
_SQLITE_FULL = 13


def is_out_of_space(exc: BaseException) -> bool:
    """True when ``exc``, or an error it was raised while handling, says the disk or the quota is full.

    A failed SQLite append surfaces as ``cannot rollback - no transaction is active`` raised while
    handling the ``database or disk is full`` error, so the whole chain is looked at.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(current, sqlite3.Error):
            code = getattr(current, "sqlite_errorcode", None)
            if (isinstance(code, int) and code & 0xFF == _SQLITE_FULL) or "disk is full" in str(current):
                return True
        current = current.__cause__ or current.__context__
    return False


def default_reserve(directory: Path) -> int:
    """16 MiB, or an eighth of a smaller file system (at least 128 KiB)."""
    st = os.statvfs(directory)
    return max(MIN_RESERVE, min(DEFAULT_RESERVE, st.f_blocks * st.f_frsize // 8))


class SpaceAwareSpool(BillingSpool):
    """A :class:`BillingSpool` with a bounded WAL that knows whether it has room (see the module)."""

    def __init__(self, path: Path, reserve: int | None = None) -> None:
        super().__init__(path)
        try:
            self.reserve = max(MIN_RESERVE, reserve) if reserve is not None else default_reserve(path.parent)
            with self._lock:
                self.page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
                self.wal_pages = max(MIN_WAL_PAGES, min(MAX_WAL_PAGES, self.reserve // 8 // self.page_size))
                self.wal_limit = self.wal_pages * self.page_size
                self.floor = self.reserve // 2
                self.append_budget = self.wal_limit // 2  # bytes of records per append transaction
                self.delete_chunk = max(1, self.wal_pages // 2)  # records per delete transaction
                self._conn.execute(f"PRAGMA wal_autocheckpoint={self.wal_pages}")
                self._conn.execute(f"PRAGMA journal_size_limit={self.wal_limit}")
        except BaseException:
            self.close()
            raise
        self._slack = 0  # bytes in the database's free pages, as of the last refresh()
        self.refresh()

    def remove(self, seqs: Iterable[int]) -> None:
        """Forget delivered records, in transactions small enough for the bounded WAL.

        If one fails, the earlier ones stay done; deleting a record again is harmless.
        """
        batch = list(seqs)
        for start in range(0, len(batch), self.delete_chunk):
            super().remove(batch[start:start + self.delete_chunk])

    @property
    def slack(self) -> int:
        return self._slack

    def refresh(self) -> None:
        """Re-read the database's free pages (after appends and deletes; the delivery thread calls it)."""
        try:
            with self._lock:
                pages = int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])
        except sqlite3.Error:
            return
        self._slack = pages * self.page_size

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still allocate on the spool's file system (0 if unknown)."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return 0
        return int(st.f_bavail * st.f_frsize)

    def shortage(self) -> str | None:
        """Why the spool may soon be unable to keep new records, or None when it has room.

        One ``statvfs`` call and a cached number: cheap enough for every upload, from any thread.
        """
        free = self.free_bytes()
        if free < self.floor:
            return f"{free} bytes free on the spool's file system, below its {self.floor}-byte floor"
        if free + self._slack < self.reserve:
            return (f"{free} bytes free on the spool's file system and {self._slack} inside the spool, "
                    f"below the {self.reserve}-byte reserve")
        return None

    def append_shortage(self, size: int) -> str | None:
        """Why ``size`` more bytes of records must wait (they would eat into the floor), or None."""
        free = self.free_bytes()
        if free < self.wal_limit or free + self._slack < self.floor + 2 * size:
            return (f"{free} bytes free on the spool's file system and {self._slack} inside the spool: "
                    f"the last {self.floor} are kept for deleting delivered records")
        return None

    def compact(self) -> bool:
        """Give the space of an emptied spool back to the file system; True when it did.

        Only when no record is left and at least half the reserve lies in free pages, so a spool
        in steady use (records deleted as fast as they come) is never vacuumed.
        """
        if self._slack < self.reserve // 2:
            return False
        try:
            with self._lock:
                if self._conn.execute("SELECT EXISTS(SELECT 1 FROM records)").fetchone()[0]:
                    return False
                self._conn.execute("VACUUM")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # e.g. no room for VACUUM's copy; the free pages stay usable
            log.debug("billing: cannot compact the spool %s: %s", self.path, exc)
            return False
        finally:
            self.refresh()
        return True
