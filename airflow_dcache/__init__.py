"""Apache Airflow provider for dCache, plus a bundled dCache-compatible service."""

from __future__ import annotations

__version__ = "0.1.0"
