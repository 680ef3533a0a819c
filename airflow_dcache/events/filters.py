"""One filter model for both event sources, validated when the DAG is parsed.

Pattern syntax for ``include`` / ``exclude`` (contract ``docs/event-contract.md``):

- ``re:<regex>``: a regular expression searched in the full path;
- a pattern with ``*``, ``?`` or ``[``: a glob (``fnmatch``, case-sensitive) on the **name** when it has
  no ``/`` (``*.h5``), on the full **path** otherwise (``/data/*/raw/*.h5``; ``*`` also crosses ``/``);
- an absolute path without wildcards: a **prefix** (the path itself and everything below it);
- anything else: the exact name.

A filter on a field the event does not carry (``users`` on inotify events, ``min_size`` with no stat)
matches nothing, so a misconfiguration shows up as "no events", never as "every event"; the triggers
refuse such combinations at construction.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from airflow_dcache.events.model import KIND_BY_MASK, EventKind, StorageEvent

__all__ = ["EventFilter", "PathPattern"]

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class PathPattern:
    """One compiled ``include``/``exclude`` entry (see the module docstring for the syntax)."""

    text: str
    field: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text:
            raise ValueError(f"{self.field}: patterns must be non-empty strings, got {self.text!r}")
        if self.text.startswith("re:"):
            try:
                re.compile(self.text[3:])
            except re.error as exc:
                raise ValueError(f"{self.field}: invalid regular expression {self.text[3:]!r}: {exc}") from None
        elif (
            self.text.startswith("/")
            and not (_GLOB_CHARS & set(self.text))
            and ("/../" in self.text + "/" or self.text.endswith("/.."))
        ):
            raise ValueError(f"{self.field}: '..' is not allowed in a path prefix: {self.text!r}")

        # Decide the pattern's form once: ``matches`` runs for every raw event of a stream.
        text = self.text
        arg: Any
        if text.startswith("re:"):
            mode, arg = "re", re.compile(text[3:])
        elif _GLOB_CHARS & set(text):
            mode, arg = ("glob_path" if "/" in text else "glob_name"), re.compile(fnmatch.translate(text))
        elif text.startswith("/"):
            mode, arg = "prefix", text.rstrip("/") or "/"
        else:
            mode, arg = "name", text
        object.__setattr__(self, "_mode", mode)
        object.__setattr__(self, "_arg", arg)
        object.__setattr__(self, "_test", _compile_test(mode, arg))

    def matches(self, event: StorageEvent) -> bool:
        return self._test(event)  # type: ignore[attr-defined, no-any-return]


def _whole_tree(event: StorageEvent) -> bool:
    return True


def _under(prefix: str, below: str, event: StorageEvent) -> bool:
    return event.path == prefix or event.path.startswith(below)


def _name_matches(match: Callable[[str], Any], event: StorageEvent) -> bool:
    return match(event.name) is not None


def _path_matches(match: Callable[[str], Any], event: StorageEvent) -> bool:
    return match(event.path) is not None


def _name_is(name: str, event: StorageEvent) -> bool:
    return bool(event.name == name)


def _compile_test(mode: str, arg: Any) -> Callable[[StorageEvent], bool]:
    """The test of one pattern as one call (it runs for every raw event of every watcher); picklable."""
    if mode == "prefix":
        return _whole_tree if arg == "/" else partial(_under, arg, arg + "/")
    if mode == "glob_name":
        return partial(_name_matches, arg.match)
    if mode == "glob_path":
        return partial(_path_matches, arg.match)
    if mode == "re":
        return partial(_path_matches, arg.search)
    return partial(_name_is, arg)


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name}: must be a list of strings, got {value!r}")
    return tuple(sorted(set(value)))


def _size(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: must be a non-negative integer (bytes), got {value!r}")
    return value


def _kind(value: str) -> EventKind:
    text = value.strip()
    if text.upper().startswith("IN_") and text.upper() in KIND_BY_MASK:
        return KIND_BY_MASK[text.upper()]
    try:
        return EventKind(text.lower())
    except ValueError:
        allowed = ", ".join(k.value for k in EventKind)
        raise ValueError(f"kinds: unknown event kind {value!r} (one of {allowed}, or an IN_* flag)") from None


@dataclass(frozen=True)
class EventFilter:
    """Which storage events a watcher wants; all given criteria must hold (AND), lists are OR.

    :param include: patterns of which at least one must match (empty: everything).
    :param exclude: patterns of which none may match.
    :param name_regex: a regular expression that must *fully* match the file name.
    :param kinds: event kinds (``EventKind`` values or ``IN_*`` flags); empty: every kind.
    :param users: user names (billing: ``UserNamePrincipal``/``owner``); needs a source that has them.
    :param client_ips: client addresses or CIDR networks (billing only).
    :param min_size: smallest size in bytes (needs the size: billing, or SSE with ``stat=True``).
    :param max_size: largest size in bytes.
    :param exclude_p2p: drop pool-to-pool copies (billing ``isP2p``).
    :param exclude_failed: drop records whose ``status.code`` is not 0 (billing).
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    name_regex: str | None = None
    kinds: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    client_ips: tuple[str, ...] = ()
    min_size: int | None = None
    max_size: int | None = None
    exclude_p2p: bool = True
    exclude_failed: bool = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "include", _strings(self.include, "include"))
        set_(self, "exclude", _strings(self.exclude, "exclude"))
        set_(self, "_include", tuple(PathPattern(p, "include") for p in self.include))
        set_(self, "_exclude", tuple(PathPattern(p, "exclude") for p in self.exclude))
        set_(self, "_include_tests", tuple(p._test for p in self._include))  # type: ignore[attr-defined]
        set_(self, "_exclude_tests", tuple(p._test for p in self._exclude))  # type: ignore[attr-defined]
        if self.name_regex is not None:
            if not isinstance(self.name_regex, str) or not self.name_regex:
                raise ValueError(f"name_regex: must be a non-empty string, got {self.name_regex!r}")
            try:
                set_(self, "_name_re", re.compile(self.name_regex))
            except re.error as exc:
                raise ValueError(f"name_regex: invalid regular expression {self.name_regex!r}: {exc}") from None
        else:
            set_(self, "_name_re", None)
        kinds = frozenset(_kind(k) for k in _strings(self.kinds, "kinds"))
        set_(self, "kinds", tuple(sorted(k.value for k in kinds)))
        set_(self, "_kinds", kinds)
        set_(self, "users", _strings(self.users, "users"))
        ips = _strings(self.client_ips, "client_ips")
        networks = []
        for ip in ips:
            try:
                networks.append(ipaddress.ip_network(ip, strict=False))
            except ValueError:
                raise ValueError(f"client_ips: {ip!r} is not an IP address or CIDR network") from None
        set_(self, "client_ips", ips)
        set_(self, "_networks", tuple(networks))
        set_(self, "min_size", _size(self.min_size, "min_size"))
        set_(self, "max_size", _size(self.max_size, "max_size"))
        if self.min_size is not None and self.max_size is not None and self.min_size > self.max_size:
            raise ValueError(f"min_size: {self.min_size} is larger than max_size {self.max_size}")
        for name in ("exclude_p2p", "exclude_failed"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: must be a boolean, got {getattr(self, name)!r}")

    @property
    def needs_size(self) -> bool:
        return self.min_size is not None or self.max_size is not None

    def matches(self, event: StorageEvent) -> bool:
        """Whether ``event`` passes every criterion; cheap checks first (this runs per raw event)."""
        if self._kinds and event.kind not in self._kinds:  # type: ignore[attr-defined]
            return False
        extra = event.extra
        if self.exclude_p2p and extra.get("isP2p") is True:
            return False
        if self.exclude_failed:
            status = extra.get("status")
            if (type(status) is dict or isinstance(status, Mapping)) and status.get("code", 0) not in (0, None):
                return False
        include = self._include_tests  # type: ignore[attr-defined]
        if include:
            for test in include:
                if test(event):
                    break
            else:
                return False
        for test in self._exclude_tests:  # type: ignore[attr-defined]
            if test(event):
                return False
        name_re = self._name_re  # type: ignore[attr-defined]
        if name_re is not None and not name_re.fullmatch(event.name):
            return False
        if self.users and event.user not in self.users:
            return False
        if self._networks:  # type: ignore[attr-defined]
            try:
                address = ipaddress.ip_address(event.client_host or "")
            except ValueError:
                return False
            if not any(address in net for net in self._networks):  # type: ignore[attr-defined]
                return False
        if self.needs_size:
            if event.size is None:
                return False
            if self.min_size is not None and event.size < self.min_size:
                return False
            if self.max_size is not None and event.size > self.max_size:
                return False
        return True

    def to_kwargs(self) -> dict[str, Any]:
        """Deterministic plain-JSON form (sorted lists, every key) for trigger kwargs."""
        return {
            "include": list(self.include),
            "exclude": list(self.exclude),
            "name_regex": self.name_regex,
            "kinds": list(self.kinds),
            "users": list(self.users),
            "client_ips": list(self.client_ips),
            "min_size": self.min_size,
            "max_size": self.max_size,
            "exclude_p2p": self.exclude_p2p,
            "exclude_failed": self.exclude_failed,
        }

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> EventFilter:
        """Inverse of :meth:`to_kwargs`; unknown keys are refused so typos do not silently widen a filter."""
        unknown = set(kwargs) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: unknown filter option")
        return cls(**dict(kwargs))
