// VoiceSession: owns the LiveKit Room, the analysis AudioEngine and the window.__voiceTest hook.
// React subscribes to immutable snapshots (useSyncExternalStore); nothing here depends on React,
// so the test hook keeps working whatever the UI renders.

import {
  DisconnectReason,
  LocalAudioTrack,
  MediaDeviceFailure,
  Room,
  RoomEvent,
  Track,
  TrackEvent,
  type LocalTrackPublication,
  type Participant,
  type RemoteParticipant,
  type RemoteTrack,
  type RemoteTrackPublication,
} from 'livekit-client';

import { AudioEngine } from './audio/engine';
import { encodeWav16, toBase64 } from './audio/wav';
import {
  TOPIC_METRICS,
  TOPIC_STATE,
  TOPIC_TRANSCRIPT,
  parseAgentState,
  parseMetrics,
  parseTokenResponse,
  parseTranscript,
  type AgentStateMsg,
  type MetricsMsg,
  type Role,
  type TokenRequest,
  type TokenResponse,
  type TranscriptMsg,
} from './protocol';
import type { DataEvent, LevelPoint, Stamped, VoiceTestHook } from './testHook';

export type ConnStatus = 'disconnected' | 'connecting' | 'connected' | 'reconnecting' | 'disconnecting';

export interface TranscriptEntry {
  key: string;
  turn: number;
  role: Role;
  text: string;
  final: boolean;
  interrupted: boolean;
}

export interface MicDevice {
  deviceId: string;
  label: string;
}

export interface UiState {
  status: ConnStatus;
  /** connection-level error (token endpoint, LiveKit, unexpected disconnect) */
  error: string | null;
  /** microphone error (permission denied, no device, switch failure) */
  micError: string | null;
  room: string | null;
  identity: string | null;
  agentPresent: boolean;
  agentIdentity: string | null;
  agentAudio: boolean;
  agentState: Stamped<AgentStateMsg> | null;
  transcript: TranscriptEntry[];
  metrics: Stamped<MetricsMsg>[];
  micPublished: boolean;
  micMuted: boolean;
  devices: MicDevice[];
  /** selected input device id ('' = browser default) */
  deviceId: string;
  /** browser blocked autoplay: the user must click "Start audio" */
  audioBlocked: boolean;
  /** the analysers exist (visualisers can draw) */
  audioReady: boolean;
}

export interface SessionConfig {
  echoCancellation: boolean;
  noiseSuppression: boolean;
  autoGainControl: boolean;
}

const MAX_LEVEL_POINTS = 100 * 60 * 30; // 30 min at 100 Hz
const MAX_METRICS_SHOWN = 50;

const initialState: UiState = {
  status: 'disconnected',
  error: null,
  micError: null,
  room: null,
  identity: null,
  agentPresent: false,
  agentIdentity: null,
  agentAudio: false,
  agentState: null,
  transcript: [],
  metrics: [],
  micPublished: false,
  micMuted: false,
  devices: [],
  deviceId: '',
  audioBlocked: false,
  audioReady: false,
};

function errMsg(e: unknown): string {
  if (e instanceof Error) return e.message || e.name;
  return String(e);
}

export async function fetchToken(req: TokenRequest): Promise<TokenResponse> {
  let res: Response;
  try {
    res = await fetch('/api/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(req),
    });
  } catch (e) {
    throw new Error(`Could not reach the token endpoint /api/token (${errMsg(e)}). Is the agent server running?`);
  }
  const body = await res.text().catch(() => '');
  if (!res.ok) {
    let detail = body.trim();
    try {
      const j = JSON.parse(body) as { error?: { message?: string } | string; message?: string };
      detail = (typeof j.error === 'string' ? j.error : j.error?.message) ?? j.message ?? detail;
    } catch {
      /* not JSON: keep the text */
    }
    detail = detail.replace(/\s+/g, ' ').slice(0, 300);
    if (!detail && res.status >= 500) detail = 'is the agent server running and reachable from this origin?';
    throw new Error(
      `Token endpoint /api/token failed: HTTP ${res.status}${res.statusText ? ' ' + res.statusText : ''}` +
        (detail ? ` — ${detail}` : ''),
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw new Error('Token endpoint /api/token returned a response that is not JSON.');
  }
  const tok = parseTokenResponse(json);
  if (!tok) throw new Error('Token endpoint /api/token returned JSON without a "url" and "token".');
  return tok;
}

export function describeMicError(e: unknown): string {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    return 'Microphone access needs a secure page (https:// or http://localhost / 127.0.0.1).';
  }
  switch (MediaDeviceFailure.getFailure(e)) {
    case MediaDeviceFailure.PermissionDenied:
      return 'Microphone permission was denied. Allow microphone access for this site (address bar → site settings), then press “Retry microphone”.';
    case MediaDeviceFailure.NotFound:
      return 'No microphone was found. Connect one, then press “Retry microphone”.';
    case MediaDeviceFailure.DeviceInUse:
      return 'The microphone is in use by another application.';
    default:
      return `Could not start the microphone: ${errMsg(e)}`;
  }
}

function joinSentence(prev: string, next: string): string {
  if (!prev) return next;
  if (!next) return prev;
  return /\s$/.test(prev) || /^\s/.test(next) ? prev + next : `${prev} ${next}`;
}

/** Apply one agent.transcript message to the chat list (pure; returns a new array). */
export function applyTranscript(
  list: readonly TranscriptEntry[],
  msg: TranscriptMsg,
  interruptedTurns: ReadonlySet<number>,
): TranscriptEntry[] {
  const key = `${msg.turn}:${msg.role}`;
  const out = list.slice();
  const i = out.findIndex((e) => e.key === key);
  if (i < 0) {
    out.push({
      key,
      turn: msg.turn,
      role: msg.role,
      text: msg.text,
      final: msg.final,
      interrupted: msg.role === 'agent' && interruptedTurns.has(msg.turn),
    });
  } else {
    const cur = out[i];
    if (cur.final && !msg.final) return list as TranscriptEntry[]; // stale partial after the final
    let text: string;
    if (msg.role === 'user') text = msg.text; // partials are replaced by later ones
    else if (msg.final) text = msg.text || cur.text; // the final carries the whole turn
    else text = joinSentence(cur.text, msg.text); // sentence by sentence
    out[i] = { ...cur, text, final: msg.final || cur.final };
  }
  const roleOrder = (r: Role) => (r === 'user' ? 0 : 1);
  out.sort((a, b) => a.turn - b.turn || roleOrder(a.role) - roleOrder(b.role));
  return out;
}

export class VoiceSession {
  readonly engine = new AudioEngine();
  readonly hook: VoiceTestHook;
  private state: UiState = initialState;
  private listeners = new Set<() => void>();
  private room: Room | null = null;
  private interruptedTurns = new Set<number>();
  private recording = false;
  private pcm: Float32Array[] = [];
  private audioContainer: HTMLElement;
  private decoder = new TextDecoder();

  constructor(private readonly config: SessionConfig) {
    this.audioContainer = document.createElement('div');
    this.audioContainer.id = 'remote-audio';
    this.audioContainer.hidden = true;
    document.body.appendChild(this.audioContainer);
    this.hook = this.makeHook();
    window.__voiceTest = this.hook;
    this.engine.onRemoteLevel = (t, rms, pcm) => {
      if (!this.recording) return;
      if (this.hook.remoteLevel.length < MAX_LEVEL_POINTS) this.hook.remoteLevel.push({ t, rms });
      if (pcm) this.pcm.push(pcm);
    };
    this.engine.onLocalLevel = (t, rms) => {
      if (!this.recording) return;
      if (this.hook.localLevel.length < MAX_LEVEL_POINTS) this.hook.localLevel.push({ t, rms });
    };
    navigator.mediaDevices?.addEventListener?.('devicechange', () => void this.refreshDevices());
    void this.refreshDevices();
  }

  // ---- store -------------------------------------------------------------------------------

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  getSnapshot = (): UiState => this.state;

  /** Current status (a method so TypeScript does not narrow it across awaits). */
  private status(): ConnStatus {
    return this.state.status;
  }

  private set(patch: Partial<UiState>): void {
    this.state = { ...this.state, ...patch };
    const h = this.hook;
    const s = this.state;
    h.status = s.status;
    h.connected = s.status === 'connected' || s.status === 'reconnecting';
    h.error = s.error ?? s.micError;
    h.room = s.room;
    h.identity = s.identity;
    h.agentIdentity = s.agentIdentity;
    h.agentAudio = s.agentAudio;
    h.micPublished = s.micPublished;
    for (const fn of this.listeners) fn();
  }

  // ---- connection --------------------------------------------------------------------------

  async connect(req: TokenRequest = {}): Promise<void> {
    if (this.state.status !== 'disconnected') return;
    this.set({ status: 'connecting', error: null, micError: null });
    // Create/resume the AudioContext while we still hold the click's user activation.
    void this.engine.ensure().then(() => this.set({ audioReady: true }));
    void this.engine.resume();

    let tok: TokenResponse;
    try {
      tok = await fetchToken(req);
    } catch (e) {
      this.set({ status: 'disconnected', error: errMsg(e) });
      return;
    }
    if (this.status() !== 'connecting') return; // cancelled meanwhile

    const room = new Room({
      adaptiveStream: false,
      dynacast: false,
      audioCaptureDefaults: {
        echoCancellation: this.config.echoCancellation,
        noiseSuppression: this.config.noiseSuppression,
        autoGainControl: this.config.autoGainControl,
      },
    });
    this.room = room;
    this.bindRoom(room);
    this.set({ room: tok.room || null, identity: tok.identity || null });
    try {
      await room.connect(tok.url, tok.token, { autoSubscribe: true });
    } catch (e) {
      if (this.room === room) {
        const cancelled = this.status() !== 'connecting';
        this.room = null;
        room.removeAllListeners();
        this.set({
          status: 'disconnected',
          error: cancelled ? null : `Could not connect to the LiveKit server at ${tok.url}: ${errMsg(e)}`,
        });
      }
      return;
    }
    if (this.room !== room || this.status() !== 'connecting') return; // cancelled meanwhile
    this.set({
      status: 'connected',
      room: room.name || tok.room || null,
      identity: room.localParticipant.identity || tok.identity || null,
    });
    this.updateParticipants();
    try {
      await room.startAudio();
    } catch {
      /* reported through AudioPlaybackStatusChanged */
    }
    this.set({ audioBlocked: !room.canPlaybackAudio });
    await this.enableMic();
  }

  async disconnect(): Promise<void> {
    const room = this.room;
    if (!room) {
      if (this.state.status === 'connecting') this.set({ status: 'disconnected' });
      return;
    }
    this.set({ status: 'disconnecting' });
    try {
      await room.disconnect();
    } finally {
      if (this.room === room) this.teardown(null);
    }
  }

  private teardown(error: string | null): void {
    const room = this.room;
    this.room = null;
    if (room) room.removeAllListeners();
    for (const el of [...this.audioContainer.children]) el.remove();
    this.engine.detachAllRemote();
    this.engine.setLocal(null);
    this.set({
      status: 'disconnected',
      error: error ?? this.state.error,
      agentPresent: false,
      agentAudio: false,
      micPublished: false,
      micMuted: false,
      audioBlocked: false,
    });
  }

  private bindRoom(room: Room): void {
    room
      .on(RoomEvent.Disconnected, (reason?: DisconnectReason) => {
        // A failed join also emits Disconnected; connect()'s catch reports that one.
        if (this.room !== room || this.status() === 'connecting') return;
        const expected = reason === undefined || reason === DisconnectReason.CLIENT_INITIATED;
        const name = reason === undefined ? '' : (DisconnectReason[reason] ?? String(reason));
        this.teardown(expected ? null : `Disconnected from the room (${name}).`);
      })
      .on(RoomEvent.Reconnecting, () => this.set({ status: 'reconnecting' }))
      .on(RoomEvent.Reconnected, () => this.set({ status: 'connected' }))
      .on(RoomEvent.ParticipantConnected, () => this.updateParticipants())
      .on(RoomEvent.ParticipantDisconnected, () => this.updateParticipants())
      .on(RoomEvent.TrackSubscribed, (track, pub, participant) => this.onTrackSubscribed(track, pub, participant))
      .on(RoomEvent.TrackUnsubscribed, (track, pub) => this.onTrackUnsubscribed(track, pub))
      .on(RoomEvent.LocalTrackPublished, (pub) => this.onLocalTrackPublished(pub))
      .on(RoomEvent.LocalTrackUnpublished, (pub) => {
        if (pub.source === Track.Source.Microphone) {
          this.engine.setLocal(null);
          this.set({ micPublished: false });
        }
      })
      .on(RoomEvent.TrackMuted, (pub, p) => this.onMuteChanged(pub.source, p, true))
      .on(RoomEvent.TrackUnmuted, (pub, p) => this.onMuteChanged(pub.source, p, false))
      .on(RoomEvent.ActiveDeviceChanged, (kind, deviceId) => {
        if (kind !== 'audioinput') return;
        this.set({ deviceId: deviceId === 'default' ? '' : deviceId });
        this.bindLocalMic();
      })
      .on(RoomEvent.MediaDevicesChanged, () => void this.refreshDevices())
      .on(RoomEvent.MediaDevicesError, (e, kind) => console.warn('media device error', kind, e))
      .on(RoomEvent.AudioPlaybackStatusChanged, () => this.set({ audioBlocked: !room.canPlaybackAudio }))
      .on(RoomEvent.DataReceived, (payload, participant, _kind, topic) =>
        this.onData(payload, topic ?? null, participant?.identity ?? null),
      );
  }

  private updateParticipants(): void {
    const room = this.room;
    const remotes = room ? [...room.remoteParticipants.values()] : [];
    this.set({
      agentPresent: remotes.length > 0,
      agentIdentity: this.state.agentIdentity ?? remotes[0]?.identity ?? null,
    });
  }

  private onTrackSubscribed(track: RemoteTrack, pub: RemoteTrackPublication, participant: RemoteParticipant): void {
    if (track.kind !== Track.Kind.Audio) return;
    const el = track.attach() as HTMLMediaElement;
    el.dataset.testid = 'agent-audio';
    el.dataset.participant = participant.identity;
    this.audioContainer.appendChild(el);
    this.engine.attachRemote(pub.trackSid, track.mediaStreamTrack);
    this.set({ agentAudio: true, agentIdentity: participant.identity });
    if (this.room && !this.room.canPlaybackAudio) {
      this.room.startAudio().catch(() => this.set({ audioBlocked: true }));
    }
  }

  private onTrackUnsubscribed(track: RemoteTrack, pub: RemoteTrackPublication): void {
    if (track.kind !== Track.Kind.Audio) return;
    for (const el of track.detach()) el.remove();
    this.engine.detachRemote(pub.trackSid);
    this.set({ agentAudio: this.engine.remoteCount > 0 });
  }

  private onLocalTrackPublished(pub: LocalTrackPublication): void {
    if (pub.source !== Track.Source.Microphone) return;
    pub.track?.on(TrackEvent.Restarted, () => this.bindLocalMic());
    this.bindLocalMic();
    this.set({ micPublished: true, micMuted: pub.isMuted });
  }

  private onMuteChanged(source: Track.Source, p: Participant, muted: boolean): void {
    if (this.room && p === this.room.localParticipant && source === Track.Source.Microphone) {
      this.set({ micMuted: muted });
    }
  }

  private micTrack(): LocalAudioTrack | null {
    const t = this.room?.localParticipant.getTrackPublication(Track.Source.Microphone)?.track;
    return t instanceof LocalAudioTrack ? t : null;
  }

  private bindLocalMic(): void {
    this.engine.setLocal(this.micTrack()?.mediaStreamTrack ?? null);
  }

  // ---- microphone --------------------------------------------------------------------------

  async enableMic(): Promise<void> {
    const room = this.room;
    if (!room) return;
    this.set({ micError: null });
    try {
      await room.localParticipant.setMicrophoneEnabled(true, {
        deviceId: this.state.deviceId || undefined,
        echoCancellation: this.config.echoCancellation,
        noiseSuppression: this.config.noiseSuppression,
        autoGainControl: this.config.autoGainControl,
      });
      if (this.room !== room) return;
      this.bindLocalMic();
      this.set({ micPublished: true, micMuted: false });
      await this.refreshDevices();
      const active = room.getActiveDevice('audioinput');
      if (active) this.set({ deviceId: active === 'default' ? '' : active });
    } catch (e) {
      if (this.room === room) this.set({ micError: describeMicError(e), micPublished: false });
    }
  }

  async toggleMute(): Promise<void> {
    const track = this.micTrack();
    if (!track) return;
    try {
      if (track.isMuted) await track.unmute();
      else await track.mute();
      this.set({ micMuted: track.isMuted });
    } catch (e) {
      this.set({ micError: `Could not change mute state: ${errMsg(e)}` });
    }
  }

  async selectDevice(deviceId: string): Promise<void> {
    const prev = this.state.deviceId;
    this.set({ deviceId });
    const room = this.room;
    if (!room || !this.state.micPublished) return; // used at the next connect
    try {
      const ok = await room.switchActiveDevice('audioinput', deviceId || 'default');
      if (!ok) throw new Error('the browser refused the device');
      this.bindLocalMic();
      this.set({ micError: null });
    } catch (e) {
      this.set({ deviceId: prev, micError: `Could not switch microphone: ${errMsg(e)}` });
    }
  }

  async refreshDevices(): Promise<void> {
    try {
      const list = await Room.getLocalDevices('audioinput', false);
      const devices = list
        .filter((d) => d.deviceId)
        .map((d, i) => ({ deviceId: d.deviceId, label: d.label || `Microphone ${i + 1}` }));
      this.set({ devices });
    } catch {
      this.set({ devices: [] });
    }
  }

  async startAudio(): Promise<void> {
    void this.engine.resume();
    try {
      await this.room?.startAudio();
      this.set({ audioBlocked: !(this.room?.canPlaybackAudio ?? true) });
    } catch (e) {
      this.set({ error: `Could not start audio playback: ${errMsg(e)}` });
    }
  }

  dismissError(): void {
    this.set({ error: null, micError: null });
  }

  // ---- data messages -----------------------------------------------------------------------

  private onData(payload: Uint8Array, topic: string | null, from: string | null): void {
    const receivedAt = performance.now();
    const text = this.decoder.decode(payload);
    let json: unknown;
    let isJson = true;
    try {
      json = JSON.parse(text);
    } catch {
      isJson = false;
    }
    this.handleMessage(topic, isJson ? json : undefined, isJson ? undefined : text, from, receivedAt);
  }

  private handleMessage(topic: string | null, json: unknown, raw: string | undefined, from: string | null, receivedAt: number): void {
    const ev: DataEvent = { topic, receivedAt, from, payload: json === undefined ? null : json };
    if (raw !== undefined) ev.raw = raw;
    this.hook.events.push(ev);
    if (json === undefined) return;

    if (topic === TOPIC_STATE) {
      const m = parseAgentState(json);
      if (!m) return console.warn('malformed agent.state', json);
      const s = { ...m, receivedAt };
      this.hook.states.push(s);
      this.hook.state = s;
      let transcript = this.state.transcript;
      if (m.interrupted) {
        this.interruptedTurns.add(m.turn);
        transcript = transcript.map((e) => (e.role === 'agent' && e.turn === m.turn ? { ...e, interrupted: true } : e));
      }
      this.set({ agentState: s, transcript });
    } else if (topic === TOPIC_TRANSCRIPT) {
      const m = parseTranscript(json);
      if (!m) return console.warn('malformed agent.transcript', json);
      this.hook.transcripts.push({ ...m, receivedAt });
      this.set({ transcript: applyTranscript(this.state.transcript, m, this.interruptedTurns) });
    } else if (topic === TOPIC_METRICS) {
      const m = parseMetrics(json);
      if (!m) return console.warn('malformed agent.metrics', json);
      const s = { ...m, receivedAt };
      this.hook.metrics.push(s);
      this.set({ metrics: [...this.state.metrics, s].slice(-MAX_METRICS_SHOWN) });
    }
  }

  // ---- test hook ---------------------------------------------------------------------------

  private makeHook(): VoiceTestHook {
    const remoteLevel: LevelPoint[] = [];
    const localLevel: LevelPoint[] = [];
    const hook: VoiceTestHook = {
      version: 1,
      connected: false,
      status: 'disconnected',
      error: null,
      room: null,
      identity: null,
      agentIdentity: null,
      agentAudio: false,
      micPublished: false,
      state: null,
      states: [],
      transcripts: [],
      metrics: [],
      events: [],
      remoteLevel,
      localLevel,
      recording: false,
      sampleRate: null,
      audioContextState: null,
      tapKind: null,
      startRecording: async () => {
        const ctx = await this.engine.ensure();
        this.set({ audioReady: true });
        await this.engine.resume();
        remoteLevel.length = 0;
        localLevel.length = 0;
        this.pcm = [];
        this.recording = true;
        this.engine.setTapsActive(true);
        hook.recording = true;
        hook.sampleRate = ctx.sampleRate;
        hook.audioContextState = ctx.state;
        hook.tapKind = this.engine.tapKind;
      },
      stopRecording: async () => {
        this.engine.setTapsActive(false);
        this.recording = false;
        hook.recording = false;
        const ctx = this.engine.ctx;
        hook.audioContextState = ctx?.state ?? null;
        const wav = encodeWav16(this.pcm, ctx?.sampleRate ?? 48000);
        this.pcm = [];
        return toBase64(wav);
      },
      reset: () => {
        hook.states.length = 0;
        hook.transcripts.length = 0;
        hook.metrics.length = 0;
        hook.events.length = 0;
        remoteLevel.length = 0;
        localLevel.length = 0;
        hook.state = null;
      },
      _debug: {
        data: (topic, payload) => {
          const isText = typeof payload === 'string';
          let json: unknown = payload;
          let raw: string | undefined;
          if (isText) {
            try {
              json = JSON.parse(payload);
            } catch {
              json = undefined;
              raw = payload;
            }
          }
          this.handleMessage(topic, json, raw, null, performance.now());
        },
        remoteTrack: (track, key = `debug-${track.id}`) => {
          const el = document.createElement('audio');
          el.autoplay = true;
          el.srcObject = new MediaStream([track]);
          el.dataset.testid = 'agent-audio';
          this.audioContainer.appendChild(el);
          void el.play().catch(() => undefined);
          this.engine.attachRemote(key, track);
          this.set({ agentAudio: true, audioReady: true });
          return key;
        },
        localTrack: (track) => {
          this.engine.setLocal(track);
          this.set({ audioReady: true });
        },
      },
    };
    return hook;
  }
}
