"""Server-sent events on Turnout's side: framing chunks, and ending a stream that failed."""

from __future__ import annotations

from collections.abc import AsyncIterator

from router.errors import UpstreamFailure, error_body
from router.masking import SecretMasker
from router.providers import Chunk

__all__ = ["DONE", "error_frame", "frame", "sse_frames"]

DONE = b"data: [DONE]\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def error_frame(message: str) -> bytes:
    return frame(error_body(message, "upstream_error", "upstream_error"))


async def sse_frames(chunks: AsyncIterator[Chunk], masker: SecretMasker) -> AsyncIterator[bytes]:
    """The SSE bytes of a committed stream, ending in `[DONE]`.

    A failure after the commit ends the stream with an error event and no `[DONE]`, so
    the client (and the OpenAI SDK) can tell the answer is incomplete. Closing this
    generator closes `chunks`, which cancels the upstream call.
    """
    try:
        async for chunk in chunks:
            yield frame(masker.mask(chunk.encode()))
    except UpstreamFailure as exc:
        yield error_frame(f"The upstream stream failed after it started: {exc}")
        return
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield DONE
