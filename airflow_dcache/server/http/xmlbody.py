"""Parsing the small XML bodies of PROPFIND, PROPPATCH and LOCK, with one error for every way they can be bad."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from airflow_dcache.server.services.errors import BadRequest


def parse_xml_body(body: bytes, method: str) -> ET.Element:
    """The root element, or a 400 naming the method.

    Besides syntax errors, expat raises ``LookupError`` for an unknown ``encoding=`` in the XML
    declaration and ``ValueError`` for some undecodable input; all of them are the client's fault.
    Entity expansion is bounded by expat itself (2.4.1+) and the body by the caller's size limit.
    """
    try:
        return ET.fromstring(body)
    except (ET.ParseError, LookupError, ValueError) as err:
        raise BadRequest(f"Malformed {method} body: {err}") from None
