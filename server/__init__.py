"""OpenAI-compatible HTTP inference server for Qwen2-Audio-7B-Instruct."""
