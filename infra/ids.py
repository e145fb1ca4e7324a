"""Time-ordered ids (UUIDv7, RFC 9562): sortable by creation, so indexes stay append-mostly.

Made at the edge (command handlers) and passed into the domain, which never makes its own.
"""

from __future__ import annotations

import os
import time
import uuid


def new_id() -> str:
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80  # 48-bit Unix milliseconds
    value |= 0x7 << 76  # version 7
    value |= (rand >> 68 & 0xFFF) << 64  # 12 random bits
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & ((1 << 62) - 1)  # 62 random bits
    return str(uuid.UUID(int=value))
