// One AudioContext for everything this page analyses (playback itself is LiveKit's <audio>
// elements; nothing in this graph is audible).
//
//   remote track(s) ─► MediaStreamSource ─► remoteBus ─┬─► remoteAnalyser   (visualiser)
//                                                      └─► remoteTap (worklet: 10 ms RMS + PCM)
//   local mic track ─► MediaStreamSource ─► localBus  ─┬─► localAnalyser    (visualiser)
//                                                      └─► localTap  (worklet: 10 ms RMS)
//   taps ─► sink (gain 0) ─► destination   (keeps the taps pulled by the render thread)
//
// The recording path reads the remote MediaStreamTrack directly, not the <audio> element, so
// it works headless and with no output device. (Chrome only feeds a *remote* WebRTC track into
// WebAudio while that track is also attached to a media element; LiveKit's track.attach() does
// that for playback, and the self-test injector does it too.)

import { TAP_PROCESSOR, TAP_WORKLET_SOURCE } from './worklet';

/** (t: performance.now() ms at the end of the window, rms, pcm when requested) */
export type TapHandler = (t: number, rms: number, pcm?: Float32Array) => void;

export const LEVEL_WINDOW_MS = 10;

interface Tap {
  node: AudioNode;
  setActive(on: boolean): void;
}

export class AudioEngine {
  ctx: AudioContext | null = null;
  remoteAnalyser: AnalyserNode | null = null;
  localAnalyser: AnalyserNode | null = null;
  /** 'worklet' | 'script-processor' once the taps exist. */
  tapKind: string | null = null;

  onRemoteLevel: TapHandler | null = null;
  onLocalLevel: TapHandler | null = null;

  private remoteBus: GainNode | null = null;
  private localBus: GainNode | null = null;
  private sink: GainNode | null = null;
  private remoteTap: Tap | null = null;
  private localTap: Tap | null = null;
  private tapsActive = false;
  private ready: Promise<AudioContext> | null = null;
  private remoteSources = new Map<string, { stream: MediaStream; node: MediaStreamAudioSourceNode }>();
  private local: { track: MediaStreamTrack; stream: MediaStream; node: MediaStreamAudioSourceNode } | null = null;

  /**
   * Create the context and graph (idempotent). The AudioContext itself is created
   * synchronously, so calling this inside a click handler gives it the user gesture.
   */
  ensure(): Promise<AudioContext> {
    if (this.ready) return this.ready;
    const ctx = new AudioContext({ latencyHint: 'interactive' });
    this.ctx = ctx;
    this.remoteBus = new GainNode(ctx, { gain: 1 });
    this.localBus = new GainNode(ctx, { gain: 1 });
    this.sink = new GainNode(ctx, { gain: 0 });
    this.sink.connect(ctx.destination);
    this.remoteAnalyser = new AnalyserNode(ctx, { fftSize: 1024, smoothingTimeConstant: 0.6 });
    this.localAnalyser = new AnalyserNode(ctx, { fftSize: 1024, smoothingTimeConstant: 0.6 });
    this.remoteBus.connect(this.remoteAnalyser);
    this.localBus.connect(this.localAnalyser);
    this.ready = (async () => {
      try {
        await this.createWorkletTaps(ctx);
        this.tapKind = 'worklet';
      } catch (e) {
        console.warn('AudioWorklet unavailable, falling back to ScriptProcessorNode:', e);
        this.createScriptTaps(ctx);
        this.tapKind = 'script-processor';
      }
      this.remoteBus!.connect(this.remoteTap!.node);
      this.localBus!.connect(this.localTap!.node);
      this.remoteTap!.node.connect(this.sink!);
      this.localTap!.node.connect(this.sink!);
      this.remoteTap!.setActive(this.tapsActive);
      this.localTap!.setActive(this.tapsActive);
      return ctx;
    })();
    return this.ready;
  }

  async resume(): Promise<void> {
    if (this.ctx && this.ctx.state !== 'running') {
      try {
        await this.ctx.resume();
      } catch (e) {
        console.warn('AudioContext.resume failed:', e);
      }
    }
  }

  setTapsActive(on: boolean): void {
    this.tapsActive = on;
    this.remoteTap?.setActive(on);
    this.localTap?.setActive(on);
  }

  /** Route a remote audio track into the analysis graph. */
  attachRemote(key: string, track: MediaStreamTrack): void {
    void this.ensure();
    const ctx = this.ctx!;
    this.detachRemote(key);
    const stream = new MediaStream([track]);
    const node = new MediaStreamAudioSourceNode(ctx, { mediaStream: stream });
    node.connect(this.remoteBus!);
    this.remoteSources.set(key, { stream, node });
  }

  detachRemote(key: string): void {
    const s = this.remoteSources.get(key);
    if (!s) return;
    s.node.disconnect();
    this.remoteSources.delete(key);
  }

  detachAllRemote(): void {
    for (const key of [...this.remoteSources.keys()]) this.detachRemote(key);
  }

  get remoteCount(): number {
    return this.remoteSources.size;
  }

  /** Route the local mic track into the analysis graph (null detaches). */
  setLocal(track: MediaStreamTrack | null): void {
    if (this.local && this.local.track === track) return;
    if (this.local) {
      this.local.node.disconnect();
      this.local = null;
    }
    if (!track) return;
    void this.ensure();
    const stream = new MediaStream([track]);
    const node = new MediaStreamAudioSourceNode(this.ctx!, { mediaStream: stream });
    node.connect(this.localBus!);
    this.local = { track, stream, node };
  }

  private toPerfTime(end: number): number {
    const now = performance.now();
    const ctx = this.ctx;
    if (!ctx) return now;
    // The message was posted when the render thread finished the window ending at `end`;
    // subtract however much audio time has been rendered since then.
    const lag = (ctx.currentTime - end) * 1000;
    return lag > 0 && lag < 1000 ? now - lag : now;
  }

  private async createWorkletTaps(ctx: AudioContext): Promise<void> {
    if (!ctx.audioWorklet) throw new Error('AudioContext.audioWorklet is undefined (insecure context?)');
    const url = URL.createObjectURL(new Blob([TAP_WORKLET_SOURCE], { type: 'text/javascript' }));
    try {
      await ctx.audioWorklet.addModule(url);
    } finally {
      URL.revokeObjectURL(url);
    }
    const make = (pcm: boolean, handler: () => TapHandler | null): Tap => {
      const node = new AudioWorkletNode(ctx, TAP_PROCESSOR, {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        channelCount: 1,
        channelCountMode: 'explicit',
        channelInterpretation: 'speakers',
        processorOptions: { windowMs: LEVEL_WINDOW_MS, pcm },
      });
      node.port.onmessage = (e: MessageEvent<{ end: number; rms: number; pcm?: Float32Array }>) => {
        const h = handler();
        if (h) h(this.toPerfTime(e.data.end), e.data.rms, e.data.pcm);
      };
      return { node, setActive: (on) => node.port.postMessage({ active: on }) };
    };
    this.remoteTap = make(true, () => this.onRemoteLevel);
    this.localTap = make(false, () => this.onLocalLevel);
  }

  private createScriptTaps(ctx: AudioContext): void {
    // 512 frames ≈ 10.7 ms at 48 kHz: close enough to the 10 ms timeline.
    const make = (pcm: boolean, handler: () => TapHandler | null): Tap => {
      const node = ctx.createScriptProcessor(512, 1, 1);
      node.channelCount = 1;
      node.channelCountMode = 'explicit';
      let active = false;
      node.onaudioprocess = (e) => {
        if (!active) return;
        const h = handler();
        if (!h) return;
        const data = e.inputBuffer.getChannelData(0);
        let s = 0;
        for (let i = 0; i < data.length; i++) s += data[i] * data[i];
        h(performance.now(), Math.sqrt(s / data.length), pcm ? data.slice() : undefined);
      };
      return { node, setActive: (on) => (active = on) };
    };
    this.remoteTap = make(true, () => this.onRemoteLevel);
    this.localTap = make(false, () => this.onLocalLevel);
  }
}
