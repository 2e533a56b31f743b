"""The LLM peer: llama.cpp through llama-cpp-python, on the same GGUF file and thread count as
`llm-bench`, measuring the same two figures: prompt (prefill) tokens/s for an N-token prompt and
greedy decode tokens/s for M generated tokens after an 8-token prompt. Medians over --runs.

Prefill and decode call llama.cpp's eval directly (the same work its server does per step), so
the Python overhead is one call per token; greedy argmax on the last logits picks each token.
"""
import argparse
import json
import statistics
import time

import llama_cpp
import numpy as np

PROMPT_TEXT = "The quick brown fox jumps over the lazy dog while the band plays on. " * 64


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()

    llm = llama_cpp.Llama(
        model_path=a.gguf, n_ctx=4096, n_batch=512, n_threads=a.threads, n_threads_batch=a.threads, verbose=False
    )
    prompt = llm.tokenize(PROMPT_TEXT.encode(), add_bos=False)[: a.prompt_tokens]
    assert len(prompt) == a.prompt_tokens, len(prompt)

    prefill, decode, ttft = [], [], []
    for _ in range(a.runs):
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        int(np.argmax(llm.scores[llm.n_tokens - 1]))
        dt = time.perf_counter() - t
        prefill.append(a.prompt_tokens / dt)
        ttft.append(dt * 1e3)

        llm.reset()
        llm.eval(prompt[:8])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t = time.perf_counter()
        for _ in range(a.gen_tokens - 1):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        decode.append((a.gen_tokens - 1) / (time.perf_counter() - t))

    out = dict(
        peer=f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
        threads=a.threads,
        prompt_tokens=a.prompt_tokens,
        gen_tokens=a.gen_tokens,
        prefill_tok_s=statistics.median(prefill),
        decode_tok_s=statistics.median(decode),
        ttft_ms=statistics.median(ttft),
    )
    print(
        f"peer {out['peer']}: prompt {out['prefill_tok_s']:.0f} tok/s ({a.prompt_tokens} tokens, first token "
        f"{out['ttft_ms']:.0f} ms), decode {out['decode_tok_s']:.0f} tok/s"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
