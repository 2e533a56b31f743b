import { useEffect, useRef } from 'react';

interface Props {
  analyser: AnalyserNode | null;
  label: string;
  active: boolean;
  testId: string;
  variant: 'agent' | 'mic';
}

const BARS = 32;

/** Frequency bars from an AnalyserNode; draws only while `active`. */
export function Visualizer({ analyser, label, active, testId, variant }: Props) {
  const canvas = useRef<HTMLCanvasElement>(null);

  useEffect(() => {
    const el = canvas.current;
    const g = el?.getContext('2d');
    if (!el || !g) return;
    const colour = getComputedStyle(el).getPropertyValue('--bar').trim() || '#3b82f6';
    const bins = analyser ? new Uint8Array(analyser.frequencyBinCount) : null;
    let raf = 0;

    const draw = () => {
      const dpr = window.devicePixelRatio || 1;
      const w = Math.round(el.clientWidth * dpr);
      const h = Math.round(el.clientHeight * dpr);
      if (el.width !== w || el.height !== h) {
        el.width = w;
        el.height = h;
      }
      g.clearRect(0, 0, w, h);
      g.fillStyle = colour;
      const gap = 2 * dpr;
      const bw = (w - gap * (BARS - 1)) / BARS;
      // Speech lives in the lower bins: use the bottom ~40% of the spectrum.
      const span = bins ? Math.floor(bins.length * 0.4) : 0;
      if (analyser && bins && active) analyser.getByteFrequencyData(bins);
      for (let i = 0; i < BARS; i++) {
        let v = 0;
        if (bins && active && span) {
          const a = Math.floor((i * span) / BARS);
          const b = Math.max(a + 1, Math.floor(((i + 1) * span) / BARS));
          for (let k = a; k < b; k++) v = Math.max(v, bins[k]);
          v /= 255;
        }
        const bh = Math.max(2 * dpr, v * h);
        g.fillRect(i * (bw + gap), (h - bh) / 2, bw, bh);
      }
      if (active) raf = requestAnimationFrame(draw);
    };
    draw();
    return () => cancelAnimationFrame(raf);
  }, [analyser, active]);

  return (
    <figure className={`viz viz-${variant}`} data-testid={testId}>
      <canvas ref={canvas} role="img" aria-label={`${label} audio level`} />
      <figcaption>{label}</figcaption>
    </figure>
  );
}
