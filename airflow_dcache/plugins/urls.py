"""Links into the dCache view, for extra links and notifications (no I/O, no credential in them).

``/dcache/ui/?conn=<id>&path=<path>`` opens the view on that connection at that path (a file opens
its details). The view answers only logged-in users, so such a link reveals nothing by itself.
"""

from __future__ import annotations

from urllib.parse import urlencode

from airflow_dcache.paths import clean_path

VIEW_PATH = "/dcache/ui/"


def view_url(conn_id: str, path: str, *, base_url: str | None = None) -> str:
    """The view's URL for ``path`` on ``conn_id``.

    :param conn_id: the dCache connection id.
    :param path: an absolute dCache path (:func:`airflow_dcache.paths.clean_path`: normalised; ``..``,
        control characters and leading/trailing whitespace refused).
    :param base_url: Airflow's public URL; default ``[api] base_url`` (empty: a root-relative link).
    """
    if base_url is None:
        from airflow.configuration import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    query = urlencode({"conn": conn_id, "path": clean_path(path)})
    return f"{base_url.rstrip('/')}{VIEW_PATH}?{query}"
