"""Masks configured secrets in anything relayed from an upstream to a client."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SecretMasker"]


class SecretMasker:
    """Replaces every configured secret with `***`; free when nothing matches."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s.encode() for s in secrets if s}, key=len, reverse=True)

    def mask(self, data: bytes) -> bytes:
        for secret in self._secrets:
            if secret in data:
                data = data.replace(secret, b"***")
        return data

    def mask_text(self, text: str) -> str:
        return self.mask(text.encode()).decode() if self._secrets else text
