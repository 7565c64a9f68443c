"""`qwen2-audio-server bench`: this server against the seed recipe and `transformers serve`, on one machine."""
