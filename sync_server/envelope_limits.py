"""Size limits of request bodies: an envelope (16 MiB) plus a margin."""

from schema.envelope import MAX_ENVELOPE

MAX_BODY = MAX_ENVELOPE + 64 * 1024
