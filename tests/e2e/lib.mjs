// Shared helpers for the browser e2e scripts: Chromium launch, WAV I/O, level-timeline analysis,
// a tiny static file server. No dependencies beyond playwright-core and Node >= 18.

import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

export const DEFAULT_CHROMIUM = '/usr/bin/chromium';

/**
 * Flags: the set known to work here (shared/docs/LIVEKIT.md) plus
 *  - autoplay without a gesture (AudioContext / <audio> from page.evaluate),
 *  - no background throttling (timers and rAF keep running headless),
 *  - loopback + real host ICE candidates (LiveKit dev server on 127.0.0.1; no mDNS names).
 */
export function chromiumArgs({ micWav = null, noLoop = true } = {}) {
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
    '--allow-loopback-in-peer-connection',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
  ];
  if (micWav) {
    // Chromium loops the file unless the path ends in %noloop (checked on Chromium 156:
    // without it a 2 s file repeats every 2 s; with it, it plays once and then gives silence).
    args.push(`--use-file-for-fake-audio-capture=${path.resolve(micWav)}${noLoop ? '%noloop' : ''}`);
  }
  return args;
}

/** Launch Chromium with a fresh user-data-dir. Returns { context, page, userDataDir, close }. */
export async function launchBrowser({ executablePath = DEFAULT_CHROMIUM, micWav = null, noLoop = true, extraArgs = [] } = {}) {
  if (!fs.existsSync(executablePath)) {
    throw new Error(`Chromium not found at ${executablePath} (apt-get install -y chromium, or pass --chromium PATH / CHROMIUM=...)`);
  }
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'voice-e2e-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [...chromiumArgs({ micWav, noLoop }), ...extraArgs],
    ignoreDefaultArgs: ['--mute-audio'],
    viewport: { width: 1200, height: 900 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const close = async () => {
    await context.close().catch(() => undefined);
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, page, userDataDir, close };
}

/** Collect console errors / page errors / failed requests from a page. */
export function collectPageProblems(page) {
  const problems = { consoleErrors: [], pageErrors: [], console: [] };
  page.on('console', (m) => {
    const line = `[${m.type()}] ${m.text()}`;
    problems.console.push(line);
    if (m.type() === 'error') problems.consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => problems.pageErrors.push(String(e?.stack ?? e)));
  return problems;
}

// ---- WAV ---------------------------------------------------------------------------------------

/** Parse a RIFF/WAVE file (PCM 8/16/24/32-bit int or 32-bit float). Returns mono float samples. */
export function parseWav(buf) {
  if (buf.length < 12 || buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE') {
    throw new Error('not a RIFF/WAVE file');
  }
  let off = 12;
  let fmt = null;
  let data = null;
  while (off + 8 <= buf.length) {
    const id = buf.toString('ascii', off, off + 4);
    let size = buf.readUInt32LE(off + 4);
    const body = off + 8;
    if (id === 'data' && (size === 0xffffffff || body + size > buf.length)) size = buf.length - body; // streamed WAVs
    if (id === 'fmt ') {
      fmt = {
        format: buf.readUInt16LE(body),
        channels: buf.readUInt16LE(body + 2),
        sampleRate: buf.readUInt32LE(body + 4),
        bits: buf.readUInt16LE(body + 14),
      };
      if (fmt.format === 0xfffe && size >= 40) fmt.format = buf.readUInt16LE(body + 24); // WAVE_FORMAT_EXTENSIBLE
    } else if (id === 'data') {
      data = buf.subarray(body, body + size);
    }
    off = body + size + (size & 1);
  }
  if (!fmt || !data) throw new Error('WAV without fmt/data chunk');
  const { format, channels, sampleRate, bits } = fmt;
  const bps = bits / 8;
  const frames = Math.floor(data.length / (bps * channels));
  const out = new Float32Array(frames);
  const read = (i) => {
    if (format === 3 && bits === 32) return data.readFloatLE(i);
    if (format !== 1) throw new Error(`unsupported WAV format ${format}/${bits}-bit`);
    switch (bits) {
      case 8: return (data[i] - 128) / 128;
      case 16: return data.readInt16LE(i) / 32768;
      case 24: return data.readIntLE(i, 3) / 8388608;
      case 32: return data.readInt32LE(i) / 2147483648;
      default: throw new Error(`unsupported bit depth ${bits}`);
    }
  };
  for (let f = 0; f < frames; f++) {
    let s = 0;
    for (let c = 0; c < channels; c++) s += read((f * channels + c) * bps);
    out[f] = s / channels;
  }
  return { sampleRate, channels, bits, format, samples: out, durationS: frames / sampleRate };
}

/** Encode mono float samples as a 16-bit PCM WAV Buffer. */
export function encodeWav16(samples, sampleRate) {
  const buf = Buffer.alloc(44 + samples.length * 2);
  buf.write('RIFF', 0, 'ascii');
  buf.writeUInt32LE(36 + samples.length * 2, 4);
  buf.write('WAVE', 8, 'ascii');
  buf.write('fmt ', 12, 'ascii');
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20);
  buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(sampleRate, 24);
  buf.writeUInt32LE(sampleRate * 2, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write('data', 36, 'ascii');
  buf.writeUInt32LE(samples.length * 2, 40);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    buf.writeInt16LE(s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff), 44 + i * 2);
  }
  return buf;
}

export function rms(samples, from = 0, to = samples.length) {
  let s = 0;
  for (let i = from; i < to; i++) s += samples[i] * samples[i];
  return to > from ? Math.sqrt(s / (to - from)) : 0;
}

// ---- level timelines ---------------------------------------------------------------------------

/**
 * Runs of consecutive points (sorted by t) below/above a threshold.
 * Each point {t, rms} covers the window (t - windowMs, t].
 */
export function runs(points, threshold) {
  const out = [];
  let cur = null;
  for (let i = 0; i < points.length; i++) {
    const loud = points[i].rms >= threshold;
    if (!cur || cur.loud !== loud) {
      cur = { loud, a: i, b: i };
      out.push(cur);
    } else cur.b = i;
  }
  return out;
}

/**
 * When did the remote audio stop for good after a reference time `ref` (e.g. the receipt of the
 * interrupt message)? Looks at points in [ref - lookbackMs, until] and takes the last loud point
 * L: the audio "stays below threshold" from L.t (end of L's window) to `until`. Returns null
 * when there was no loud point in range (nothing was playing) and flags `observedQuietMs` <
 * holdMs (the quiet stretch before `until` is too short to call it silence).
 */
export function findFinalSilence(points, ref, until, { threshold, holdMs, lookbackMs = 2000 }) {
  let last = null;
  let loudBeforeRef = false;
  for (const p of points) {
    if (p.t < ref - lookbackMs) continue;
    if (p.t > until) break;
    if (p.rms >= threshold) {
      last = p;
      if (p.t <= ref) loudBeforeRef = true;
    }
  }
  if (!last) return null;
  const observedQuietMs = until - last.t;
  return { silenceAt: last.t, observedQuietMs, held: observedQuietMs >= holdMs, loudBeforeRef };
}

/**
 * Onset of the last utterance that starts before `ref`: the start of a loud run that follows at
 * least gapMs of quiet (or the beginning of the timeline).
 */
export function findOnsetBefore(points, ref, { threshold, gapMs, windowMs = 10 }) {
  let lastLoudEnd = -Infinity;
  let onset = null;
  for (const p of points) {
    if (p.t > ref) break;
    if (p.rms >= threshold) {
      const start = p.t - windowMs;
      if (start - lastLoudEnd >= gapMs) onset = start;
      lastLoudEnd = p.t;
    }
  }
  return onset;
}

/** Loud stretches as [startMs, endMs] pairs relative to t0 (for reports). */
export function loudSegments(points, threshold, t0 = 0, windowMs = 10) {
  return runs(points, threshold)
    .filter((r) => r.loud)
    .map((r) => [Math.round(points[r.a].t - windowMs - t0), Math.round(points[r.b].t - t0)]);
}

// ---- static server -----------------------------------------------------------------------------

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.wav': 'audio/wav',
};

/**
 * Serve `root` on 127.0.0.1 (port 0 = free port). `api(req, res, body)` may handle /api/*;
 * returning false (or no handler) gives 404 JSON. Unknown paths fall back to index.html.
 */
export async function serveStatic(root, { port = 0, api = null } = {}) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname.startsWith('/api/')) {
      const chunks = [];
      for await (const c of req) chunks.push(c);
      const body = Buffer.concat(chunks).toString('utf8');
      if (api && (await api(req, res, body)) !== false) return;
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: `no route for ${req.method} ${url.pathname}` } }));
      return;
    }
    let file = path.join(root, decodeURIComponent(url.pathname));
    if (!file.startsWith(path.resolve(root))) {
      res.writeHead(403).end();
      return;
    }
    if (!fs.existsSync(file) || fs.statSync(file).isDirectory()) file = path.join(root, 'index.html');
    res.writeHead(200, { 'content-type': MIME[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const { port: actual } = server.address();
  return { server, url: `http://127.0.0.1:${actual}`, close: () => new Promise((r) => server.close(r)) };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- page instruments --------------------------------------------------------------------------

/**
 * An init script for the page (page.addInitScript, runs before the page's own code):
 *  - a scripted microphone: getUserMedia({audio}) returns a WebAudio stream that is silent until
 *    the test plays a clip into it, `window.__e2eMic.play(wavBase64)` -> { startedAt, durationMs }
 *    (performance.now() of the page, the clock of every other page timestamp). The test can so
 *    speak *when* something happens (the agent's voice is heard) instead of at a fixed offset of
 *    a file;
 *  - every RTCPeerConnection kept, so `window.__e2eMic.inboundAudioStats()` can read the
 *    jitter-buffer figures of the agent's audio (getStats, inbound-rtp).
 */
export function pageInstruments() {
  const pcs = [];
  const Native = window.RTCPeerConnection;
  class TrackedPeerConnection extends Native {
    constructor(...args) {
      super(...args);
      pcs.push(this);
    }
  }
  window.RTCPeerConnection = TrackedPeerConnection;
  let ctx = null;
  let dest = null;
  const audio = () => {
    if (!ctx) {
      ctx = new AudioContext({ sampleRate: 48000 });
      dest = ctx.createMediaStreamDestination();
    }
    return ctx;
  };
  const nativeGetUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    if (!constraints || !constraints.audio || constraints.video) return nativeGetUserMedia(constraints);
    await audio().resume();
    return new MediaStream([dest.stream.getAudioTracks()[0].clone()]);
  };
  window.__e2eMic = {
    async play(wavBase64) {
      await audio().resume();
      const bytes = Uint8Array.from(atob(wavBase64), (c) => c.charCodeAt(0));
      const buffer = await ctx.decodeAudioData(bytes.buffer);
      const src = ctx.createBufferSource();
      src.buffer = buffer;
      src.connect(dest);
      const startedAt = performance.now();
      src.start();
      return { startedAt, durationMs: buffer.duration * 1000 };
    },
    /** Cumulative inbound-rtp audio figures of every receiving connection, summed. */
    async inboundAudioStats() {
      const out = { at: performance.now(), jitterBufferDelay: 0, jitterBufferEmittedCount: 0, jitterBufferTargetDelay: 0, rttS: null };
      for (const pc of pcs) {
        if (pc.connectionState === 'closed') continue;
        const report = await pc.getStats();
        report.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'audio') {
            out.jitterBufferDelay += s.jitterBufferDelay ?? 0;
            out.jitterBufferEmittedCount += s.jitterBufferEmittedCount ?? 0;
            out.jitterBufferTargetDelay += s.jitterBufferTargetDelay ?? 0;
          }
          if (s.type === 'candidate-pair' && s.nominated && typeof s.currentRoundTripTime === 'number') {
            out.rttS = Math.max(out.rttS ?? 0, s.currentRoundTripTime);
          }
        });
      }
      return out;
    },
  };
}

/**
 * Mean one-way delay of the agent's audio between two inboundAudioStats() samples: the jitter
 * buffer's mean hold time of the samples emitted between them, plus half the round trip.
 * Null when no audio came out of the jitter buffer in between.
 */
export function downlinkDelayMs(a, b) {
  const emitted = b.jitterBufferEmittedCount - a.jitterBufferEmittedCount;
  if (!(emitted > 0)) return null;
  const jb = ((b.jitterBufferDelay - a.jitterBufferDelay) / emitted) * 1000;
  return jb + ((b.rttS ?? 0) * 1000) / 2;
}

/**
 * Where speech sits in a clip: the start of the first and the end of the last 10 ms window
 * louder than `threshold` (RMS, full scale), in ms from the clip's start.
 */
export function speechSpan(samples, sampleRate, threshold) {
  const win = Math.round(sampleRate / 100);
  let first = null;
  let last = null;
  for (let i = 0; i + win <= samples.length; i += win) {
    if (rms(samples, i, i + win) >= threshold) {
      if (first == null) first = i;
      last = i + win;
    }
  }
  if (first == null) return null;
  return { startMs: (first / sampleRate) * 1000, endMs: (last / sampleRate) * 1000 };
}
