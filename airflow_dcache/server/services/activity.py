"""dCache's activity vocabulary: what a restricted login (a macaroon) may do."""

from __future__ import annotations

from enum import StrEnum


class Activity(StrEnum):
    """The activities of dCache's ``Activity`` enum, as named in ``activity:`` caveats."""

    READ_METADATA = "READ_METADATA"
    UPDATE_METADATA = "UPDATE_METADATA"
    LIST = "LIST"
    DOWNLOAD = "DOWNLOAD"
    MANAGE = "MANAGE"
    UPLOAD = "UPLOAD"
    DELETE = "DELETE"
    STAGE = "STAGE"


ALL_ACTIVITIES: frozenset[Activity] = frozenset(Activity)
