"""The ingest pipeline's two designs, and where a file's work shows in a run of each.

``chunked`` (the default) maps the stage group over *chunks* of files: two task instances per chunk
(``process``, which takes each file through validate … drop_buffer_replica on its own, then
``record_when_archived``: the deferred wait for the chunk's QoS, and the lineage records once it is
reached), not eight per file, and no ``[core] max_map_length`` caps it. ``per_file`` maps the group
over files: each file shows as its own row in Airflow's grid, a task per step — for runs of a handful
of files that is the more readable view, at eight task instances per file (``docs/pipelines.md`` has
the numbers).

Whoever follows a run from outside (the demo's progress, the benchmarks, the tests) needs the same
three facts of a design: the stage task ids in order, which task's XCom lists the mapped units (the
files, or the chunks of files) and which result of a unit belongs to which file. They live here, once,
with the task states that end a stage (:data:`DONE`, :data:`FAILED`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The environment variable the example DAG reads when it is parsed.
DESIGN_ENV = "AIRFLOW_DCACHE_PIPELINE_DESIGN"

#: Task instance states after which a stage is over for its unit (file or chunk), and went well.
DONE = frozenset({"success", "skipped"})
#: Task instance states after which a stage is over for its unit, and failed (itself or upstream).
FAILED = frozenset({"failed", "upstream_failed"})


@dataclass(frozen=True)
class Design:
    """One way to map the pipeline's stages over a run's files."""

    name: str
    #: the mapped task group's id
    group: str
    #: the task whose XCom (``return_value``) lists the mapped units, in map-index order
    units_task: str
    #: (stage task id inside the group, short label), in order
    stages: tuple[tuple[str, str], ...]
    #: another stage name → the stage of this one doing that work (``replicate`` → ``process``)
    aliases: tuple[tuple[str, str], ...] = ()

    def task(self, stage: str) -> str:
        """The full task id of ``stage`` (or of the stage that does its work here)."""
        stage = dict(self.aliases).get(stage, stage)
        if stage not in dict(self.stages):
            raise KeyError(f"the {self.name} design has no stage {stage!r} (stages: {', '.join(dict(self.stages))})")
        return f"{self.group}.{stage}"

    def task_ids(self) -> list[tuple[str, str]]:
        """(full task id, label) of every stage, in order."""
        return [(f"{self.group}.{stage}", label) for stage, label in self.stages]

    def units(self, value: Any) -> list[list[dict[str, Any]]]:
        """The work items of each map index, from the units task's XCom (a file each, or a chunk's files)."""
        if not isinstance(value, Sequence):
            return []
        if self.units_task == "chunk":
            return [[dict(e.get("item") or {}) for e in unit.get("files") or [] if isinstance(e, Mapping)]
                    for unit in value if isinstance(unit, Mapping)]
        return [[dict(unit.get("item", unit))] for unit in value if isinstance(unit, Mapping)]  # expand_kwargs wraps

    def file_result(self, value: Any, path: str, key: str = "lineage") -> Mapping[str, Any] | None:
        """One file's part of a stage's XCom: the value itself (one file per task), or the chunk entry's ``key``."""
        if not isinstance(value, Mapping):
            return None
        if self.units_task != "chunk":
            return value
        for entry in value.get("files") or []:
            if isinstance(entry, Mapping) and (entry.get("item") or {}).get("path") == path:
                found = entry.get(key)
                return found if isinstance(found, Mapping) else None
        return None


PER_FILE = Design("per_file", "file", "collect", (
    ("validate", "validate"), ("replicate", "to buffer"), ("preview", "function"), ("publish", "publish"),
    ("archive_rule", "QoS rule"), ("drop_buffer_replica", "buffer clean"), ("wait_archived", "archived"),
    ("record_lineage", "lineage")))
#: The steps the chunked design's ``process`` task takes each file through (a task each in ``per_file``).
PROCESS_STEPS = ("validate", "replicate", "preview", "publish", "archive_rule", "drop_buffer_replica")
CHUNKED = Design("chunked", "chunks", "chunk", (
    ("process", "process"), ("record_when_archived", "archived + lineage")),
    # the stage ids of per_file and of the earlier chunked layouts (validate_replicate, preview, publish, …)
    aliases=(*((step, "process") for step in ("validate_replicate", *PROCESS_STEPS)),
             ("wait_archived", "record_when_archived"), ("record_lineage", "record_when_archived")))
DESIGNS: dict[str, Design] = {d.name: d for d in (CHUNKED, PER_FILE)}
DEFAULT = CHUNKED


def from_env(environ: Mapping[str, str] | None = None) -> Design:
    """The design ``$AIRFLOW_DCACHE_PIPELINE_DESIGN`` names (unset or empty: the default); else an error naming it."""
    raw = (os.environ if environ is None else environ).get(DESIGN_ENV, "").strip()
    if not raw:
        return DEFAULT
    if raw not in DESIGNS:
        raise ValueError(f"${DESIGN_ENV}: expected one of {', '.join(DESIGNS)}, got {raw!r}")
    return DESIGNS[raw]
