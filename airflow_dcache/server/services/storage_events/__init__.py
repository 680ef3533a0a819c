"""Storage events: dCache's frontend ``/api/v1/events`` channels, fed by the namespace event bus.

``registry`` holds the channels (per-user limits, garbage collection, shutdown), ``channel`` one
channel's ring buffer and SSE consumer, ``inotify`` and ``metronome`` the event types, ``schemas``
their JSON Schemas.
"""

from airflow_dcache.server.services.storage_events.registry import ChannelRegistry, EventsSettings

__all__ = ["ChannelRegistry", "EventsSettings"]
