"""dcache:// asset URIs: Airflow's Asset runs our normaliser from the provider info."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from airflow.sdk import Asset

from airflow_dcache.assets.dcache import asset_uri, create_asset, sanitize_uri, split_uri


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("dcache://main/data/incoming", "dcache://main/data/incoming"),
        ("dcache://Main/data//incoming/", "dcache://main/data/incoming"),
        ("dcache://main/data/./in", "dcache://main/data/in"),
        ("dcache://main/", "dcache://main/"),
        ("dcache://buffer/a%20b", "dcache://buffer/a%20b"),
    ],
)
def test_normalised(raw: str, clean: str) -> None:
    assert sanitize_uri(urlsplit(raw)).geturl() == clean


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("dcache:///data/in", "need a site"),
        ("dcache://main", "absolute path"),
        ("dcache://main/data/../etc", r"'\.\.'"),
        ("dcache://main/data?x=1", "no query"),
        ("dcache://alice@main/data", "bare name"),
        ("dcache://main:2880/data", "bare name"),
        ("dcache://ma_in/data", "lower-case"),
    ],
)
def test_refused(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sanitize_uri(urlsplit(raw))


def test_airflow_asset_uses_the_registered_handler() -> None:
    assert Asset("dcache://main/data//incoming/").uri == "dcache://main/data/incoming"
    with pytest.raises(ValueError, match=r"'\.\.'"):
        Asset("dcache://main/data/../x")


def test_helpers() -> None:
    assert asset_uri("main", "/data/in/") == "dcache://main/data/in"
    assert split_uri("dcache://main/a%20b/c") == ("main", "/a b/c")
    assert create_asset(site="buffer", path="/x").uri == "dcache://buffer/x"
    with pytest.raises(ValueError, match="absolute"):
        asset_uri("main", "relative/path")


def test_hook_lineage_collector_creates_dcache_assets_through_the_registered_factory() -> None:
    from airflow.sdk.lineage import get_hook_lineage_collector
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    assert ProvidersManagerTaskRuntime().asset_factories["dcache"] is create_asset
    asset = get_hook_lineage_collector().create_asset(scheme="dcache", asset_kwargs={"site": "main", "path": "/a//b/"})
    assert asset is not None and asset.uri == "dcache://main/a/b"


def test_openlineage_converter_names_assets_as_the_operators_name_files() -> None:
    """Registered for the scheme; without the OpenLineage client it is a no-op, as upstream converters are."""
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    from airflow_dcache.assets.dcache import convert_asset_to_openlineage, lineage_namespace

    assert ProvidersManagerTaskRuntime().asset_to_openlineage_converters["dcache"] is convert_asset_to_openlineage
    dataset = convert_asset_to_openlineage(Asset("dcache://main/data/a%20b"))
    try:
        import openlineage.client  # noqa: F401
    except ImportError:
        assert dataset is None
    else:
        assert (dataset.namespace, dataset.name) == ("dcache://main", "/data/a b")  # type: ignore[attr-defined]
    assert lineage_namespace("Main") == "dcache://main"
