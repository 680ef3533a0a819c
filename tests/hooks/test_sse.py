"""The SSE parser on its own: byte streams cut at every possible place, line endings, comments."""

from __future__ import annotations

import json

import pytest

from airflow_dcache.hooks._sse import ChannelMessage, SSEParser

SUB = "http://127.0.0.1:3880/api/v1/events/channels/pf_B1dEed98IVKqc9BNa-w/subscriptions/inotify/AACF+b/x=="
INOTIFY = {"event": {"name": "run42.h5", "mask": ["IN_CLOSE_WRITE"]}, "subscription": SUB}
STREAM = (
    "event: SYSTEM\n"
    'data: {"type":"NEW_SUBSCRIPTION","subscription":"' + SUB + '"}\n'
    "\n"
    "event: inotify\n"
    "id: 0\n"
    "data: " + json.dumps(INOTIFY) + "\n"
    "\n"
    "event: metronome\n"
    "id: 1\n"
    'data: {"event":"tick 1 for alice \u00e9","subscription":"m"}\n'
    "\n"
).encode()


def parse(*chunks: bytes | str) -> list[ChannelMessage]:
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_whole_stream() -> None:
    system, inotify, metronome = parse(STREAM)
    assert system == ChannelMessage("SYSTEM", None, {"type": "NEW_SUBSCRIPTION", "subscription": SUB})
    assert system.is_system and system.system_type == "NEW_SUBSCRIPTION" and system.subscription == SUB
    assert system.payload is None and system.name is None and system.mask == []
    assert (inotify.type, inotify.id, inotify.data) == ("inotify", "0", INOTIFY)
    assert inotify.name == "run42.h5" and inotify.mask == ["IN_CLOSE_WRITE"] and inotify.cookie is None
    assert inotify.subscription == SUB and inotify.system_type is None
    assert metronome.id == "1" and metronome.payload == "tick 1 for alice \u00e9" and metronome.mask == []
    assert metronome.to_dict() == {"type": "metronome", "id": "1", "data": metronome.data}


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_partial_chunks_of_any_size(size: int) -> None:
    # Splits fall inside field names, inside "\r\n" pairs and inside multi-byte UTF-8 characters.
    for stream in (STREAM, STREAM.replace(b"\n", b"\r\n"), STREAM.replace(b"\n", b"\r")):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert parse(*chunks) == parse(STREAM)


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    events = parse(b"id: 5\r", b"\ndata: 1\r", b"\n\r", b"\n")
    assert events == [ChannelMessage("message", "5", 1)]


def test_event_is_dispatched_only_at_the_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: inotify\nid: 3\ndata: {}\n") == []
    assert parser.feed(b"\n") == [ChannelMessage("inotify", "3", {})]


def test_incomplete_event_at_the_end_is_not_dispatched() -> None:
    assert parse(b"event: inotify\ndata: {}") == []


def test_multi_line_data_is_joined_with_newlines() -> None:
    (event,) = parse(b'data: {"a":\ndata:  1,\ndata:"b": 2}\n\n')
    assert event.data == {"a": 1, "b": 2}
    (text,) = parse(b"data: line one\ndata: line two\n\n")
    assert text.data == "line one\nline two"  # not JSON: kept as text


def test_comments_and_unknown_fields_are_ignored() -> None:
    events = parse(b': keep-alive\n\n:another\nevent: SYSTEM\nfoo: bar\n: in the middle\ndata: {"type":"SHUTDOWN"}\n\n')
    assert events == [ChannelMessage("SYSTEM", None, {"type": "SHUTDOWN"})]


def test_event_without_data_is_not_dispatched() -> None:
    assert parse(b"event: inotify\nid: 9\n\n") == []


def test_last_event_id_survives_events_without_id() -> None:
    parser = SSEParser()
    events = parser.feed(b'id: 7\ndata: 1\n\nevent: SYSTEM\ndata: {"type":"EVENT_LOSS"}\n\n')
    assert [e.id for e in events] == ["7", None]
    assert parser.last_event_id == "7"


def test_field_forms_and_retry() -> None:
    parser = SSEParser()
    events = parser.feed("\ufeffevent:inotify\ndata\nretry: 2500\nretry: soon\nretry: ²\n\n")
    assert events == [ChannelMessage("inotify", None, "")]  # "data" without a colon: empty value
    assert parser.retry == 2500


def test_id_with_nul_is_ignored() -> None:
    parser = SSEParser()
    assert parser.feed("id: 1\0\ndata: 1\n\n") == [ChannelMessage("message", None, 1)]
    assert parser.last_event_id is None


def test_inotify_rename_cookie() -> None:
    data = {"event": {"name": "b", "mask": ["IN_MOVED_TO", "IN_ISDIR"], "cookie": "0r6/JbKH+oZ0D2ETnzGMQA"}}
    (event,) = parse(("event: inotify\nid: 2\ndata: " + json.dumps(data) + "\n\n").encode())
    assert event.cookie == "0r6/JbKH+oZ0D2ETnzGMQA" and event.mask == ["IN_MOVED_TO", "IN_ISDIR"]
    assert event.subscription is None
