"""The event loop's side of the model: token ids -> text."""


class HFDetokenizer:
    """Decodes with a tokenizer of its own (a copy of the prep thread's: a tokenizer is not safe to share between
    threads), on the event loop only."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer

    def detokenize(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def token_text(self, token_id: int) -> str:
        return self._tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
