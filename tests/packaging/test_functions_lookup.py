"""Where the registry looks for functions: the env override, the wheel's copy, the checkout's directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_dcache.functions import registry

ROOT = Path(__file__).resolve().parents[2]


def test_env_override_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(registry, "LIBRARY_DIR", tmp_path)
    monkeypatch.setenv(registry.FUNCTIONS_ENV, str(tmp_path / "mine"))
    assert registry.default_functions_dir() == tmp_path / "mine"


def test_shipped_library_before_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(registry.FUNCTIONS_ENV, raising=False)
    (tmp_path / "echo").mkdir()
    (tmp_path / "echo" / "main.py").write_text("print('hi')\n")
    monkeypatch.setattr(registry, "LIBRARY_DIR", tmp_path)
    assert registry.default_functions_dir() == tmp_path
    assert registry.find_function("echo").directory == (tmp_path / "echo").resolve()


def test_the_library_is_inside_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """No lookup of the checkout: the provider's functions are found beside the registry module."""
    monkeypatch.delenv(registry.FUNCTIONS_ENV, raising=False)
    assert registry.default_functions_dir() == ROOT / "airflow_dcache" / "functions" / "library"
    assert {"deshake", "hdf5-preview", "select-files"} <= {d.name for d in registry.LIBRARY_DIR.iterdir()}


def test_no_library_no_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(registry.FUNCTIONS_ENV, raising=False)
    monkeypatch.setattr(registry, "LIBRARY_DIR", tmp_path / "absent")
    assert registry.default_functions_dir() is None
