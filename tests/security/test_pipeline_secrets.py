"""Issue 12, "Secrets": a sweep of every place a deployment writes to, for passwords, tokens and macaroons.

:func:`sweep_deployment` is run by ``tests/e2e/test_more_pipelines_e2e.py`` after real pipeline runs
(ingest by SSE and by Kafka billing, stage-and-process, de-shake) on a real Airflow and the bundled
sites. It looks in

- the services' logs (both sites);
- every file under ``AIRFLOW_HOME`` except the two files that hold secrets by design (the UI
  password file and the stack's Fernet/JWT keys): task logs, component logs, the DAG processor's logs;
- the whole metadata DB, every text column of every table (XCom, rendered template fields, task
  instances' ``next_kwargs``, DAG run conf, asset events, the audit log, ...), with the ``trigger``
  table's kwargs decrypted with the stack's Fernet key;
- through the REST API as the UI shows them: every XCom value, every task instance's rendered fields,
  every asset event's extra;
- on dCache: every activation record (``.activation-*.json``) under ``/data/processed`` on main and
  ``/data`` on buffer.

It searches for the exact passwords of every site user and the Airflow admin, the stack's keys, and
for *any* macaroon (dCache serialises them as base64 starting ``MDA``: the first packet's length
``00..``; a match is confirmed by decoding it and finding a ``location``/``identifier`` packet), any
``authz=`` URL parameter and any ``Bearer`` token that is not masked (``***``). This module's own tests
check the scanner on planted secrets, so a sweep that finds nothing means nothing was there.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MACAROON = re.compile(r"MDA[A-Za-z0-9+/_-]{40,}={0,2}")
AUTHZ = re.compile(r"authz(?:=|%3D)([^&\s\"'\\<>]+)", re.IGNORECASE)
BEARER = re.compile(r"Bearer\s+([A-Za-z0-9._~+/=-]{16,})")
MASKS = ("***", "%2A%2A%2A", "<macaroon>", "REDACTED")
#: Files that hold secrets by design (the stack's own key material and the UI login).
EXEMPT_FILES = ("passwords.json", "stack-secrets.json", "simple_auth_manager_passwords.json.generated")


def _is_macaroon(text: str) -> bool:
    padded = text + "=" * (-len(text) % 4)
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            raw = decode(padded)
        except (binascii.Error, ValueError):
            continue
        if b"location" in raw or b"identifier" in raw:
            return True
    return False


def _masked(value: str) -> bool:
    return any(value.startswith(m) for m in MASKS)


def scan_text(text: str, secrets: Mapping[str, str], where: str) -> list[str]:
    """Findings in ``text``: known secrets by name, macaroons, unmasked ``authz=`` and ``Bearer`` values."""
    findings: list[str] = []
    for name, secret in secrets.items():
        if secret and secret in text:
            findings.append(f"{where}: {name} in clear")
    for match in MACAROON.finditer(text):
        if _is_macaroon(match.group(0)):
            findings.append(f"{where}: macaroon {match.group(0)[:12]}… at offset {match.start()}")
    for match in AUTHZ.finditer(text):
        if not _masked(match.group(1)):
            findings.append(f"{where}: authz= with a value ({match.group(1)[:6]}…) at offset {match.start()}")
    for match in BEARER.finditer(text):
        if not _masked(match.group(1)):
            findings.append(f"{where}: Bearer token ({match.group(1)[:6]}…) at offset {match.start()}")
    return findings


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


@dataclass
class SweepReport:
    """What the sweep found (``findings``, secret-free descriptions) and how much it looked at (``counts``)."""

    findings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, place: str, text: str, secrets: Mapping[str, str], where: str) -> None:
        self.counts[place] = self.counts.get(place, 0) + 1
        self.findings.extend(scan_text(text, secrets, f"[{place}] {where}"))


def known_secrets(sites: Any, stack: Any) -> dict[str, str]:
    """Every credential of the deployment: site users' passwords, the Airflow admin's, the stack's keys."""
    out = {f"password of {user}": pw for user, pw in sites.passwords.items()}
    out["airflow admin password"] = stack.admin_password
    keys = json.loads((Path(stack.home) / "stack-secrets.json").read_text())
    out.update({f"stack {k} key": v for k, v in keys.items()})
    return out


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in EXEMPT_FILES and path.suffix not in (".db", ".db-journal", ".pyc"):
            yield path


def scan_db(db: Path, fernet_key: str, secrets: Mapping[str, str], report: SweepReport) -> None:
    """Every text column of every table; the ``trigger`` table's kwargs decrypted first."""
    from cryptography.fernet import Fernet, InvalidToken

    fernet = Fernet(fernet_key.encode())
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cursor = con.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cursor.description]
            for n, row in enumerate(cursor):
                report.counts["db_rows"] = report.counts.get("db_rows", 0) + 1
                text = "\n".join(_text(v) for v in row if isinstance(v, (str, bytes)))
                if table == "trigger":
                    report.counts["trigger_rows"] = report.counts.get("trigger_rows", 0) + 1
                    raw = row[columns.index("kwargs")]
                    try:
                        text += "\n" + (raw if raw.startswith("{") else fernet.decrypt(raw.encode()).decode())
                    except InvalidToken:
                        report.findings.append(f"[db] trigger row {n}: kwargs not readable with the stack's key")
                report.findings.extend(scan_text(text, secrets, f"[db] {table} row {n}"))
    finally:
        con.close()


def scan_rest(api: Any, secrets: Mapping[str, str], report: SweepReport) -> None:
    """XCom values, rendered template fields and asset-event extras, as the UI gets them."""
    entries = api.request("GET", "/dags/~/dagRuns/~/taskInstances/~/xcomEntries", params={"limit": 10000})
    for e in entries["xcom_entries"]:
        value = api.xcom(e["dag_id"], e["run_id"], e["task_id"], key=e["key"], map_index=e.get("map_index", -1))
        report.add("xcom_values", _text(value), secrets,
                   f"{e['dag_id']}/{e['run_id']}/{e['task_id']}[{e.get('map_index')}] {e['key']}")
    for dag in api.request("GET", "/dags", params={"limit": 1000})["dags"]:
        for run in api.dag_runs(dag["dag_id"]):
            report.add("dag_runs", _text(run), secrets, f"{dag['dag_id']}/{run['dag_run_id']}")
            for ti in api.task_instances(dag["dag_id"], run["dag_run_id"]):
                where = f"{dag['dag_id']}/{run['dag_run_id']}/{ti['task_id']}[{ti['map_index']}]"
                report.add("rendered_fields", _text(ti.get("rendered_fields")), secrets, where)
                report.add("task_instances", _text(ti), secrets, where)
    for event in api.asset_events():
        report.add("asset_events", _text(event), secrets, f"asset event {event['id']}")


def _walk(hook: Any, path: str, depth: int = 8) -> Iterator[Any]:
    if depth < 0:
        return
    for entry in hook.list_dir(path):
        yield entry
        if entry.is_dir:
            yield from _walk(hook, f"{path.rstrip('/')}/{entry.name}", depth - 1)


def scan_dcache(secrets: Mapping[str, str], report: SweepReport,
                roots: Iterable[tuple[str, str]] = (("dcache_main", "/data/processed"), ("dcache_buffer", "/data"))
                ) -> None:
    """Every activation record (and any other JSON) the pipelines left on the sites."""
    import io

    from airflow_dcache.hooks import DCacheHook

    for conn_id, root in roots:
        with DCacheHook(conn_id) as hook:
            for entry in _walk(hook, root):
                if entry.is_file and entry.name.endswith(".json"):
                    buf = io.BytesIO()
                    hook.download(entry.path, buf)
                    place = "activation_records" if entry.name.startswith(".activation-") else "output_json"
                    report.add(place, buf.getvalue().decode("utf-8", "replace"), secrets, f"{conn_id}:{entry.path}")


def sweep_deployment(sites: Any, stack: Any, *, service_logs: Iterable[Path], secrets: Mapping[str, str]
                     ) -> SweepReport:
    """Run every scan; ``report.findings`` empty means no secret anywhere."""
    report = SweepReport()
    for log in service_logs:
        report.add("service_logs", log.read_text(errors="replace"), secrets, str(log.name))
    home = Path(stack.home)
    for path in _files(home):
        place = "task_logs" if "logs" in path.relative_to(home).parts[:1] else "airflow_home_files"
        if path.parent.name == "component-logs":
            place = "component_logs"
        report.add(place, path.read_text(errors="replace"), secrets, str(path.relative_to(home)))
    keys = json.loads((home / "stack-secrets.json").read_text())
    scan_db(home / "airflow.db", keys["fernet"], secrets, report)
    scan_rest(stack.api, secrets, report)
    scan_dcache(secrets, report)
    return report


# ----------------------------------------------------------------------------- the scanner itself


def _macaroon_like() -> str:
    """A V1-serialised macaroon as dCache writes it (``00XXlocation …``, base64url)."""
    packets = b"".join(f"{len(p) + 5:04x}".encode() + p + b"\n" for p in (
        b"location test", b"identifier abcdef0123456789", b"cid activity:DOWNLOAD", b"signature " + b"\x01" * 32))
    return base64.urlsafe_b64encode(packets).decode().rstrip("=")


def test_scanner_finds_planted_secrets() -> None:
    secrets = {"password of alice": "s3cret-Pa55word"}
    mac = _macaroon_like()
    assert mac.startswith("MDA")
    text = (f"login alice s3cret-Pa55word\nGET http://door/f.h5?authz={mac} 200\n"
            f"Authorization: Bearer {mac}\nplain {mac}\n")
    found = scan_text(text, secrets, "planted")
    assert any("password of alice" in f for f in found)
    assert sum("macaroon" in f for f in found) == 3
    assert any("authz=" in f for f in found) and any("Bearer" in f for f in found)
    assert not any(mac in f or "s3cret" in f for f in found)  # the report never repeats a secret


def test_scanner_accepts_masked_values_and_lookalikes() -> None:
    text = ("url http://door/f.h5?authz=*** Bearer ***\nauthz%3D%2A%2A%2A\n"
            "MDAxMjM0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkw\n")  # base64 of digits, no packets
    assert scan_text(text, {"password of bob": "another-Pa55"}, "clean") == []


def test_scan_db_decrypts_trigger_kwargs(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    db = tmp_path / "airflow.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE trigger (id INTEGER, classpath TEXT, kwargs TEXT)")
    con.execute("CREATE TABLE xcom (value TEXT)")
    secret_kwargs = Fernet(key.encode()).encrypt(json.dumps({"password": "hidden-Pa55"}).encode()).decode()
    con.execute("INSERT INTO trigger VALUES (1, 'x.Trigger', ?)", (secret_kwargs,))
    con.execute("INSERT INTO xcom VALUES (?)", (json.dumps({"url": "http://d/f?authz=" + _macaroon_like()}),))
    con.commit()
    con.close()
    report = SweepReport()
    scan_db(db, key, {"password of carol": "hidden-Pa55"}, report)
    assert report.counts["trigger_rows"] == 1 and report.counts["db_rows"] == 2
    assert any("trigger row 0: password of carol" in f for f in report.findings), report.findings
    assert any("xcom row 0" in f and "authz=" in f for f in report.findings), report.findings
