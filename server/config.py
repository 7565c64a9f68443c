"""Every knob of the server, in one pydantic-settings class: a CLI flag and a QWEN2_AUDIO_* variable each."""

from pathlib import Path
from typing import Annotated, Literal, get_args, get_origin

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL = "Qwen/Qwen2-Audio-7B-Instruct"
CACHE_DIR = Path.home() / ".cache" / "qwen2-audio-server"
RANDOM_MODEL_DIR = CACHE_DIR / "tiny-random"
STEP_SETTINGS_DIR = CACHE_DIR / "step-settings"  # measured CPU step settings, a file per model shape and machine


class Settings(BaseSettings):
    """Settings for `qwen2-audio-server serve`. Flags win over environment variables, which win over defaults."""

    model_config = SettingsConfigDict(
        env_prefix="QWEN2_AUDIO_",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        use_attribute_docstrings=True,
        cli_prog_name="qwen2-audio-server serve",
        extra="ignore",
    )

    model: str = DEFAULT_MODEL
    """Hugging Face hub id or local folder of a Qwen2-Audio checkpoint."""
    random_weights: bool = False
    """Serve a small random-weight model of the real architecture instead of --model (no download; for trying the API and tests)."""
    served_model_name: str | None = None
    """Model id that clients send and /v1/models lists (default: the --model value)."""
    model_alias: Annotated[list[str], NoDecode] = ["whisper-1", "gpt-4o-transcribe-diarize"]
    """Other model ids accepted as this model, e.g. for clients hard-wired to OpenAI names (repeat the flag, or comma-separate in the variable)."""
    host: str = "127.0.0.1"
    """Address to bind; 0.0.0.0 to serve the LAN."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Where the model runs; auto picks CUDA when available."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weight dtype; auto is bfloat16 on CUDA and float32 on CPU."""
    quantization: Literal["none", "int8", "int4"] = "none"
    """Store the language model's linear weights in 8 or 4 bits (the audio encoder, projector, embeddings and lm_head stay in --dtype)."""
    quantize_audio_encoder: bool = False
    """With --quantization: store the audio encoder's linear weights in 8 or 4 bits too (saves about 1 GB at int4; its effect on recognition is not measured on the real checkpoint)."""
    quantization_backend: Literal["auto", "bitsandbytes", "torchao"] = "auto"
    """Who quantizes: auto is bitsandbytes on CUDA (LLM.int8, NF4), torchao for int8 and bitsandbytes for int4 on CPU."""
    prompt_format: Literal["auto", "chat", "base"] = "auto"
    """How requests become prompts: chat (an Instruct checkpoint's chat template) or base (the task prompts of the official evaluation, for the base checkpoint Qwen/Qwen2-Audio-7B; chat completions then answer 400). auto: base for a checkpoint named Qwen2-Audio-7B or without a chat template."""
    memory_utilization: float = Field(0.9, gt=0, le=1)
    """Share of the GPU's memory (of RAM on CPU) the server may fill with weights, KV cache and activations."""
    api_key: Annotated[list[str], NoDecode] = []
    """API keys clients must send as `Authorization: Bearer KEY` (repeat the flag, or comma-separate in the variable). None: open."""
    api_key_file: Path | None = None
    """File with more API keys, one per line (# starts a comment)."""
    metrics_require_key: bool = False
    """Ask /metrics for an API key too (health and readiness always stay open)."""
    cors_origin: Annotated[list[str], NoDecode] = []
    """Browser origins allowed to call the API (CORS), e.g. https://app.example.com, or * for any. None: CORS off."""
    allow_remote_audio_host: Annotated[list[str], NoDecode] = []
    """Hosts that chat `audio_url` may fetch over http(s) (redirects only among them). None: remote fetching off."""
    allow_local_audio_dir: Path | None = None
    """Folder that chat `audio_url` may read with file:// URLs. None: file URLs off."""
    remote_audio_max_mb: float = Field(25.0, gt=0)
    """Largest audio fetched for an audio_url, in MiB."""
    remote_audio_timeout_s: float = Field(10.0, gt=0)
    """Time limit for fetching one audio_url."""
    max_queue: int = Field(256, ge=1)
    """Requests that may wait for a batch slot; past it new requests get 503 (server_is_overloaded) with Retry-After."""
    request_timeout_s: float = Field(600.0, ge=0)
    """A request still unfinished after this many seconds is stopped and answered 504 (0: no limit)."""
    shutdown_grace_s: float = Field(30.0, ge=0)
    """On SIGTERM, how long in-flight requests may take to finish before the server exits."""
    max_batch_size: int = Field(16, ge=1, le=1024)
    """Most requests decoded together in one batch."""
    batch_wait_ms: float = Field(5.0, ge=0, le=1000)
    """How long the engine waits for more requests to fill a batch once one has arrived."""
    enforce_eager: bool = True
    """Run each decode step eagerly. --no-enforce-eager captures the step in CUDA graphs instead (one launch per step, a static-shape step over the KV buffers; on a CPU the same static step runs without graphs). Eager by default until a GPU has run tests/gpu green with graphs (docs/gpu.md)."""
    kv_cache_tokens: int = Field(0, ge=0)
    """KV-cache budget in tokens the scheduler fills (0: what --memory-utilization leaves after the weights and activations)."""
    cpu_threads: int = Field(0, ge=0, le=4096)
    """On a CPU, torch's threads for every part of every step. 0: each part (the prefill; a decode step's layers and its output projection, per batch size) takes the count measured fastest over the server's first steps, logged as it settles (README, Benchmark)."""
    default_max_tokens: int = Field(1024, ge=1)
    """Output-token limit of a request that sets none."""
    max_upload_mb: float = Field(1024.0, gt=0)
    """Largest audio file upload (transcriptions, translations), in MiB; spooled to disk, never held in memory (413 above it)."""
    max_json_mb: float = Field(64.0, gt=0)
    """Largest JSON request body (chat with base64 audio), in MiB; parsed in memory (413 above it)."""
    max_audio_seconds: float = Field(7200.0, gt=0)
    """Longest accepted audio per request, in seconds (400 above it)."""
    diarization_workers: int = Field(2, ge=1, le=64)
    """Diarizations (response_format=diarized_json) that run at once, each on one CPU core beside the model; more wait their turn."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log verbosity."""
    playground: bool = True
    """Serve the playground page at / (try every task from a browser through the /v1 API); --no-playground turns it off."""
    response_store: str = "memory"
    """Where stored responses (store=true) live: `memory` (this process; replicas do not share it), or a Redis or Valkey URL shared by every replica, e.g. redis://redis:6379/0 (rediss:// for TLS, redis://:PASSWORD@HOST:PORT/DB, unix:///run/redis.sock)."""
    responses_store_entries: int = Field(1000, ge=0)
    """Most responses kept for GET /v1/responses/{id} and previous_response_id (store=true); the oldest go first (0: keep none)."""
    responses_store_mb: float = Field(256.0, ge=0)
    """Space the kept responses may take, in MiB, their audio included; the oldest go first past it."""
    responses_store_ttl_s: float = Field(3600.0, ge=0)
    """How long a kept response stays retrievable, in seconds (0: until pushed out by the limits above)."""
    realtime_max_sessions: int = Field(64, ge=1)
    """Realtime API: most WebSocket sessions open at once; past it a new one gets an error event and close code 1013."""
    realtime_max_session_s: float = Field(1800.0, gt=0)
    """Realtime API: longest a session may stay open, in seconds; then an error event and close code 4001."""
    realtime_max_buffer_s: float = Field(120.0, gt=0)
    """Realtime API: most uncommitted audio a session may hold, in seconds; past it an error event and close code 4002."""
    realtime_max_message_mb: float = Field(8.0, gt=0, le=15)
    """Realtime API: largest client message, in MiB (base64 audio included); past it an error event and close code 1009."""
    realtime_send_queue: int = Field(2048, ge=16)
    """Realtime API: server events a session may have waiting for a slow client; past it an error event and close code 4003."""

    @field_validator("response_store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if value != "memory" and value.split("://", 1)[0] not in ("redis", "rediss", "unix"):
            raise ValueError("use memory, or a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("api_key", "model_alias", "cors_origin", "allow_remote_audio_host", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    def api_keys(self) -> set[str]:
        """--api-key plus the keys in --api-key-file."""
        keys = set(self.api_key)
        if self.api_key_file is not None:
            lines = self.api_key_file.read_text().splitlines()
            keys |= {line.strip() for line in lines if line.strip() and not line.strip().startswith("#")}
        return keys

    @property
    def model_path(self) -> str:
        """What from_pretrained loads: the random model's folder, or --model."""
        return str(RANDOM_MODEL_DIR) if self.random_weights else self.model

    @property
    def model_id(self) -> str:
        """The id clients send and every answer names: --served-model-name, else --model (a local folder by its
        last component: no answer shows the server's paths)."""
        if self.served_model_name:
            return self.served_model_name
        return "qwen2-audio-random" if self.random_weights else model_name(self.model)

    @property
    def model_root(self) -> str:
        """What /v1/models says the served model is: its hub id, or its folder's name."""
        return model_name(self.model_path)

    @property
    def accepted_model_ids(self) -> set[str]:
        return {self.model_id, self.model_path, *self.model_alias}


def model_name(model: str) -> str:
    """A hub id as it is; a local folder by its last component."""
    path = Path(model).expanduser()
    return path.name if path.is_dir() else model


def settings_table() -> str:
    """Every setting as a markdown table (flag, variable, default, what it does, from the docstrings above): what
    docs/configuration.md shows, written there by scripts/config-doc; a test keeps the two in step."""
    rows = ["| flag | environment variable | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
        meaning = (field.description or "") + (f" One of {', '.join(f'`{c}`' for c in choices)}." if choices else "")
        rows.append(f"| `--{name.replace('_', '-')}` | `QWEN2_AUDIO_{name.upper()}` | {_shown(field.default)} | {meaning} |")
    return "\n".join(rows) + "\n"


def _shown(default: object) -> str:
    if default is None or default == []:
        return "none"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, list):
        return ", ".join(f"`{item}`" for item in default)
    return f"`{default:g}`" if isinstance(default, float) else f"`{default}`"
