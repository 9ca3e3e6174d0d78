"""The exception tree, and the one function that renders it as an OpenAI-shaped error.

    TurnoutError                      status, type, code: what the client is told
    ├── InvalidRequest                400 invalid_request_error (invalid_json, missing_field,
    │                                     invalid_type, forbidden_field, ...)
    ├── AuthenticationFailed          401 authentication_error / invalid_api_key
    ├── ModelNotFound                 404 invalid_request_error / model_not_found
    ├── RequestTooLarge               413 invalid_request_error / request_too_large
    ├── RateLimitExceeded             429 rate_limit_error / rate_limit_exceeded
    ├── AllAttemptsFailed             502 upstream_error / upstream_error
    ├── NoHealthyDeployment           503 upstream_error / no_healthy_deployment
    ├── RequestTimedOut               504 upstream_error / upstream_timeout
    └── UpstreamRejected              the upstream's own 4xx, passed through (body masked)
        └── ContextLengthExceeded     ... and it says the context was too long

    UpstreamFailure                   one attempt on one deployment failed (retry elsewhere)
    ├── UpstreamRateLimited           429: cool down at once, for Retry-After when given
    ├── UpstreamAuthFailed            401/403 or the vendor's invalid-key error
    └── UpstreamTimeout               no answer (or no first content) in time

UpstreamFailure never reaches a client: the dispatcher turns a run of them into
AllAttemptsFailed, NoHealthyDeployment or RequestTimedOut. Messages name deployment ids,
never keys, and never an upstream's body except the client-error body of UpstreamRejected.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "AllAttemptsFailed",
    "AuthenticationFailed",
    "ContextLengthExceeded",
    "InvalidRequest",
    "ModelNotFound",
    "NoHealthyDeployment",
    "RateLimitExceeded",
    "RequestTimedOut",
    "RequestTooLarge",
    "TurnoutError",
    "UpstreamAuthFailed",
    "UpstreamFailure",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "error_body",
]


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    error = {"message": message, "type": type_, "param": param, "code": code}
    return orjson.dumps({"error": error})


class TurnoutError(Exception):
    status = 500
    type = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(TurnoutError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(TurnoutError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"www-authenticate": "Bearer"}


class ModelNotFound(TurnoutError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class RequestTooLarge(TurnoutError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimitExceeded(TurnoutError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, round(self.retry_after)))}


class _RoutedOut(TurnoutError):
    """Turnout already retried and fell back: tell the OpenAI SDK not to retry on top
    (its `x-should-retry` header), so retries are not multiplied (router x SDK)."""

    type = "upstream_error"

    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}


class AllAttemptsFailed(_RoutedOut):
    status = 502
    code = "upstream_error"


class NoHealthyDeployment(_RoutedOut):
    status = 503
    code = "no_healthy_deployment"


class RequestTimedOut(_RoutedOut):
    status = 504
    code = "upstream_timeout"


class UpstreamRejected(TurnoutError):
    """The upstream refused the request itself (400, 404, 413, 422): the client's problem.

    `upstream_body` is the upstream's error body translated to the OpenAI shape; it is
    relayed with any configured secret masked.
    """

    type = "invalid_request_error"

    def __init__(self, deployment: str, status: int, upstream_body: dict[str, Any]) -> None:
        error = upstream_body.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        super().__init__(str(message or f"upstream {deployment} answered {status}"))
        self.deployment = deployment
        self.status = status
        self.upstream_body = upstream_body

    def body(self) -> bytes:
        return orjson.dumps(self.upstream_body)


class ContextLengthExceeded(UpstreamRejected):
    pass


class UpstreamFailure(Exception):
    """One attempt failed in a way that is the deployment's fault, not the client's."""

    def __init__(self, deployment: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"{deployment}: {reason}")
        self.deployment = deployment
        self.reason = reason
        self.status = status


class UpstreamRateLimited(UpstreamFailure):
    def __init__(self, deployment: str, retry_after: float | None) -> None:
        super().__init__(deployment, "rate limited (429)", status=429)
        self.retry_after = retry_after


class UpstreamAuthFailed(UpstreamFailure):
    pass


class UpstreamTimeout(UpstreamFailure):
    pass
