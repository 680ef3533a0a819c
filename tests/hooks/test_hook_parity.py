"""The async hook mirrors the sync one only where it has a method at all (issue 18).

Its methods carry no contract text of their own: each points to the sync method of the same name,
which must therefore exist and take exactly the same parameters, or the pointer would lie.
"""

from __future__ import annotations

import inspect

import pytest

from airflow_dcache.hooks.dcache import DCacheHook
from airflow_dcache.hooks.dcache_async import DCacheAsyncHook

#: async plumbing with no sync namesake: the sync hook loads settings and opens its session lazily
ASYNC_ONLY = {"aget_settings", "get_async_conn", "aclose"}


def _own_public_methods(cls: type) -> list[str]:
    return sorted(
        name for name, value in vars(cls).items()
        if not name.startswith("_") and inspect.isfunction(value)
    )


ASYNC_METHODS = [name for name in _own_public_methods(DCacheAsyncHook) if name not in ASYNC_ONLY]


def test_the_async_hook_keeps_what_async_callers_use() -> None:
    # the triggers, the dCache view and the trigger benchmarks await these; removing one breaks them
    used = {"whoami", "stat", "stat_by_pnfsid", "list_dir", "mkdir", "bulk_request_status", "cancel_bulk_request",
            "stage_status", "cancel_stage", "create_channel", "list_channels", "set_channel_timeout",
            "delete_channel", "subscribe_inotify", "subscribe_metronome", "list_subscriptions", "stream_events"}
    assert used <= set(ASYNC_METHODS)
    assert set(_own_public_methods(DCacheAsyncHook)) >= ASYNC_ONLY


@pytest.mark.parametrize("name", ASYNC_METHODS)
def test_every_async_method_has_a_sync_twin_with_the_same_parameters(name: str) -> None:
    sync_method = getattr(DCacheHook, name, None)
    assert sync_method is not None, f"DCacheAsyncHook.{name} has no DCacheHook.{name} to point to"
    async_params = inspect.signature(getattr(DCacheAsyncHook, name)).parameters
    sync_params = inspect.signature(sync_method).parameters
    assert list(async_params.values()) == list(sync_params.values())


@pytest.mark.parametrize("name", ASYNC_METHODS)
def test_every_async_docstring_points_to_the_sync_method(name: str) -> None:
    doc = inspect.getdoc(getattr(DCacheAsyncHook, name)) or ""
    assert f":meth:`DCacheHook.{name}`" in doc and "\n" not in doc, doc
    assert inspect.getdoc(getattr(DCacheHook, name)), f"DCacheHook.{name} carries the contract"


@pytest.mark.parametrize("name", ASYNC_METHODS)
def test_async_methods_are_coroutines_or_async_generators(name: str) -> None:
    method = getattr(DCacheAsyncHook, name)
    assert inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)
