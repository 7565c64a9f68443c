// The request the page just made, as curl and as OpenAI Python SDK code: the real host, model and fields.
// A key is never written out: the code reads it from $OPENAI_API_KEY, as the SDK does.
import {formatOf} from "./audio.js";

function shellQuote(text) {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`;
}

export function curlFor(request, origin, keyed) {
  const key = keyed ? ' \\\n  -H "Authorization: Bearer $OPENAI_API_KEY"' : "";
  const url = origin + request.endpoint;
  const file = shellQuote(request.clip.name);
  if (request.kind !== "chat") {
    const fields = Object.entries({...request.fields, stream: "true"}).map(([k, v]) => ` \\\n  -F ${shellQuote(`${k}=${v}`)}`);
    // a reference goes as a data URL read from a file (-F name=<file): too long for an argument, and curl would
    // read the ";base64" in a value given inline as a part's option
    const known = (request.known || []).map(({name, file}) => [` \\\n  -F ${shellQuote(`known_speaker_names[]=${name}`)}`,
      ` \\\n  -F ${shellQuote(`known_speaker_references[]=<${file.name}.dataurl`)}`].join(""));
    const references = (request.known || []).map(({file}) => `{ printf 'data:audio/${formatOf(file.name, file.type)};` +
      `base64,'; base64 -w0 ${shellQuote(file.name)}; } > ${shellQuote(`${file.name}.dataurl`)}\n`);
    return `${references.join("")}curl -sN ${url}${key} \\\n  -F ${shellQuote(`file=@${request.clip.name}`)}${fields.join("")}${known.join("")}`;
  }
  // an unquoted heredoc expands $AUDIO; backslashes, $ and ` of the prompt are escaped for it
  const text = JSON.stringify(request.prompt).replace(/[\\$`]/g, "\\$&");
  return [
    `AUDIO=$(base64 < ${file} | tr -d '\\n')`,
    "cat > request.json <<EOF",
    `{"model": ${JSON.stringify(request.model)}, "stream": true, "max_tokens": ${request.maxTokens}, "messages": [{"role": "user", "content": [`,
    `  {"type": "input_audio", "input_audio": {"data": "$AUDIO", "format": "${request.clip.format}"}},`,
    `  {"type": "text", "text": ${text}}]}]}`,
    "EOF",
    `curl -sN ${url}${key} \\\n  -H "Content-Type: application/json" -d @request.json`,
  ].join("\n");
}

export function pythonFor(request, origin, keyed) {
  const q = JSON.stringify;  // a JSON string is a valid Python string literal
  const lines = [
    ...(keyed ? ["import os", ""] : []),
    ...(request.kind === "chat" ? ["import base64", ""] : []),
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${q(origin + "/v1")}, api_key=${keyed ? 'os.environ["OPENAI_API_KEY"]' : '"not-needed"'})`,
    "",
  ];
  if (request.task === "diarize") return pythonDiarized(request, lines);
  if (request.task === "transcribe") {
    const language = request.fields.language ? `, language=${q(request.fields.language)}` : "";
    return [...lines,
      `with open(${q(request.clip.name)}, "rb") as f:`,
      `    stream = client.audio.transcriptions.create(model=${q(request.fields.model)}, file=f${language}, stream=True)`,
      "    for event in stream:",
      '        if event.type == "transcript.text.delta":',
      '            print(event.delta, end="", flush=True)',
      "print()"].join("\n");
  }
  if (request.task === "translate") {
    // target_language is this server's extension, so the SDK passes it through extra_body
    const target = request.fields.target_language
      ? `, extra_body={"target_language": ${q(request.fields.target_language)}}` : "";
    return [...lines,
      "# the SDK's translations call does not stream (curl with -F stream=true does)",
      `with open(${q(request.clip.name)}, "rb") as f:`,
      "    result = client.audio.translations.create(",
      `        model=${q(request.fields.model)}, file=f${target},`,
      "    )",
      "print(result.text)"].join("\n");
  }
  return [...lines,
    `with open(${q(request.clip.name)}, "rb") as f:`,
    "    audio = base64.b64encode(f.read()).decode()",
    "stream = client.chat.completions.create(",
    `    model=${q(request.model)}, max_tokens=${request.maxTokens}, stream=True,`,
    '    messages=[{"role": "user", "content": [',
    `        {"type": "input_audio", "input_audio": {"data": audio, "format": ${q(request.clip.format)}}},`,
    `        {"type": "text", "text": ${q(request.prompt)}},`,
    "    ]}],",
    ")",
    "for chunk in stream:",
    "    if chunk.choices and chunk.choices[0].delta.content:",
    '        print(chunk.choices[0].delta.content, end="", flush=True)',
    "print()"].join("\n");
}

function pythonDiarized(request, lines) {
  const q = JSON.stringify;
  const {model, language} = request.fields;
  const known = request.known || [];
  const options = [`model=${q(model)}, file=f, response_format="diarized_json", chunking_strategy="auto", stream=True,`];
  if (language) options.push(`language=${q(language)},`);
  if (known.length) {
    options.push(`known_speaker_names=[${known.map((k) => q(k.name)).join(", ")}],`,
      `known_speaker_references=[${known.map((k) => `data_url(${q(k.file.name)}, ${q(formatOf(k.file.name, k.file.type))})`).join(", ")}],`);
  }
  const helper = known.length ? ["def data_url(path, fmt):",
    '    return f"data:audio/{fmt};base64," + base64.b64encode(open(path, "rb").read()).decode()', "", ""] : [];
  return [...(known.length ? ["import base64"] : []), ...lines, ...helper,
    `with open(${q(request.clip.name)}, "rb") as f:`,
    "    stream = client.audio.transcriptions.create(",
    ...options.map((option) => `        ${option}`),
    "    )",
    "    for event in stream:",
    '        if event.type == "transcript.text.segment":',
    '            print(f"{event.speaker} [{event.start:.1f}-{event.end:.1f}] {event.text}")'].join("\n");
}
