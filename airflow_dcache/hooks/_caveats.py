"""Adapt the hook's convenience arguments (activities, ip, before, …) to the shared ``CaveatBuilder``,
and read or narrow minted macaroons with pymacaroons (:mod:`airflow_dcache.macaroons.tokens`).

dCache validates only caveat *keys* when minting; a bad value is baked into a macaroon that fails later,
on use. The builder in :mod:`airflow_dcache.macaroons.caveats` checks values, so a typo becomes an
immediate ``ValueError`` here instead of a confusing 401 in some downstream worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_dcache.macaroons.caveats import (
    CaveatBuilder,
    CaveatError,
    format_duration,
    parse_caveat,
    parse_duration,
)

if TYPE_CHECKING:  # pymacaroons is imported only when a macaroon is read or narrowed
    pass


def iso_duration(validity: timedelta | int | float | str) -> str:
    """Seconds, ``timedelta`` or ISO-8601 text → a value Java's ``Duration.parse`` accepts (no weeks)."""
    if isinstance(validity, str):
        text = validity.strip().upper()
        duration = parse_duration(text)  # raises ValueError with Java's wording
    elif isinstance(validity, timedelta):
        duration, text = validity, ""
    else:
        duration, text = timedelta(seconds=float(validity)), ""
    if duration <= timedelta(0):
        raise ValueError("validity must be positive")
    return text or format_duration(duration)


def _split(values: Iterable[str] | str) -> list[str]:
    items = [values] if isinstance(values, str) else list(values)
    return [v.strip() for item in items for v in str(item).split(",") if v.strip()]


def caveat_strings(caveats: Any) -> list[str]:
    """Accept ``None``, one string, a list of strings, or a ``CaveatBuilder``; check every key."""
    if caveats is None:
        return []
    if isinstance(caveats, CaveatBuilder):
        strings = caveats.build()
    elif isinstance(caveats, str):
        strings = [caveats]
    else:
        strings = [str(c) for c in caveats]
    for caveat in strings:
        try:
            parse_caveat(caveat)
        except CaveatError as exc:
            raise ValueError(f"bad caveat {caveat!r}: {exc}") from None
    return strings


def builder_validity(caveats: Any) -> str | None:
    """A ``CaveatBuilder`` may carry the validity itself; it travels outside the caveat list."""
    return caveats.validity_iso if isinstance(caveats, CaveatBuilder) else None


def request_caveats(
    caveats: Any = None,
    *,
    activities: Iterable[str] | str | None = None,
    ip: Iterable[str] | str | None = None,
    before: datetime | None = None,
    max_upload: int | None = None,
) -> list[str]:
    """Explicit caveats first, then the convenience ones; all ``ip`` alternatives go in one caveat,
    because separate ``ip:`` caveats are ANDed by dCache and rarely satisfiable together."""
    result = caveat_strings(caveats)
    extra = CaveatBuilder()
    if activities is not None:
        extra.activities(_split(activities))
    if ip is not None:
        extra.ip(*_split(ip))
    if before is not None:
        extra.before(before)
    if max_upload is not None:
        extra.max_upload(max_upload)
    return result + extra.build()
