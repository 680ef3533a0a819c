"""PROPFIND request parsing and 207 Multi-Status rendering with dCache's extra properties."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import quote

from airflow_dcache.server.http.digests import checksums_property
from airflow_dcache.server.http.xmlbody import parse_xml_body
from airflow_dcache.server.services.errors import BadRequest
from airflow_dcache.server.services.namespace import Entry

DAV = "DAV:"
DCACHE = "http://www.dcache.org/2013/webdav"
SRM = "http://srm.lbl.gov/StorageResourceManager"
XATTR = "http://www.dcache.org/2020/xattr"

ET.register_namespace("d", DAV)
ET.register_namespace("dcache", DCACHE)
ET.register_namespace("srm", SRM)
ET.register_namespace("x", XATTR)

# What a plain PROPFIND (allprop) returns; dCache's extras must be asked for by name.
_ALLPROP = ["displayname", "getcontentlength", "getlastmodified", "creationdate", "getetag",
            "resourcetype", "getcontenttype", "iscollection"]


@dataclass(frozen=True)
class PropfindRequest:
    names: list[tuple[str, str]] | None  # (namespace, local name); None means allprop
    propname: bool = False


def parse_propfind(body: bytes) -> PropfindRequest:
    if not body.strip():
        return PropfindRequest(None)
    root = parse_xml_body(body, "PROPFIND")
    if root.tag != f"{{{DAV}}}propfind":
        raise BadRequest("PROPFIND body must be a DAV:propfind element")
    for child in root:
        if child.tag == f"{{{DAV}}}allprop":
            return PropfindRequest(None)
        if child.tag == f"{{{DAV}}}propname":
            return PropfindRequest(None, propname=True)
        if child.tag == f"{{{DAV}}}prop":
            names = []
            for prop in child:
                ns, _, local = prop.tag[1:].partition("}") if prop.tag.startswith("{") else ("", "", prop.tag)
                names.append((ns, local))
            return PropfindRequest(names)
    raise BadRequest("DAV:propfind must contain prop, allprop or propname")


def etag(entry: Entry) -> str:
    node = entry.inode
    return f'"{node.id}_{node.mtime:x}"'


def http_date(ms: int) -> str:
    return formatdate(ms / 1000, usegmt=True)


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dav_value(entry: Entry, local: str, content_type: Callable[[str], str]) -> str | ET.Element | None:
    node = entry.inode
    match local:
        case "displayname":
            return node.name
        case "getcontentlength":
            return None if node.is_dir else str(node.size)
        case "getlastmodified":
            return http_date(node.mtime)
        case "creationdate":
            return _iso(node.crtime)
        case "getetag":
            return etag(entry)
        case "resourcetype":
            element = ET.Element(f"{{{DAV}}}resourcetype")
            if node.is_dir:
                ET.SubElement(element, f"{{{DAV}}}collection")
            return element
        case "getcontenttype":
            return "httpd/unix-directory" if node.is_dir else content_type(node.name)
        case "iscollection":
            return "1" if node.is_dir else "0"
    return None


def render_multistatus(
    entries: list[Entry], request: PropfindRequest, href_for: Callable[[Entry], str],
    xattrs_for: Callable[[Entry], dict[str, str]], content_type: Callable[[str], str],
) -> bytes:
    ms = ET.Element(f"{{{DAV}}}multistatus")
    for entry in entries:
        response = ET.SubElement(ms, f"{{{DAV}}}response")
        ET.SubElement(response, f"{{{DAV}}}href").text = href_for(entry)
        found = ET.Element(f"{{{DAV}}}prop")
        missing = ET.Element(f"{{{DAV}}}prop")
        names = request.names if request.names is not None else [(DAV, n) for n in _ALLPROP]
        for ns, local in names:
            value = _value(entry, ns, local, xattrs_for, content_type)
            target = found if value is not None else missing
            element = ET.SubElement(target, f"{{{ns}}}{local}" if ns else local)
            if request.propname:
                continue
            if isinstance(value, ET.Element):
                element.extend(list(value))
            elif value is not None:
                element.text = value
        for prop, status in ((found, "HTTP/1.1 200 OK"), (missing, "HTTP/1.1 404 Not Found")):
            if len(prop):
                propstat = ET.SubElement(response, f"{{{DAV}}}propstat")
                propstat.append(prop)
                ET.SubElement(propstat, f"{{{DAV}}}status").text = status
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(ms)


def _value(entry: Entry, ns: str, local: str, xattrs_for: Callable[[Entry], dict[str, str]],
           content_type: Callable[[str], str]) -> str | ET.Element | None:
    node = entry.inode
    if ns == DAV:
        return dav_value(entry, local, content_type)
    if ns == DCACHE and local == "Checksums":
        return None if node.is_dir else checksums_property(node)
    if ns == SRM:
        if node.is_dir:
            return None
        values = {
            "AccessLatency": "ONLINE" if node.on_disk and node.disk_sticky else "NEARLINE",
            "RetentionPolicy": "CUSTODIAL" if node.on_tape or "tape" in (node.qos_target or "") else "REPLICA",
            "FileLocality": node.locality,
        }
        return values.get(local)
    if ns == XATTR:
        return xattrs_for(entry).get(local)
    return None


def href(path: str, is_dir: bool) -> str:
    quoted = quote(path)
    return quoted + "/" if is_dir and not quoted.endswith("/") else quoted
