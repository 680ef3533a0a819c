"""The demo's sequence: sites → function runtime → Airflow → wait for the watchers → upload → follow → summary."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from airflow_dcache.demo.progress import FileProgress, Pipeline, ProgressTracker, summary_table
from airflow_dcache.demo.samples import write_cxi, write_shaky_video
from airflow_dcache.pipelines import design
from airflow_dcache.testing.airflow_stack import AirflowStack
from airflow_dcache.testing.sites import Sites, start_sites, wait_for_watches

#: The ingest pipeline as the example DAG lays it out (its design is read from the same variable).
INGEST = Pipeline.of("dcache_ingest_pipeline", design.from_env())
DESHAKE = Pipeline("dcache_video_deshake", [("video.deshake", "function"), ("video.record_lineage", "lineage")])
#: How many watched directories the example DAGs subscribe to (incoming, videos).
WATCHED_PATHS = 2


def pipeline_task(dag_id: str, name: str) -> str:
    """The full task id of a stage (``file.record_lineage``) in the pipeline ``dag_id``."""
    pipeline = INGEST if dag_id == INGEST.dag_id else DESHAKE
    return next(t for t, _ in pipeline.stages if t.endswith("." + name))


def _say(text: str) -> None:
    print(text, flush=True)


def docker_runtime(repo: Path, functions: tuple[str, ...] = ("hdf5-preview", "deshake")) -> tuple[str | None, str]:
    """Start (or find) the project's Docker engine and build the function images (cached by content).

    Returns ``(DOCKER_HOST, reason)``; ``DOCKER_HOST`` is ``None`` when containers cannot run here.
    """
    engine = repo / "scripts" / "docker-engine"
    images = repo / "scripts" / "function-images"
    if not engine.exists() or not shutil.which("dockerd"):
        return None, "no Docker engine installed (apt-get install docker.io)"
    try:
        running = subprocess.run([str(engine), "status"], capture_output=True, timeout=30).returncode == 0
        out = subprocess.run([str(engine), "start"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"the Docker engine did not start ({exc})"
    if out.returncode != 0 or "DOCKER_HOST=" not in out.stdout:
        return None, f"the Docker engine did not start: {(out.stderr or out.stdout).strip()[-200:]}"
    host = out.stdout.strip().splitlines()[-1].split("=", 1)[1]
    _say("functions  : building function images if their sources changed (the first build takes minutes)")
    try:
        built = subprocess.run([str(images), *functions], capture_output=True, text=True, timeout=1800,
                               env={**os.environ, "DOCKER_HOST": host})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"the function images could not be built ({exc})"
    if built.returncode != 0:
        return None, f"the function images could not be built: {(built.stderr or built.stdout).strip()[-300:]}"
    return host, "Docker engine and images ready" + ("" if running else " (engine started by the demo)")


class DemoRunner:
    """Owns every process the demo starts, so :meth:`stop` leaves nothing behind."""

    def __init__(self, base: Path, *, airflow_port: int, h5_files: int, video: bool, runtime: str,
                 timeout: float) -> None:
        from airflow_dcache.demo import checkout_root, default_dags_folder

        self.base = base
        self.repo = checkout_root()
        self.dags = default_dags_folder()
        self.airflow_port = airflow_port
        self.h5_files = h5_files
        self.video = video
        self.runtime = runtime
        self.timeout = timeout
        self.sites: Sites | None = None
        self.stack: AirflowStack | None = None
        self.uploaded_at: dict[str, float] = {}
        self.docker_host: str | None = None
        self.started_engine = False

    # -- steps ---------------------------------------------------------------------------------
    def _choose_runtime(self) -> str:
        """``docker`` where an engine and the images can be had, else ``local`` — said in one line."""
        if self.runtime == "local":
            _say("functions  : local runtime (subprocesses), as asked")
            return "local"
        host, reason = docker_runtime(self.repo)
        if host:
            self.docker_host = host
            self.started_engine = reason.endswith("(engine started by the demo)")
            _say(f"functions  : docker runtime ({reason}, {host})")
            return "docker"
        if self.runtime == "docker":
            raise RuntimeError(f"--runtime docker: {reason}")
        _say(f"functions  : local runtime (subprocesses), because {reason}")
        return "local"

    def _start_airflow(self, runtime: str) -> AirflowStack:
        assert self.sites is not None
        env = dict(self.sites.connections())
        env["AIRFLOW_DCACHE_FUNCTION_RUNTIME"] = runtime
        if self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        self.stack = AirflowStack(self.base / "airflow", self.dags, env, api_port=self.airflow_port)
        self.stack.start()
        self.stack.wait_dags([INGEST.dag_id, DESHAKE.dag_id])
        return self.stack

    def _wait_for_watchers(self, timeout: float = 90) -> None:
        try:
            wait_for_watches("dcache_main", WATCHED_PATHS, timeout=timeout)
        except TimeoutError as exc:
            log = self.base / "airflow" / "component-logs" / "triggerer.log"
            raise TimeoutError(f"{exc}: {log}") from None

    def _upload_samples(self) -> dict[str, str]:
        """Upload as ``alice`` through the WebDAV door, like a beamline's acquisition would."""
        import requests

        assert self.sites is not None
        samples = self.base / "samples"
        files: dict[str, str] = {}
        local: list[tuple[Path, str]] = []
        for i in range(self.h5_files):
            p = write_cxi(samples / f"run{i + 1:03d}.h5", seed=i, frames=8 + i)
            local.append((p, "/data/incoming/" + p.name))
            files[p.name] = INGEST.dag_id
        if self.video and not shutil.which("ffmpeg"):
            _say("  (no ffmpeg on this machine: the de-shake video sample is skipped)")
        elif self.video:
            v = write_shaky_video(samples / "phone-video.mp4")
            local.append((v, "/data/videos/" + v.name))
            files[v.name] = DESHAKE.dag_id
        auth = ("alice", self.sites.passwords["alice"])
        with requests.Session() as s:
            for path, remote in local:
                with open(path, "rb") as f:
                    r = s.put(self.sites.main.webdav + remote, data=f, auth=auth, timeout=60)
                r.raise_for_status()
                self.uploaded_at[path.name] = time.time()
                _say(f"  uploaded {remote} ({path.stat().st_size} bytes) as alice")
        return files

    def _extra_columns(self, fp: FileProgress) -> Mapping[str, str]:
        assert self.stack is not None and self.sites is not None
        cols: dict[str, str] = {}
        if fp.run_id:
            run = self.stack.api.dag_run(fp.dag_id, fp.run_id)
            started = run.get("start_date")
            if started and fp.name in self.uploaded_at:
                from datetime import datetime

                t = datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
                cols["upload→run"] = f"{t - self.uploaded_at[fp.name]:.1f}s"
            pipeline = INGEST if fp.dag_id == INGEST.dag_id else DESHAKE
            try:
                task_id = pipeline_task(fp.dag_id, "record_lineage")
                value = self.stack.api.xcom(fp.dag_id, fp.run_id, task_id, map_index=fp.map_index or 0)
                lineage = pipeline.design.file_result(value, fp.path or "")
            except Exception:
                lineage = None
            if fp.failure:
                cols["outputs"] = f"FAILED {fp.failure[:80]}"
            elif isinstance(lineage, Mapping):
                cols["outputs"] = ", ".join(o.get("path", "") for o in lineage.get("outputs", []))
        cols["archive"] = self._archive_state(fp)
        return cols

    def _archive_state(self, fp: FileProgress) -> str:
        from airflow_dcache.hooks import DCacheHook

        assert self.sites is not None
        folder = "/data/incoming/" if fp.dag_id == INGEST.dag_id else "/data/videos/"
        try:
            with DCacheHook("dcache_main") as hook:
                entry = hook.stat(folder + fp.name, locality=True, qos=True)
            return f"{entry.locality} ({entry.current_qos})"
        except Exception as exc:  # the table still prints
            return f"? ({type(exc).__name__})"

    # -- the whole sequence ----------------------------------------------------------------------
    def run(self) -> bool:
        t0 = time.monotonic()
        logs = self.base / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        _say("airflow-dcache demo: upload → storage event → Airflow run → buffer replica → function → "
             "QoS rule → tape")
        self.sites = start_sites(self.base / "sites", log_dir=logs)
        os.environ.update(self.sites.connections())  # the demo's own hooks (watch, summary) use them too
        _say(f"dCache     : main {self.sites.main.webdav} (tape emulation), buffer {self.sites.buffer.webdav}")
        runtime = self._choose_runtime()
        stack = self._start_airflow(runtime)
        _say(f"Airflow    : {stack.base_url} (scheduler, triggerer, dag-processor, api-server) "
             f"ready after {time.monotonic() - t0:.0f} s")
        self._wait_for_watchers()
        _say("watchers   : storage-event triggers subscribed; uploading samples")
        files = self._upload_samples()
        tracker = ProgressTracker(stack.api, [INGEST, DESHAKE], files, say=_say)
        ok = tracker.wait(self.timeout)
        elapsed = time.monotonic() - t0
        pipelines = {p.dag_id: p for p in (INGEST, DESHAKE)}
        _say("\n" + summary_table(tracker.files.values(), pipelines, self._extra_columns))
        self._write_readme(stack)
        _say(f"\n{'ALL SAMPLES DONE' if ok else 'NOT ALL SAMPLES PASSED'} in {elapsed:.0f} s from start.")
        _say(f"Airflow UI : {stack.base_url}  (login admin / {stack.admin_password})")
        _say(f"logs       : {self.base / 'airflow' / 'component-logs'}, {logs}")
        return ok

    def _write_readme(self, stack: AirflowStack) -> None:
        assert self.sites is not None
        pw = self.sites.passwords
        text = f"""How to use this demo while it runs

Airflow UI : {stack.base_url}   login admin / {stack.admin_password}
dCache main: {self.sites.main.webdav}   (frontend {self.sites.main.api})
dCache buf : {self.sites.buffer.webdav}
users      : alice / {pw['alice']}   bob / {pw['bob']}   pipeline / {pw['pipeline']}

Upload another run (starts the ingest pipeline by itself):
  curl -u alice:{pw['alice']} -T my.h5 {self.sites.main.webdav}/data/incoming/my.h5
Upload a video (starts the de-shake pipeline):
  curl -u alice:{pw['alice']} -T clip.mp4 {self.sites.main.webdav}/data/videos/clip.mp4
See the outputs:
  curl -u alice:{pw['alice']} '{self.sites.main.api}/namespace/data/processed?children=true'
"""
        path = self.base / "README.txt"
        path.write_text(text)
        path.chmod(0o600)

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None
        if self.sites is not None:
            self.sites.stop()
            self.sites = None
        if self.started_engine:  # leave nothing behind that the demo started
            subprocess.run([str(self.repo / "scripts" / "docker-engine"), "stop"], capture_output=True, timeout=60)
            self.started_engine = False

