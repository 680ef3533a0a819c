"""fsspec filesystem for ``dcache://<conn>/<path>``, declared under ``filesystems`` in the provider info.

Airflow's ``ObjectStoragePath`` imports :mod:`airflow_dcache.fs.dcache` through the provider manager and
calls its ``get_fs``; fsspec and universal_pathlib find the same classes through the ``fsspec.specs`` and
``universal_pathlib.implementations`` entry points (both needed before a ``dcache://`` path can be built).
"""

from __future__ import annotations
