"""What the shared response store adds to a Responses request: the same server build twice on one model, one with the
in-memory store and one with `--response-store URL`, driven in turn by the same sequential requests (a stored turn
that continues the previous one, then reading it back, then a turn with store=false as the control), so the
difference of their medians is the store's cost and little else.

    python -m server.bench.store_latency --redis redis://127.0.0.1:6379/0 [--requests 300] [--out bench-results]

Writes store_latency.json and store_latency.md under --out. Run Redis where production runs it: on loopback the
figure is the store's own work; across a network, add that network's round trips.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

from server.bench.http_load import ServerProcess, free_port
from server.config import RANDOM_MODEL_DIR
from server.tiny_model import ensure_random_model

OPERATIONS = ("create, stored", "retrieve", "create, store=false")
CHAIN = 8  # turns per conversation before a new one starts, so prompts stay alike across the run


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m server.bench.store_latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", required=True, help="the Redis or Valkey URL to measure (its database is written to)")
    p.add_argument("--model", help="model folder (default: the tiny random-weight preset, written once)")
    p.add_argument("--requests", type=int, default=300, help="round trips per store and operation")
    p.add_argument("--out", default="bench-results")
    args = p.parse_args(argv)
    model = args.model or str(ensure_random_model(RANDOM_MODEL_DIR.parent / "bench-tiny", "tiny", "instruct"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stores = {"memory": "memory", "redis": args.redis}
    with _server(model, "memory", out) as memory, _server(model, args.redis, out) as redis:
        bases = {"memory": memory.base_url, "redis": redis.base_url}
        if (ready := httpx.get(redis.base_url + "/ready").json())["status"] != "ready":
            raise SystemExit(f"{args.redis.rsplit('@', 1)[-1]}: {ready.get('response_store')}")
        times = _measure(bases, args.requests)
    report = _report(times, stores, args.requests, model)
    (out / "store_latency.json").write_text(json.dumps(report, indent=2))
    (out / "store_latency.md").write_text(report["markdown"])
    print(report["markdown"])
    return 0


def _server(model: str, store: str, out: Path) -> ServerProcess:
    port = free_port()
    command = [sys.executable, "-m", "server", "serve", "--model", model, "--served-model-name", "bench", "--port",
               str(port), "--response-store", store, "--log-level", "warning"]
    name = "memory" if store == "memory" else "redis"
    return ServerProcess(command, f"http://127.0.0.1:{port}", "/ready", out / f"store-latency-{name}.log")


def _measure(bases: dict[str, str], requests: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per round trip, per store and operation; the stores take turns request by request."""
    clients = {name: httpx.Client(base_url=base, timeout=60) for name, base in bases.items()}
    times = {name: {op: [] for op in OPERATIONS} for name in bases}
    previous: dict[str, str | None] = dict.fromkeys(bases)
    body = {"model": "bench", "input": "Say one word.", "max_output_tokens": 1, "temperature": 0}
    for http in clients.values():  # warm-up: connections, the prefix cache, the store's scripts
        http.post("/v1/responses", json=body).raise_for_status()
    for i in range(requests):
        for name, http in clients.items():
            chained = {**body, "previous_response_id": previous[name] if i % CHAIN else None}
            made = _timed(times[name]["create, stored"], http.post, "/v1/responses", json=chained)
            previous[name] = made.json()["id"]
            _timed(times[name]["retrieve"], http.get, f"/v1/responses/{previous[name]}")
            _timed(times[name]["create, store=false"], http.post, "/v1/responses", json={**body, "store": False})
    for http in clients.values():
        http.close()
    return times


def _timed(into: list[float], method, *args, **kwargs) -> httpx.Response:
    started = time.perf_counter()
    response = method(*args, **kwargs)
    into.append(time.perf_counter() - started)
    response.raise_for_status()
    return response


def _report(times: dict, stores: dict[str, str], requests: int, model: str) -> dict:
    rows = []
    for op in OPERATIONS:
        p50 = {name: statistics.median(times[name][op]) * 1000 for name in times}
        p95 = {name: statistics.quantiles(times[name][op], n=20)[-1] * 1000 for name in times}
        rows.append({"operation": op, "memory_p50_ms": round(p50["memory"], 3), "redis_p50_ms": round(p50["redis"], 3),
                     "memory_p95_ms": round(p95["memory"], 3), "redis_p95_ms": round(p95["redis"], 3),
                     "added_p50_ms": round(p50["redis"] - p50["memory"], 3)})
    lines = [f"Response store latency: {requests} sequential round trips per operation and store, model {model}.", "",
             "| operation | memory p50 / p95 (ms) | Redis p50 / p95 (ms) | added by Redis, p50 (ms) |", "|---|---|---|---|"]
    lines += [f"| {r['operation']} | {r['memory_p50_ms']} / {r['memory_p95_ms']} | {r['redis_p50_ms']} / "
              f"{r['redis_p95_ms']} | {r['added_p50_ms']:+} |" for r in rows]
    where = stores["redis"].rsplit("@", 1)[-1]
    return {"requests": requests, "redis": where, "results": rows, "markdown": "\n".join(lines) + "\n"}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
