"""What the model hears: 16 kHz mono float32 clips of at most 30 s.

These are facts of Qwen2-Audio's Whisper feature extractor (sampling_rate 16,000; n_samples 480,000, the audio
encoder's window); the model loader checks that the checkpoint's own preprocessor agrees.
"""

SAMPLE_RATE = 16_000
MAX_CLIP_SECONDS = 30.0
MAX_CLIP_SAMPLES = int(MAX_CLIP_SECONDS * SAMPLE_RATE)
MIN_CLIP_SAMPLES = 1_600  # 0.1 s: shorter clips yield no audio token; the processor pads them to this
