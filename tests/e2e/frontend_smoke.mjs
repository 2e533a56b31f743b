#!/usr/bin/env node
// Frontend smoke test that needs no LiveKit server and no agent:
//   1. serves frontend/dist on a free port (tiny Node server; /api/token answers 404 unless
//      --token-ok), loads it in headless Chromium with a generated fake-mic WAV;
//   2. checks the page renders with no console errors and window.__voiceTest has its contract;
//   3. clicks Connect and expects a visible token-endpoint error;
//   4. audio self-test: the fake mic is sent through a loopback RTCPeerConnection pair in the
//      page and fed to __voiceTest._debug.remoteTrack() (the same graph a LiveKit remote track
//      uses); records, decodes the WAV and checks level timelines, timing and content;
//   5. feeds fake agent.* data messages through _debug.data() and checks the rendered DOM;
//   6. checks whether the fake capture loops with and without %noloop.
//
// usage: node frontend_smoke.mjs [--dist ../../frontend/dist] [--chromium /usr/bin/chromium]
// Prints a JSON report; exit 1 on any failed check.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import {
  DEFAULT_CHROMIUM,
  collectPageProblems,
  encodeWav16,
  launchBrowser,
  loudSegments,
  parseWav,
  rms,
  serveStatic,
  sleep,
} from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: opt } = parseArgs({
  options: {
    dist: { type: 'string', default: path.resolve(here, '../../frontend/dist') },
    chromium: { type: 'string', default: process.env.CHROMIUM ?? DEFAULT_CHROMIUM },
    'skip-loop-check': { type: 'boolean', default: false },
  },
});

const report = { checks: [], failures: [] };
const check = (name, ok, detail) => {
  report.checks.push({ name, ok: !!ok, ...(detail === undefined ? {} : { detail }) });
  if (!ok) report.failures.push(name);
  process.stderr.write(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail === undefined ? '' : ' ' + JSON.stringify(detail)}\n`);
};

// Fake mic: 0.5 s silence, 1.0 s 440 Hz at 0.5, 0.5 s silence, 0.5 s 880 Hz at 0.3, 0.5 s silence.
function makeToneWav(file, sr = 48000) {
  const parts = [[0.5, 0, 0], [1.0, 440, 0.5], [0.5, 0, 0], [0.5, 880, 0.3], [0.5, 0, 0]];
  const n = parts.reduce((a, p) => a + Math.round(p[0] * sr), 0);
  const x = new Float32Array(n);
  let o = 0;
  for (const [sec, f, a] of parts) {
    const m = Math.round(sec * sr);
    for (let i = 0; i < m; i++) x[o + i] = a * Math.sin((2 * Math.PI * f * i) / sr);
    o += m;
  }
  fs.writeFileSync(file, encodeWav16(x, sr));
  return n / sr;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'voice-smoke-'));
const micWav = path.join(tmp, 'mic.wav');
const micSeconds = makeToneWav(micWav);

if (!fs.existsSync(path.join(opt.dist, 'index.html'))) {
  console.error(`no ${opt.dist}/index.html: run "npm ci && npm run build" in frontend/ first`);
  process.exit(2);
}
const srv = await serveStatic(opt.dist);
report.url = srv.url;

let browser;
try {
  browser = await launchBrowser({ executablePath: opt.chromium, micWav, noLoop: true });
  const { page } = browser;
  report.chromium = browser.context.browser()?.version() ?? null;
  const problems = collectPageProblems(page);

  // 1-2: render + hook contract
  await page.goto(srv.url, { waitUntil: 'load' });
  await page.getByTestId('connect-button').waitFor({ timeout: 10000 });
  const hookShape = await page.evaluate(() => {
    const h = window.__voiceTest;
    if (!h) return null;
    return Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v]));
  });
  report.hook = hookShape;
  check('hook installed', hookShape !== null);
  const expected = {
    connected: 'boolean', state: 'null', transcripts: 'array', metrics: 'array', events: 'array',
    remoteLevel: 'array', localLevel: 'array', startRecording: 'function', stopRecording: 'function',
  };
  for (const [k, t] of Object.entries(expected)) check(`hook.${k} is ${t}`, hookShape?.[k] === t, hookShape?.[k]);
  check('connect button says Connect', (await page.getByTestId('connect-button').textContent()) === 'Connect');
  check('status shows Disconnected', (await page.getByTestId('connection-status').getAttribute('data-status')) === 'disconnected');

  // 3: Connect without a token endpoint -> visible error
  await page.getByTestId('connect-button').click();
  const err = page.getByTestId('connection-error');
  await err.waitFor({ timeout: 10000 });
  const errText = (await err.textContent()) ?? '';
  check('token failure shown to the user', /Token endpoint \/api\/token failed: HTTP 404/.test(errText), errText);
  check('error has role=alert', (await page.getByRole('alert').count()) === 1);
  check('status back to disconnected', (await page.getByTestId('connection-status').getAttribute('data-status')) === 'disconnected');
  check('hook.error mirrors it', (await page.evaluate(() => window.__voiceTest.error)) === errText);

  // 4: audio self-test through a loopback peer connection
  const audio = await page.evaluate(async (recordMs) => {
    const h = window.__voiceTest;
    await h.startRecording();
    const mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const micTrack = mic.getAudioTracks()[0];
    const tGum = performance.now();
    const a = new RTCPeerConnection();
    const b = new RTCPeerConnection();
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    const remote = new Promise((res) => (b.ontrack = (e) => res(e.track)));
    a.addTrack(micTrack, mic);
    const offer = await a.createOffer();
    await a.setLocalDescription(offer);
    await b.setRemoteDescription(offer);
    const answer = await b.createAnswer();
    await b.setLocalDescription(answer);
    await a.setRemoteDescription(answer);
    const track = await Promise.race([remote, new Promise((_, rej) => setTimeout(() => rej(new Error('no remote track in 5 s')), 5000))]);
    h._debug.localTrack(micTrack);
    h._debug.remoteTrack(track);
    const t0 = h.remoteLevel[0]?.t ?? null;
    await new Promise((r) => setTimeout(r, recordMs));
    const wav = await h.stopRecording();
    const out = {
      wav,
      tGum,
      t0,
      sampleRate: h.sampleRate,
      ctxState: h.audioContextState,
      tapKind: h.tapKind,
      remoteLevel: h.remoteLevel.slice(),
      localLevel: h.localLevel.slice(),
      iceState: b.iceConnectionState,
    };
    a.close();
    b.close();
    micTrack.stop();
    return out;
  }, Math.round(micSeconds * 1000) + 1500);

  const rec = parseWav(Buffer.from(audio.wav, 'base64'));
  const lv = audio.remoteLevel;
  const ll = audio.localLevel;
  const dts = lv.slice(1).map((p, i) => p.t - lv[i].t);
  const meanDt = dts.reduce((a, b) => a + b, 0) / Math.max(1, dts.length);
  const t0 = Math.min(lv[0]?.t ?? 0, ll[0]?.t ?? 0);
  const remoteSegs = loudSegments(lv, 0.05, t0);
  const localSegs = loudSegments(ll, 0.05, t0);
  report.audio = {
    sampleRate: audio.sampleRate,
    ctxState: audio.ctxState,
    tapKind: audio.tapKind,
    iceState: audio.iceState,
    wav: { sampleRate: rec.sampleRate, channels: rec.channels, bits: rec.bits, seconds: +rec.durationS.toFixed(3) },
    remotePoints: lv.length,
    localPoints: ll.length,
    meanIntervalMs: +meanDt.toFixed(2),
    maxIntervalMs: +Math.max(...dts).toFixed(2),
    remoteLoudSegmentsMs: remoteSegs,
    localLoudSegmentsMs: localSegs,
  };
  check('AudioContext running', audio.ctxState === 'running', audio.ctxState);
  check('tap is an AudioWorklet', audio.tapKind === 'worklet', audio.tapKind);
  check('WAV is 16-bit mono at the context rate', rec.bits === 16 && rec.channels === 1 && rec.sampleRate === audio.sampleRate);
  check('level points every ~10 ms', Math.abs(meanDt - 10) < 1.5, meanDt);
  check('WAV length matches level timeline', Math.abs(rec.durationS * 1000 - lv.length * 10) < 50, { wavMs: rec.durationS * 1000, points: lv.length });
  check('remote (loopback) audio reached the recorder: 2 loud segments', remoteSegs.length === 2, remoteSegs);
  check('local mic level: 2 loud segments', localSegs.length === 2, localSegs);
  if (remoteSegs.length === 2 && localSegs.length === 2) {
    const d1 = remoteSegs[0][1] - remoteSegs[0][0];
    check('first tone lasts ~1 s in the remote recording', Math.abs(d1 - 1000) < 120, d1);
    const lag = remoteSegs[0][0] - localSegs[0][0];
    report.audio.loopbackLagMs = lag;
    check('remote lags local by 0..300 ms (WebRTC jitter buffer)', lag >= 0 && lag < 300, lag);
  }
  // Content check on the WAV itself: RMS inside the first tone ~ 0.5/sqrt(2).
  if (remoteSegs.length) {
    const [a, b] = remoteSegs[0];
    const sr = rec.sampleRate;
    const startIdx = Math.round(((a + 200) / 1000) * sr) - Math.round(((lv[0].t - 10 - t0) / 1000) * sr);
    const r = rms(rec.samples, Math.max(0, startIdx), Math.max(0, startIdx) + Math.round(0.4 * sr));
    report.audio.toneRms = +r.toFixed(3);
    check('recorded tone RMS ~0.35 (opus round trip)', r > 0.25 && r < 0.45, r);
  }

  // 5: fake agent messages through the same handler as DataReceived
  await page.evaluate(() => {
    const d = window.__voiceTest._debug.data;
    d('agent.state', { state: 'listening', turn: 0 });
    d('agent.transcript', { turn: 1, role: 'user', text: 'what is', final: false });
    d('agent.transcript', { turn: 1, role: 'user', text: 'what is the capital of France', final: false });
    d('agent.transcript', { turn: 1, role: 'user', text: 'What is the capital of France?', final: true });
    d('agent.state', { state: 'thinking', turn: 1 });
    d('agent.state', { state: 'speaking', turn: 1 });
    d('agent.transcript', { turn: 1, role: 'agent', text: 'The capital of France is Paris.', final: false });
    d('agent.transcript', { turn: 1, role: 'agent', text: 'It is on the Seine.', final: false });
    d('agent.transcript', { turn: 1, role: 'agent', text: 'The capital of France is Paris. It is on the Seine.', final: true });
    d('agent.state', { state: 'listening', turn: 1 });
    d('agent.metrics', { turn: 1, end_of_utterance_ms: 300, stt_final_ms: 120, rag_ms: 15, llm_ttft_ms: 180, first_sentence_ms: 90, tts_ttfa_ms: 110, publish_ms: 25, voice_to_voice_ms: 840, interrupted: false });
    d('agent.transcript', { turn: 2, role: 'user', text: 'Tell me more', final: true });
    d('agent.state', { state: 'speaking', turn: 2 });
    d('agent.transcript', { turn: 2, role: 'agent', text: 'Paris has', final: false });
    d('agent.state', { state: 'listening', turn: 2, interrupted: true });
    d('other.topic', 'not json');
  });
  const entries = await page.getByTestId('transcript-entry').evaluateAll((els) =>
    els.map((e) => ({ role: e.dataset.role, turn: e.dataset.turn, final: e.dataset.final, text: e.querySelector('.text')?.textContent, tag: e.querySelector('.tag')?.textContent ?? null })),
  );
  report.transcriptDom = entries;
  check('transcript: 4 entries in order', entries.map((e) => `${e.turn}${e.role}`).join(',') === '1user,1agent,2user,2agent', entries);
  check('user partials replaced by the final', entries[0]?.text === 'What is the capital of France?' && entries[0]?.final === 'true');
  check('agent final carries the full text', entries[1]?.text === 'The capital of France is Paris. It is on the Seine.');
  check('interrupted agent turn is tagged', entries[3]?.tag === 'interrupted' && entries[3]?.final === 'false');
  check('metrics row rendered', (await page.getByTestId('metrics-row').count()) === 1);
  check('latest v2v shown', /840 ms/.test((await page.getByTestId('latest-v2v').textContent()) ?? ''));
  const hookCounts = await page.evaluate(() => {
    const h = window.__voiceTest;
    return { transcripts: h.transcripts.length, metrics: h.metrics.length, events: h.events.length, states: h.states.length, state: h.state, rawEvent: h.events[h.events.length - 1] };
  });
  check('hook arrays filled', hookCounts.transcripts === 8 && hookCounts.metrics === 1 && hookCounts.events === 16 && hookCounts.states === 6, hookCounts);
  check('hook.state is the latest with receivedAt', hookCounts.state?.interrupted === true && typeof hookCounts.state?.receivedAt === 'number');
  check('non-JSON payload kept as raw', hookCounts.rawEvent?.raw === 'not json' && hookCounts.rawEvent?.payload === null);

  const shot = path.join(tmp, 'page.png');
  await page.screenshot({ path: shot, fullPage: true });
  report.screenshot = shot;

  const serious = problems.consoleErrors.filter((t) => !/Failed to load resource: the server responded with a status of 404/.test(t));
  report.console = problems.console;
  check('no page errors', problems.pageErrors.length === 0, problems.pageErrors);
  check('no console errors (besides the expected /api/token 404)', serious.length === 0, serious);
} catch (e) {
  check('smoke run completed', false, String(e?.stack ?? e));
} finally {
  await browser?.close();
}

// 6: does the fake capture loop? (own browser per variant: the file starts at getUserMedia)
if (!opt['skip-loop-check']) {
  for (const noLoop of [false, true]) {
    let b;
    try {
      b = await launchBrowser({ executablePath: opt.chromium, micWav, noLoop });
      await b.page.goto(srv.url);
      const lv = await b.page.evaluate(async (ms) => {
        const h = window.__voiceTest;
        await h.startRecording();
        const s = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
        h._debug.localTrack(s.getAudioTracks()[0]);
        await new Promise((r) => setTimeout(r, ms));
        await h.stopRecording();
        return { pts: h.localLevel.slice(), readyState: s.getAudioTracks()[0].readyState };
      }, Math.round(micSeconds * 1000 * 2.5));
      const segs = loudSegments(lv.pts, 0.05, lv.pts[0]?.t ?? 0);
      const key = noLoop ? 'withNoloop' : 'withoutNoloop';
      report.fakeAudioLoop = { ...(report.fakeAudioLoop ?? {}), [key]: { loudSegmentsMs: segs, trackReadyStateAfterEnd: lv.readyState } };
      if (noLoop) check('%noloop: file plays once (2 loud segments in 2.5x its length)', segs.length === 2, segs);
      else check('default: file loops (>2 loud segments in 2.5x its length)', segs.length > 2, segs);
    } catch (e) {
      check(`loop check (noLoop=${noLoop})`, false, String(e?.stack ?? e));
    } finally {
      await b?.close();
    }
  }
}

await srv.close();
report.ok = report.failures.length === 0;
console.log(JSON.stringify(report, null, 2));
await sleep(10);
process.exit(report.ok ? 0 : 1);
