"""Docker HEALTHCHECK: exit 0 once the server's /ready answers 200 (model loaded, engine running), else 1."""

import os
import sys
import urllib.request

host = os.environ.get("QWEN2_AUDIO_HOST", "127.0.0.1")
host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # a wildcard bind answers on loopback
url = f"http://{host}:{os.environ.get('QWEN2_AUDIO_PORT', '8000')}/ready"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:  # refused while loading, 503 while not ready (HTTPError is an OSError)
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
