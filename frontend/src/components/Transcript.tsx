import { useEffect, useRef } from 'react';

import type { TranscriptEntry } from '../session';

export function Transcript({ entries }: { entries: TranscriptEntry[] }) {
  const end = useRef<HTMLLIElement>(null);
  useEffect(() => {
    end.current?.scrollIntoView({ block: 'nearest' });
  }, [entries]);

  return (
    <section className="panel transcript" aria-labelledby="transcript-h">
      <h2 id="transcript-h">Transcript</h2>
      {entries.length === 0 ? (
        <p className="empty">Nothing said yet.</p>
      ) : (
        <ol data-testid="transcript" aria-live="polite" aria-relevant="additions text">
          {entries.map((e) => (
            <li
              key={e.key}
              className={`msg msg-${e.role}${e.final ? '' : ' msg-partial'}`}
              data-testid="transcript-entry"
              data-role={e.role}
              data-turn={e.turn}
              data-final={e.final}
            >
              <span className="who">{e.role === 'user' ? 'You' : 'Agent'}</span>
              <span className="text">{e.text || '…'}</span>
              {e.interrupted && <span className="tag">interrupted</span>}
            </li>
          ))}
          <li ref={end} aria-hidden="true" className="end" />
        </ol>
      )}
    </section>
  );
}
