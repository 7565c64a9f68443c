"""The playground: a page at / that tries every task in a browser through the public /v1 API.

Plain HTML, CSS and JavaScript shipped as package data: no build step, no CDN, so it works on an offline LAN.
The page holds no secrets (a user's API key stays in their browser), so it is public; the /v1 calls it makes
are checked like any client's.
"""

from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

_TYPES = {"index.html": "text/html", "style.css": "text/css", "app.js": "text/javascript", "api.js": "text/javascript",
          "audio.js": "text/javascript", "snippets.js": "text/javascript", "live.js": "text/javascript",
          "live-worklet.js": "text/javascript", "who.js": "text/javascript"}
_ASSETS = {name: (files(__package__) / name).read_bytes() for name in _TYPES}
# Only this origin's scripts, styles and API: a key typed into the page can only go back to this server.
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
}

router = APIRouter(include_in_schema=False)


def _asset(name: str) -> Response:
    return Response(_ASSETS[name], media_type=f"{_TYPES[name]}; charset=utf-8", headers=_HEADERS)


@router.api_route("/", methods=["GET", "HEAD"])
async def page() -> Response:
    return _asset("index.html")


@router.api_route("/playground/{name}", methods=["GET", "HEAD"])
async def asset(name: str) -> Response:
    if name not in _TYPES or name == "index.html":
        raise HTTPException(404, f"no playground file {name!r}")
    return _asset(name)
