"""Hooks for dCache: :class:`DCacheHook` (sync, requests) and :class:`DCacheAsyncHook` (httpx, triggers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_dcache.hooks.dcache import DCacheHook
    from airflow_dcache.hooks.dcache_async import DCacheAsyncHook

__all__ = ["DCacheAsyncHook", "DCacheHook"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (e.g. for exceptions or models) does not build either client stack.
    if name == "DCacheHook":
        from airflow_dcache.hooks.dcache import DCacheHook

        return DCacheHook
    if name == "DCacheAsyncHook":
        from airflow_dcache.hooks.dcache_async import DCacheAsyncHook

        return DCacheAsyncHook
    raise AttributeError(name)
