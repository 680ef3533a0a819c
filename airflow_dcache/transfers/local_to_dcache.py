"""Upload a local file to dCache, streamed and checksum-verified by the hook."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_dcache.hooks.arguments import check_mode
from airflow_dcache.links.dcache import DCacheFileLink, DCacheViewLink, persist_file_links
from airflow_dcache.operators.base import DCacheBaseOperator
from airflow_dcache.paths import check_at_parse


class LocalFilesystemToDCacheOperator(DCacheBaseOperator):
    """Stream ``local_path`` to ``path`` and verify what dCache stored.

    :param local_path: the file on the worker (templated).
    :param path: the dCache path (templated).
    :param checksum: ``adler32`` (default), ``md5``, ``sha-256``, ``sha-512`` or ``none``; see the hook.
    :param overwrite: replace an existing file.
    :param make_parents: create missing parent directories.
    :param xattrs: extended attributes set atomically with the upload (templated).
    :return: ``{"path", "size", "checksums", "verified_by", "markers"}``.
    """

    template_fields: Sequence[str] = ("local_path", "path", "xattrs", "dcache_conn_id")
    operator_extra_links = (DCacheFileLink(), DCacheViewLink())

    def __init__(
        self,
        *,
        local_path: str,
        path: str,
        checksum: str = "adler32",
        overwrite: bool = True,
        make_parents: bool = True,
        xattrs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_at_parse(path, field="path")
        try:
            check_mode(checksum)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"checksum: {exc}") from None
        self.local_path = local_path
        self.path = path
        self.checksum = checksum
        self.overwrite = overwrite
        self.make_parents = make_parents
        self.xattrs = xattrs

    def execute(self, context: Any) -> dict[str, Any]:
        check_at_parse(self.path, field="path")
        if not os.path.isfile(self.local_path):
            raise FileNotFoundError(f"local_path: {self.local_path!r} is not a file")
        result = self.hook.upload(self.local_path, self.path, checksum=self.checksum,  # type: ignore[arg-type]
                                  overwrite=self.overwrite, make_parents=self.make_parents, xattrs=self.xattrs)
        persist_file_links(context, self.dcache_conn_id, self.hook.settings.api_url, self.path)
        self.log.info("uploaded %s bytes to %s (verified by %s)", result.size, self.path, result.verified_by)
        return result.to_dict()
