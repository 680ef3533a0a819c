"""Users file helpers: password generation."""

from __future__ import annotations

from airflow_dcache.server.storage.users import new_password


def test_new_password_never_starts_with_a_dash() -> None:
    """Generated passwords are handed to CLIs (rclone obscure, curl -u); a leading dash reads as an option."""
    passwords = [new_password(12) for _ in range(2000)]
    assert not [p for p in passwords if p.startswith("-")]
    assert len(set(passwords)) == len(passwords)
