"""The declarative connection form and the settings parser must describe the same extras."""

from __future__ import annotations

import ast
import inspect

from airflow.sdk.module_loading import import_string

from airflow_dcache.get_provider_info import get_provider_info
from airflow_dcache.hooks import _settings
from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.hooks.dcache_async import DCacheAsyncHook


def _conn_type() -> dict:
    (entry,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "dcache"]
    return entry


def _extras_read_by_settings() -> set[str]:
    tree = ast.parse(inspect.getsource(_settings))
    return {
        str(node.args[1].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "_extra"
        and isinstance(node.args[1], ast.Constant)
    }


def test_every_form_field_is_read_and_every_read_extra_is_in_the_form() -> None:
    declared = set(_conn_type()["conn-fields"])
    read = _extras_read_by_settings() - {"scheme"}  # ``scheme`` is an undocumented alias of ``protocol``
    assert declared == read


def test_auth_type_enum_matches() -> None:
    enum = {v for v in _conn_type()["conn-fields"]["auth_type"]["schema"]["enum"] if v}
    assert enum == {a.value for a in _settings.AuthType}


def test_secrets_are_password_fields() -> None:
    assert _conn_type()["conn-fields"]["token"]["schema"]["format"] == "password"


def test_hook_class_and_identity() -> None:
    entry = _conn_type()
    assert import_string(entry["hook-class-name"]) is DCacheHook
    for cls in (DCacheHook, DCacheAsyncHook):
        assert (cls.conn_type, cls.conn_name_attr, cls.default_conn_name) == (
            "dcache",
            "dcache_conn_id",
            "dcache_default",
        )
    assert repr(DCacheHook("x")) == "DCacheHook(dcache_conn_id='x')"
