"""JSON Schemas (draft-06) of each event type's selector and payload, served by the events API.

Written from the documented behaviour (the reference's §4.2 and §4.5); kept as Python data so they
ship with the package without any package-data configuration.
"""

from __future__ import annotations

from typing import Any

from airflow_dcache.server.services.storage_events import flags as fl
from airflow_dcache.server.services.storage_events import metronome as mt
from airflow_dcache.server.services.storage_events.inotify import PATH_PATTERN

DRAFT_06 = "http://json-schema.org/draft-06/schema#"

INOTIFY_SELECTOR: dict[str, Any] = {
    "$schema": DRAFT_06,
    "title": "inotify selector",
    "description": "Which namespace object to watch and which events to receive. The object must exist; "
                   "the watch follows it when it is moved. Without flags, every event is selected.",
    "type": "object",
    "properties": {
        "path": {
            "description": "Absolute path of the watched file or directory, as the caller sees the "
                           "namespace (relative to the caller's root).",
            "type": "string",
            "pattern": PATH_PATTERN,
        },
        "flags": {
            "description": "Events to select, plus modifiers: IN_MASK_ADD (merge with an existing watch of "
                           "the same object instead of replacing its flags), IN_ONESHOT (end after the first "
                           "event), IN_ONLYDIR (fail unless the target is a directory). IN_DONT_FOLLOW and "
                           "IN_EXCL_UNLINK are recognised but not supported.",
            "type": "array",
            "items": {"type": "string", "enum": fl.SELECTOR_FLAGS},
            "uniqueItems": True,
        },
    },
    "required": ["path"],
    "additionalProperties": False,
}

INOTIFY_EVENT: dict[str, Any] = {
    "$schema": DRAFT_06,
    "title": "inotify event",
    "description": "One change of a watched object or of an entry of a watched directory.",
    "type": "object",
    "properties": {
        "name": {
            "description": "Name of the directory entry concerned; only for events about an entry of the "
                           "watched directory.",
            "type": "string",
        },
        "cookie": {
            "description": "Identical in the IN_MOVED_FROM and IN_MOVED_TO events of one move.",
            "type": "string",
        },
        "mask": {
            "description": "One event flag, with IN_ISDIR added when the object is a directory.",
            "type": "array",
            "items": {"type": "string", "enum": sorted([*fl.EVENT_BITS, *fl.OUTPUT_ONLY])},
            "minItems": 1,
            "uniqueItems": True,
        },
    },
    "required": ["mask"],
    "additionalProperties": False,
}

METRONOME_SELECTOR: dict[str, Any] = {
    "$schema": DRAFT_06,
    "title": "metronome selector",
    "description": "A stream of messages at a fixed rate. Exactly one of frequency and delay is required.",
    "type": "object",
    "properties": {
        "frequency": {"description": "Events per second.", "type": "number",
                      "minimum": mt.MIN_FREQUENCY, "maximum": mt.MAX_FREQUENCY},
        "delay": {"description": "Seconds between events.", "type": "number",
                  "minimum": mt.MIN_DELAY, "maximum": mt.MAX_DELAY},
        "message": {"description": "The payload; ${username} and ${count} are replaced.",
                    "type": "string", "default": "tick", "maxLength": mt.MAX_MESSAGE},
        "count": {"description": "End the subscription after this many events; 0 means never.",
                  "type": "integer", "minimum": 0, "default": 0},
    },
    "oneOf": [{"required": ["frequency"]}, {"required": ["delay"]}],
    "additionalProperties": False,
}

METRONOME_EVENT: dict[str, Any] = {
    "$schema": DRAFT_06,
    "title": "metronome event",
    "description": "The selector's message, with ${username} and ${count} replaced.",
    "type": "string",
}
