"""Property-based fuzzing of the server's own OpenAPI schema (schemathesis) against a real process: no 5xx."""

import collections

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.support.app import MODEL
from tests.support.servers import output, start

MAX_EXAMPLES = 60  # per operation


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    process, base = start(tiny_model_dir, "--default-max-tokens", "16")
    yield process, base
    process.terminate()
    process.wait(timeout=60)


def test_no_generated_request_makes_a_server_error(server):
    process, base_url = server
    try:
        _fuzz(base_url)
    except BaseException:
        print("server log:", output(process)[-20_000:])  # shown with the failure
        raise


def _fuzz(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/audio/transcriptions", "/v1/audio/translations",
                                               "/v1/chat/completions", "/v1/models"}
    tried = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  phases=[Phase.generate])  # a failing case is reported as found: shrinking a hang costs minutes
        def check(case):
            _shorten(case)
            response = case.call(timeout=60)
            tried.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
            if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}

        check()
    print("\nstatus codes:", sorted(collections.Counter(tried).items()))
    assert len(tried) >= 4 * 10


def _shorten(case) -> None:
    """Aim the generated requests at the served model (random names only reach the 404 check) and keep each one
    short on a CPU by capping the length fields; everything else stays as generated. A whole float counts too:
    the API takes `"max_tokens": 6082.0` as 6082 tokens, and one such request (with ignore_eos) ran 44 s here and
    past the 60 s timeout on a busy machine."""
    if isinstance(case.body, dict):
        if isinstance(case.body.get("model"), str):
            case.body["model"] = MODEL
        for field in ("max_tokens", "max_completion_tokens", "min_tokens", "max_output_tokens"):
            value = case.body.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 16:
                case.body[field] = 16
