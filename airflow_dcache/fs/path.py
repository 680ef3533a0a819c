"""The universal_pathlib class for ``dcache://`` (registered by entry point; ``ObjectStoragePath`` wraps it).

Nothing beyond UPath's generic behaviour is needed: fsspec names keep the URL's authority as their
first component (see :mod:`airflow_dcache.fs._paths`). What matters is loading the filesystem class
here: universal_pathlib derives (and caches, per process) how it splits ``dcache://`` paths from the
fsspec class *if that class is already imported* when the first path is built, and from a generic
``/``-rooted default otherwise, which would turn ``dcache://conn/x`` into the authority-less ``/conn/x``.
universal_pathlib imports this module (entry point) before it parses the first ``dcache://`` path.
"""

from __future__ import annotations

import fsspec
from upath import UPath

from airflow_dcache.fs._paths import SCHEME

fsspec.get_filesystem_class(SCHEME)  # imports and registers airflow_dcache.fs.dcache (see above)

__all__ = ["DCachePath"]


class DCachePath(UPath):
    """A ``dcache://<conn>/<path>`` path; I/O goes through :class:`airflow_dcache.fs.dcache.DCacheFileSystem`."""

    __slots__ = ()
