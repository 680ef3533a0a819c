"""Fails loudly, naming the name, when an Airflow or Kafka-provider upgrade moves a private name we use."""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import version

import pytest

from airflow_dcache.version_compat import CHECKED_AGAINST, PRIVATE_NAMES, first_asset_state_accessor


@pytest.mark.parametrize(("module", "name"), PRIVATE_NAMES, ids=[n for _, n in PRIVATE_NAMES])
def test_private_name_is_still_there(module: str, name: str) -> None:
    target: object = importlib.import_module(module)
    path, _, attributes = name.partition(":")
    for part in path.split("."):
        assert hasattr(target, part), f"{module}.{path} is gone (read in {CHECKED_AGAINST}); see version_compat.py"
        target = getattr(target, part)
    if isinstance(target, dict):  # a module's annotations: globals declared there, set at run time
        for attribute in attributes.split(","):
            assert attribute in target, f"{module} no longer declares {attribute}; see version_compat.py"
    elif attributes:  # instance attributes set in __init__: read its source
        source = inspect.getsource(target)  # type: ignore[arg-type]
        for attribute in attributes.split(","):
            assert f"self.{attribute}" in source, f"{module}.{path} no longer sets {attribute}; see version_compat.py"


def test_installed_versions_are_the_checked_ones_or_newer_minor() -> None:
    for package, checked in CHECKED_AGAINST.items():
        installed = version(package)
        assert installed.split(".")[:1] == checked.split(".")[:1], (
            f"{package} {installed}: a new major; re-read the private names in version_compat.py")


def test_first_accessor_of_a_store_feeding_several_assets() -> None:
    from airflow.sdk import Asset
    from airflow.sdk.execution_time.context import AssetStateStoreAccessors

    single = AssetStateStoreAccessors(inlets=[Asset("dcache://main/data/a")])
    assert first_asset_state_accessor(single) is single
    several = AssetStateStoreAccessors(inlets=[Asset("dcache://main/data/a"), Asset("dcache://main/data/b")])
    assert first_asset_state_accessor(several) is several._by_name["dcache://main/data/a"]
    assert first_asset_state_accessor(None) is None
