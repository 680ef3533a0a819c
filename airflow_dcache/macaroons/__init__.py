"""Macaroons as dCache uses them: the V1 codec and the caveat vocabulary.

Importable without the server so the Airflow hook can attenuate macaroons locally.
"""

from airflow_dcache.macaroons.caveats import CaveatBuilder, CaveatError, parse_caveat
from airflow_dcache.macaroons.codec import (
    CaveatPacket,
    Macaroon,
    MacaroonFormatError,
    add_first_party_caveat,
    create,
    deserialize,
    serialize,
    verify_signature,
)

__all__ = [
    "CaveatBuilder",
    "CaveatError",
    "CaveatPacket",
    "Macaroon",
    "MacaroonFormatError",
    "add_first_party_caveat",
    "create",
    "deserialize",
    "parse_caveat",
    "serialize",
    "verify_signature",
]
