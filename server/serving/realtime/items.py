"""An item of a realtime conversation, as this server keeps it."""

from dataclasses import dataclass, field

import numpy as np

from server.protocol.realtime import text_item, user_audio_item


@dataclass
class Item:
    id: str
    role: str  # user, assistant, system
    text: str = ""
    clips: list[np.ndarray] = field(default_factory=list)  # a spoken turn's audio, in clips of at most 30 s

    def wire(self, status: str = "completed") -> dict:
        if self.clips:
            return user_audio_item(self.id, status, self.text or None)
        return text_item(self.id, self.role, status, self.text)
