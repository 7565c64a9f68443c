// The microphone as the Realtime API wants it (audio/pcm: 24 kHz, 16-bit little-endian, mono), in 100 ms pieces.
// Runs on the audio thread; the page posts each piece to the server. Resampled here from the context's own rate
// (often 48 kHz) rather than by asking for a 24 kHz AudioContext, which not every browser can feed a microphone into.

const RATE = 24000;
const PIECE = RATE / 10;  // 100 ms

class Pcm16Chunker extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / RATE;  // input samples per output sample
    this.t = 0;                     // where the next output sample falls, in input samples from this block's start
    this.previous = 0;              // the last input sample of the block before (t may fall between it and this one)
    this.piece = new Int16Array(PIECE);
    this.filled = 0;
    this.port.onmessage = (e) => { if (e.data === "flush") this.flush(); };
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || !channels.length) return true;
    const n = channels[0].length;
    const mono = new Float32Array(n);
    for (const channel of channels) for (let i = 0; i < n; i++) mono[i] += channel[i] / channels.length;
    // linear interpolation; speech has little above 8 kHz, so the aliasing of a 48 -> 24 kHz step is negligible
    while (this.t < n - 1) {
      const i = Math.floor(this.t);
      const a = i < 0 ? this.previous : mono[i];
      const b = mono[i + 1];
      this.push(a + (b - a) * (this.t - i));
      this.t += this.step;
    }
    this.t -= n;
    this.previous = mono[n - 1];
    return true;
  }

  push(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.piece[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    if (this.filled === PIECE) this.flush();
  }

  flush() {
    if (!this.filled) return;
    const bytes = new DataView(new ArrayBuffer(this.filled * 2));  // little-endian whatever the platform's order
    for (let i = 0; i < this.filled; i++) bytes.setInt16(i * 2, this.piece[i], true);
    this.port.postMessage(bytes.buffer, [bytes.buffer]);
    this.filled = 0;
  }
}

registerProcessor("pcm16-chunker", Pcm16Chunker);
