"""``dcache://<site>/<path>`` asset URIs: normalised so two spellings of one tree are one asset.

Registered under ``asset-uris`` in the provider info; Airflow calls :func:`sanitize_uri` whenever an
``Asset`` with this scheme is created (at DAG parse), so a malformed URI fails there with a message.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, quote, unquote, urlsplit

from airflow_dcache.paths import InvalidPath, clean_path

if TYPE_CHECKING:
    from airflow.sdk import Asset

__all__ = ["asset_uri", "convert_asset_to_openlineage", "create_asset", "lineage_namespace", "normalise_path",
           "sanitize_uri", "split_uri"]

SCHEME = "dcache"
_SITE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalise_path(path: str) -> str:
    """The asset's path as :func:`airflow_dcache.paths.clean_path` has it, so an asset, an event and an
    operator argument spell one file alike; ``..`` and control characters are refused."""
    try:
        return clean_path(path, field="path")
    except InvalidPath as err:
        raise ValueError(f"dcache:// asset URIs need an absolute path after the site: {err.message}") from None


def _site(netloc: str) -> str:
    if not netloc:
        raise ValueError("dcache:// asset URIs need a site: dcache://<site>/<path>")
    if "@" in netloc or ":" in netloc:
        raise ValueError(f"dcache:// asset URI site must be a bare name (no user or port), got {netloc!r}")
    site = netloc.lower()
    if not _SITE.fullmatch(site):
        raise ValueError(f"dcache:// asset URI site {netloc!r} must be lower-case letters, digits and '-'")
    return site


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Airflow's asset-URI hook: validate and normalise ``dcache://<site>/<path>``."""
    if uri.query or uri.fragment:
        raise ValueError("dcache:// asset URIs take no query or fragment")
    site = _site(uri.netloc)
    path = normalise_path(unquote(uri.path))
    return uri._replace(netloc=site, path=quote(path, safe="/"))


def split_uri(uri: str) -> tuple[str, str]:
    """``(site, path)`` of a ``dcache://`` URI (validated)."""
    parts = urlsplit(uri)
    if parts.scheme != SCHEME:
        raise ValueError(f"not a dcache:// URI: {uri!r}")
    clean = sanitize_uri(parts)
    return clean.netloc, unquote(clean.path)


def asset_uri(site: str, path: str) -> str:
    """Build the normalised URI of ``path`` on ``site``."""
    return f"{SCHEME}://{_site(site)}{quote(normalise_path(path), safe='/')}"


def create_asset(*, site: str, path: str, extra: dict | None = None) -> Asset:
    """An ``Asset`` for a dCache tree or file; the ``factory`` of the provider's ``asset-uris`` entry, which
    Airflow's hook-lineage collector calls with ``asset_kwargs={"site": …, "path": …}``."""
    from airflow.sdk import Asset

    return Asset(uri=asset_uri(site, path), extra=extra or {})


def lineage_namespace(site: str) -> str:
    """``dcache://<site>``: the OpenLineage dataset namespace of one dCache instance (its naming
    convention for storage: scheme and authority in the namespace, the path as the name)."""
    return f"{SCHEME}://{_site(site)}"


def convert_asset_to_openlineage(asset: Asset, lineage_context: object = None) -> object:
    """The OpenLineage dataset of a ``dcache://`` asset: namespace ``dcache://<site>``, name the path.

    Registered as the ``to_openlineage_converter`` of the ``dcache`` scheme, so the OpenLineage provider
    names a DAG's dCache assets exactly as the operators name the files they read and write.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset

    site, path = split_uri(asset.uri)
    return Dataset(namespace=lineage_namespace(site), name=path)
