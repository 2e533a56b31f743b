#!/usr/bin/env node
// Browser end-to-end test of the voice agent: a real (headless, Debian) Chromium opens the web
// frontend; its microphone is scripted (lib.mjs pageInstruments: the test plays WAV clips into
// it when it chooses), the agent's answer is recorded from the page (window.__voiceTest, raw PCM
// via WebAudio) and transcribed by the STT service.
//
//   node voice_e2e.mjs --mode answer   --wav question.wav --expect paris
//   node voice_e2e.mjs --mode barge-in --wav story.wav --interrupt-wav stop.wav
//
// answer: the question is played once the mic is published; besides the words, the agent's
//   voice-to-voice figure must agree with one measured in the page: question's last speech
//   played -> first loud agent audio, less the downlink delay (getStats jitter buffer).
// barge-in: the long question is played; once the agent has been audible for --barge-after-ms
//   the interruption is played (aimed at its voice, never at a pause); asserted: detection
//   (interruption's speech onset -> interrupt message) within --min-interruption-ms +
//   --detect-budget-ms, and the agent's audio silent within --max-stop-ms of the message beyond
//   the downlink delay measured (getStats) at the barge-in itself.
//
// Run `node voice_e2e.mjs --help` for every option. stdout: one JSON summary; stderr: progress.
// Exit status: 0 pass, 1 test failure (including timeouts), 2 usage/setup error.

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import {
  DEFAULT_CHROMIUM,
  collectPageProblems,
  encodeWav16,
  findFinalSilence,
  findOnsetBefore,
  launchBrowser,
  downlinkDelayMs,
  loudSegments,
  pageInstruments,
  parseWav,
  sleep,
  speechSpan,
} from './lib.mjs';

const STAGES = [
  'end_of_utterance_ms',
  'stt_final_ms',
  'rag_ms',
  'llm_ttft_ms',
  'first_sentence_ms',
  'tts_ttfa_ms',
  'publish_ms',
];

const HELP = `voice_e2e.mjs — browser end-to-end test of the voice agent

Options (env var in brackets):
  --mode answer|barge-in        [E2E_MODE]          default answer
  --url URL                     [E2E_URL]           frontend, default http://127.0.0.1:3000
  --wav FILE                    [E2E_MIC_WAV]       what the user says first (required)
  --interrupt-wav FILE                              barge-in: what the user says over the agent
  --lead-ms N                                       silence after the mic is published, default 1500
  --barge-after-ms N                                barge-in: the agent audible this long before
                                                    the interruption is played, default 600
  --stt URL                     [E2E_STT_URL]       STT base URL, default http://127.0.0.1:8001
  --model NAME                  [E2E_STT_MODEL]     STT model field, default whisper-1
  --language CODE               [E2E_STT_LANGUAGE]  optional STT language hint
  --expect WORDS                [E2E_EXPECT]        comma-separated words/phrases the agent's
                                                    answer must contain (repeatable); "a|b" = either
  --expect-mode any|all         [E2E_EXPECT_MODE]   default any
  --timeout-ms N                [E2E_TIMEOUT_MS]    wait for the answer / interruption, default 90000
  --connect-timeout-ms N                            default 20000
  --tail-ms N                                       keep recording after "listening", default 1000
  --metrics-grace-ms N                              wait for agent.metrics after the answer, default 3000
  --after-interrupt-ms N                            barge-in: keep recording after it, default 3000
  --silence-threshold X                             remote RMS below = silent, default 0.01 (-40 dBFS)
  --hold-ms N                                       silence must last this long, default 150
  --min-interruption-ms N                           the agent's --min-interruption, default 400
  --audible-ms N                                    barge-in: the agent must be audible within N ms
                                                    before the interrupt message, default 2000
  --max-stop-ms N                                   barge-in: (interrupt message -> agent silent)
                                                    minus the downlink delay <= N, default 300
  --detect-budget-ms N                              barge-in: detection (speech onset -> interrupt
                                                    message) <= --min-interruption-ms + N, default 400
  --uplink-budget-ms N                              answer: page voice-to-voice - downlink - agent's
                                                    figure <= N + --vad-lag-ms, default 500
  --vad-lag-ms N                                    ... the agent's clock starting late by design:
                                                    Silero trails the speech (~100 ms), one 32 ms
                                                    window, the 20 ms kept before the first
                                                    sound; default 150
  --v2v-early-ms N                                  ... and >= -N, default 100
  --onset-threshold X                               speech in the clips and the local mic: RMS of a
                                                    10 ms window above X, default 0.02
  --onset-gap-ms N                                  quiet needed before an onset, default 300
  --sum-tolerance-ms X                              metrics stages vs voice_to_voice_ms, default 1
  --room NAME / --identity ID                       passed to the page (?room=&identity=)
  --no-processing                                   page option ?processing=0 (AEC/NS/AGC off)
  --no-trim                                         send the whole recording to STT
  --skip-stt                                        do not call STT (no word check)
  --artifacts DIR               [E2E_ARTIFACTS]     write agent.wav, run.json, summary.json, page.png
  --from-run FILE                                   re-analyse a saved run.json (no browser)
  --chromium PATH               [CHROMIUM]          default /usr/bin/chromium
  --help
`;

// ---- options -----------------------------------------------------------------------------------

function options() {
  const env = process.env;
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: false,
      options: {
        mode: { type: 'string', default: env.E2E_MODE ?? 'answer' },
        url: { type: 'string', default: env.E2E_URL ?? 'http://127.0.0.1:3000' },
        wav: { type: 'string', default: env.E2E_MIC_WAV },
        'interrupt-wav': { type: 'string' },
        'lead-ms': { type: 'string', default: '1500' },
        'barge-after-ms': { type: 'string', default: '600' },
        'detect-budget-ms': { type: 'string', default: '400' },
        'uplink-budget-ms': { type: 'string', default: '500' },
        'vad-lag-ms': { type: 'string', default: '150' },
        'v2v-early-ms': { type: 'string', default: '100' },
        stt: { type: 'string', default: env.E2E_STT_URL ?? 'http://127.0.0.1:8001' },
        model: { type: 'string', default: env.E2E_STT_MODEL ?? 'whisper-1' },
        language: { type: 'string', default: env.E2E_STT_LANGUAGE },
        expect: { type: 'string', multiple: true, default: env.E2E_EXPECT ? [env.E2E_EXPECT] : [] },
        'expect-mode': { type: 'string', default: env.E2E_EXPECT_MODE ?? 'any' },
        'timeout-ms': { type: 'string', default: env.E2E_TIMEOUT_MS ?? '90000' },
        'connect-timeout-ms': { type: 'string', default: '20000' },
        'tail-ms': { type: 'string', default: '1000' },
        'metrics-grace-ms': { type: 'string', default: '3000' },
        'after-interrupt-ms': { type: 'string', default: '3000' },
        'silence-threshold': { type: 'string', default: '0.01' },
        'hold-ms': { type: 'string', default: '150' },
        'audible-ms': { type: 'string', default: '2000' },
        'min-interruption-ms': { type: 'string', default: '400' },
        'max-stop-ms': { type: 'string', default: '300' },
        'onset-threshold': { type: 'string', default: '0.02' },
        'onset-gap-ms': { type: 'string', default: '300' },
        'sum-tolerance-ms': { type: 'string', default: '1' },
        room: { type: 'string' },
        identity: { type: 'string' },
        'no-processing': { type: 'boolean', default: false },
        'no-trim': { type: 'boolean', default: false },
        'skip-stt': { type: 'boolean', default: false },
        artifacts: { type: 'string', default: env.E2E_ARTIFACTS },
        'from-run': { type: 'string' },
        chromium: { type: 'string', default: env.CHROMIUM ?? DEFAULT_CHROMIUM },
        help: { type: 'boolean', default: false },
      },
    }).values;
  } catch (e) {
    usage(e.message);
  }
  if (parsed.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const num = (k) => {
    const v = Number(parsed[k]);
    if (!Number.isFinite(v) || v < 0) usage(`--${k} must be a non-negative number`);
    return v;
  };
  const o = {
    mode: parsed.mode,
    url: parsed.url,
    wav: parsed.wav,
    interruptWav: parsed['interrupt-wav'],
    leadMs: num('lead-ms'),
    bargeAfterMs: num('barge-after-ms'),
    detectBudgetMs: num('detect-budget-ms'),
    uplinkBudgetMs: num('uplink-budget-ms'),
    vadLagMs: num('vad-lag-ms'),
    v2vEarlyMs: num('v2v-early-ms'),
    stt: parsed.stt.replace(/\/+$/, ''),
    model: parsed.model,
    language: parsed.language,
    expect: parsed.expect.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean),
    expectMode: parsed['expect-mode'],
    timeoutMs: num('timeout-ms'),
    connectTimeoutMs: num('connect-timeout-ms'),
    tailMs: num('tail-ms'),
    metricsGraceMs: num('metrics-grace-ms'),
    afterInterruptMs: num('after-interrupt-ms'),
    silenceThreshold: num('silence-threshold'),
    holdMs: num('hold-ms'),
    audibleMs: num('audible-ms'),
    minInterruptionMs: num('min-interruption-ms'),
    maxStopMs: num('max-stop-ms'),
    onsetThreshold: num('onset-threshold'),
    onsetGapMs: num('onset-gap-ms'),
    sumToleranceMs: num('sum-tolerance-ms'),
    room: parsed.room,
    identity: parsed.identity,
    processing: !parsed['no-processing'],
    trim: !parsed['no-trim'],
    skipStt: parsed['skip-stt'],
    artifacts: parsed.artifacts,
    fromRun: parsed['from-run'],
    chromium: parsed.chromium,
  };
  if (o.mode !== 'answer' && o.mode !== 'barge-in') usage('--mode must be "answer" or "barge-in"');
  if (o.expectMode !== 'any' && o.expectMode !== 'all') usage('--expect-mode must be "any" or "all"');
  if (!o.fromRun) {
    if (!o.wav) usage('--wav FILE (or E2E_MIC_WAV) is required');
    if (!fs.existsSync(o.wav)) usage(`mic WAV not found: ${o.wav}`);
    if (o.mode === 'barge-in' && !o.interruptWav) usage('--mode barge-in needs --interrupt-wav FILE');
    if (o.interruptWav && !fs.existsSync(o.interruptWav)) usage(`interruption WAV not found: ${o.interruptWav}`);
  } else if (!fs.existsSync(o.fromRun)) usage(`--from-run file not found: ${o.fromRun}`);
  return o;
}

function usage(msg) {
  process.stderr.write(`error: ${msg}\n\n${HELP}`);
  process.exit(2);
}

const log = (...a) => process.stderr.write(`[e2e ${new Date().toISOString().slice(11, 23)}] ${a.join(' ')}\n`);

// ---- browser run -------------------------------------------------------------------------------

/** Small status object read from the page on every poll (`threshold`: remote RMS = loud). */
function pagePoll(threshold) {
  const h = window.__voiceTest;
  if (!h) return { hook: false };
  // How long the agent's audio has been going without a pause of 150 ms (0 when quiet now).
  let remoteLoudMs = 0;
  const lv = h.remoteLevel;
  if (lv.length && lv[lv.length - 1].t > performance.now() - 100) {
    let start = null;
    let quietSince = null;
    for (let i = lv.length - 1; i >= 0; i--) {
      const p = lv[i];
      if (p.rms >= threshold) {
        start = p.t - 10;
        quietSince = null;
      } else if (start != null) {
        quietSince ??= p.t;
        if (quietSince - p.t >= 150) break;
      } else if (lv[lv.length - 1].t - p.t > 50) {
        break; // nothing loud in the last 50 ms
      }
    }
    if (start != null) remoteLoudMs = lv[lv.length - 1].t - start;
  }
  // The answer: a final agent transcript that follows a final user transcript (so a greeting
  // sent on join does not count), with the agent back at 'listening' afterwards.
  const userFinal = h.transcripts.find((t) => t.role === 'user' && t.final) ?? null;
  const finalAgent =
    (userFinal && h.transcripts.find((t) => t.role === 'agent' && t.final && t.turn >= userFinal.turn && t.receivedAt >= userFinal.receivedAt)) ?? null;
  const nonListening = h.states.find((s) => s.state !== 'listening') ?? null;
  const interrupted = h.states.find((s) => s.interrupted === true) ?? null;
  return {
    hook: true,
    connected: h.connected,
    status: h.status,
    error: h.error,
    micPublished: h.micPublished,
    agentAudio: h.agentAudio,
    state: h.state,
    nStates: h.states.length,
    nTranscripts: h.transcripts.length,
    nMetrics: h.metrics.length,
    userFinal,
    finalAgent,
    answered: !!(finalAgent && nonListening && h.state && h.state.state === 'listening' && h.state.receivedAt >= nonListening.receivedAt),
    interrupted,
    metricsTurns: h.metrics.map((m) => m.turn),
    remoteLoudMs,
    now: performance.now(),
  };
}

async function waitUntil(page, what, timeoutMs, cond, { failOnError = true, threshold = 0.01 } = {}) {
  const t0 = Date.now();
  let last = null;
  let lastLog = 0;
  for (;;) {
    last = await page.evaluate(pagePoll, threshold);
    if (failOnError && last.error) throw new Error(`${what}: the page reports an error: ${last.error}`);
    if (cond(last)) return last;
    if (Date.now() - t0 > timeoutMs) {
      const e = new Error(`timed out after ${timeoutMs} ms waiting for ${what} (status=${last.status}, state=${last.state?.state ?? 'none'}, states=${last.nStates}, transcripts=${last.nTranscripts}, metrics=${last.nMetrics}, agentAudio=${last.agentAudio})`);
      e.timeout = true;
      throw e;
    }
    if (Date.now() - lastLog > 5000) {
      lastLog = Date.now();
      log(`waiting for ${what}: status=${last.status} state=${last.state?.state ?? '-'} turn=${last.state?.turn ?? '-'} transcripts=${last.nTranscripts}`);
    }
    await sleep(o_pollMs);
  }
}

// Polls every 20 ms: the barge-in is aimed from here, and a poll is a few ms of page work.
const o_pollMs = 20;

/** A clip for the scripted mic: a WAV with exact sizes (voice-tts streams 0xFFFFFFFF) and where its speech is. */
function clip(file, threshold) {
  const wav = parseWav(fs.readFileSync(file));
  const speech = speechSpan(wav.samples, wav.sampleRate, threshold);
  if (!speech) usage(`no speech in ${file} (no 10 ms window above RMS ${threshold})`);
  return { base64: encodeWav16(wav.samples, wav.sampleRate).toString('base64'), speech };
}

async function runBrowser(o, failures) {
  const pageUrl = new URL(o.url);
  if (o.room) pageUrl.searchParams.set('room', o.room);
  if (o.identity) pageUrl.searchParams.set('identity', o.identity);
  if (!o.processing) pageUrl.searchParams.set('processing', '0');

  log(`chromium ${o.chromium}, scripted mic: ${o.wav}${o.interruptWav ? ` then ${o.interruptWav}` : ''}`);
  const browser = await launchBrowser({ executablePath: o.chromium });
  const { page, context } = browser;
  await page.addInitScript(pageInstruments);
  const clips = { question: clip(o.wav, o.onsetThreshold), interrupt: o.interruptWav ? clip(o.interruptWav, o.onsetThreshold) : null };
  const problems = collectPageProblems(page);
  const run = {
    mode: o.mode,
    url: pageUrl.toString(),
    chromium: context.browser()?.version() ?? null,
    startedAt: new Date().toISOString(),
  };
  try {
    log(`open ${run.url}`);
    await page.goto(run.url, { waitUntil: 'load', timeout: o.connectTimeoutMs });
    await page.waitForFunction(() => !!window.__voiceTest, null, { timeout: 10000 });
    const connectButton = page.getByTestId('connect-button');
    await connectButton.waitFor({ state: 'visible', timeout: 10000 });

    // Record from before Connect (both level timelines start with it).
    await page.evaluate(() => window.__voiceTest.startRecording());
    run.tClick = await page.evaluate(() => performance.now());
    await connectButton.click();
    log('clicked Connect');

    let p = await waitUntil(page, 'the LiveKit connection', o.connectTimeoutMs, (s) => s.connected);
    run.tConnected = p.now;
    p = await waitUntil(page, 'the microphone to be published', o.connectTimeoutMs, (s) => s.micPublished);
    run.tMicPublished = p.now;
    log(`connected (${Math.round(run.tConnected - run.tClick)} ms), mic published`);
    await sleep(o.leadMs);
    const played = await page.evaluate((b64) => window.__e2eMic.play(b64), clips.question.base64);
    run.question = { ...played, speech: clips.question.speech };
    run.tQuestionSpeechEnd = played.startedAt + clips.question.speech.endMs;
    log(`playing the question (${Math.round(played.durationMs)} ms)`);
    run.statsBefore = await page.evaluate(() => window.__e2eMic.inboundAudioStats());

    if (o.mode === 'answer') {
      p = await waitUntil(page, 'a final user transcript, then a final agent transcript and the agent back to listening', o.timeoutMs, (s) => s.answered);
      run.tAnswered = p.now;
      run.tUserFinal = p.userFinal.receivedAt;
      const turn = p.finalAgent.turn;
      log(`answered (turn ${turn}); waiting for metrics`);
      try {
        await waitUntil(page, `agent.metrics for turn ${turn}`, o.metricsGraceMs, (s) => s.metricsTurns.includes(turn));
      } catch (e) {
        if (!e.timeout) throw e;
        log(e.message);
      }
      await sleep(o.tailMs);
      run.statsAfter = await page.evaluate(() => window.__e2eMic.inboundAudioStats());
    } else {
      // Aim at the agent's voice: once its audio has been loud for barge-after-ms in the page.
      await waitUntil(page, `the agent audible for ${o.bargeAfterMs} ms`, o.timeoutMs, (s) => s.remoteLoudMs >= o.bargeAfterMs, { threshold: o.silenceThreshold });
      run.statsAtBarge = await page.evaluate(() => window.__e2eMic.inboundAudioStats());
      const barge = await page.evaluate((b64) => window.__e2eMic.play(b64), clips.interrupt.base64);
      run.interruption = { ...barge, speech: clips.interrupt.speech };
      run.tInterruptOnset = barge.startedAt + clips.interrupt.speech.startMs;
      log('the agent is talking: playing the interruption');
      p = await waitUntil(page, 'an agent.state message with interrupted=true', o.timeoutMs, (s) => !!s.interrupted);
      run.statsAtInterrupt = await page.evaluate(() => window.__e2eMic.inboundAudioStats());
      log(`interrupted (turn ${p.interrupted.turn}); recording ${o.afterInterruptMs} ms more`);
      await sleep(o.afterInterruptMs);
    }
  } catch (e) {
    failures.push(e.message);
    log(`FAIL: ${e.message}`);
  }

  // Always collect what there is (a failed run is still worth analysing).
  try {
    const dump = await page.evaluate(async () => {
      const h = window.__voiceTest;
      const wav = h.recording ? await h.stopRecording() : null;
      return {
        wav,
        sampleRate: h.sampleRate,
        audioContextState: h.audioContextState,
        tapKind: h.tapKind,
        connected: h.connected,
        status: h.status,
        error: h.error,
        room: h.room,
        identity: h.identity,
        agentIdentity: h.agentIdentity,
        agentAudio: h.agentAudio,
        states: h.states,
        transcripts: h.transcripts,
        metrics: h.metrics,
        events: h.events,
        remoteLevel: h.remoteLevel,
        localLevel: h.localLevel,
        tEnd: performance.now(),
      };
    });
    Object.assign(run, dump);
    if (o.artifacts) await page.screenshot({ path: path.join(o.artifacts, 'page.png'), fullPage: true }).catch(() => undefined);
  } catch (e) {
    failures.push(`could not read the test hook: ${e.message}`);
  }
  run.console = problems.console;
  run.pageErrors = problems.pageErrors;
  await browser.close();
  return run;
}

// ---- analysis ----------------------------------------------------------------------------------

const norm = (s) =>
  ` ${s
    .toLowerCase()
    .normalize('NFKC')
    .replace(/[^\p{L}\p{N}']+/gu, ' ')
    .replace(/(^|\s)'+|'+(\s|$)/g, ' ')
    .replace(/\s+/g, ' ')
    .trim()} `;

function matchWords(text, expected, mode) {
  const hay = norm(text);
  const matched = [];
  const missing = [];
  for (const e of expected) {
    const alts = e.split('|').map((a) => norm(a)).filter((a) => a.trim());
    (alts.some((a) => hay.includes(a)) ? matched : missing).push(e);
  }
  const ok = expected.length === 0 ? true : mode === 'all' ? missing.length === 0 : matched.length > 0;
  return { ok, matched, missing };
}

/**
 * Crop the recording to the agent's audible part (+-300 ms) using the level timeline, ignoring
 * audio before `notBefore` (e.g. a greeting before the user's question was understood).
 */
function cropRecording(samples, sampleRate, levels, threshold, notBefore = -Infinity) {
  if (!levels.length || !samples.length) return { samples, from: 0, to: samples.length / sampleRate };
  const perPoint = samples.length / levels.length; // one level point per PCM window, in order
  let a = -1;
  let b = -1;
  levels.forEach((p, i) => {
    if (p.rms >= threshold && p.t >= notBefore) {
      if (a < 0) a = i;
      b = i;
    }
  });
  if (a < 0) return { samples, from: 0, to: samples.length / sampleRate };
  const pad = Math.round(0.3 * sampleRate);
  const s = Math.max(0, Math.floor(a * perPoint) - pad);
  const e = Math.min(samples.length, Math.ceil((b + 1) * perPoint) + pad);
  return { samples: samples.subarray(s, e), from: s / sampleRate, to: e / sampleRate };
}

async function transcribe(o, wavBuf) {
  const form = new FormData();
  form.append('file', new Blob([wavBuf], { type: 'audio/wav' }), 'agent.wav');
  form.append('model', o.model);
  form.append('response_format', 'json');
  if (o.language) form.append('language', o.language);
  const t0 = Date.now();
  const url = `${o.stt}/v1/audio/transcriptions`;
  let res;
  try {
    res = await fetch(url, { method: 'POST', body: form, signal: AbortSignal.timeout(120000) });
  } catch (e) {
    throw new Error(`STT request to ${url} failed: ${e.cause?.message ?? e.message}`);
  }
  const body = await res.text();
  if (!res.ok) throw new Error(`STT ${url} returned HTTP ${res.status}: ${body.slice(0, 300)}`);
  let text;
  try {
    text = JSON.parse(body).text;
  } catch {
    text = body;
  }
  if (typeof text !== 'string') throw new Error(`STT response has no "text": ${body.slice(0, 300)}`);
  return { text: text.trim(), ms: Date.now() - t0 };
}

function turnTexts(transcripts, role) {
  const byTurn = new Map();
  for (const t of transcripts) {
    if (t.role !== role) continue;
    const cur = byTurn.get(t.turn) ?? { text: '', final: false };
    if (cur.final && !t.final) continue;
    if (role === 'user' || t.final) byTurn.set(t.turn, { text: t.text || cur.text, final: t.final || cur.final });
    else byTurn.set(t.turn, { text: cur.text ? `${cur.text} ${t.text}` : t.text, final: false });
  }
  return [...byTurn.entries()].sort((a, b) => a[0] - b[0]).map(([turn, v]) => ({ turn, ...v }));
}

async function analyse(o, run, failures) {
  const rel = (t) => (t == null || run.tClick == null ? null : Math.round(t - run.tClick));
  const summary = {
    ok: false,
    mode: o.mode,
    failures,
    url: run.url,
    chromium: run.chromium,
    mic_wav: run.micWav ?? null,
    connection: {
      status: run.status,
      error: run.error,
      room: run.room,
      identity: run.identity,
      agent_identity: run.agentIdentity,
      agent_audio: run.agentAudio,
      connect_ms: rel(run.tConnected),
      mic_published_ms: rel(run.tMicPublished),
    },
    heard: null,
    user_transcript: turnTexts(run.transcripts ?? [], 'user'),
    agent_transcript: turnTexts(run.transcripts ?? [], 'agent'),
    states: (run.states ?? []).map((s) => ({ ...s, at_ms: rel(s.receivedAt), receivedAt: undefined })),
    metrics: (run.metrics ?? []).map((m) => ({ ...m, at_ms: rel(m.receivedAt), receivedAt: undefined })),
    metrics_check: [],
    recording: null,
    voice_to_voice: null,
    barge_in: null,
    page_errors: run.pageErrors ?? [],
    console_errors: (run.console ?? []).filter((l) => l.startsWith('[error]')).map((l) => (l.length > 300 ? `${l.slice(0, 300)}…` : l)),
  };

  if (run.tConnected == null) {
    // Never connected: the browser-phase failure says why; the rest would only add noise.
    summary.ok = false;
    return summary;
  }

  // -- metrics: stages add up to voice_to_voice_ms
  for (const m of run.metrics ?? []) {
    const sum = STAGES.reduce((a, k) => a + (typeof m[k] === 'number' ? m[k] : NaN), 0);
    const diff = sum - m.voice_to_voice_ms;
    const ok = Number.isFinite(diff) && Math.abs(diff) <= o.sumToleranceMs;
    summary.metrics_check.push({ turn: m.turn, stages_sum_ms: sum, voice_to_voice_ms: m.voice_to_voice_ms, diff_ms: diff, ok });
    if (!ok) failures.push(`agent.metrics turn ${m.turn}: stages add up to ${sum} ms but voice_to_voice_ms is ${m.voice_to_voice_ms} (tolerance ${o.sumToleranceMs} ms)`);
  }
  if (o.mode === 'answer' && !(run.metrics ?? []).length) failures.push('no agent.metrics message arrived');
  // Each stage is two of the turn's instants in order (the agent sends negative ones if not).
  for (const m of run.metrics ?? []) {
    for (const k of STAGES) if (!(m[k] >= 0)) failures.push(`agent.metrics turn ${m.turn}: ${k} = ${m[k]} (out of order)`);
    // stt_final may be ~0: the final transcript starts 96 ms into the silence (FinalCandidate)
    // and is often done when the turn ends.
    for (const k of ['end_of_utterance_ms', 'llm_ttft_ms', 'tts_ttfa_ms']) {
      if (!(m[k] > 1)) failures.push(`agent.metrics turn ${m.turn}: ${k} = ${m[k]} ms: that stage does work`);
    }
  }

  // -- voice-to-voice measured in the page, against the agent's own figure. The page hears
  // uplink + agent + downlink: (question's last speech played -> first loud agent audio) less
  // the downlink delay (getStats over the answer) leaves the agent's figure plus the uplink
  // (browser -> SFU -> the agent's receive buffer) plus where the agent's clock runs short by
  // design: it starts at the VAD's last speech window, which trails the audible end (Silero's
  // probability decays over ~100 ms, measured in services/agent/tests/audio_loop.rs, and a window
  // is 32 ms), and it ends at the first frame published, 20 ms before the first sound. The
  // uplink is the part that varies and that the page cannot see (the agent's jitter buffer under
  // a loaded 2-core machine): residuals measured 226-487 ms over five runs. So this check catches
  // a clock off by ~400 ms or more (e.g. started at the end of the turn instead of the last
  // speech); the 50 ms agreement is services/agent/tests/audio_loop.rs's, where the instants are known.
  if (o.mode === 'answer' && run.tQuestionSpeechEnd != null) {
    const turnMetrics = (run.metrics ?? []).filter((m) => m.receivedAt > run.tQuestionSpeechEnd).shift();
    const firstLoud = (run.remoteLevel ?? []).find((q) => q.t - 10 > run.tQuestionSpeechEnd && q.rms >= o.silenceThreshold);
    const downlink = run.statsBefore && run.statsAfter ? downlinkDelayMs(run.statsBefore, run.statsAfter) : null;
    const v = { question_speech_end_at_ms: rel(run.tQuestionSpeechEnd), downlink_ms: downlink == null ? null : Math.round(downlink) };
    summary.voice_to_voice = v;
    if (!turnMetrics || !firstLoud || downlink == null) {
      failures.push(`voice-to-voice: cannot compare (metrics ${!!turnMetrics}, agent audio heard ${!!firstLoud}, downlink delay ${downlink})`);
    } else {
      v.page_ms = Math.round(firstLoud.t - 10 - run.tQuestionSpeechEnd);
      v.agent_ms = turnMetrics.voice_to_voice_ms;
      v.residual_ms = Math.round(v.page_ms - downlink - v.agent_ms);
      v.bounds_ms = [-o.v2vEarlyMs, o.uplinkBudgetMs + o.vadLagMs];
      if (v.residual_ms > v.bounds_ms[1] || v.residual_ms < v.bounds_ms[0]) {
        failures.push(
          `voice-to-voice: the page measured ${v.page_ms} ms (downlink ${v.downlink_ms} ms) but the agent reports ${v.agent_ms} ms: residual ${v.residual_ms} ms outside [${v.bounds_ms[0]}, ${v.bounds_ms[1]}]`,
        );
      }
    }
  }

  // -- recording + STT
  if (run.wav) {
    const wav = parseWav(Buffer.from(run.wav, 'base64'));
    const remote = run.remoteLevel ?? [];
    const notBefore = o.mode === 'answer' ? run.tUserFinal : undefined;
    const crop = o.trim
      ? cropRecording(wav.samples, wav.sampleRate, remote, o.silenceThreshold, notBefore)
      : { samples: wav.samples, from: 0, to: wav.durationS };
    const t0 = run.tClick ?? remote[0]?.t ?? 0;
    summary.recording = {
      sample_rate: wav.sampleRate,
      seconds: +wav.durationS.toFixed(3),
      sent_to_stt_s: [+crop.from.toFixed(3), +crop.to.toFixed(3)],
      tap: run.tapKind,
      audio_context: run.audioContextState,
      remote_loud_segments_ms: loudSegments(remote, o.silenceThreshold, t0),
      local_loud_segments_ms: loudSegments(run.localLevel ?? [], o.onsetThreshold, t0),
    };
    if (!summary.recording.remote_loud_segments_ms.length) failures.push('the recording of the agent audio is silent (no remote audio above the silence threshold)');
    const cropped = encodeWav16(crop.samples, wav.sampleRate);
    if (o.artifacts) {
      fs.writeFileSync(path.join(o.artifacts, 'agent.wav'), Buffer.from(run.wav, 'base64'));
      fs.writeFileSync(path.join(o.artifacts, 'agent_stt.wav'), cropped);
    }
    if (!o.skipStt) {
      try {
        const { text, ms } = await transcribe(o, cropped);
        const m = matchWords(text, o.expect, o.expectMode);
        summary.heard = { text, normalized: norm(text).trim(), stt_ms: ms, model: o.model, expected: o.expect, expect_mode: o.expectMode, ...m };
        log(`heard: "${text}"`);
        if (o.mode === 'answer' && !text.trim()) failures.push('STT heard nothing in the agent audio');
        if (!m.ok) {
          failures.push(`expected ${o.expectMode === 'all' ? 'all' : 'any'} of [${o.expect.join(', ')}] in what the agent said; heard "${text}" (missing: ${m.missing.join(', ')})`);
        }
      } catch (e) {
        failures.push(e.message);
      }
    }
  } else {
    failures.push('no recording came back from the page');
  }
  if (o.mode === 'answer' && !summary.agent_transcript.some((t) => t.final && t.text.trim())) {
    failures.push('no final, non-empty agent transcript arrived');
  }

  // -- barge-in timing
  if (o.mode === 'barge-in') {
    const states = run.states ?? [];
    const intr = states.find((s) => s.interrupted === true);
    const b = {
      silence_threshold: o.silenceThreshold,
      hold_ms: o.holdMs,
      max_stop_ms: o.maxStopMs,
      onset_threshold: o.onsetThreshold,
    };
    summary.barge_in = b;
    if (!intr) {
      if (!failures.some((f) => f.includes('interrupted=true'))) failures.push('no agent.state message with interrupted=true arrived');
    } else {
      const tInt = intr.receivedAt;
      const nextSpeaking = states.find((s) => s.receivedAt > tInt && s.state === 'speaking');
      const until = Math.min(nextSpeaking?.receivedAt ?? Infinity, run.tEnd ?? Infinity);
      const remote = run.remoteLevel ?? [];
      const local = run.localLevel ?? [];
      b.interrupted_turn = intr.turn;
      b.interrupt_msg_at_ms = rel(tInt);
      b.observed_until_ms = rel(Math.min(until, remote[remote.length - 1]?.t ?? until));
      b.next_speaking_at_ms = rel(nextSpeaking?.receivedAt);
      const sil = findFinalSilence(remote, tInt, Math.min(until, remote[remote.length - 1]?.t ?? until), {
        threshold: o.silenceThreshold,
        holdMs: o.holdMs,
        lookbackMs: o.audibleMs,
      });
      if (!sil) {
        failures.push(`barge-in: no agent audio at all in the ${o.audibleMs} ms before the interruption or after it: was the agent speaking?`);
      } else {
        b.silence_at_ms = rel(sil.silenceAt);
        b.quiet_observed_ms = Math.round(sil.observedQuietMs);
        // (a) interrupt message received -> agent audio silent
        b.stop_latency_ms = Math.round(sil.silenceAt - tInt);
        b.agent_audible_before_interrupt = sil.loudBeforeRef;
        if (!sil.loudBeforeRef) failures.push(`barge-in: the agent was not audible in the ${o.audibleMs} ms before the interrupt message`);
        if (!sil.held) failures.push(`barge-in: agent audio did not stay quiet for ${o.holdMs} ms after the interruption (only ${Math.round(sil.observedQuietMs)} ms observed)`);
        // The data message overtakes the audio: audio sits in WebRTC's jitter buffer, data does
        // not. The audio already in the browser when the agent flushed is the downlink's delay,
        // measured at the barge-in itself: the jitter buffer's mean hold time of what it emitted
        // between the interruption being played and the message arriving (getStats). What the
        // agent controls is the rest: agent_stop_ms = stop_latency_ms - downlink. Asserted.
        const downlink = run.statsAtBarge && run.statsAtInterrupt ? downlinkDelayMs(run.statsAtBarge, run.statsAtInterrupt) : null;
        b.downlink_audio_latency_ms = downlink == null ? null : Math.round(downlink);
        if (downlink == null) failures.push('barge-in: no downlink delay (no agent audio left the jitter buffer around the barge-in)');
        b.agent_stop_ms = b.stop_latency_ms - (b.downlink_audio_latency_ms ?? 0);
        if (b.agent_stop_ms > o.maxStopMs) {
          failures.push(
            `barge-in: agent audio kept playing ${b.stop_latency_ms} ms after the interrupt message, ${b.agent_stop_ms} ms beyond the downlink's ${b.downlink_audio_latency_ms} ms (limit ${o.maxStopMs} ms)`,
          );
        }
        // Detection: the interruption's first speech played into the mic -> the interrupt
        // message. The agent needs --min-interruption of speech; the budget covers the uplink,
        // the VAD's windows and the message's way back.
        if (run.tInterruptOnset != null) {
          b.interruption_onset_at_ms = rel(run.tInterruptOnset);
          b.detection_ms = Math.round(tInt - run.tInterruptOnset);
          b.detection_limit_ms = o.minInterruptionMs + o.detectBudgetMs;
          if (b.detection_ms > b.detection_limit_ms || b.detection_ms < o.minInterruptionMs) {
            failures.push(`barge-in: detected ${b.detection_ms} ms after the interruption's onset; expected [${o.minInterruptionMs}, ${b.detection_limit_ms}] ms`);
          }
        }
        // (b) onset of the user's interrupting speech (local mic level) -> agent audio silent
        const onset = findOnsetBefore(local, tInt, { threshold: o.onsetThreshold, gapMs: o.onsetGapMs });
        if (onset == null) {
          b.onset_to_silence_ms = null;
          b.note = 'no local mic onset found before the interrupt message';
        } else {
          b.mic_onset_at_ms = rel(onset);
          b.onset_to_silence_ms = Math.round(sil.silenceAt - onset);
          b.onset_to_interrupt_msg_ms = Math.round(tInt - onset);
        }
      }
    }
  }

  summary.ok = failures.length === 0;
  return summary;
}

// ---- main --------------------------------------------------------------------------------------

const o = options();
const failures = [];
if (o.artifacts) fs.mkdirSync(o.artifacts, { recursive: true });

let run;
if (o.fromRun) {
  run = JSON.parse(fs.readFileSync(o.fromRun, 'utf8'));
  o.mode = run.mode ?? o.mode;
  failures.push(...(run.failures ?? []));
} else {
  try {
    run = await runBrowser(o, failures);
  } catch (e) {
    process.stderr.write(`setup error: ${e.stack ?? e}\n`);
    console.log(JSON.stringify({ ok: false, mode: o.mode, failures: [...failures, `setup error: ${e.message}`] }, null, 2));
    process.exit(2);
  }
  run.micWav = path.resolve(o.wav);
  run.failures = failures.slice();
  if (o.artifacts) fs.writeFileSync(path.join(o.artifacts, 'run.json'), JSON.stringify(run));
}

const summary = await analyse(o, run, failures);
const out = JSON.stringify(summary, null, 2);
if (o.artifacts) fs.writeFileSync(path.join(o.artifacts, 'summary.json'), out);
console.log(out);
if (!summary.ok) {
  process.stderr.write(`\nFAILED (${o.mode}):\n${summary.failures.map((f) => `  - ${f}`).join('\n')}\n`);
  process.exit(1);
}
process.stderr.write(`\nPASSED (${o.mode})\n`);
