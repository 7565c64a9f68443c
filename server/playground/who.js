// "Who spoke": the known speakers a person adds (a name and 2-10 s of that voice each), and the diarized transcript
// as it streams (response_format=diarized_json): each segment a line coloured by its speaker, with a legend.
import {base64, formatOf} from "./audio.js";

export const MAX_KNOWN_SPEAKERS = 4;  // OpenAI's limit, and the server's
const COLOURS = 8;  // .speaker-0 ... .speaker-7 in style.css; a ninth speaker takes the first colour again

const $ = (id) => document.getElementById(id);

export function setUpKnownSpeakers() {
  $("known-add").addEventListener("click", () => {
    const row = document.createElement("div");
    row.className = "known-row";
    row.innerHTML = '<input class="known-name" placeholder="name, e.g. Ann" size="14" aria-label="Speaker name">' +
      '<input class="known-file" type="file" accept="audio/*,.wav,.mp3,.flac,.ogg,.m4a,.webm" aria-label="Reference clip">' +
      '<button type="button" class="secondary small" aria-label="Remove this speaker">×</button>';
    row.querySelector("button").addEventListener("click", () => { row.remove(); updateAdd(); });
    $("known-rows").append(row);
    updateAdd();
  });
}

function updateAdd() {
  $("known-add").disabled = $("known-rows").children.length >= MAX_KNOWN_SPEAKERS;
}

// [{name, file}] of the rows filled in; a half-filled row is a mistake worth saying
export function knownSpeakers() {
  const rows = [...$("known-rows").children].map((row) => ({
    name: row.querySelector(".known-name").value.trim(), file: row.querySelector(".known-file").files[0] || null,
  })).filter((row) => row.name || row.file);
  if (rows.some((row) => !row.name || !row.file)) {
    throw new Error("Give each known speaker both a name and a reference clip (2-10 s of their voice).");
  }
  return rows;
}

export async function dataUrl(file) {
  return `data:audio/${formatOf(file.name, file.type)};base64,${await base64(file)}`;
}

// The transcript as it comes: deltas fill the segment being said, its segment event names the speaker.
export class WhoSpoke {
  constructor(output, legend) {
    this.output = output;
    this.legend = legend;
    this.colours = new Map();  // speaker -> colour index, in order of first speech
    this.seconds = new Map();  // speaker -> seconds spoken
    this.pending = null;  // the line of the segment whose deltas are arriving
    output.replaceChildren();
    legend.replaceChildren();
    legend.hidden = true;
  }

  delta(event) {
    if (!this.pending || this.pending.dataset.id !== event.segment_id) {
      this.pending = this.line("…", "");
      this.pending.dataset.id = event.segment_id;
      this.pending.classList.add("pending");
    }
    this.pending.querySelector(".said").textContent += event.delta;
  }

  segment(event) {
    const line = this.pending && this.pending.dataset.id === event.id ? this.pending : this.line("", "");
    this.pending = null;
    if (!this.colours.has(event.speaker)) this.colours.set(event.speaker, this.colours.size % COLOURS);
    this.seconds.set(event.speaker, (this.seconds.get(event.speaker) || 0) + event.end - event.start);
    line.className = `turn speaker-${this.colours.get(event.speaker)}`;
    line.dataset.id = event.id;
    line.dataset.speaker = event.speaker;
    line.querySelector(".who").textContent = event.speaker;
    line.querySelector(".when").textContent = `${clock(event.start)}–${clock(event.end)}`;
    line.querySelector(".said").textContent = event.text.trim();
    this.renderLegend();
  }

  line(who, when) {
    const line = document.createElement("p");
    line.className = "turn";
    for (const [name, text] of [["who", who], ["when", when], ["said", ""]]) {
      const part = document.createElement("span");
      part.className = name;
      part.textContent = text;
      line.append(part);
    }
    this.output.append(line);
    return line;
  }

  renderLegend() {
    this.legend.hidden = false;
    this.legend.replaceChildren(...[...this.colours].map(([speaker, colour]) => {
      const item = document.createElement("li");
      item.className = `speaker-${colour}`;
      item.dataset.speaker = speaker;
      item.textContent = `${speaker} · ${this.seconds.get(speaker).toFixed(1)} s`;
      return item;
    }));
  }

  get empty() {
    return !this.output.querySelector(".turn[data-speaker]");
  }
}

function clock(seconds) {
  const whole = Math.floor(seconds);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}.${Math.floor((seconds % 1) * 10)}`;
}
