import { useState, useSyncExternalStore } from 'react';

import { Metrics } from './components/Metrics';
import { Transcript } from './components/Transcript';
import { Visualizer } from './components/Visualizer';
import { pageConfig } from './config';
import type { ConnStatus, VoiceSession } from './session';

const STATUS_TEXT: Record<ConnStatus, string> = {
  disconnected: 'Disconnected',
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  disconnecting: 'Disconnecting…',
};

const AGENT_TEXT = { listening: 'Listening', thinking: 'Thinking', speaking: 'Speaking' } as const;

export function App({ session }: { session: VoiceSession }) {
  const s = useSyncExternalStore(session.subscribe, session.getSnapshot);
  const [room, setRoom] = useState(pageConfig.room);
  const [identity, setIdentity] = useState(pageConfig.identity);

  const busy = s.status === 'connecting' || s.status === 'disconnecting';
  const live = s.status === 'connected' || s.status === 'reconnecting';

  const onConnectClick = () => {
    if (live || s.status === 'connecting') void session.disconnect();
    else {
      const req: { room?: string; identity?: string } = {};
      if (room.trim()) req.room = room.trim();
      if (identity.trim()) req.identity = identity.trim();
      void session.connect(req);
    }
  };

  let agentLabel: string;
  let agentKey: string;
  if (!live) {
    agentLabel = 'Offline';
    agentKey = 'offline';
  } else if (s.agentState) {
    agentLabel = AGENT_TEXT[s.agentState.state];
    agentKey = s.agentState.state;
  } else if (s.agentPresent) {
    agentLabel = 'Agent joined';
    agentKey = 'joined';
  } else {
    agentLabel = 'Waiting for the agent…';
    agentKey = 'waiting';
  }

  return (
    <div className="app">
      <header className="top">
        <h1>Voice agent</h1>
        <p className={`status status-${s.status}`} role="status" data-testid="connection-status" data-status={s.status}>
          <span className="led" aria-hidden="true" />
          {STATUS_TEXT[s.status]}
          {live && s.room && <span className="muted"> · room {s.room}</span>}
        </p>
      </header>

      {(s.error || s.micError) && (
        <div className="alert" role="alert" data-testid="error">
          {s.error && <p data-testid="connection-error">{s.error}</p>}
          {s.micError && <p data-testid="mic-error">{s.micError}</p>}
          <div className="alert-actions">
            {s.micError && live && (
              <button type="button" onClick={() => void session.enableMic()} data-testid="retry-mic-button">
                Retry microphone
              </button>
            )}
            <button type="button" className="ghost" onClick={() => session.dismissError()} aria-label="Dismiss error">
              Dismiss
            </button>
          </div>
        </div>
      )}

      <section className="panel controls" aria-label="Controls">
        <button
          type="button"
          className={live || s.status === 'connecting' ? 'danger' : 'primary'}
          onClick={onConnectClick}
          disabled={s.status === 'disconnecting'}
          data-testid="connect-button"
          data-state={s.status}
          aria-busy={busy}
        >
          {live ? 'Disconnect' : s.status === 'connecting' ? 'Cancel' : s.status === 'disconnecting' ? 'Disconnecting…' : 'Connect'}
        </button>

        <button
          type="button"
          onClick={() => void session.toggleMute()}
          disabled={!s.micPublished}
          aria-pressed={s.micMuted}
          data-testid="mute-button"
        >
          {s.micMuted ? 'Unmute mic' : 'Mute mic'}
        </button>

        <label className="field">
          <span>Microphone</span>
          <select
            value={s.deviceId}
            onChange={(e) => void session.selectDevice(e.target.value)}
            disabled={busy}
            data-testid="mic-select"
          >
            <option value="">Browser default</option>
            {s.devices
              .filter((d) => d.deviceId !== 'default')
              .map((d) => (
                <option key={d.deviceId} value={d.deviceId}>
                  {d.label}
                </option>
              ))}
          </select>
        </label>

        {s.audioBlocked && (
          <button type="button" className="primary" onClick={() => void session.startAudio()} data-testid="start-audio-button">
            Start audio
          </button>
        )}

        <details className="options">
          <summary>Options</summary>
          <label className="field">
            <span>Room</span>
            <input value={room} onChange={(e) => setRoom(e.target.value)} placeholder="assigned by the server" disabled={live || busy} data-testid="room-input" />
          </label>
          <label className="field">
            <span>Identity</span>
            <input value={identity} onChange={(e) => setIdentity(e.target.value)} placeholder="assigned by the server" disabled={live || busy} data-testid="identity-input" />
          </label>
        </details>
      </section>

      <section className="panel stage" aria-label="Agent">
        <div className={`agent-state state-${agentKey}`} data-testid="agent-state" data-state={agentKey} aria-live="polite">
          <span className="pulse" aria-hidden="true" />
          <span className="label">{agentLabel}</span>
          {live && s.agentState && <span className="muted">turn {s.agentState.turn}</span>}
          {live && s.agentState?.interrupted && <span className="tag">interrupted</span>}
        </div>
        <div className="viz-row">
          <Visualizer
            analyser={s.audioReady ? session.engine.remoteAnalyser : null}
            active={live && s.agentAudio}
            label={s.agentAudio ? 'Agent' : 'Agent (no audio yet)'}
            testId="agent-visualizer"
            variant="agent"
          />
          <Visualizer
            analyser={s.audioReady ? session.engine.localAnalyser : null}
            active={live && s.micPublished && !s.micMuted}
            label={s.micMuted ? 'Microphone (muted)' : 'Microphone'}
            testId="mic-visualizer"
            variant="mic"
          />
        </div>
      </section>

      <div className="columns">
        <Transcript entries={s.transcript} />
        <Metrics metrics={s.metrics} />
      </div>
    </div>
  );
}
