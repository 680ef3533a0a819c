"""Arguments the hooks accept, checked the same way wherever they are given (operators, filesystem, hooks).

Public because operators and the ``dcache://`` filesystem check these at DAG parse or call time with
the hooks' own rules, so a bad value fails with the same message before any request.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["ChecksumMode", "check_mode", "parse_gid", "parse_mode"]

ChecksumMode = Literal["adler32", "md5", "sha-256", "sha-512", "none"]
_MODES = ("adler32", "md5", "sha-256", "sha-512", "none")


def check_mode(mode: str) -> ChecksumMode:
    if mode not in _MODES:
        raise ValueError(f"checksum must be one of {', '.join(repr(m) for m in _MODES)}; got {mode!r}")
    return mode  # type: ignore[return-value]


def parse_mode(value: object, field_name: str = "mode") -> int:
    """Permission bits from an int (``0o775``, ``509``) or an octal string (``"775"``, ``"0775"``, ``"0o775"``).

    A decimal-looking string is read as octal, the way ``chmod 775`` is; ``rwx`` notation is refused.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"(0o|0O)?[0-7]{1,5}", value.strip()):
        mode = int(value.strip().removeprefix("0o").removeprefix("0O"), 8)
    else:
        raise ValueError(f"{field_name}: expected permission bits as an int (0o775) or an octal string "
                         f"('775', '0775'), got {value!r}")
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"{field_name}: {oct(mode) if mode >= 0 else mode} is outside 0o0..0o7777")
    return mode


def parse_gid(value: object, field_name: str = "gid") -> int:
    """A numeric group id (dCache's ``chgrp`` takes no group names)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field_name}: expected a numeric group id (>= 0), got {value!r}")
    return value
