"""Upload a file and wait until the storage event of that upload arrives, as a DAG's trigger would see it.

Tests of event-driven DAGs need "the file is there *and* dCache announced it"; polling the namespace
only proves the former. dCache sends a channel's events to the client connected at that moment (a
reconnect with ``Last-Event-ID`` replays only what came *after* an id the client saw), so the helper
first makes sure its stream is live: it reads the channel in a thread, subscribes a metronome and
waits for a tick, subscribes the parent directory and waits for its ``NEW_SUBSCRIPTION``, and only
then uploads and waits for the upload's inotify event. Every wait is bounded by one deadline.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import queue
import threading
import time
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_dcache.hooks.dcache import DCacheHook
    from airflow_dcache.hooks.models import ChannelMessage

DEFAULT_TIMEOUT = 30.0
_END = object()


def _reader(hook: DCacheHook, channel: str, out: queue.Queue[object], stop: threading.Event) -> None:
    """Put every event of ``channel`` on ``out`` until ``stop`` is set or the stream ends; then ``_END``."""
    last_id: str | None = None
    try:
        while not stop.is_set():
            try:
                for event in hook.stream_events(channel, last_event_id=last_id, read_timeout=2.0):
                    last_id = event.id or last_id
                    out.put(event)
                    if stop.is_set():
                        return
                return  # the server closed the stream (channel deleted)
            except Exception:  # read timeout or channel gone: retry until stopped
                if stop.is_set():
                    return
                time.sleep(0.1)
    finally:
        out.put(_END)


def _wait_for(events: queue.Queue[object], deadline: float, what: str, match: object) -> ChannelMessage:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {what} before the deadline")
        try:
            item = events.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if item is _END:
            raise TimeoutError(f"the event stream ended before {what}")
        if match(item):  # type: ignore[operator]
            return item  # type: ignore[return-value]


def upload_and_wait(hook: DCacheHook, source: str | os.PathLike[str] | IO[bytes] | bytes, path: str, *,
                    mask: str = "IN_CLOSE_WRITE", timeout: float = DEFAULT_TIMEOUT) -> ChannelMessage:
    """Upload ``source`` to ``path`` and return the inotify event ``mask`` for it.

    :param hook: a :class:`~airflow_dcache.hooks.dcache.DCacheHook` on the instance (its user must be
        allowed to read the parent directory, as dCache requires for storage events).
    :param source: a local path, an open binary file or the bytes themselves.
    :param path: the dCache path to write; its parent directory must exist.
    :param mask: the inotify flag to wait for (``IN_CLOSE_WRITE`` once the upload is complete).
    :param timeout: seconds for the whole call; ``TimeoutError`` when the event does not come.
    """
    parent, name = posixpath.split(path.rstrip("/"))
    deadline = time.monotonic() + timeout
    channel = hook.create_channel()
    events: queue.Queue[object] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=_reader, args=(hook, channel, events, stop), daemon=True,
                              name="dcache-upload-and-wait")
    thread.start()
    try:
        hook.subscribe_metronome(channel, frequency=10.0, count=int(timeout * 10) + 10, message="ready")
        _wait_for(events, deadline, "metronome tick (stream live)", lambda e: e.type == "metronome")
        watch = hook.subscribe_inotify(channel, parent or "/")
        _wait_for(events, deadline, f"subscription to {parent}",
                  lambda e: e.system_type == "NEW_SUBSCRIPTION" and e.subscription == watch)
        data: str | os.PathLike[str] | IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else source
        hook.upload(data, path)
        return _wait_for(events, deadline, f"{mask} event for {path}",
                         lambda e: e.type == "inotify" and e.name == name and mask in e.mask)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            hook.delete_channel(channel)  # ends the stream, so the reader returns
        thread.join(timeout=10)
