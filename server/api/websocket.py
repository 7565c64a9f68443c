"""GET /v1/realtime: the WebSocket handshake (API key, subprotocol), then the session runs in the serving layer."""

import hmac

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from server.protocol.errors import error_body

router = APIRouter()

KEY_SUBPROTOCOL = "openai-insecure-api-key."  # how browsers, which cannot set headers on a WebSocket, send the key


def _given_key(websocket: WebSocket) -> str | None:
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for protocol in websocket.scope.get("subprotocols", []):
        if protocol.startswith(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL):]
    return None


def _authorized(websocket: WebSocket) -> bool:
    keys = websocket.app.state.api_keys
    if not keys:
        return True
    given = (_given_key(websocket) or "").encode()
    # compare_digest against every key: the time taken does not tell how much of a guess was right
    return any([hmac.compare_digest(given, key.encode()) for key in keys])


def _chosen(offered: list[str]) -> str | None:
    """The subprotocol to answer with: a browser that offered any fails the connection if none is chosen.
    `realtime` (what OpenAI's server chooses), else the first offered that is not the key, else the key itself."""
    if "realtime" in offered:
        return "realtime"
    others = [p for p in offered if not p.startswith(KEY_SUBPROTOCOL)]
    return (others or offered or [None])[0]


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket, intent: str | None = None, model: str | None = None) -> None:
    if not _authorized(websocket):
        body = error_body(401, "invalid or missing API key: send Authorization: Bearer <key>, or from a browser the "
                               f"subprotocol {KEY_SUBPROTOCOL}<key>", code="invalid_api_key")
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            return await websocket.send_denial_response(JSONResponse(body, status_code=401))
        return await websocket.close(code=1008, reason="invalid_api_key")  # the server answers the handshake 403
    await websocket.accept(subprotocol=_chosen(websocket.scope.get("subprotocols", [])))
    await websocket.app.state.realtime.serve(websocket.receive, websocket.send_text,
                                             lambda code, reason: websocket.close(code, reason), intent, model)
