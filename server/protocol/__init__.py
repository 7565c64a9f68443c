"""The OpenAI schema, in one place: a module per API surface, in OpenAI's field names and order (plus vLLM's
de-facto extras). Requests ignore fields they do not know, as OpenAI's API does with fields newer than a client."""

from pydantic import BaseModel, ConfigDict


class OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields newer than this server; ignore, like OpenAI does
