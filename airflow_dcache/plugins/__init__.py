"""The dCache view in the Airflow UI (``DCachePlugin``); see ``docs/ui.md``."""

from __future__ import annotations

__all__ = ["DCachePlugin"]


def __getattr__(name: str) -> object:  # lazy: importing the package does not build the FastAPI app
    if name == "DCachePlugin":
        from airflow_dcache.plugins.dcache import DCachePlugin

        return DCachePlugin
    raise AttributeError(name)
