"""PROPPATCH: dCache lets clients set and remove extended attributes as WebDAV properties.

Only the ``http://www.dcache.org/2020/xattr`` namespace is writable; dead properties are not
supported. The request is atomic, as RFC 4918 asks: if any property cannot be changed, nothing is.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from airflow_dcache.server.http.propfind import DAV, XATTR
from airflow_dcache.server.http.xmlbody import parse_xml_body
from airflow_dcache.server.services.errors import BadRequest


@dataclass(frozen=True)
class PropertyChange:
    namespace: str
    name: str
    value: str | None  # None: remove

    @property
    def writable(self) -> bool:
        return self.namespace == XATTR


def parse_proppatch(body: bytes) -> list[PropertyChange]:
    root = parse_xml_body(body, "PROPPATCH")
    if root.tag != f"{{{DAV}}}propertyupdate":
        raise BadRequest("PROPPATCH body must be a DAV:propertyupdate element")
    changes = []
    for action in root:
        if action.tag not in (f"{{{DAV}}}set", f"{{{DAV}}}remove"):
            raise BadRequest("DAV:propertyupdate may only contain DAV:set and DAV:remove")
        remove = action.tag == f"{{{DAV}}}remove"
        for prop in action.findall(f"{{{DAV}}}prop"):
            for element in prop:
                ns, _, local = element.tag[1:].partition("}") if element.tag.startswith("{") else ("", "", element.tag)
                if len(element):
                    raise BadRequest(f"Property {local} must have a text value, not XML")
                changes.append(PropertyChange(ns, local, None if remove else (element.text or "")))
    if not changes:
        raise BadRequest("PROPPATCH names no property")
    return changes


def render_proppatch(href: str, changes: list[PropertyChange], status: dict[PropertyChange, str]) -> bytes:
    ms = ET.Element(f"{{{DAV}}}multistatus")
    response = ET.SubElement(ms, f"{{{DAV}}}response")
    ET.SubElement(response, f"{{{DAV}}}href").text = href
    for change in changes:
        propstat = ET.SubElement(response, f"{{{DAV}}}propstat")
        prop = ET.SubElement(propstat, f"{{{DAV}}}prop")
        ET.SubElement(prop, f"{{{change.namespace}}}{change.name}" if change.namespace else change.name)
        ET.SubElement(propstat, f"{{{DAV}}}status").text = status[change]
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(ms)
