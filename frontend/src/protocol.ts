// Wire contract between the Rust voice agent and this page.
//
// HTTP:  POST /api/token  {"room"?: string, "identity"?: string}
//        -> {"url": "ws://...", "token": "...", "room": "...", "identity": "..."}
// LiveKit data messages (reliable), UTF-8 JSON, by topic:
//        agent.state       AgentStateMsg
//        agent.transcript  TranscriptMsg
//        agent.metrics     MetricsMsg

export const TOPIC_STATE = 'agent.state';
export const TOPIC_TRANSCRIPT = 'agent.transcript';
export const TOPIC_METRICS = 'agent.metrics';

export type AgentState = 'listening' | 'thinking' | 'speaking';
export type Role = 'user' | 'agent';

export interface TokenRequest {
  room?: string;
  identity?: string;
}

export interface TokenResponse {
  url: string;
  token: string;
  room: string;
  identity: string;
}

export interface AgentStateMsg {
  state: AgentState;
  turn: number;
  interrupted?: boolean;
}

export interface TranscriptMsg {
  turn: number;
  role: Role;
  text: string;
  final: boolean;
}

/** Latency stages of one turn, in milliseconds. The seven stages add up to voice_to_voice_ms. */
export interface MetricsMsg {
  turn: number;
  end_of_utterance_ms: number;
  stt_final_ms: number;
  rag_ms: number;
  llm_ttft_ms: number;
  first_sentence_ms: number;
  tts_ttfa_ms: number;
  publish_ms: number;
  voice_to_voice_ms: number;
  interrupted: boolean;
}

/** Stage fields of MetricsMsg in pipeline order, with display labels. */
export const METRIC_STAGES = [
  { key: 'end_of_utterance_ms', label: 'End of utterance', short: 'EOU' },
  { key: 'stt_final_ms', label: 'STT final', short: 'STT' },
  { key: 'rag_ms', label: 'RAG retrieval', short: 'RAG' },
  { key: 'llm_ttft_ms', label: 'LLM time to first token', short: 'LLM' },
  { key: 'first_sentence_ms', label: 'First sentence', short: 'Sent' },
  { key: 'tts_ttfa_ms', label: 'TTS time to first audio', short: 'TTS' },
  { key: 'publish_ms', label: 'Publish', short: 'Pub' },
] as const satisfies ReadonlyArray<{ key: keyof MetricsMsg; label: string; short: string }>;

export type MetricStageKey = (typeof METRIC_STAGES)[number]['key'];

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

export function parseAgentState(v: unknown): AgentStateMsg | null {
  if (!isObj(v)) return null;
  const { state, turn, interrupted } = v;
  if (state !== 'listening' && state !== 'thinking' && state !== 'speaking') return null;
  if (!isNum(turn)) return null;
  const out: AgentStateMsg = { state, turn };
  if (typeof interrupted === 'boolean') out.interrupted = interrupted;
  return out;
}

export function parseTranscript(v: unknown): TranscriptMsg | null {
  if (!isObj(v)) return null;
  const { turn, role, text, final } = v;
  if (!isNum(turn) || (role !== 'user' && role !== 'agent') || typeof text !== 'string') return null;
  return { turn, role, text, final: final === true };
}

export function parseMetrics(v: unknown): MetricsMsg | null {
  if (!isObj(v) || !isNum(v.turn) || !isNum(v.voice_to_voice_ms)) return null;
  const m: Record<string, unknown> = { turn: v.turn, voice_to_voice_ms: v.voice_to_voice_ms };
  for (const s of METRIC_STAGES) m[s.key] = isNum(v[s.key]) ? v[s.key] : 0;
  m.interrupted = v.interrupted === true;
  return m as unknown as MetricsMsg;
}

export function parseTokenResponse(v: unknown): TokenResponse | null {
  if (!isObj(v)) return null;
  const { url, token, room, identity } = v;
  if (typeof url !== 'string' || !url || typeof token !== 'string' || !token) return null;
  return {
    url,
    token,
    room: typeof room === 'string' ? room : '',
    identity: typeof identity === 'string' ? identity : '',
  };
}

export function stageSum(m: MetricsMsg): number {
  return METRIC_STAGES.reduce((acc, s) => acc + m[s.key], 0);
}
