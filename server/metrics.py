"""Every Prometheus metric the server exports, defined once. One registry per app, so tests can run many apps."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # the *_created series only add noise to dashboards

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "qwen2_audio_requests", "HTTP requests by endpoint and status code.", ["endpoint", "status"], registry=r
        )
        self.request_latency = Histogram(
            "qwen2_audio_request_latency_seconds", "Time from request to the last byte of the response, by endpoint.",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.time_to_first_token = Histogram(
            "qwen2_audio_time_to_first_token_seconds", "Time from a request entering the engine to its first token.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge("qwen2_audio_queue_depth", "Requests waiting for a batch slot.", registry=r)
        self.running = Gauge("qwen2_audio_running_requests", "Requests being decoded right now.", registry=r)
        self.batch_size = Histogram(
            "qwen2_audio_batch_size", "Requests decoded together, per decode step.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.kv_tokens = Gauge("qwen2_audio_kv_cache_tokens", "KV-cache slots held by the running batch.", registry=r)
        self.kv_budget = Gauge("qwen2_audio_kv_cache_budget_tokens", "KV-cache slots the scheduler may fill.", registry=r)
        self.weights_bytes = Gauge("qwen2_audio_weights_bytes", "Memory the loaded weights take, as quantized.",
                                   registry=r)
        self.gpu_memory_peak = Gauge("qwen2_audio_gpu_memory_peak_bytes", "Peak GPU memory allocated (0 on CPU).",
                                     registry=r)
        self.encoder_seconds = Histogram(
            "qwen2_audio_encoder_seconds", "Audio-encoder time per prefill.", buckets=_STEP_BUCKETS, registry=r
        )
        self.prefill_seconds = Histogram(
            "qwen2_audio_prefill_seconds", "Prefill time (encoder included) per admitted group.", buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.decode_step_seconds = Histogram(
            "qwen2_audio_decode_step_seconds", "Time of one decode step of the running batch.", buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.tokens_generated = Counter("qwen2_audio_generated_tokens", "Output tokens generated.", registry=r)
        self.prompt_tokens = Counter("qwen2_audio_prompt_tokens", "Prompt tokens processed (audio included).", registry=r)
        self.audio_seconds = Counter(
            "qwen2_audio_audio_seconds", "Seconds of input audio received, by endpoint.", ["endpoint"], registry=r
        )
        # The realtime API (GET /v1/realtime)
        self.realtime_sessions = Gauge("qwen2_audio_realtime_sessions", "Realtime WebSocket sessions open now.",
                                       registry=r)
        self.realtime_utterances = Counter(
            "qwen2_audio_realtime_utterances", "Realtime turns committed (by server VAD or the client) for transcription.",
            registry=r,
        )
        self.realtime_transcript_latency = Histogram(
            "qwen2_audio_realtime_transcript_latency_seconds",
            "Realtime: time from the end of a turn's speech (VAD stop or commit) to its completed transcript.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
