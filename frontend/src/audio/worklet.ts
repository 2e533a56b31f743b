// AudioWorklet processor source, loaded from a Blob URL (no separate asset to serve, and
// AudioWorklet modules must be same-origin or blob:). Kept as plain ES2017 text on purpose.
//
// 'voice-tap' takes one mono input (the node is created with channelCount 1 / 'explicit', so
// WebAudio downmixes). While active it emits one message per window (default 10 ms):
//   { end: <AudioContext time at the end of the window, s>, rms: number, pcm?: Float32Array }
// pcm (transferred) is sent only when processorOptions.pcm is true. An input with no channels
// (nothing connected) counts as digital silence, so the timeline has no gaps.
export const TAP_PROCESSOR = 'voice-tap';

export const TAP_WORKLET_SOURCE = `
class VoiceTap extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.win = Math.max(16, Math.round(sampleRate * (o.windowMs || 10) / 1000));
    this.sendPcm = !!o.pcm;
    this.active = false;
    this.buf = new Float32Array(this.win);
    this.n = 0;
    this.port.onmessage = (e) => {
      const d = e.data || {};
      if (typeof d.active === 'boolean') { this.active = d.active; this.n = 0; }
    };
  }
  flush(end) {
    let s = 0;
    const b = this.buf;
    for (let i = 0; i < b.length; i++) s += b[i] * b[i];
    const msg = { end: end, rms: Math.sqrt(s / b.length) };
    if (this.sendPcm) {
      msg.pcm = b;
      this.port.postMessage(msg, [b.buffer]);
      this.buf = new Float32Array(this.win);
    } else {
      this.port.postMessage(msg);
    }
    this.n = 0;
  }
  process(inputs, outputs) {
    if (!this.active) return true;
    const input = inputs[0];
    const ch = input && input.length ? input[0] : null;
    const frames = ch ? ch.length : 128;
    for (let i = 0; i < frames; i++) {
      this.buf[this.n++] = ch ? ch[i] : 0;
      if (this.n === this.win) this.flush(currentTime + (i + 1) / sampleRate);
    }
    return true;
  }
}
registerProcessor('${TAP_PROCESSOR}', VoiceTap);
`;
