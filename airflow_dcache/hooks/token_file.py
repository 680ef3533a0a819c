"""Bearer tokens read from a file that an OIDC agent keeps fresh (``htgettoken``, ``oidc-agent``).

Public because the function runner's token exchange reads the pipeline's token the same way the hooks
do, and must notice a rotation the same way.
"""

from __future__ import annotations

import os
import threading

from airflow_dcache.exceptions import DCacheError

__all__ = ["TokenFileReader"]



class TokenFileReader:
    """Re-read a token file only when it changes: OIDC agents rotate it while long tasks run."""

    def __init__(self, path: str) -> None:
        self.path = os.path.expanduser(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int, int] | None = None
        self._token: str | None = None

    def read(self) -> tuple[str, bool]:
        """Return the token and whether it is new since the previous call (so it can be masked once)."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise DCacheError(f"cannot read token file {self.path}: {exc.strerror}") from None
        # nanosecond times and the inode: two tokens of equal length written within one coarse mtime
        # tick, or swapped in by rename (htgettoken, oidc-agent), still count as a change
        stamp = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp or self._token is None:
                with open(self.path, encoding="utf-8") as fh:
                    token = fh.read().strip()
                if not token:
                    raise DCacheError(f"token file {self.path} is empty")
                changed = token != self._token
                self._stamp, self._token = stamp, token
                return token, changed
            return self._token, False
