"""Server-sent events: turn a stream of text lines into the ``data`` payload of each event."""

from __future__ import annotations

from collections.abc import AsyncIterator


async def iter_sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """Yield each event's data (multi-line data joined with newlines), per the SSE format.

    Comment lines (``:...``) and other fields (``event:``, ``id:``, ``retry:``) are skipped; an
    event ends at a blank line, and a final event without its blank line is still delivered.
    """
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)
