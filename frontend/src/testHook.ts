// `window.__voiceTest`: a stable hook for automated browser tests (tests/e2e/voice_e2e.mjs).
// Always installed. All times are performance.now() milliseconds of this page, so data-message
// receipt times and audio level timelines share one clock.
//
// Arrays keep their identity for the life of the page (they are cleared in place, never
// replaced); plain data fields are updated in place.

import type { AgentStateMsg, MetricsMsg, TranscriptMsg } from './protocol';

export interface LevelPoint {
  /** performance.now() at the end of the ~10 ms window */
  t: number;
  /** RMS of the window, linear full scale (0..1) */
  rms: number;
}

export interface DataEvent {
  topic: string | null;
  receivedAt: number;
  /** identity of the sending participant; null when sent by the server/unknown */
  from: string | null;
  /** parsed JSON payload, or null when the payload is not JSON */
  payload: unknown;
  /** the raw text, present only when the payload was not JSON */
  raw?: string;
}

export type Stamped<T> = T & { receivedAt: number };

export interface VoiceTestHook {
  /** contract version; bump on incompatible changes */
  version: 1;
  /** true while the LiveKit room is connected */
  connected: boolean;
  /** 'disconnected' | 'connecting' | 'connected' | 'reconnecting' | 'disconnecting' */
  status: string;
  /** latest user-facing error message (token, LiveKit, microphone), or null */
  error: string | null;
  room: string | null;
  identity: string | null;
  /** identity of the remote participant whose audio is played (the agent) */
  agentIdentity: string | null;
  /** true while a remote audio track is subscribed and routed to the analysis graph */
  agentAudio: boolean;
  /** true once the local microphone track is published */
  micPublished: boolean;
  /** latest agent.state message (with receivedAt), or null */
  state: Stamped<AgentStateMsg> | null;
  /** every agent.state message */
  states: Stamped<AgentStateMsg>[];
  /** every agent.transcript message as received (partials included) */
  transcripts: Stamped<TranscriptMsg>[];
  /** every agent.metrics message */
  metrics: Stamped<MetricsMsg>[];
  /** every data message on any topic */
  events: DataEvent[];
  /** agent (remote) audio RMS every ~10 ms while recording */
  remoteLevel: LevelPoint[];
  /** local microphone RMS every ~10 ms while recording */
  localLevel: LevelPoint[];
  /** true between startRecording() and stopRecording() */
  recording: boolean;
  /** AudioContext sample rate (the WAV's rate), once the context exists */
  sampleRate: number | null;
  /** AudioContext state, refreshed on each recording call */
  audioContextState: string | null;
  /** 'worklet' | 'script-processor' */
  tapKind: string | null;
  /**
   * Clear remoteLevel/localLevel and the PCM buffer, then record the agent's remote audio
   * (and both level timelines) until stopRecording(). Works before Connect: sources are
   * added to the graph as they appear; before that the timeline holds digital silence.
   */
  startRecording(): Promise<void>;
  /** Stop and return the recording as base64 of a 16-bit mono PCM WAV at sampleRate. */
  stopRecording(): Promise<string>;
  /** Clear all message arrays and level timelines (not the connection). */
  reset(): void;
  /** Self-test entry points (no LiveKit server needed); not used by the real flow. */
  _debug: {
    /** Feed a data message through the same handler as RoomEvent.DataReceived. */
    data(topic: string, payload: unknown): void;
    /** Route a MediaStreamTrack as if it were the agent's subscribed audio track. */
    remoteTrack(track: MediaStreamTrack, key?: string): string;
    /** Route a MediaStreamTrack as the local microphone in the level graph. */
    localTrack(track: MediaStreamTrack | null): void;
  };
}

declare global {
  interface Window {
    __voiceTest: VoiceTestHook;
  }
}
