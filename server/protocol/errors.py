"""OpenAI's error envelope, `{"error": {"message", "type", "param", "code"}}`, and the exception that carries it.

Serving raises `APIError` wherever it finds a request it cannot serve; the HTTP edge (server.api.error_handlers)
turns it into a response with its status, and the realtime API into an `error` event.
"""

from pydantic import BaseModel

__all__ = ["APIError", "Error", "ErrorResponse", "bad_request", "error_body", "service_unavailable"]

# OpenAI's `type` for each status: a wrong key and an unknown id are invalid requests too (docs/api.md, Errors)
_TYPES = {
    400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error", 404: "invalid_request_error",
    405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
    503: "service_unavailable_error",
}


class Error(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every HTTP error, as OpenAI's API and its SDKs have it."""

    error: Error


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    error = Error(message=message, type=_TYPES.get(status, "invalid_request_error"), param=param, code=code)
    return ErrorResponse(error=error).model_dump()


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param, code)


def service_unavailable(message: str, code: str) -> APIError:
    """503: a part the request needs is down for now (the engine, the response store); the SDKs retry it."""
    return APIError(503, message, code=code)
