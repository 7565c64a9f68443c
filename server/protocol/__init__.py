"""The OpenAI schema, in one place: a module per API surface, in OpenAI's field names and order (plus vLLM's
de-facto extras). Requests ignore fields they do not know, as OpenAI's API does with fields newer than a client."""

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictFloat

# A JSON body's numbers as its schema has them and OpenAI's API takes them, never "5" or true: a float takes an
# integer, and an integer a whole float (5.0: JSON Schema counts it an integer).
JSONFloat = StrictFloat


def json_int(**constraints: Any) -> Any:
    """A JSON body's integer with `constraints` (ge=, le=, ...), which its schema states."""
    return Annotated[int, Field(**constraints), Strict(), BeforeValidator(_whole)]


def _whole(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


class OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields newer than this server; ignore, like OpenAI does


# A form's boolean, as its schema has it: true or false (in any case: some clients send Python's True), never 1 or yes
FormBool = Annotated[bool, Strict(), BeforeValidator(lambda value: _BOOLEANS.get(value.lower(), value)
                                                     if isinstance(value, str) else value)]
_BOOLEANS = {"true": True, "false": False}
