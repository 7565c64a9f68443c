// Audio in the browser: its format name for the API, its duration, and its bytes as base64.

const FORMATS = ["wav", "mp3", "flac", "ogg", "opus", "m4a", "aac", "webm", "mp4"];
const MIME_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/mpeg": "mp3", "audio/flac": "flac",
  "audio/ogg": "ogg", "audio/webm": "webm", "audio/mp4": "m4a", "audio/aac": "aac", "video/mp4": "mp4"};

export function formatOf(name, type) {
  const ext = name.includes(".") ? name.split(".").pop().toLowerCase() : "";
  if (FORMATS.includes(ext)) return ext;
  return MIME_FORMATS[(type || "").split(";")[0]] || "wav";
}

// Decoded rather than read from <audio>: MediaRecorder's webm carries no duration, so the element says Infinity.
export async function audioDuration(blob, player) {
  try {
    const decoded = await new OfflineAudioContext(1, 1, 16000).decodeAudioData(await blob.arrayBuffer());
    return decoded.duration;
  } catch {
    if (player.readyState < 1) {
      await new Promise((done) => {
        player.addEventListener("loadedmetadata", done, {once: true});
        player.addEventListener("error", done, {once: true});
      });
    }
    return Number.isFinite(player.duration) ? player.duration : null;
  }
}

export function base64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}
