#!/usr/bin/env node
// Build a fake-microphone WAV from silences and WAV files, e.g. the barge-in layout:
//
//   node build_mic_wav.mjs --out barge.wav 2 question.wav 5 interrupt.wav 3
//
// A number is seconds of silence; anything else is a WAV file (any PCM rate/width/channels; it
// is mixed to mono and linearly resampled to --rate, default 48000). --gain scales the files.
// Prints the layout (each part's start/end in seconds) as JSON on stdout.

import fs from 'node:fs';
import { parseArgs } from 'node:util';

import { encodeWav16, parseWav } from './lib.mjs';

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    out: { type: 'string' },
    rate: { type: 'string', default: '48000' },
    gain: { type: 'string', default: '1' },
  },
});
if (!o.out || positionals.length === 0) {
  process.stderr.write('usage: node build_mic_wav.mjs --out OUT.wav [--rate 48000] [--gain 1] PART...\n  PART: seconds of silence (number) or a WAV file\n');
  process.exit(2);
}
const rate = Number(o.rate);
const gain = Number(o.gain);

function resample(x, from, to) {
  if (from === to) return x;
  const n = Math.round((x.length * to) / from);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const p = (i * from) / to;
    const k = Math.floor(p);
    const f = p - k;
    y[i] = (x[k] ?? 0) * (1 - f) + (x[k + 1] ?? x[k] ?? 0) * f;
  }
  return y;
}

const parts = [];
const layout = [];
let t = 0;
for (const p of positionals) {
  let samples;
  let entry;
  if (/^\d+(\.\d+)?$/.test(p)) {
    samples = new Float32Array(Math.round(Number(p) * rate));
    entry = { kind: 'silence' };
  } else {
    const w = parseWav(fs.readFileSync(p));
    samples = resample(w.samples, w.sampleRate, rate).map((v) => v * gain);
    entry = { kind: 'file', path: p, source_rate: w.sampleRate };
  }
  const d = samples.length / rate;
  layout.push({ ...entry, start_s: +t.toFixed(3), end_s: +(t + d).toFixed(3) });
  t += d;
  parts.push(samples);
}
const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
let off = 0;
for (const p of parts) {
  all.set(p, off);
  off += p.length;
}
fs.writeFileSync(o.out, encodeWav16(all, rate));
console.log(JSON.stringify({ out: o.out, sample_rate: rate, seconds: +t.toFixed(3), layout }, null, 2));
