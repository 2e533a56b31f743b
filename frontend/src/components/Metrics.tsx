import { METRIC_STAGES, stageSum, type MetricsMsg } from '../protocol';
import type { Stamped } from '../testHook';

const fmt = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`);

/** Per-turn latency breakdown: a stacked bar plus a table of the seven stages. */
export function Metrics({ metrics }: { metrics: Stamped<MetricsMsg>[] }) {
  const rows = [...metrics].reverse(); // newest first
  const latest = metrics[metrics.length - 1];
  return (
    <section className="panel metrics" aria-labelledby="metrics-h">
      <h2 id="metrics-h">Latency</h2>
      {!latest ? (
        <p className="empty">Per-turn latency appears after the agent's first answer.</p>
      ) : (
        <>
          <p className="v2v" data-testid="latest-v2v">
            Voice-to-voice, turn {latest.turn}: <strong>{fmt(latest.voice_to_voice_ms)}</strong>
            {latest.interrupted && <span className="tag">interrupted</span>}
          </p>
          <div className="stack" role="img" aria-label="Latest turn latency breakdown">
            {METRIC_STAGES.map((s, i) => {
              const v = latest[s.key];
              const total = Math.max(1, latest.voice_to_voice_ms);
              return v > 0 ? (
                <span key={s.key} className={`seg seg-${i}`} style={{ flexGrow: v / total }} title={`${s.label}: ${fmt(v)}`}>
                  {v / total > 0.08 ? s.short : ''}
                </span>
              ) : null;
            })}
          </div>
          <div className="table-wrap">
            <table data-testid="metrics-table">
              <caption className="sr-only">Latency per turn in milliseconds</caption>
              <thead>
                <tr>
                  <th scope="col">Turn</th>
                  {METRIC_STAGES.map((s, i) => (
                    <th scope="col" key={s.key} title={s.label}>
                      <span className={`dot seg-${i}`} aria-hidden="true" />
                      {s.short}
                    </th>
                  ))}
                  <th scope="col">Total</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((m) => {
                  const off = Math.abs(stageSum(m) - m.voice_to_voice_ms) > 1;
                  return (
                    <tr key={`${m.turn}-${m.receivedAt}`} data-testid="metrics-row" data-turn={m.turn}>
                      <th scope="row">
                        {m.turn}
                        {m.interrupted && <span className="tag" title="interrupted">✂</span>}
                      </th>
                      {METRIC_STAGES.map((s) => (
                        <td key={s.key}>{Math.round(m[s.key])}</td>
                      ))}
                      <td className={off ? 'warn' : ''} title={off ? `stages add up to ${Math.round(stageSum(m))} ms` : undefined}>
                        <strong>{Math.round(m.voice_to_voice_ms)}</strong>
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        </>
      )}
    </section>
  );
}
