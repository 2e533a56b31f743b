#!/usr/bin/env python3
"""faster-whisper (CTranslate2) on the same model.bin files and the same audio as `stt-rtf`.

Greedy (beam_size=1), temperature fallback as default, English, no VAD, audio decoded before
timing (as ours is). Prints one line per (model, compute type) and writes JSON.

    python benches/stt_peer.py --model-dir tiny.en=/path --compute-type float32 --compute-type int8 --json out.json
"""
import argparse, json, os, re, statistics, sys, time, resource

JFK_REFERENCE = ("And so my fellow Americans, ask not what your country can do for you, "
                 "ask what you can do for your country.")


def normalize(text):
    # Same rules as voice_whisper::eval::normalize.
    out = []
    for c in text.lower():
        if c == "-" or c.isspace():
            out.append(" ")
        elif c.isalnum():
            out.append(c)
    return " ".join("".join(out).split())


def word_errors(ref, hyp):
    r, h = normalize(ref).split(), normalize(hyp).split()
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r):
        cur = [i + 1] * (len(h) + 1)
        for j, hw in enumerate(h):
            cur[j + 1] = min(prev[j] + (rw != hw), prev[j + 1] + 1, cur[j] + 1)
        prev = cur
    return prev[len(h)], len(r)


def standard_set(jfk):
    d = os.environ.get("VOICE_LIBRIVOX_DIR", "/usr/share/pocketsphinx/test/data/librivox")
    items = [("jfk", jfk, JFK_REFERENCE)]
    for line in open(os.path.join(d, "transcription")):
        line = line.strip()
        if not line:
            continue
        m = re.match(r"(.*)\(([^)]+)\)\s*$", line)
        text = m.group(1).replace("<s>", "").replace("</s>", "").strip()
        items.append((m.group(2), os.path.join(d, m.group(2) + ".wav"), text))
    return items


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", action="append", required=True, help="name=directory with model.bin")
    ap.add_argument("--compute-type", action="append", default=None)
    ap.add_argument("--jfk", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json")
    args = ap.parse_args()
    from faster_whisper import WhisperModel, decode_audio
    import ctranslate2, faster_whisper
    items = standard_set(args.jfk)
    audio = [decode_audio(p, sampling_rate=16000) for _, p, _ in items]
    secs = sum(len(a) for a in audio) / 16000.0
    results = []
    for spec in args.model_dir:
        name, d = spec.split("=", 1)
        for ct in args.compute_type or ["float32"]:
            t0 = time.perf_counter()
            model = WhisperModel(d, device="cpu", compute_type=ct, cpu_threads=args.threads)
            load = time.perf_counter() - t0
            rtfs, errors, words = [], 0, 0
            for run in range(args.runs):
                t = time.perf_counter()
                texts = []
                for a in audio:
                    segs, _ = model.transcribe(a, beam_size=1, best_of=1, language="en", vad_filter=False)
                    texts.append("".join(s.text for s in segs).strip())
                rtfs.append((time.perf_counter() - t) / secs)
                if run == 0:
                    for (n, _, ref), txt in zip(items, texts):
                        e, w = word_errors(ref, txt)
                        errors += e
                        words += w
                        if e:
                            print(f"  [faster-whisper {name} {ct}] {n} ({e} errors): {txt}")
            r = dict(model=name, compute_type=ct, audio_seconds=secs, rtf_runs=rtfs,
                     rtf_median=statistics.median(rtfs), wer=errors / max(words, 1), errors=errors, words=words,
                     load_seconds=load, rss_mb_peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                     versions=dict(faster_whisper=faster_whisper.__version__, ctranslate2=ctranslate2.__version__))
            print(f"peer faster-whisper {name:<10} {ct:<8}: RTF {r['rtf_median']:.4f} (median of {args.runs}), "
                  f"WER {100*r['wer']:.1f}% ({errors}/{words} words), load {load:.2f}s")
            results.append(r)
            del model
    if args.json:
        json.dump(results, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
