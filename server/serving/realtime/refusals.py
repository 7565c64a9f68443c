"""How a realtime session says no: an `error` event and go on (`ClientError`), or an `error` event and close the
WebSocket with a code that says why (`Close`)."""

from server.protocol.realtime import error_event

# WebSocket close codes, one per limit (1000-2999 are RFC 6455's, 4000-4999 are the application's own)
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # unknown model
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_SERVER_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013  # too many sessions
CLOSE_SESSION_EXPIRED = 4001
CLOSE_BUFFER_FULL = 4002
CLOSE_CLIENT_TOO_SLOW = 4003


class ClientError(Exception):
    """A client event was refused; the session stays open."""

    def __init__(self, message: str, code: str | None = None, param: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message, self.code, self.param, self.type = message, code, param, type_

    def event(self, event_id: str | None) -> dict:
        return error_event(self.message, self.type, self.code, self.param, event_id)


class Close(ClientError):
    """The session ends: the error event is sent, then the WebSocket closes with `close_code`."""

    def __init__(self, close_code: int, message: str, code: str, type_: str = "invalid_request_error") -> None:
        super().__init__(message, code, None, type_)
        self.close_code = close_code
