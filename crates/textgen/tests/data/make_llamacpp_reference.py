"""Greedy reference continuations from llama.cpp (llama-cpp-python), the reference runtime for
GGUF files, for `tests/models.rs::greedy_tokens_match_llama_cpp`. Run once where
llama-cpp-python is installed (benches/requirements.txt has it):

    python make_llamacpp_reference.py ~/.cache/voice-ai/models/smollm2-135m-instruct/model.gguf > smollm2-llamacpp-greedy.json

Prompts are raw ChatML without a system message, tokenized with special tokens.
"""
import json
import sys

import llama_cpp

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "How many legs does a spider have?",
    "Translate 'good morning' into Spanish.",
    "Write one sentence about the ocean.",
    "What is 2 + 2?",
]
N = 16

llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=2048, n_threads=2, verbose=False)
rows = []
for q in QUESTIONS:
    prompt = f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
    toks = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    llm.reset()
    out = []
    for t in llm.generate(toks, temp=0.0, top_k=1, repeat_penalty=1.0):
        if t == llm.token_eos() or len(out) == N:
            break
        out.append(t)
    rows.append(dict(prompt=prompt, prompt_tokens=toks, greedy_tokens=out, text=llm.detokenize(out).decode("utf-8", "replace")))
json.dump(dict(runtime=f"llama-cpp-python {llama_cpp.__version__}", model="SmolLM2-135M-Instruct.Q4_1.gguf", rows=rows), sys.stdout, indent=1)
