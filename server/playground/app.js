// The playground page: it calls this server's public /v1 API exactly as any client would; nothing here is privileged.
import {api, apiKey, KEY_STORAGE, readEvents} from "./api.js";
import {audioDuration, base64, formatOf} from "./audio.js";
import {setUpLive} from "./live.js";
import {curlFor, pythonFor} from "./snippets.js";
import {dataUrl, knownSpeakers, setUpKnownSpeakers, WhoSpoke} from "./who.js";

const $ = (id) => document.getElementById(id);
const TRANSCRIPTION_ENDPOINTS = {transcribe: "/v1/audio/transcriptions", translate: "/v1/audio/translations"};
const PRESETS = {
  describe: "Describe this sound in detail: what makes it, where it might have been recorded, and anything notable.",
  music: "Analyse this music: genre, instruments, tempo, key, mood and structure.",
  emotion: "What emotion does the speaker express? Name it and say what in the voice shows it.",
};

const state = {
  model: "whisper-1",  // replaced by the first id /v1/models lists
  clip: null,          // {blob, name, url, format, duration}
  recorder: null,
  running: null,       // AbortController of the request in flight
  last: null,          // what the last run sent: the code view and the subtitle downloads repeat it
  codeLang: "curl",
};

async function loadModels() {
  try {
    const body = await (await api("/v1/models")).json();
    const card = body.data[0];
    state.model = card.id;
    $("model-id").textContent = card.id;
    $("random-badge").hidden = !card.random_weights;
    showAlert($("banner"), null);
  } catch (err) {
    $("model-id").textContent = "unknown";
    showAlert($("banner"), err);
  }
}

// ---- audio in --------------------------------------------------------------------------------------------
async function setClip(blob, name) {
  if (state.clip) URL.revokeObjectURL(state.clip.url);
  const clip = {blob, name, url: URL.createObjectURL(blob), format: formatOf(name, blob.type), duration: null};
  state.clip = clip;
  $("player").src = clip.url;
  $("clip-name").textContent = name;
  $("clip-duration").textContent = "";
  $("clip").hidden = false;
  updateButtons();
  clip.duration = await audioDuration(blob, $("player"));
  if (state.clip === clip) $("clip-duration").textContent = clip.duration ? seconds(clip.duration) : "";
}

function setUpDropZone() {
  const zone = $("drop-zone");
  const input = $("file-input");
  // the label and the input open the file dialog by themselves
  zone.addEventListener("click", (e) => { if (e.target !== input && !e.target.closest("label")) input.click(); });
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => { if (input.files[0]) setClip(input.files[0], input.files[0].name); });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) setClip(file, file.name);
  });
}

function setUpMicrophone() {
  const usable = window.isSecureContext && navigator.mediaDevices && navigator.mediaDevices.getUserMedia &&
    window.MediaRecorder;
  if (usable) return $("record").addEventListener("click", toggleRecording);
  $("record").disabled = true;
  const note = $("mic-note");
  note.hidden = false;
  note.textContent = window.isSecureContext
    ? "This browser cannot record audio here; upload a file instead."
    : "The microphone needs a secure page: open the playground at http://localhost" +
      (location.port ? `:${location.port}` : "") + "/ on the server's machine, or serve it over https. " +
      "Uploading a file works everywhere.";
}

async function toggleRecording() {
  if (state.recorder) return state.recorder.stop();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({audio: true});
  } catch (err) {
    $("mic-note").hidden = false;
    $("mic-note").textContent = `The microphone could not be opened (${err.message}).`;
    return;
  }
  const recorder = new MediaRecorder(stream);
  const chunks = [];
  const started = Date.now();
  const tick = setInterval(() => { $("record-time").textContent = seconds((Date.now() - started) / 1000); }, 200);
  recorder.addEventListener("dataavailable", (e) => { if (e.data.size) chunks.push(e.data); });
  recorder.addEventListener("stop", () => {
    clearInterval(tick);
    stream.getTracks().forEach((track) => track.stop());
    state.recorder = null;
    $("record").classList.remove("recording");
    $("record-label").textContent = "Record";
    const type = recorder.mimeType || "audio/webm";
    setClip(new Blob(chunks, {type}), `recording.${formatOf("", type)}`);
  });
  recorder.start();
  state.recorder = recorder;
  $("record").classList.add("recording");
  $("record-label").textContent = "Stop recording";
  updateButtons();
}

// ---- tasks -----------------------------------------------------------------------------------------------
function currentTask() {
  return document.querySelector('input[name="task"]:checked').value;
}

function onTaskChange() {
  const task = currentTask();
  const kind = TRANSCRIPTION_ENDPOINTS[task] || task === "diarize" ? task : "chat";
  document.querySelectorAll(".options .field").forEach((field) => {
    field.hidden = !field.dataset.for.split(" ").includes(kind);
  });
  const prompt = $("prompt");
  if (task in PRESETS) prompt.value = PRESETS[task];
  else if (Object.values(PRESETS).includes(prompt.value)) prompt.value = "";
}

function buildRequest() {
  const task = currentTask();
  const clip = state.clip;
  if (task === "diarize") {  // OpenAI's diarized transcription: speaker segments, chunking_strategy required
    const fields = {model: state.model, response_format: "diarized_json", chunking_strategy: "auto"};
    const language = $("language").value.trim();
    if (language) fields.language = language;
    return {task, kind: "diarize", endpoint: TRANSCRIPTION_ENDPOINTS.transcribe, clip, fields, known: knownSpeakers()};
  }
  if (TRANSCRIPTION_ENDPOINTS[task]) {
    const fields = {model: state.model};
    const language = $(task === "transcribe" ? "language" : "target-language").value.trim();
    if (language) fields[task === "transcribe" ? "language" : "target_language"] = language;
    return {task, kind: "transcription", endpoint: TRANSCRIPTION_ENDPOINTS[task], clip, fields};
  }
  const prompt = $("prompt").value.trim();
  if (!prompt) throw new Error("Type a question about the audio first.");
  const maxTokens = Math.max(1, parseInt($("max-tokens").value, 10) || 256);
  return {task, kind: "chat", endpoint: "/v1/chat/completions", clip, model: state.model, prompt, maxTokens};
}

function transcriptionForm(request, extra) {
  const form = new FormData();
  form.append("file", request.clip.blob, request.clip.name);
  for (const [name, value] of Object.entries({...request.fields, ...extra})) form.append(name, value);
  (request.known || []).forEach((speaker, i) => {  // as the OpenAI SDK sends lists
    form.append("known_speaker_names[]", speaker.name);
    form.append("known_speaker_references[]", request.references[i]);
  });
  return form;
}

async function chatBody(request) {
  const data = await base64(request.clip.blob);
  return JSON.stringify({
    model: request.model, stream: true, stream_options: {include_usage: true}, max_tokens: request.maxTokens,
    messages: [{role: "user", content: [
      {type: "input_audio", input_audio: {data, format: request.clip.format}},
      {type: "text", text: request.prompt},
    ]}],
  });
}

async function run() {
  let request;
  try {
    request = buildRequest();
  } catch (err) {
    return showAlert($("error"), err);
  }
  state.last = request;
  renderCode();
  resetAnswer(request);
  const controller = new AbortController();
  state.running = controller;
  updateButtons();
  const started = performance.now();
  const answer = {text: "", first: null, usage: null};
  const who = request.kind === "diarize" ? new WhoSpoke($("output"), $("speakers")) : null;
  const onText = (delta, event) => {
    if (!delta) return;
    if (answer.first === null) {
      answer.first = performance.now() - started;
      $("t-first").textContent = millis(answer.first);
      $("output").classList.remove("empty");
    }
    answer.text += delta;
    if (who) who.delta(event);
    else $("output").textContent = answer.text;
  };
  try {
    if (who) request.references = await Promise.all(request.known.map((speaker) => dataUrl(speaker.file)));
    const init = request.kind === "chat"
      ? {body: await chatBody(request), headers: {"Content-Type": "application/json"}}
      : {body: transcriptionForm(request, {stream: "true"})};
    const response = await api(request.endpoint, {method: "POST", signal: controller.signal, ...init});
    await readEvents(response, (event) => {
      if (event.type === "transcript.text.delta") onText(event.delta, event);
      if (event.type === "transcript.text.segment") who.segment(event);
      if (event.choices && event.choices[0]) onText(event.choices[0].delta.content);
      if (event.usage) answer.usage = event.usage;  // transcript.text.done, or chat's last chunk
    });
    showTiming(request, answer, performance.now() - started);
    request.text = answer.text;
    $("downloads").hidden = request.kind !== "transcription";
    if (who && who.empty) $("output").textContent = "(no one speaks in this audio)";
    else if (!answer.text && !who) $("output").textContent = "(the model returned no text)";
  } catch (err) {
    if (err.name === "AbortError") $("output").textContent = answer.text + " [stopped]";
    else showAlert($("error"), err);
  } finally {
    state.running = null;
    updateButtons();
  }
}

function resetAnswer(request) {
  showAlert($("error"), null);
  $("speakers").hidden = true;
  $("output").textContent = "Waiting for the first token…";
  $("output").classList.add("empty");
  $("downloads").hidden = true;
  for (const id of ["t-first", "t-total", "t-rtf", "t-tokens"]) $(id).textContent = "–";
  $("t-audio").textContent = request.clip.duration ? seconds(request.clip.duration) : "–";
}

function showTiming(request, answer, total) {
  $("t-total").textContent = millis(total);
  if (request.clip.duration) $("t-rtf").textContent = `${(request.clip.duration / (total / 1000)).toFixed(1)}×`;
  const usage = answer.usage || {};
  const tokens = usage.output_tokens ?? usage.completion_tokens;
  if (tokens !== undefined) {
    const decoding = (total - (answer.first ?? 0)) / 1000;
    $("t-tokens").textContent = decoding > 0 ? `${tokens} (${(tokens / decoding).toFixed(0)}/s)` : `${tokens}`;
  }
}

// ---- downloads: txt is the streamed text (the server guarantees it equals the whole answer); srt and vtt come
// from the server's own response_format, so the timings are the server's
async function download(format) {
  const request = state.last;
  const base = request.clip.name.replace(/\.[^.]*$/, "") || "audio";
  const button = document.querySelector(`#downloads [data-format="${format}"]`);
  let text = request.text;
  if (format !== "txt") {
    button.disabled = true;
    try {
      const form = transcriptionForm(request, {response_format: format});
      text = await (await api(request.endpoint, {method: "POST", body: form})).text();
    } catch (err) {
      return showAlert($("error"), err);
    } finally {
      button.disabled = false;
    }
  }
  const types = {txt: "text/plain", srt: "application/x-subrip", vtt: "text/vtt"};
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], {type: `${types[format]};charset=utf-8`}));
  link.download = `${base}.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

// ---- the same call as code ---------------------------------------------------------------------------------
function renderCode() {
  if (!state.last) return;
  const write = state.codeLang === "curl" ? curlFor : pythonFor;
  $("code-text").textContent = write(state.last, location.origin, Boolean(apiKey()));
  document.querySelectorAll("#code [role=tab]").forEach((tab) => {
    tab.setAttribute("aria-selected", String(tab.dataset.lang === state.codeLang));
  });
}

function setUpCode() {
  $("code-toggle").addEventListener("click", () => {
    const show = $("code").hidden;
    $("code").hidden = !show;
    $("code-toggle").textContent = show ? "Hide code" : "Show code";
    $("code-toggle").setAttribute("aria-expanded", String(show));
    renderCode();
  });
  document.querySelectorAll("#code [role=tab]").forEach((tab) => tab.addEventListener("click", () => {
    state.codeLang = tab.dataset.lang;
    renderCode();
  }));
  $("copy").addEventListener("click", async () => {
    await navigator.clipboard.writeText($("code-text").textContent);  // needs a secure page, like the mic
    $("copy").textContent = "Copied";
    setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
  });
  $("copy").hidden = !window.isSecureContext;
}

// ---- page state ----------------------------------------------------------------------------------------------
function showAlert(box, err) {
  box.hidden = !err;
  box.replaceChildren();
  if (!err) return;
  const lead = document.createElement("strong");
  lead.textContent = err.lead || err.message;
  box.append(lead);
  const facts = [err.detail && `Server said: ${err.detail}`, err.status > 0 && `HTTP ${err.status}`,
    err.requestId && `request id ${err.requestId}`].filter(Boolean);
  if (facts.length) {
    const detail = document.createElement("span");
    detail.textContent = facts.join(" · ");
    box.append(detail);
  }
}

function updateButtons() {
  const busy = Boolean(state.running);
  $("run").disabled = !state.clip || busy || Boolean(state.recorder);
  $("run").hidden = busy;
  $("stop").hidden = !busy;
  $("run-hint").hidden = Boolean(state.clip);
  $("code-toggle").disabled = !state.last;
}

function seconds(value) {
  return `${value.toFixed(1)} s`;
}

function millis(value) {
  return value < 1000 ? `${Math.round(value)} ms` : `${(value / 1000).toFixed(2)} s`;
}

function init() {
  $("api-key").value = apiKey();
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    loadModels();
    renderCode();
  });
  setUpDropZone();
  setUpMicrophone();
  setUpCode();
  setUpLive();
  setUpKnownSpeakers();
  document.querySelectorAll('input[name="task"]').forEach((radio) => radio.addEventListener("change", onTaskChange));
  $("run").addEventListener("click", run);
  $("stop").addEventListener("click", () => state.running && state.running.abort());
  document.querySelectorAll("#downloads [data-format]").forEach((button) => {
    button.addEventListener("click", () => download(button.dataset.format));
  });
  onTaskChange();
  updateButtons();
  loadModels();
}

init();
