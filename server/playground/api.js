// The /v1 API as the page uses it: the key from this browser, OpenAI's error envelope in plain words, and
// server-sent events read from a fetch body.

export const KEY_STORAGE = "qwen2-audio-playground.api-key";

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

const STREAM_FAILED = -1;  // an error event inside a stream that had started as 200

export class ApiError extends Error {
  constructor(status, error, requestId) {
    const lead = plainWords(status, error && error.code);
    super(lead);
    this.lead = lead;
    this.detail = (error && error.message) || "";
    this.status = status;
    this.requestId = requestId;
  }
}

function plainWords(status, code) {
  if (code === "invalid_audio") {
    return "The server could not read this audio. Try wav, mp3, flac, ogg/opus, m4a/aac, webm or mp4.";
  }
  const words = {
    0: "The server could not be reached. Is it still running?",
    400: "The server could not accept this request.",
    401: "The server needs an API key, or refused the one given. Enter a valid key under API key at the top.",
    404: "The server does not know this model or address.",
    413: "This file is larger than the server accepts.",
    429: "The server is busy with other requests. Try again in a few seconds.",
    500: "The model failed on this request. Try again; if it keeps failing, give the operator the request id.",
    503: "The server is busy, or a part it needs is not ready (the model starting, the response store down). Try again in a few seconds.",
    504: "The answer took longer than the server allows. Try shorter audio or fewer tokens.",
  };
  if (status === STREAM_FAILED) return "The server stopped this answer midway.";
  return words[status] || (status >= 500 ? "The server failed on this request." : "The request failed.");
}

function authHeaders() {
  const key = apiKey();
  return key ? {Authorization: `Bearer ${key}`} : {};
}

export async function api(path, init = {}) {
  let response;
  try {
    response = await fetch(path, {...init, headers: {...authHeaders(), ...(init.headers || {})}});
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, {message: err.message});
  }
  if (!response.ok) {
    throw new ApiError(response.status, await errorOf(response), response.headers.get("X-Request-ID"));
  }
  return response;
}

async function errorOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && body.error) return body.error;  // OpenAI's envelope: {"error": {"message", "type", "param", "code"}}
  } catch { /* not JSON: a proxy's page, say */ }
  return {message: text.trim().slice(0, 300) || response.statusText};
}

// Server-sent events from a fetch body, until `data: [DONE]`; an event with an error throws it.
export async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data === "[DONE]") return;
      if (!data) continue;
      const event = JSON.parse(data);
      if (event.error) throw new ApiError(STREAM_FAILED, event.error);
      onEvent(event);
    }
  }
}
