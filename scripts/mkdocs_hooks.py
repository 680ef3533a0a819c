"""MkDocs hook: code blocks of the how-to pages come from the example DAGs, between Airflow-style markers.

A docs page writes, inside a fenced code block, a snippet line in pymdownx's syntax::

    --8<-- "dags/dcache_reprocess.py:reprocess_dag"

and the DAG file marks the lines with Airflow's ``# [START reprocess_dag]`` / ``# [END reprocess_dag]``
comments (the markers upstream providers use for their example DAGs). This hook replaces the line with
those lines, dedented and without nested markers, before pymdownx runs, so every code block on the page
is code of a DAG the test suite parses and runs. A missing file or marker stops the build with the page
and the name; without this hook pymdownx (``check_paths``) would fail on the same line, never print it.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

SNIPPET = re.compile(r'^(?P<indent>[ \t]*)-{1,}8<-{1,}[ \t]+"(?P<path>dags/[\w./-]+\.py):(?P<name>[a-z][\w-]*)"[ \t]*$',
                     re.MULTILINE)
MARKER = re.compile(r"^\s*# \[(START|END) [\w-]+\]\s*$")


def dag_section(path: Path, name: str) -> str:
    """The lines between ``# [START name]`` and ``# [END name]`` in ``path``, dedented, markers removed.

    :param path: the DAG file.
    :param name: the marker name.
    :raises ValueError: the file has no such pair of markers, or they are out of order.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == f"# [START {name}]"]
    ends = [i for i, line in enumerate(lines) if line.strip() == f"# [END {name}]"]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(f"{path}: expected one '# [START {name}]' followed by one '# [END {name}]'")
    body = [line for line in lines[starts[0] + 1 : ends[0]] if not MARKER.match(line)]
    return textwrap.dedent("\n".join(body)).strip("\n")


def expand(markdown: str, root: Path, where: str = "page") -> str:
    """Replace every DAG snippet line of ``markdown`` with the section it names.

    :param markdown: the page source.
    :param root: the repository root the ``dags/...`` paths are relative to.
    :param where: the page, for error messages.
    """

    def replace(match: re.Match[str]) -> str:
        path = root / match["path"]
        if not path.is_file():
            raise PluginError(f"{where}: snippet file {match['path']} does not exist")
        try:
            code = dag_section(path, match["name"])
        except ValueError as exc:
            raise PluginError(f"{where}: {exc}") from None
        return textwrap.indent(code, match["indent"])

    return SNIPPET.sub(replace, markdown)


def on_page_markdown(markdown: str, *, page: Any, config: Any, **_kwargs: Any) -> str:
    """MkDocs event: expand the DAG snippets of each page before Markdown (and pymdownx) sees it."""
    root = Path(config["config_file_path"]).resolve().parent
    return expand(markdown, root, page.file.src_uri)
