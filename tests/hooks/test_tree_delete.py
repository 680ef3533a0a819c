"""A directory tree is one ``DELETE`` at the door, against the bundled server: the door removes it child by
child and stops at the first entry the caller may not delete (as dCache's door, through Milton)."""

from __future__ import annotations

import io

import pytest

from airflow_dcache.exceptions import Conflict, PermissionDenied
from airflow_dcache.hooks.dcache import DCacheHook


def _tree(hook: DCacheHook, root: str) -> None:
    for path in (f"{root}/a/x.h5", f"{root}/a/deeper/y.h5", f"{root}/b/z.h5"):
        hook.upload(io.BytesIO(path.encode()), path)


def test_a_tree_goes_in_one_door_delete(alice: DCacheHook, workdir: str) -> None:
    _tree(alice, f"{workdir}/t")
    assert alice.delete(f"{workdir}/t", recursive=True, directory=True) is True
    assert not alice.exists(f"{workdir}/t")
    alice.upload(io.BytesIO(b"f"), f"{workdir}/file.h5")
    with pytest.raises(Conflict, match="not a directory"):  # a directory was expected: the file stays
        alice.delete(f"{workdir}/file.h5", recursive=True, directory=True)
    assert alice.exists(f"{workdir}/file.h5")


def test_a_tree_with_an_entry_the_caller_may_not_delete_is_refused(alice: DCacheHook, workdir: str) -> None:
    """The door stops at the entry (403); the hook says so instead of falling back to a walk that would
    meet the same refusal entry by entry."""
    root = f"{workdir}/t"
    _tree(alice, root)
    alice.chmod(f"{root}/b", 0o555)  # nothing may be removed from b, not even by its owner
    try:
        with pytest.raises(PermissionDenied):
            alice.delete(root, recursive=True)
        assert alice.exists(f"{root}/b/z.h5") and alice.exists(root)
        assert not alice.exists(f"{root}/a")  # depth first: what came before the refusal is gone
    finally:
        alice.chmod(f"{root}/b", 0o755)
    assert alice.delete(root, recursive=True) is True
