"""Which part of a credential to hand Airflow's secrets masker.

Shared by the hooks (minted macaroons, token-file tokens, third-party-copy credentials) and the
function runner's token exchange, so every long credential is registered the same way.
"""

from __future__ import annotations

__all__ = ["MASKED_TAIL", "masked_part"]

MASKED_TAIL = 32
"""How much of a long credential is registered with Airflow's log masker: its last characters.

32 base64 characters are the last 24 bytes: of a macaroon (v1 or v2 serialisation) 23 bytes of its
32-byte signature, of an HS256 or RS256 JWT the end of its signature; a log line missing them holds no
usable credential. Fewer characters make each rebuild of the masker's expression cheaper (about 2.5
times from 64), in the task process and again in its supervisor."""


def masked_part(credential: str) -> str:
    """What to register with the log masker for ``credential``: all of it, or the tail of a long one.

    Airflow's masker rebuilds one regular expression of every registered secret on each addition, so
    registering whole macaroons (hundreds of characters, hundreds per chunk task) made minting
    quadratic: 250 macaroons cost 0.35 s each. It still is, by the count of registered credentials: a
    chunk task mints about six per file and both the task and its supervisor rebuild the expression on
    each, so the tail is kept short. A macaroon's and a JWT's signature is at the end, and a
    logged credential without it is useless, so the last :data:`MASKED_TAIL` characters are enough to
    keep it out of task logs; identifier and caveats (or header and claims) are readable by whoever
    holds the credential anyway. Short credentials (passwords, opaque tokens) are registered whole.
    """
    return credential if len(credential) <= 2 * MASKED_TAIL else credential[-MASKED_TAIL:]
