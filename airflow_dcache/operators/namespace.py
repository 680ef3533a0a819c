"""Namespace operators: create, move, delete, set attributes and labels, list/select files.

Each one is a thin call of :class:`~airflow_dcache.hooks.dcache.DCacheHook`; arguments are checked at
DAG parse where they are not templates, again on the worker after rendering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_dcache.links.dcache import DCacheFileLink, DCacheViewLink, persist_file_links
from airflow_dcache.operators.base import DCacheBaseOperator
from airflow_dcache.paths import check_at_parse, is_template, paths_from
from airflow_dcache.selection import DEFAULT_MAX_DIRS, DEFAULT_MAX_FILES, Criteria, select

XATTR_MODES = ("EITHER", "CREATE", "MODIFY")


class _NamespaceOperator(DCacheBaseOperator):
    operator_extra_links = (DCacheFileLink(), DCacheViewLink())

    def _link(self, context: Any, path: str) -> None:
        persist_file_links(context, self.dcache_conn_id, self.hook.settings.api_url, path)


class DCacheCreateDirectoryOperator(_NamespaceOperator):
    """Create a directory (and, with ``parents``, the missing ones above it).

    :param path: the directory (templated).
    :param parents: create missing parents too.
    :param exist_ok: an existing directory is not an error.
    :return: ``{"path", "created"}`` (``created`` is false when it already existed).
    """

    template_fields: Sequence[str] = ("path", "dcache_conn_id")

    def __init__(self, *, path: str, parents: bool = True, exist_ok: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_at_parse(path, field="path")
        self.path = path
        self.parents = parents
        self.exist_ok = exist_ok

    def execute(self, context: Any) -> dict[str, Any]:
        check_at_parse(self.path, field="path")
        created = self.hook.mkdir(self.path, parents=self.parents, exist_ok=self.exist_ok)
        self._link(context, self.path)
        self.log.info("%s %s", "created" if created else "already existed:", self.path)
        return {"path": self.path, "created": created}


class DCacheMoveOperator(_NamespaceOperator):
    """Rename or move a file or directory within one dCache.

    :param source_path: what to move (templated).
    :param destination_path: the new path (templated).
    :param overwrite: replace an existing destination.
    :return: ``{"source", "destination"}``.
    """

    template_fields: Sequence[str] = ("source_path", "destination_path", "dcache_conn_id")

    def __init__(self, *, source_path: str, destination_path: str, overwrite: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_at_parse(source_path, field="source_path")
        check_at_parse(destination_path, field="destination_path")
        self.source_path = source_path
        self.destination_path = destination_path
        self.overwrite = overwrite

    def execute(self, context: Any) -> dict[str, Any]:
        check_at_parse(self.source_path, field="source_path")
        check_at_parse(self.destination_path, field="destination_path")
        self.hook.move(self.source_path, self.destination_path, overwrite=self.overwrite)
        self._link(context, self.destination_path)
        self.log.info("moved %s to %s", self.source_path, self.destination_path)
        return {"source": self.source_path, "destination": self.destination_path}


class DCacheDeleteOperator(_NamespaceOperator):
    """Delete files or directories.

    :param path: a path, a list of paths or of file records from :class:`DCacheListOperator` (templated).
    :param recursive: delete directories with their content.
    :param missing_ok: a missing path is not an error.
    :return: ``{"deleted": [...], "missing": [...]}``.
    """

    template_fields: Sequence[str] = ("path", "dcache_conn_id")

    def __init__(self, *, path: str | Sequence[Any], recursive: bool = False, missing_ok: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_at_parse(path, field="path")
        self.path = path
        self.recursive = recursive
        self.missing_ok = missing_ok

    def execute(self, context: Any) -> dict[str, Any]:
        deleted: list[str] = []
        missing: list[str] = []
        for path in paths_from(self.path, field="path"):
            if self.hook.delete(path, recursive=self.recursive, missing_ok=self.missing_ok):
                deleted.append(path)
            else:
                missing.append(path)
        self.log.info("deleted %d path(s), %d already missing", len(deleted), len(missing))
        return {"deleted": deleted, "missing": missing}


class DCacheSetAttributesOperator(_NamespaceOperator):
    """Set extended attributes and/or labels on files or directories.

    :param path: a path or a list of paths / file records (templated).
    :param xattrs: extended attributes to set, ``{name: value}`` (templated).
    :param labels: labels to add (templated).
    :param replace_labels: remove labels not in ``labels``.
    :param xattr_mode: ``EITHER`` (default), ``CREATE`` (fail if present) or ``MODIFY`` (fail if absent).
    :return: ``{"paths", "xattrs", "labels"}``.
    """

    template_fields: Sequence[str] = ("path", "xattrs", "labels", "dcache_conn_id")

    def __init__(
        self,
        *,
        path: str | Sequence[Any],
        xattrs: Mapping[str, Any] | None = None,
        labels: Sequence[str] | None = None,
        replace_labels: bool = False,
        xattr_mode: str = "EITHER",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_at_parse(path, field="path")
        if not xattrs and not labels:
            raise ValueError("xattrs, labels: give extended attributes or labels to set")
        if xattr_mode.upper() not in XATTR_MODES:
            raise ValueError(f"xattr_mode: {xattr_mode!r} is not one of {', '.join(XATTR_MODES)}")
        if isinstance(labels, str) and not is_template(labels):
            raise ValueError("labels: expected a list of labels, not a string")
        self.path = path
        self.xattrs = xattrs
        self.labels = labels
        self.replace_labels = replace_labels
        self.xattr_mode = xattr_mode.upper()

    def execute(self, context: Any) -> dict[str, Any]:
        paths = paths_from(self.path, field="path")
        labels = list(self.labels or [])
        for path in paths:
            if self.xattrs:
                self.hook.set_xattr(path, dict(self.xattrs), mode=self.xattr_mode)
            if labels:
                self.hook.set_labels(path, labels, replace=self.replace_labels)
        self._link(context, paths[0])
        return {"paths": paths, "xattrs": dict(self.xattrs or {}), "labels": labels}


class DCacheSetPermissionsOperator(_NamespaceOperator):
    """Set the mode, group and labels of files or directories; only what differs is changed.

    For opening an ingest directory to a group of scientists without hand-written REST calls. Each path
    is read once (mode, group, labels) and only the differing attributes are sent, so a rerun is a no-op.
    dCache allows ``chmod``/``chgrp`` to the owner only (or an asserted role), ``chgrp`` only to a group
    the owner is in.

    :param path: a path or a list of paths / file records (templated).
    :param mode: permission bits, an int (``0o2775``) or an octal string (``"2775"``, ``"0775"``) (templated).
    :param gid: numeric group id (templated).
    :param labels: labels to add (templated).
    :param remove_labels: labels to remove (templated); absent ones are skipped.
    :return: ``{"paths", "mode", "gid", "labels", "removed_labels", "changed"}``; ``mode`` as ``"0o775"``,
        ``changed`` the paths something was changed on.
    """

    template_fields: Sequence[str] = ("path", "mode", "gid", "labels", "remove_labels", "dcache_conn_id")

    def __init__(
        self,
        *,
        path: str | Sequence[Any],
        mode: int | str | None = None,
        gid: int | str | None = None,
        labels: Sequence[str] | None = None,
        remove_labels: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_at_parse(path, field="path")
        if mode is None and gid is None and not labels and not remove_labels:
            raise ValueError("mode, gid, labels, remove_labels: give at least one thing to set")
        _check_permissions(mode, gid, labels, remove_labels, rendered=False)
        self.path = path
        self.mode = mode
        self.gid = gid
        self.labels = labels
        self.remove_labels = remove_labels

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_dcache.hooks.arguments import parse_gid, parse_mode

        paths = paths_from(self.path, field="path")
        _check_permissions(self.mode, self.gid, self.labels, self.remove_labels, rendered=True)
        mode = None if self.mode in (None, "") else parse_mode(self.mode, "mode")
        gid = None if self.gid in (None, "") else parse_gid(self.gid, "gid")
        add, drop = list(self.labels or []), list(self.remove_labels or [])
        changed: list[str] = []
        for path in paths:
            entry = self.hook.stat(path, optional=True, labels=bool(add or drop))
            current = entry.labels or []
            missing = [label for label in add if label not in current]
            present = [label for label in drop if label in current]
            if missing:
                self.hook.set_labels(path, missing)
            if present:
                self.hook.remove_labels(path, present)
            new_group = gid is not None and entry.raw.get("group") != gid
            if new_group:
                self.hook.chgrp(path, gid)  # type: ignore[arg-type]
            # after chgrp, which may clear the setgid bit on some file systems
            new_mode = mode is not None and (new_group or entry.mode is None or entry.mode & 0o7777 != mode)
            if new_mode:
                self.hook.chmod(path, mode)  # type: ignore[arg-type]
            if missing or present or new_group or new_mode:
                changed.append(path)
        self._link(context, paths[0])
        self.log.info("permissions set on %d path(s), changed on %d", len(paths), len(changed))
        return {"paths": paths, "mode": None if mode is None else oct(mode), "gid": gid, "labels": add,
                "removed_labels": drop, "changed": changed}


def _check_permissions(mode: Any, gid: Any, labels: Any, remove_labels: Any, *, rendered: bool) -> None:
    """Check what is not a template (everything, once rendered); errors name the argument."""
    from airflow_dcache.hooks.arguments import parse_gid, parse_mode

    if mode not in (None, "") and (rendered or not is_template(mode)):
        parse_mode(mode, "mode")
    if gid not in (None, "") and (rendered or not is_template(gid)):
        parse_gid(gid, "gid")
    for name, value in (("labels", labels), ("remove_labels", remove_labels)):
        if value is None or (not rendered and is_template(value)):
            continue
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
                isinstance(x, str) and x.strip() for x in value):
            raise ValueError(f"{name}: expected a list of non-empty label names, got {value!r}")


class DCacheListOperator(_NamespaceOperator):
    """List a directory and select files: the "file-list service".

    Returns the list of file records described in :mod:`airflow_dcache.selection` (path, name, pnfsid,
    size, mtime, checksums, locality), sorted by path. Every path-taking operator accepts these records,
    so a mapped task can ``.expand(path=list_task.output)``. The bare paths are also pushed under the
    XCom key ``paths`` (for templates: ``ti.xcom_pull("select", key="paths")``; Airflow cannot map over a
    custom key).

    :param path: the directory to list (templated).
    :param recursive: descend into subdirectories.
    :param name_glob: shell pattern on file names (templated).
    :param path_glob: shell pattern on full paths (templated).
    :param path_regex: regular expression searched in full paths (templated).
    :param min_size: smallest size in bytes.
    :param max_size: largest size in bytes.
    :param mtime_after: modified at or after (templated, e.g. ``{{ data_interval_start }}``).
    :param mtime_before: modified before (templated, e.g. ``{{ data_interval_end }}``).
    :param locality: required locality (``ONLINE``, ``NEARLINE``, ``ONLINE_AND_NEARLINE``; templated).
    :param labels: labels each file must carry (templated).
    :param with_checksums: ask the frontend for checksums (one listing flag, no extra request).
    :param max_files: more matches than this fail the task (an XCom must stay small).
    :param max_dirs: more directories than this fail the task (a mistaken root must not list a site).
    """

    template_fields: Sequence[str] = (
        "path", "name_glob", "path_glob", "path_regex", "mtime_after", "mtime_before", "locality", "labels",
        "dcache_conn_id",
    )

    def __init__(
        self,
        *,
        path: str,
        recursive: bool = False,
        name_glob: str | None = None,
        path_glob: str | None = None,
        path_regex: str | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        mtime_after: Any = None,
        mtime_before: Any = None,
        locality: str | Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        with_checksums: bool = True,
        max_files: int = DEFAULT_MAX_FILES,
        max_dirs: int = DEFAULT_MAX_DIRS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_at_parse(path, field="path")
        self.path = path
        self.recursive = recursive
        self.name_glob = name_glob
        self.path_glob = path_glob
        self.path_regex = path_regex
        self.min_size = min_size
        self.max_size = max_size
        self.mtime_after = mtime_after
        self.mtime_before = mtime_before
        self.locality = locality
        self.labels = labels
        self.with_checksums = with_checksums
        self.max_files = max_files
        self.max_dirs = max_dirs
        self._criteria(parse_time=True)  # fails at DAG parse on what is not a template

    def _criteria(self, parse_time: bool = False) -> Criteria:
        def value(v: Any) -> Any:
            return None if parse_time and is_template(v) else v

        labels = self.labels
        templated = is_template(labels) or (isinstance(labels, (list, tuple)) and any(map(is_template, labels)))
        if parse_time and templated:
            labels = None
        if isinstance(labels, str) and not is_template(labels):
            raise ValueError("labels: expected a list of labels, not a string")
        return Criteria(
            name_glob=value(self.name_glob) or None,
            path_glob=value(self.path_glob) or None,
            path_regex=value(self.path_regex) or None,
            min_size=self.min_size,
            max_size=self.max_size,
            mtime_after=value(self.mtime_after),
            mtime_before=value(self.mtime_before),
            locality=value(self.locality) if not isinstance(self.locality, list) else self.locality,
            labels=tuple(labels or ()),
        )

    def execute(self, context: Any) -> list[dict[str, Any]]:
        check_at_parse(self.path, field="path")
        criteria = self._criteria()
        flags = {"locality": True, "checksum": self.with_checksums, "labels": criteria.needs_labels}

        def list_dir(directory: str) -> Any:
            return self.hook.list_dir(directory, **flags)

        records = select(list_dir, self.path, criteria, recursive=self.recursive,
                         max_files=self.max_files, max_dirs=self.max_dirs)
        self.log.info("selected %d file(s) below %s", len(records), self.path)
        self._link(context, self.path)
        context["ti"].xcom_push(key="paths", value=[r["path"] for r in records])
        return records
