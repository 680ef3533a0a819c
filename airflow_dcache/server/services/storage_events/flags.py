"""inotify(7) flag names and bits, and how dCache's selector flags expand into an event mask."""

from __future__ import annotations

# Event bits, with the values Linux uses (dCache's enum follows inotify(7)).
IN_ACCESS = 0x1
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_CLOSE_NOWRITE = 0x10
IN_OPEN = 0x20
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800

EVENT_BITS: dict[str, int] = {
    "IN_ACCESS": IN_ACCESS, "IN_MODIFY": IN_MODIFY, "IN_ATTRIB": IN_ATTRIB,
    "IN_CLOSE_WRITE": IN_CLOSE_WRITE, "IN_CLOSE_NOWRITE": IN_CLOSE_NOWRITE, "IN_OPEN": IN_OPEN,
    "IN_MOVED_FROM": IN_MOVED_FROM, "IN_MOVED_TO": IN_MOVED_TO, "IN_CREATE": IN_CREATE,
    "IN_DELETE": IN_DELETE, "IN_DELETE_SELF": IN_DELETE_SELF, "IN_MOVE_SELF": IN_MOVE_SELF,
}
ALL_EVENTS = 0
for _bit in EVENT_BITS.values():
    ALL_EVENTS |= _bit

# Names a selector may use that stand for several events.
COMPOSITES: dict[str, int] = {
    "IN_ALL_EVENTS": ALL_EVENTS,
    "IN_CLOSE": IN_CLOSE_WRITE | IN_CLOSE_NOWRITE,
    "IN_MOVE": IN_MOVED_FROM | IN_MOVED_TO,
}
# Modifiers: they change how the watch behaves, not which events it selects.
IN_MASK_ADD = "IN_MASK_ADD"
IN_ONESHOT = "IN_ONESHOT"
IN_ONLYDIR = "IN_ONLYDIR"
MODIFIERS = frozenset({IN_MASK_ADD, IN_ONESHOT, IN_ONLYDIR})
UNSUPPORTED = frozenset({"IN_DONT_FOLLOW", "IN_EXCL_UNLINK"})
SELECTOR_FLAGS = sorted([*EVENT_BITS, *COMPOSITES, *MODIFIERS, *UNSUPPORTED])

# Names only the server produces (in payload masks).
OUTPUT_ONLY = ("IN_IGNORED", "IN_ISDIR", "IN_Q_OVERFLOW", "IN_UNMOUNT")

# Events about an entry of a watched directory ("child"), about the watched object itself
# ("self"), or both, as dCache's InotifyEvent kinds.
CHILD_ONLY = frozenset({"IN_CREATE", "IN_DELETE", "IN_MOVED_FROM", "IN_MOVED_TO"})
SELF_ONLY = frozenset({"IN_DELETE_SELF", "IN_MOVE_SELF"})
# Every other kind (IN_OPEN, IN_ACCESS, IN_MODIFY, IN_ATTRIB, IN_CLOSE_*) goes to both.


def mask_names(mask: int) -> list[str]:
    """The individual event names of ``mask``, in the order of :data:`EVENT_BITS`."""
    return [name for name, bit in EVENT_BITS.items() if mask & bit]
