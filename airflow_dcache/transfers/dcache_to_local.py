"""Download a dCache file to the worker, streamed, written atomically, checksum-verified by the hook."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from airflow_dcache.links.dcache import DCacheFileLink, DCacheViewLink, persist_file_links
from airflow_dcache.operators.base import DCacheBaseOperator
from airflow_dcache.paths import check_at_parse


class DCacheToLocalFilesystemOperator(DCacheBaseOperator):
    """Stream ``path`` to ``local_path``; the file appears only once size and checksum checked out.

    :param path: the dCache file (templated).
    :param local_path: the target file, or an existing directory to put it in (templated).
    :param verify: compare the checksum the server reports with the received bytes.
    :param make_dirs: create missing local parent directories.
    :return: ``{"path", "local_path", "size", "checksums", "verified_by"}``.
    """

    template_fields: Sequence[str] = ("path", "local_path", "dcache_conn_id")
    operator_extra_links = (DCacheFileLink(), DCacheViewLink())

    def __init__(self, *, path: str, local_path: str, verify: bool = True, make_dirs: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_at_parse(path, field="path")
        self.path = path
        self.local_path = local_path
        self.verify = verify
        self.make_dirs = make_dirs

    def execute(self, context: Any) -> dict[str, Any]:
        check_at_parse(self.path, field="path")
        target = self.local_path
        if os.path.isdir(target):
            target = os.path.join(target, self.path.rstrip("/").rsplit("/", 1)[-1])
        parent = os.path.dirname(os.path.abspath(target))
        if self.make_dirs:
            os.makedirs(parent, exist_ok=True)
        result = self.hook.download(self.path, target, verify=self.verify)
        persist_file_links(context, self.dcache_conn_id, self.hook.settings.api_url, self.path)
        self.log.info("downloaded %s (%s bytes, verified by %s) to %s", self.path, result.size,
                      result.verified_by, target)
        return {**result.to_dict(), "local_path": target}
