"""The HTTP-TPC perf-marker stream: text and integer ``State:``, partial markers, final line."""

from __future__ import annotations

from airflow_dcache.hooks._perfmarkers import PerfMarker, PerfMarkerParser, TransferOutcome, parse_perf_marker_stream

CURRENT = """Perf Marker
    Timestamp: 1715674905
    State: Running
    State description: Mover created
    Stripe Index: 0
    Stripe Start Time: 1715674900
    Stripe Last Transferred: 1715674905
    Stripe Transfer Time: 4
    Stripe Bytes Transferred: 503928392
    Stripe Status: RUNNING
    Total Stripe Count: 1
    RemoteConnections: tcp:192.0.2.7:443
End
success: Created
"""

LEGACY = """Perf Marker
    Timestamp: 1715674905
    State: 3
    Stripe Index: 0
    Total Stripe Count: 1
End
Perf Marker
    Timestamp: 1715674910
    State: 10
    Stripe Bytes Transferred: 1024
End
failure: rejected GET: 404 Not Found
"""


def test_current_format() -> None:
    markers, outcome = parse_perf_marker_stream(CURRENT)
    assert outcome == TransferOutcome(True, "Created")
    (m,) = markers
    assert (m.timestamp, m.state, m.state_description, m.bytes_transferred) == (
        1715674905,
        "Running",
        "Mover created",
        503928392,
    )
    assert m.stripe_status == "RUNNING" and m.remote_connections == "tcp:192.0.2.7:443"
    assert m.describe() == "Mover created, 503928392 bytes, RUNNING"


def test_legacy_integer_states_and_failure() -> None:
    markers, outcome = parse_perf_marker_stream(LEGACY)
    assert [m.state for m in markers] == ["3", "10"]
    assert markers[0].bytes_transferred is None  # no mover information yet
    assert outcome == TransferOutcome(False, "rejected GET: 404 Not Found")


def test_incremental_feed_reports_items_as_they_complete() -> None:
    parser = PerfMarkerParser()
    items = [parser.feed(line) for line in CURRENT.splitlines()]
    assert sum(isinstance(i, PerfMarker) for i in items) == 1
    assert items[-1] == TransferOutcome(True, "Created")
    assert parser.markers == 1 and parser.last_marker is not None


def test_stream_cut_short_is_a_failure() -> None:
    parser = PerfMarkerParser()
    for line in CURRENT.splitlines()[:5]:
        parser.feed(line)
    outcome = parser.finish()
    assert not outcome.success and "ended without" in outcome.message


def test_garbage_and_blank_lines_are_ignored() -> None:
    markers, outcome = parse_perf_marker_stream("\n\nhello\nPerf Marker\nnot a field\nEnd\n\nsuccess: Created\r\n")
    assert len(markers) == 1 and outcome.success


def test_bad_numbers_do_not_crash() -> None:
    markers, _ = parse_perf_marker_stream("Perf Marker\nTimestamp: soon\nStripe Bytes Transferred: many\nEnd\n")
    assert markers[0].timestamp is None and markers[0].bytes_transferred is None
