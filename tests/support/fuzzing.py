"""schemathesis hooks for tests/protocol/test_fuzz.py (tests/protocol/schemathesis.toml loads them into
`schemathesis run`): each generated request goes to the served model with real audio and short lengths, and a
schema-valid request refused with a 400 must be refused for a rule the document can only state in words.

Only values of the type the document gives are replaced, so a request made invalid on purpose stays invalid."""

import base64
import json

import schemathesis
from schemathesis.transport.serialization import Binary

from tests.support.app import MODEL
from tests.support.audio_samples import wav

_AUDIO = wav(1.0)
_BASE64 = base64.b64encode(_AUDIO).decode()
_DATA_URL = f"data:audio/wav;base64,{_BASE64}"
_LENGTHS = ("max_tokens", "max_completion_tokens", "min_tokens", "max_output_tokens")
_MAX_LENGTH = 16

# what a schema-valid request may still be refused for (a 400): rules about content or about several fields at
# once, which the document states in the descriptions of its fields; by `error.code`, or by words of its message
_CONTENT_CODES = {"invalid_audio", "audio_too_short", "unsupported_url", "url_not_allowed", "context_length_exceeded",
                  "previous_response_not_found"}  # an id that names no stored response of this key
_CONTENT_RULES = (
    "at least one user message", "in user messages only", "could not build the prompt",  # the conversation
    "needs file_data",  # a file part without its data (this server keeps no uploaded files)
    "cannot be enforced while decoding",  # a JSON schema the grammar engine cannot compile
    "samples a request on this server",  # n past the batch size this server runs
    "unknown language",  # language codes
    "requires logprobs=true", "requires response_format", "logprobs requires",
    # diarization: its formats, its required chunking_strategy, known speakers and their reference clips
    "diarized_json is for transcriptions", "use response_format=diarized_json",
    "chunking_strategy is required for diarization models", "known_speaker_names", "known_speaker_references",
)


# Free-text arrays of the upload forms: a form sends an array as one part per item, and any value as text, so a
# value generated as a wrong type for one of these (`{}`, `0`) arrives as a valid one-item array of that text.
_FREE_TEXT_ARRAYS = ("keywords", "known_speaker_names")


@schemathesis.hook
def filter_case(context, case) -> bool:
    """Leave out the invalid upload forms whose only fault no form can carry (_FREE_TEXT_ARRAYS)."""
    meta, body = case.meta, case.body
    if meta is None or meta.generation.mode.is_positive or not isinstance(body, dict) or "file" not in body:
        return True
    return not any(name in body and not isinstance(body[name], list) for name in _FREE_TEXT_ARRAYS)


@schemathesis.hook
def map_case(context, case):
    """Aim at the served model (random names only reach the 404 check), with real audio, and keep each request short
    on a CPU by capping the length fields. A whole float counts too: the API takes `"max_tokens": 6082.0` as 6082
    tokens, and one such request (with ignore_eos) ran 44 s here. (As each case is made, so it keeps its place among
    the valid or the invalid requests: schemathesis cannot validate a body with a file again.)"""
    body = case.body
    if not isinstance(body, dict):
        return case
    if isinstance(body.get("model"), str):
        body["model"] = MODEL
    for field in _LENGTHS:
        value = body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > _MAX_LENGTH \
                and float(value).is_integer():
            body[field] = _MAX_LENGTH
    if isinstance(body.get("file"), bytes | Binary):  # generated file contents (a plain string is a wrong type)
        body["file"] = Binary(_AUDIO)
    for part in _content_parts(body):
        _real_audio(part)
    return case


def _content_parts(body: dict):
    """Every content part of a chat or Responses request."""
    messages = body.get("messages") if isinstance(body.get("messages"), list) else body.get("input")
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        yield from (part for part in content if isinstance(part, dict)) if isinstance(content, list) else ()


def _real_audio(part: dict) -> None:
    inner = part.get(part.get("type")) if isinstance(part.get("type"), str) else None
    for holder, key, value in ((inner, "data", _BASE64), (inner, "url", _DATA_URL), (inner, "file_data", _DATA_URL),
                               (part, "file_data", _DATA_URL), (part, "file_url", _DATA_URL)):
        if isinstance(holder, dict) and isinstance(holder.get(key), str):
            holder[key] = value


@schemathesis.check
def refused_only_for_stated_rules(ctx, response, case) -> None:
    """A schema-valid request answered 400 names a rule about content or several fields (_CONTENT_RULES)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return
    error = json.loads(response.content)["error"]
    stated = error["code"] in _CONTENT_CODES or any(rule in error["message"] for rule in _CONTENT_RULES)
    assert stated, f"a request the document calls valid got a 400 for a rule it does not state: {error['message']!r}"
