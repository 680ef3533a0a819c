"""Bookkeeping of the "facility day" end-to-end test: every uploaded file version and what became of it.

The test (``test_facility_day.py``) drives uploads, overwrites, deletes, renames, pauses and manual
triggers against the real pipeline; this module keeps the ledger of versions it made (pnfsid and
checksum, known from its own upload and a stat) and judges the evidence Airflow and the sites hold
afterwards — lineage asset events, the ``collect`` task's ``skipped`` XCom, failed runs' logs, the
incoming asset's storage events, done-markers, locality and the buffer's work area. It is kept apart
from the scenario so that the judgement (what counts as processed, reported, lost or misattributed)
is in one place and reads as the issue's acceptance criteria.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from airflow_dcache import events
from airflow_dcache.events import events_from_asset_events
from airflow_dcache.events.version import parse_marker
from airflow_dcache.testing.airflow_stack import AirflowStack

INGEST = "dcache_ingest_pipeline"
MARKER = "airflow_dcache.done." + INGEST
FINAL = frozenset({"success", "failed"})


@dataclass
class Version:
    """One file version the test created: where, which (pnfsid + adler32), and what the scenario did to it."""

    scenario: str
    path: str
    pnfsid: str
    adler32: str
    uploaded: float = field(default_factory=time.time)
    #: ``None`` while the version is at ``path``; else why it left (``"overwritten"``, ``"deleted"``, ...).
    left: str | None = None
    note: str = ""

    @property
    def current(self) -> bool:
        return self.left is None


@dataclass
class Outcome:
    """The verdict for one version."""

    version: Version
    lineage: list[dict[str, Any]]
    reasons: list[str]
    delivered: bool
    #: ``processed once`` | ``processed twice`` | ``reported`` | ``unseen`` | ``lost``
    verdict: str = ""


@dataclass
class Evidence:
    """What Airflow holds about the pipeline's runs, gathered once after every run ended."""

    runs: list[dict[str, Any]]
    lineage: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    #: pnfsid a step expected → "<run> <task>[<map index>]: <VersionChanged message>" of each refusal
    version_changed: dict[str, list[str]]
    delivered_pnfsids: set[str]
    delivered_paths: set[str]
    unexplained_failures: list[str]


class Ledger:
    """Every version the test made, in order; the newest version per path is what must end up processed."""

    def __init__(self) -> None:
        self.versions: list[Version] = []

    def add(self, version: Version) -> Version:
        for older in self.versions:
            if older.path == version.path and older.current:
                older.left = "overwritten"
        self.versions.append(version)
        return version

    def by_pnfsid(self) -> dict[str, Version]:
        return {v.pnfsid: v for v in self.versions}

    def current(self) -> list[Version]:
        return [v for v in self.versions if v.current]

    def scenarios(self) -> list[str]:
        return list(dict.fromkeys(v.scenario for v in self.versions))


# ----------------------------------------------------------------------------------------- evidence


def lineage_records(stack: AirflowStack) -> list[dict[str, Any]]:
    """The pipeline's lineage records (asset events on ``dcache://main/data/processed``), oldest first."""
    out = []
    for ev in stack.api.asset_events("dcache://main/data/processed"):
        out += [r for r in events.lineage_records(ev.get("extra")) if r.get("dag_id") == INGEST]
    return out


def task_log_text(stack: AirflowStack, run_id: str, ti: Mapping[str, Any]) -> str:
    """A task instance's log: the file the LocalExecutor wrote, else the REST API's structured log."""
    map_index = int(ti.get("map_index", -1))
    tries = int(ti.get("try_number") or 1)
    text = "".join(stack.task_log(INGEST, run_id, ti["task_id"], map_index, t) for t in range(1, tries + 1))
    if text:
        return text
    try:
        doc = stack.api.request("GET", f"/dags/{INGEST}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{tries}",
                                params={"map_index": map_index, "full_content": True})
    except requests.HTTPError:
        return ""
    return json.dumps(doc)


def task_errors(text: str) -> list[tuple[str, str]]:
    """``(exception type, message)`` of every exception a task log reports (its JSON lines' ``error_detail``)."""
    errors = []
    for line in text.splitlines():
        if not line.startswith("{") or "error_detail" not in line:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        for detail in doc.get("error_detail") or []:
            errors.append((str(detail.get("exc_type")), str(detail.get("exc_value"))))
    return errors


def gather(stack: AirflowStack) -> Evidence:
    """Read every run, skipped list, failed task log, lineage record and delivered storage event."""
    runs = stack.api.dag_runs(INGEST)
    skipped: list[dict[str, Any]] = []
    changed: dict[str, list[str]] = defaultdict(list)
    unexplained: list[str] = []
    for run in runs:
        run_id = run["dag_run_id"]
        try:
            for entry in stack.api.xcom(INGEST, run_id, "collect", key="skipped") or []:
                skipped.append({**entry, "run_id": run_id})
        except requests.HTTPError:
            pass  # collect failed or never ran: no skipped list
        if run["state"] != "failed":
            continue
        # the chunked design: a file that failed inside its chunk is listed by the run's report (its stage
        # tasks succeed); the report task fails naming them, so its own failure is explained by that list
        try:
            reported = stack.api.xcom(INGEST, run_id, "report", key="failed")
        except requests.HTTPError:
            reported = None
        for f in reported or []:
            where = f"{run_id} report: {f.get('path')} ({f.get('stage')})"
            reason = str(f.get("reason"))
            # VersionChanged, as the version check words it ("... changed since the event: pnfsid X is now
            # ...") or as the copy's checksum check does when the overwrite lands during the copy ("...
            # changed since the event: the copy ... has adler32 ..., the version to process (pnfsid X ...)")
            if "changed since the event: " in reason:
                changed[str(f.get("pnfsid"))].append(f"{where}: {reason}")
            else:
                unexplained.append(f"{where}: {reason[:300]}")
        for ti in stack.api.task_instances(INGEST, run_id):
            if ti["state"] != "failed" or (ti["task_id"] == "report" and reported is not None):
                continue
            where = f"{run_id} {ti['task_id']}[{ti.get('map_index', -1)}]"
            errors = task_errors(task_log_text(stack, run_id, ti))
            refused = [msg for kind, msg in errors if kind == "VersionChanged"]
            for msg in refused:
                # the first pnfsid of the message is the version the step expected (and refused)
                expected = re.search(r"pnfsid (\S+)", msg)
                changed[expected.group(1) if expected else "?"].append(f"{where}: {msg}")
            if not refused:
                unexplained.append(f"{where}: {errors[-1] if errors else 'no error in the log'}")
    incoming = stack.api.asset_events("dcache://main/data/incoming")
    events = events_from_asset_events([ev.get("extra") or {} for ev in incoming])
    return Evidence(runs=runs, lineage=lineage_records(stack), skipped=skipped, version_changed=dict(changed),
                    delivered_pnfsids={e.pnfsid for e in events if e.pnfsid},
                    delivered_paths={e.path for e in events}, unexplained_failures=unexplained)


# ----------------------------------------------------------------------------------------- verdicts


def judge(ledger: Ledger, ev: Evidence) -> list[Outcome]:
    """One outcome per version: processed once/twice, reported (with its reasons), unseen or lost.

    The skip of a run that lost the marker's compare-and-set to another run needs no entry: that
    version is processed once, by the other run.

    * processed: lineage records whose ``input.pnfsid`` is the version;
    * reported: the ``skipped`` XCom names its pnfsid (or, for a version whose event carried no pnfsid
      because it was gone before the watcher's stat, its path with a "gone" reason), or a failed
      task's ``VersionChanged`` message names its pnfsid;
    * unseen: not the newest version of a present path, and no storage event ever carried its pnfsid
      (replaced or deleted before the watcher could stat it: its event was reported as the newer
      version, or as "gone"). Nothing was ever told about it, so nothing can be reported;
    * lost: everything else — including the newest version of a present path that is not processed.
    """
    outcomes = []
    for v in ledger.versions:
        lineage = [r for r in ev.lineage if (r.get("input") or {}).get("pnfsid") == v.pnfsid]
        reasons = [f"skipped in {s['run_id']}: {s['reason']}" for s in ev.skipped if s.get("pnfsid") == v.pnfsid]
        if not v.current:
            reasons += [f"skipped in {s['run_id']}: {s['reason']} (path only)" for s in ev.skipped
                        if s.get("pnfsid") is None and s.get("path") == v.path and "gone" in str(s.get("reason"))
                        and v.left in ("deleted", "moved away")]
        reasons += [f"VersionChanged in {msg}" for msg in ev.version_changed.get(v.pnfsid, [])]
        outcome = Outcome(v, lineage, reasons, delivered=v.pnfsid in ev.delivered_pnfsids)
        if len(lineage) == 1:
            outcome.verdict = "processed once"
        elif len(lineage) > 1:
            outcome.verdict = "processed twice"
        elif v.current:
            outcome.verdict = "lost"
        elif reasons:
            outcome.verdict = "reported"
        elif not outcome.delivered:
            outcome.verdict = "unseen"
        else:
            outcome.verdict = "lost"
        outcomes.append(outcome)
    return outcomes


def misattributions(ledger: Ledger, lineage: list[dict[str, Any]], read_json: Any) -> tuple[list[str], int]:
    """Every way a lineage record or one of its outputs fails to name its input version correctly;
    and how many summaries were read.

    ``read_json(path)`` returns a ``*.summary.json`` output's content. Checked: the record's input is a
    version the test made, at that version's path, with that version's adler32; every summary's
    ``input_version`` (pnfsid, checksum, path) is the record's input; every record has a summary; no
    output path belongs to two records.
    """
    known = ledger.by_pnfsid()
    problems: list[str] = []
    owners: dict[str, list[str]] = defaultdict(list)
    read = 0
    for rec in lineage:
        inp = rec.get("input") or {}
        pnfsid, run = inp.get("pnfsid"), rec.get("run_id")
        label = f"{run} {inp.get('path')} ({pnfsid})"
        version = known.get(pnfsid)
        adler = str((inp.get("checksums") or {}).get("adler32", "")).lower()
        if version is None:
            problems.append(f"{label}: input pnfsid is no version the test uploaded")
            continue
        if inp.get("path") != version.path:
            problems.append(f"{label}: input path is not {version.path}, where that version was")
        if adler != version.adler32:
            problems.append(f"{label}: input adler32 {adler} is not the version's {version.adler32}")
        summaries = [o["path"] for o in rec.get("outputs") or [] if str(o.get("path", "")).endswith(".summary.json")]
        if not summaries:
            problems.append(f"{label}: no *.summary.json among the outputs {rec.get('outputs')}")
        for out in rec.get("outputs") or []:
            owners[out["path"]].append(label)
        for path in summaries:
            try:
                iv = read_json(path).get("input_version") or {}
                read += 1
            except Exception as exc:  # an unreadable output cannot identify its input
                problems.append(f"{label}: output {path} unreadable: {exc}")
                continue
            if iv.get("pnfsid") != pnfsid:
                problems.append(f"{label}: {path} says input pnfsid {iv.get('pnfsid')}")
            if str(iv.get("checksum", "")).lower() != f"adler32:{version.adler32}":
                problems.append(f"{label}: {path} says input checksum {iv.get('checksum')}")
            if iv.get("path") != version.path:
                problems.append(f"{label}: {path} says input path {iv.get('path')}")
    for path, labels in owners.items():
        if len(labels) > 1:
            problems.append(f"output {path} belongs to {len(labels)} lineage records: {labels}")
    return problems, read


def hook_json_reader(hook: Any) -> Any:
    """``read_json(path)`` over a DCacheHook (downloads into memory; summaries are a few hundred bytes)."""
    def read_json(path: str) -> dict[str, Any]:
        buf = io.BytesIO()
        hook.download(path, buf)
        return dict(json.loads(buf.getvalue().decode()))
    return read_json


def orphan_outputs(hook: Any, lineage: list[dict[str, Any]], root: str = "/data/processed",
                   max_entries: int = 20000) -> list[str]:
    """Files under ``root`` (the reprocess DAG's folder aside) that no lineage record names.

    A run that lost the race for a version removes what it published; anything else left there is a
    result without a record, which a reader could take for another version's.
    """
    named = {o.get("path") for r in lineage for o in r.get("outputs") or []}
    named |= {r.get("activation_record") for r in lineage}
    found: list[str] = []
    stack, seen = [root], 0
    while stack and seen < max_entries:
        for entry in hook.list_dir(stack.pop()):
            seen += 1
            if entry.is_dir:
                if entry.path != f"{root}/reprocess":
                    stack.append(entry.path)
            elif entry.path not in named:
                found.append(entry.path)
    return sorted(found)


def marker_problems(ledger: Ledger, outcomes: Iterable[Outcome], hook: Any) -> tuple[list[str], list[str]]:
    """(marker problems, archive problems) of the newest version of every present path.

    A done-marker must name the version at the path and that version must be processed (by the run
    the marker names); the newest version must be on tape (locality includes NEARLINE).
    """
    by_pnfsid = {o.version.pnfsid: o for o in outcomes}
    markers, archive = [], []
    for v in ledger.current():
        entry = hook.stat(v.path, xattr=True, checksum=True, locality=True)
        if entry.pnfsid != v.pnfsid:
            markers.append(f"{v.path}: now pnfsid {entry.pnfsid}, the ledger says {v.pnfsid}")
            continue
        if "NEARLINE" not in (entry.locality or ""):
            archive.append(f"{v.path} ({v.pnfsid}): locality {entry.locality}")
        value = (entry.xattrs or {}).get(MARKER)
        outcome = by_pnfsid[v.pnfsid]
        if value is None:
            if outcome.lineage:
                markers.append(f"{v.path} ({v.pnfsid}): processed but no done-marker")
            continue
        mv, _dag, run_id = parse_marker(value)
        if mv is None or mv.pnfsid != v.pnfsid or (mv.checksum or "").lower() != f"adler32:{v.adler32}":
            markers.append(f"{v.path} ({v.pnfsid}): marker {value!r} names another version")
        elif not outcome.lineage:
            markers.append(f"{v.path} ({v.pnfsid}): marker {value!r} on an unprocessed version")
        elif run_id not in {r.get("run_id") for r in outcome.lineage}:
            markers.append(f"{v.path} ({v.pnfsid}): marker run {run_id} emitted no lineage for it")
    return markers, archive


def table(ledger: Ledger, outcomes: list[Outcome], misattributed: list[str]) -> str:
    """The per-scenario table the issue asks for (plus the "twice" and "unseen" columns the verdicts need)."""
    head = ("scenario", "versions", "processed once", "twice", "misattributed", "lost", "reported", "unseen")
    rows = [head]
    counts: dict[str, Counter[str]] = {s: Counter() for s in ledger.scenarios()}
    for o in outcomes:
        counts[o.version.scenario][o.verdict] += 1
        counts[o.version.scenario]["versions"] += 1
    mis: Counter[str] = Counter()
    scenario_of = {v.pnfsid: v.scenario for v in ledger.versions}
    for line in misattributed:
        for pnfsid, scenario in scenario_of.items():
            if pnfsid in line:
                mis[scenario] += 1
                break
        else:
            mis["?"] += 1
    total: Counter[str] = Counter()
    for scenario, c in counts.items():
        rows.append((scenario, str(c["versions"]), str(c["processed once"]), str(c["processed twice"]),
                     str(mis[scenario]), str(c["lost"]), str(c["reported"]), str(c["unseen"])))
        total.update(c)
    rows.append(("TOTAL", str(total["versions"]), str(total["processed once"]), str(total["processed twice"]),
                 str(sum(mis.values())), str(total["lost"]), str(total["reported"]),
                 str(total["unseen"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows)


def details(outcomes: list[Outcome]) -> str:
    """One line per version: the evidence behind its verdict (printed with the table)."""
    lines = []
    for o in outcomes:
        v = o.version
        what = ", ".join(f"{r.get('run_id')}" for r in o.lineage) or "; ".join(o.reasons)[:300] or "-"
        lines.append(f"  {v.scenario:<18} {v.path[:70]:<70} {v.pnfsid} left={v.left or '-':<11} "
                     f"delivered={'y' if o.delivered else 'n'} {o.verdict}: {what}"
                     + (f" [{v.note}]" if v.note else ""))
    return "\n".join(lines)
