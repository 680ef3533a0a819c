"""Which part of a credential to hand Airflow's secrets masker.

Shared by the hooks (minted macaroons, token-file tokens, third-party-copy credentials) and the
function runner's token exchange, so every long credential is registered the same way.
"""

from __future__ import annotations

__all__ = ["MASKED_TAIL", "masked_part"]

MASKED_TAIL = 64
"""How much of a long credential is registered with Airflow's log masker: its last characters."""


def masked_part(credential: str) -> str:
    """What to register with the log masker for ``credential``: all of it, or the tail of a long one.

    Airflow's masker rebuilds one regular expression of every registered secret on each addition, so
    registering whole macaroons (hundreds of characters, hundreds per chunk task) made minting
    quadratic: 250 macaroons cost 0.35 s each. A macaroon's and a JWT's signature is at the end, and a
    logged credential without it is useless, so the last :data:`MASKED_TAIL` characters are enough to
    keep it out of task logs; identifier and caveats (or header and claims) are readable by whoever
    holds the credential anyway. Short credentials (passwords, opaque tokens) are registered whole.
    """
    return credential if len(credential) <= 2 * MASKED_TAIL else credential[-MASKED_TAIL:]
