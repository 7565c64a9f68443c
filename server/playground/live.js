// Live mode: the microphone streamed to GET /v1/realtime (OpenAI's Realtime API) as any browser client would, the
// transcript shown as it is spoken, or in voice chat the model's text answers. The key goes as the
// `openai-insecure-api-key.KEY` subprotocol, because a browser cannot set headers on a WebSocket.
import {apiKey} from "./api.js";

const $ = (id) => document.getElementById(id);
const FORMAT = {type: "audio/pcm", rate: 24000};
const FINISH_MS = 15000;  // after Stop, how long the turns already spoken may take to come back
const CLOSES = {
  1008: "The server refused this session.",
  1009: "A message was larger than the server accepts.",
  1011: "The server failed on this session.",
  1013: "The server has as many live sessions as it allows. Try again later.",
  4001: "The session reached the server's time limit.",
  4002: "Too much audio waited without being transcribed.",
  4003: "This page did not read the server's events fast enough.",
};

const live = {ws: null, audio: null, stopping: false, lastError: null, turns: new Map(), answers: new Map()};

export function setUpLive() {
  document.querySelectorAll('input[name="live-mode"]').forEach((radio) => radio.addEventListener("change", showMode));
  $("live-start").addEventListener("click", start);
  $("live-stop").addEventListener("click", stop);
  showMode();
  const usable = window.isSecureContext && navigator.mediaDevices && window.AudioWorkletNode;
  if (usable) return;
  $("live-start").disabled = true;
  $("live-note").hidden = false;
  $("live-note").textContent = window.isSecureContext
    ? "This browser cannot stream the microphone (it has no AudioWorklet)."
    : "Live mode needs the microphone, and so a secure page: open the playground at http://localhost" +
      (location.port ? `:${location.port}` : "") + "/ on the server's machine, or serve it over https.";
}

function mode() {
  return document.querySelector('input[name="live-mode"]:checked').value;
}

function showMode() {
  document.querySelectorAll("[data-live]").forEach((field) => { field.hidden = field.dataset.live !== mode(); });
}

async function start() {
  showError(null);
  $("live-items").replaceChildren();
  live.turns.clear();
  live.answers.clear();
  live.stopping = false;
  live.lastError = null;
  setRunning(true);
  status("Opening the microphone…");
  try {
    live.audio = await openMicrophone();
  } catch (err) {
    setRunning(false);
    status("");
    return showError(`The microphone could not be opened (${err.message}).`);
  }
  if (live.stopping) return closeMicrophone();  // Stop was pressed while the browser asked for the microphone
  status("Connecting…");
  const intent = mode() === "transcription" ? "?intent=transcription" : "";
  const protocols = ["realtime", ...(apiKey() ? [`openai-insecure-api-key.${apiKey()}`] : [])];
  const ws = new WebSocket(`${location.origin.replace(/^http/, "ws")}/v1/realtime${intent}`, protocols);
  live.ws = ws;
  ws.onopen = () => {
    send({type: "session.update", session: sessionConfig()});
    live.audio.node.port.onmessage = (e) => send({type: "input_audio_buffer.append", audio: toBase64(e.data)});
    status("Listening: speak now");
  };
  ws.onmessage = (e) => onEvent(JSON.parse(e.data));
  ws.onclose = (e) => finished(e);
}

function sessionConfig() {
  const language = $("live-language").value.trim();
  const input = {format: FORMAT, turn_detection: {type: "server_vad"}};
  if (mode() === "transcription") {
    return {type: "transcription", audio: {input: {...input, transcription: language ? {language} : {}}}};
  }
  const instructions = $("live-instructions").value.trim();
  return {type: "realtime", output_modalities: ["text"], ...(instructions ? {instructions} : {}),
    audio: {input: {...input, transcription: {}}}};  // the user's turns transcribed too, to show what was heard
}

async function openMicrophone() {
  const stream = await navigator.mediaDevices.getUserMedia({audio: {channelCount: 1, echoCancellation: true}});
  const context = new AudioContext();
  try {
    await context.audioWorklet.addModule("/playground/live-worklet.js");
    const node = new AudioWorkletNode(context, "pcm16-chunker");
    context.createMediaStreamSource(stream).connect(node);
    await context.resume();  // a context made after an await may start suspended
    return {stream, context, node};
  } catch (err) {
    stream.getTracks().forEach((track) => track.stop());
    context.close();
    throw err;
  }
}

function closeMicrophone() {
  if (!live.audio) return;
  live.audio.node.port.postMessage("flush");  // the last piece still goes out, as the port delivers in order
  live.audio.stream.getTracks().forEach((track) => track.stop());
  const {context} = live.audio;
  setTimeout(() => context.close(), 200);
  live.audio = null;
}

function send(event) {
  if (live.ws && live.ws.readyState === WebSocket.OPEN) live.ws.send(JSON.stringify(event));
}

function toBase64(buffer) {
  let binary = "";
  const bytes = new Uint8Array(buffer);
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

// ---- server events -------------------------------------------------------------------------------------------
function onEvent(event) {
  switch (event.type) {
    case "input_audio_buffer.speech_started":
      speaking(true);
      turn(event.item_id).classList.add("pending");
      break;
    case "input_audio_buffer.speech_stopped":
      speaking(false);
      break;
    case "conversation.item.added":
      if (event.item.role === "user") turn(event.item.id, event.previous_item_id).classList.add("committed");
      break;
    case "conversation.item.input_audio_transcription.delta":
      turn(event.item_id).querySelector(".text").textContent += event.delta;
      break;
    case "conversation.item.input_audio_transcription.completed":
      done(turn(event.item_id), event.transcript || "(nothing was heard)");
      break;
    case "conversation.item.input_audio_transcription.failed":
      done(turn(event.item_id), `(not transcribed: ${event.error.message})`, "failed");
      break;
    case "response.output_item.added":
      answer(event.item.id);
      break;
    case "response.output_text.delta":
      answer(event.item_id).querySelector(".text").textContent += event.delta;
      break;
    case "response.done":  // cancelled when the user spoke again (server VAD's interrupt_response)
      event.response.output.forEach((item) => answered(item.id, event.response.status === "cancelled"));
      break;
    case "error":
      live.lastError = event.error;  // a close that follows says why with it
      showError("The server refused a live event.", event.error);
      break;
  }
  if (live.stopping && live.ws && !pendingTurns()) live.ws.close(1000, "stopped");
}

function entry(id, who, previousId) {
  const item = document.createElement("li");
  item.dataset.itemId = id;
  item.className = `turn ${who}`;
  const label = document.createElement("span");
  label.className = "who";
  label.textContent = who === "user" ? "You" : "Model";
  const text = document.createElement("span");
  text.className = "text";
  item.append(label, text);
  const after = previousId && $("live-items").querySelector(`[data-item-id="${previousId}"]`);
  if (after) after.after(item);
  else $("live-items").append(item);
  return item;
}

function turn(id, previousId) {
  if (!live.turns.has(id)) live.turns.set(id, entry(id, "user", previousId));
  return live.turns.get(id);
}

function answer(id) {
  if (!live.answers.has(id)) live.answers.set(id, entry(id, "assistant"));
  return live.answers.get(id);
}

function done(item, text, kind = "done") {
  if (text !== null) item.querySelector(".text").textContent = text;
  item.classList.remove("pending");
  item.classList.add(kind);
}

function answered(id, cancelled) {
  const item = answer(id);
  done(item, cancelled ? `${item.querySelector(".text").textContent} [interrupted]` : null);
}

function pendingTurns() {
  const waiting = (item) => item.classList.contains("committed") && !item.matches(".done, .failed");
  return [...live.turns.values()].some(waiting) || [...live.answers.values()].some((a) => !a.matches(".done"));
}

// ---- stopping ------------------------------------------------------------------------------------------------
function stop() {
  closeMicrophone();
  speaking(false);
  live.stopping = true;
  $("live-stop").disabled = true;
  if (!live.ws) {
    setRunning(false);
    return status("Stopped.");
  }
  // turns the server never saw end (speech still going when Stop was pressed) will not be transcribed
  for (const item of live.turns.values()) {
    if (!item.classList.contains("committed")) done(item, "(stopped before this turn ended)", "dropped");
  }
  if (!pendingTurns()) return live.ws.close(1000, "stopped");
  status("Finishing the turns already spoken…");
  const ws = live.ws;
  setTimeout(() => ws.readyState === WebSocket.OPEN && ws.close(1000, "stopped"), FINISH_MS);
}

function finished(event) {
  closeMicrophone();
  speaking(false);
  const asked = live.stopping;
  live.ws = null;
  setRunning(false);
  status(asked ? "Stopped." : "");
  if (asked || event.code === 1000) return;
  const lead = CLOSES[event.code] ||
    "The live session could not be opened or was cut off. Is the server running, and is the API key right?";
  showError(lead, {message: (live.lastError && live.lastError.message) || event.reason, code: event.code});
}

function setRunning(running) {
  $("live-start").hidden = running;
  $("live-stop").hidden = !running;
  $("live-stop").disabled = false;
  document.querySelectorAll('input[name="live-mode"], [data-live] input').forEach((input) => {
    input.disabled = running;
  });
}

function status(text) {
  $("live-status").textContent = text;
}

function speaking(on) {
  $("live-speech").hidden = !on;
}

function showError(lead, detail) {
  const box = $("live-error");
  box.hidden = !lead;
  box.replaceChildren();
  if (!lead) return;
  const strong = document.createElement("strong");
  strong.textContent = lead;
  box.append(strong);
  const facts = [detail && detail.message && `Server said: ${detail.message}`,
    detail && detail.code && (typeof detail.code === "number" ? `close code ${detail.code}` : `code ${detail.code}`)];
  if (facts.some(Boolean)) {
    const span = document.createElement("span");
    span.textContent = facts.filter(Boolean).join(" · ");
    box.append(span);
  }
}
