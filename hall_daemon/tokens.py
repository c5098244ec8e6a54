"""Ticket tokens: the secret in a ticket's QR code and in its applicant page `/t/<token>`.

A token names one ticket to whoever holds it, and travels in MQTT topic levels
(`<base>/tickets/<token>`), so it is unguessable and URL-safe. `new_token` is the only place
one is made; `looks_like_token` is what an adapter accepts from outside as one.
"""

from __future__ import annotations

import re
import secrets

TOKEN_BYTES = 16  # 128 bits: 22 characters; the contract asks for at least 96 bits
# What an adapter takes from outside as a token: URL-safe, long enough to carry 96 bits,
# and never something that could be a ticket number.
_FROM_OUTSIDE = re.compile(r"[A-Za-z0-9_-]{16,64}")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def looks_like_token(text: str) -> bool:
    return _FROM_OUTSIDE.fullmatch(text) is not None
