"""OpenAI-compatible HTTP inference server for Qwen2-Audio-7B-Instruct."""

import logging

# transformers imports torchao whenever it is installed. torchao's wheel carries Hopper-only kernels and warns
# when they cannot load (any CPU, older GPUs), warns that a CPU has no Triton, and torch warns about torchao's
# enums: true, harmless, and no business of this server's log. Only those messages are dropped, before anything
# imports torchao.
_NOISE = {"torchao": "Failed to load", "torchao.kernel.intmm": "Detected no triton",
          "torch.utils._pytree": "is an Enum subclass and is now natively supported"}
for _name, _text in _NOISE.items():
    logging.getLogger(_name).addFilter(lambda record, text=_text: text not in record.getMessage())
