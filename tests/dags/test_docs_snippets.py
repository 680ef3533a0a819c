"""docs/pipelines.md shows the example DAGs' own code: every snippet names a marker pair that exists, every
example DAG has a section, and the built site contains the DAG code (not the snippet lines)."""

from __future__ import annotations

import html
import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "pipelines.md"
HOOKS = runpy.run_path(str(ROOT / "scripts" / "mkdocs_hooks.py"))


def _snippets() -> list[tuple[str, str]]:
    return [(m["path"], m["name"]) for m in HOOKS["SNIPPET"].finditer(PAGE.read_text())]


def test_every_snippet_names_an_existing_marker_pair() -> None:
    snippets = _snippets()
    assert len(snippets) >= 6
    for path, name in snippets:
        code = HOOKS["dag_section"](ROOT / path, name)
        assert code.strip(), (path, name)
        assert "# [START" not in code and "# [END" not in code
        compile(code if not code.startswith((" ", "\t")) else "if True:\n" + code, path, "exec", dont_inherit=True)


def test_every_example_dag_has_a_section_with_its_code() -> None:
    text = PAGE.read_text()
    used = {path for path, _ in _snippets()}
    for dag_file in sorted((ROOT / "dags").glob("*.py")):
        assert f"(`{dag_file.stem}`)" in text, f"no section for {dag_file.stem}"
        assert f"dags/{dag_file.name}" in used, f"no code block from {dag_file.name}"


def test_markers_in_the_dags_come_in_pairs() -> None:
    for dag_file in sorted((ROOT / "dags").glob("*.py")):
        text = dag_file.read_text()
        starts = re.findall(r"# \[START ([\w-]+)\]", text)
        assert sorted(starts) == sorted(re.findall(r"# \[END ([\w-]+)\]", text)), dag_file.name
        for name in starts:
            HOOKS["dag_section"](dag_file, name)


def test_a_missing_marker_stops_the_build(tmp_path: Path) -> None:
    from mkdocs.exceptions import PluginError

    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "x.py").write_text("a = 1\n    # [START s]\n    b = 2\n    # [END s]\n")
    assert HOOKS["expand"]('```python\n--8<-- "dags/x.py:s"\n```', tmp_path) == "```python\nb = 2\n```"
    with pytest.raises(PluginError, match=r"page: .*\[START gone\]"):
        HOOKS["expand"]('--8<-- "dags/x.py:gone"', tmp_path)
    with pytest.raises(PluginError, match="does not exist"):
        HOOKS["expand"]('--8<-- "dags/nope.py:s"', tmp_path)


@pytest.mark.packaging
def test_built_page_contains_the_dag_code(docs_site: Path) -> None:
    site = docs_site
    page = html.unescape(re.sub(r"<[^>]+>", "", (site / "pipelines" / "index.html").read_text()))
    assert "--8<--" not in page
    for path, name in _snippets():
        for line in HOOKS["dag_section"](ROOT / path, name).splitlines():
            assert line.strip() in page, (path, name, line)
