"""The dCache view in a real browser: Debian's Chromium driven by Playwright against a real API server.

Logs in through Airflow's own login page, opens the "dCache" navigation entry (the external view
embedded in the Airflow UI), browses to a file, reads its details (xattrs, checksum, the run that
processed it), triggers a function run on it (checked through the REST API: conf and user), and
watches live events appear after uploads and turn "processed" (with the run's link), "waiting" or
"filtered out", and follows the function run it started in the Runs tab, file by file, to its "Re-run
failed" button. Screenshots of every page are written to the test's tmp dir (``screenshots/``);
``docs/images/`` holds copies of two of them.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.conftest import INGEST, PROBE, VIDEOS, UIStack

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian package 'chromium' is not installed"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="pip package 'playwright' is not installed")
FILE = "/data/incoming/run0007.h5"
BIDI = "/data/incoming/x\u202egnp.h5"  # would read "x5h.png" if shown raw


@pytest.fixture
def browser_page(tmp_path: Path) -> Any:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 820})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def _prepare(ui: UIStack, hook: Any) -> None:
    """A raw file as the pipelines see it: xattrs, a label, a done-marker and its lineage record."""
    hook.upload(io.BytesIO(b"\x89HDF\r\n\x1a\n" + os.urandom(4096)), FILE, checksum="adler32",
                xattrs={"instrument": "cxi", "sample": "lysozyme"})
    hook.set_labels(FILE, ["raw", "beamtime-42"])
    hook.upload(io.BytesIO(b"\x89HDF\r\n\x1a\nbidi"), BIDI, checksum="none")
    run_id = "asset_triggered__2026-05-14T08:21:09+00:00"
    hook.set_xattr(FILE, {f"airflow_dcache.done.{INGEST}": f"{INGEST}/{run_id}"})
    entry = hook.stat(FILE)
    api = ui.stack.api
    processed = next(a for a in api.request("GET", "/assets", params={"uri_pattern": "dcache://main/data/processed"})
                     ["assets"] if a["uri"] == "dcache://main/data/processed")
    api.request("POST", "/assets/events", json={"asset_id": processed["id"], "extra": {
        "schema": "airflow-dcache/lineage/v1", "event_key": f"{entry.pnfsid}:closed_after_write",
        "input": {"site": "main", "path": FILE, "pnfsid": entry.pnfsid, "checksums": entry.checksums or {}},
        "outputs": [{"site": "main", "path": "/data/processed/run0007/preview.png", "size": 20480, "checksums": {}}],
        "activation_record": None, "function": {"name": "hdf5-preview", "digest": "sha256:0"},
        "dag_id": INGEST, "run_id": run_id}})


def test_browse_details_trigger_and_live_event(ui_stack: UIStack, main_hook: Any, browser_page: Any,
                                               tmp_path: Path) -> None:
    _prepare(ui_stack, main_hook)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page = browser_page

    # log in through Airflow's own login page
    page.goto(ui_stack.base + "/auth/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ui_stack.password("admin"))
    page.click("button:has-text('Sign in')")
    page.wait_for_url(lambda url: "/auth/login" not in url)

    # the navigation entry opens the view, embedded in the Airflow UI
    page.get_by_role("link", name="dCache", exact=True).click()  # not the dcache:// asset links
    page.wait_for_url("**/plugin/dcache")
    view = page.frame_locator("iframe[src*='/dcache/ui/']")
    view.locator("#conn").select_option("dcache_main")
    view.locator("#listing tr[data-path='/data'] a").click()
    view.locator("#listing tr[data-path='/data/incoming'] a").click()
    row = view.locator(f"#listing tr[data-path='{FILE}']")
    sync_api.expect(row).to_contain_text("ONLINE")
    sync_api.expect(row).to_contain_text("beamtime-42")
    # the admin has no dCache identity of their own: the page says where the site connection may look
    sync_api.expect(view.locator("#identity")).to_contain_text("within")
    # a bidi override in a name is shown escaped, the row still links the raw path
    bidi = view.locator(f"#listing tr[data-path='{BIDI}'] td.name a")
    sync_api.expect(bidi).to_have_text("x\\u202egnp.h5")
    page.screenshot(path=str(shots / "browse.png"))

    # details: xattrs, checksum, labels and the run that processed it (lineage)
    row.locator("td.name a").click()
    details = view.locator("#details")
    sync_api.expect(details).to_contain_text("lysozyme")
    sync_api.expect(details).to_contain_text("adler32")
    sync_api.expect(details.locator("#runs")).to_contain_text(INGEST)
    sync_api.expect(details.locator("#runs")).to_contain_text("/data/processed/run0007/preview.png")
    page.screenshot(path=str(shots / "details.png"))

    # run a function on the selected file: the DAG's params as a form, the run created as the user
    before = {r["dag_run_id"] for r in ui_stack.stack.api.dag_runs(INGEST)}
    row.locator("input[type=checkbox]").check()
    view.locator("#run-btn").click()
    dialog = view.locator("#run-dialog")
    sync_api.expect(dialog.locator("#dag-select")).to_have_value(INGEST)
    dialog.locator("[data-param=reprocess]").check()
    dialog.locator("[data-param=target_qos]").select_option(label="disk")
    page.screenshot(path=str(shots / "run-dialog.png"))
    dialog.locator("#run-submit").click()
    link = dialog.locator("#run-link")
    sync_api.expect(link).to_contain_text(INGEST)
    page.screenshot(path=str(shots / "run-created.png"))
    new = [r for r in ui_stack.stack.api.dag_runs(INGEST) if r["dag_run_id"] not in before]
    assert len(new) == 1
    assert new[0]["conf"]["paths"] == [FILE] and new[0]["conf"]["reprocess"] is True
    assert new[0]["conf"]["target_qos"] == "disk" and new[0]["triggering_user_name"] == "admin"
    assert new[0]["dag_run_id"] in (link.text_content() or "")
    dialog.locator("#run-cancel").click()
    created = new[0]["dag_run_id"]

    # live events: uploads appear, with what the watcher did or will do with each
    view.locator("#tab-live").click()
    view.locator("#live-path").fill("/data/videos")
    view.locator("#live-start").click()
    sync_api.expect(view.locator("#live-state")).to_contain_text("watching /data/videos")
    ui_stack.upload("/data/videos/beamline-cam-0001.mp4", os.urandom(2048), user="pipeline")
    ui_stack.upload("/data/videos/beamline-cam-hold.mp4", os.urandom(1024), user="pipeline")
    ui_stack.upload("/data/videos/shift-notes.txt", b"shift notes", user="pipeline")

    def closed(name: str) -> Any:
        return view.locator(f"#live-list tr[data-path='/data/videos/{name}'][data-kind='closed_after_write'] .status")

    sync_api.expect(closed("beamline-cam-hold.mp4")).to_contain_text("waiting")
    sync_api.expect(closed("shift-notes.txt")).to_contain_text("filtered out")
    sync_api.expect(closed("beamline-cam-0001.mp4")).to_contain_text("processed", timeout=180_000)
    sync_api.expect(closed("beamline-cam-0001.mp4").locator("a")).to_contain_text(PROBE)
    page.screenshot(path=str(shots / "live.png"))
    view.locator("#live-hide-filtered").check()
    sync_api.expect(closed("shift-notes.txt")).to_be_hidden()
    sync_api.expect(closed("beamline-cam-0001.mp4")).to_be_visible()

    # lag of the watched asset
    view.locator("#tab-lag").click()
    view.locator("#lag-refresh").click()
    # the lag reads every watched asset's recent events and runs through Airflow's API, which stalls for
    # tens of seconds on SQLite's lock while other suites load the machine: refresh until it answers
    table = view.locator("#lag-table")
    for _ in range(12):  # bounded: 12 refreshes, 10 s apart
        if VIDEOS in (table.text_content() or ""):
            break
        page.wait_for_timeout(10_000)
        if VIDEOS not in (table.text_content() or ""):  # a refresh shows "loading…" until it is answered
            view.locator("#lag-refresh").click()
    said = view.locator("#error").text_content()
    assert VIDEOS in (table.text_content() or ""), f"the lag table stayed empty; the view said {said!r}"
    sync_api.expect(view.locator("#lag-table")).to_contain_text(f"{PROBE}:", timeout=30_000)
    page.screenshot(path=str(shots / "lag.png"))

    # runs: the run created above, file by file; FILE's random bytes fail the function, so it can be re-run
    ui_stack.stack.api.unpause(INGEST)
    try:
        for _ in range(150):  # bounded: a chunked run of one file takes well under a minute
            if ui_stack.stack.api.dag_run(INGEST, created)["state"] in ("success", "failed"):
                break
            page.wait_for_timeout(2000)
        view.locator("#tab-runs").click()
        sync_api.expect(view.locator("#runs-dag")).to_have_value(INGEST)
        view.locator("#runs-table tbody tr", has_text=created).click()
        files = view.locator("#run-files-table tbody tr")
        sync_api.expect(files).to_have_count(1, timeout=30_000)
        sync_api.expect(files.first).to_contain_text("run0007.h5")
        sync_api.expect(files.first).to_contain_text("failed")
        sync_api.expect(view.locator("#run-summary")).to_contain_text("1 failed")
        rerun = view.locator("#rerun-btn")
        sync_api.expect(rerun).to_have_text("Re-run 1 failed")
        page.screenshot(path=str(shots / "runs.png"))
        before = {r["dag_run_id"] for r in ui_stack.stack.api.dag_runs(INGEST)}
        rerun.click()
        sync_api.expect(view.locator("#rerun-result")).to_contain_text("over the 1 failed file(s)")
        sync_api.expect(rerun).to_be_hidden()
        (again,) = [r for r in ui_stack.stack.api.dag_runs(INGEST) if r["dag_run_id"] not in before]
        assert again["conf"] == {"only_failed_of": created} and again["triggering_user_name"] == "admin"
    finally:
        ui_stack.stack.api.request("PATCH", f"/dags/{INGEST}", json={"is_paused": True})

    assert all((shots / f"{n}.png").stat().st_size > 10_000 for n in ("browse", "details", "live", "lag", "runs"))
    keep = os.environ.get("DCACHE_UI_SCREENSHOTS")
    if keep:  # e.g. DCACHE_UI_SCREENSHOTS=docs/images to refresh the documentation's pictures
        for n in ("details", "live"):
            shutil.copy(shots / f"{n}.png", Path(keep) / f"ui-{n}.png")
