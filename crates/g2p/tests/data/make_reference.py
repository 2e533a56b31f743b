#!/usr/bin/env python3
"""Generate misaki reference phonemes for the voice-g2p tests (reference.json).

Runs the real misaki 0.9.4 G2P (the code Kokoro-82M uses) with its espeak-ng fallback, with two
deliberate substitutions so that the comparison measures the lexicon / stemming / espeak
machinery rather than spaCy:
  * tokens come from spaCy's rule-based English tokenizer (spacy.blank("en"), no model
    download) and tags from a few rules (punctuation tags, DT for a/an/the, PRP for I,
    TO for to, IN for in; "" otherwise) -- voice-g2p has no POS tagger either;
  * phonemizer uses the system espeak-ng library (the one our CLI calls), not the
    espeakng_loader copy, so both sides see the same espeak version.

Usage (in a throwaway venv):
    python -m venv /tmp/misaki-venv
    /tmp/misaki-venv/bin/pip install misaki==0.9.4 num2words spacy phonemizer-fork espeakng-loader addict regex
    /tmp/misaki-venv/bin/python crates/g2p/tests/data/make_reference.py > crates/g2p/tests/data/reference.json
"""
import json
import os
import sys

import spacy
from phonemizer.backend.espeak.wrapper import EspeakWrapper

from misaki import en, espeak

LIB = os.environ.get("ESPEAK_LIB", "/usr/lib/x86_64-linux-gnu/libespeak-ng.so.1")
DATA = os.environ.get("ESPEAK_DATA", "/usr/lib/x86_64-linux-gnu/espeak-ng-data")
EspeakWrapper.set_library(LIB)
EspeakWrapper.set_data_path(DATA)

PUNCT_TAGS = {
    ".": ".", "!": ".", "?": ".", ",": ",", ";": ":", ":": ":", "—": ":", "-": ":", "--": ":",
    "…": ":", "...": ":", "(": "-LRB-", ")": "-RRB-",
}
WORD_TAGS = {"a": "DT", "an": "DT", "the": "DT", "The": "DT", "I": "PRP", "to": "TO", "in": "IN"}


class RuleTagger:
    def __init__(self):
        self.nlp = spacy.blank("en")

    def tag(self, text):
        toks = []
        open_quote = True
        doc = self.nlp(text)
        for i, t in enumerate(doc):
            spaced = bool(t.whitespace_) or (i > 0 and bool(doc[i - 1].whitespace_))
            if t.text in ("-", "--") and not spaced:
                tag = "HYPH"
            elif t.text == '"':
                tag = "``" if open_quote else "''"
                open_quote = not open_quote
            elif t.text == "“":
                tag = "``"
            elif t.text == "”":
                tag = "''"
            else:
                tag = PUNCT_TAGS.get(t.text, WORD_TAGS.get(t.text, ""))
            toks.append(en.MToken(text=t.text, tag=tag, whitespace=t.whitespace_,
                                  _=en.MToken.Underscore(is_head=True, num_flags="", prespace=False)))
        return toks


def make_g2p(british):
    g = object.__new__(en.G2P)
    g.version = None
    g.british = british
    g.lexicon = en.Lexicon(british)
    g.fallback = espeak.EspeakFallback(british=british)
    g.unk = ""
    tagger = RuleTagger()
    g.tokenize = lambda text, tokens, features: tagger.tag(text)
    return g


def phonemize(g, text):
    _, tokens = g(text)
    # Kokoro's KPipeline.tokens_to_ps
    return "".join((t.phonemes or "") + (" " if t.whitespace else "") for t in tokens).strip()


SENTENCES = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "She sells seashells by the seashore, and the shells she sells are surely seashells.",
    "I think it's going to rain tomorrow; don't forget your umbrella.",
    "The committee postponed the meeting until further notice.",
    "Artificial intelligence is transforming how we work and communicate.",
    "Would you like a cup of tea or coffee with your breakfast?",
    "They walked along the river, talking quietly about their plans for the summer.",
    "My grandmother's recipes were handwritten on yellowed index cards.",
    "The astronauts prepared carefully for the long journey to Mars.",
    "Please remember to turn off the lights when you leave the office.",
    "He was surprised to discover that the old bookstore had closed.",
    "Scientists believe the ancient city was abandoned after a severe drought.",
    "Our neighbors adopted two playful kittens from the local shelter.",
    "The orchestra rehearsed the symphony for hours before the concert.",
    "If you need anything else, just let me know.",
    "The children laughed as the puppies chased each other around the yard.",
    "Kubernetes orchestrates containers across clusters of machines.",
    "The well-known author signed copies of her latest novel.",
    "Wait — did you hear that noise coming from the basement?",
    "We visited London, Paris, and Berlin during our trip to Europe.",
    "The engineers were debugging the firmware late into the night.",
    "Learning a new language requires patience and consistent practice.",
    "The garden was full of roses, tulips, and sunflowers.",
    "Nobody expected the underdog team to win the championship.",
    "He quickly realized that the instructions were written backwards.",
    "The museum's newest exhibit features paintings from the Renaissance.",
    "Unfortunately, the train was delayed because of heavy snowfall.",
    "She carefully folded the letter and placed it inside the envelope.",
    "The NASA engineers tested the rover in the desert.",
    "Thank you for calling; your call is important to us.",
    "\"I can't believe it,\" she said. \"It's wonderful!\"",
    "The kids' toys were scattered (everywhere) across the living-room floor.",
    "We're going to the U.S. next week — aren't you excited?",
    "O'Brien and McDonald's employees went on strike.",
    "She'd've come if she'd known.",
    "Hmm, well, I guess that's OK.",
    "The CEO's new iPhone app was a hit among Gen Z users.",
    "Rock'n'roll never dies, they say.",
    "An honest man and a European union walked into an hotel.",
    "He lives in the UK, not in the USA.",
    "The data shows that COVID cases fell.",
    "Tsakalidis and Nguyen reviewed the flibbertigibbet's quixantyo proposal.",
]

WORDS = [
    "hello", "world", "the", "tomato", "water", "butter", "little", "reading", "walked",
    "cats", "boxes", "cities", "played", "wanted", "hoping", "running", "stopped", "John's",
    "dogs'", "NASA", "FBI", "Hello", "WORLD", "Kubernetes", "ChatGPT", "blockchain",
    "misaki", "Zyxwv", "smartphone", "cryptocurrency", "kombucha", "emoji", "rewatching",
    "unfollowed", "podcasts", "iPhone", "YouTube", "self-driving", "well-being",
    "She'd've", "gonna", "dunno", "Tsakalidis", "xylophonic", "snorkelwhatsit",
]


def main():
    out = {"generator": "make_reference.py (misaki 0.9.4, rule tags, system espeak-ng)"}
    for name, british in (("us", False), ("gb", True)):
        g = make_g2p(british)
        out[name] = {
            "sentences": [[s, phonemize(g, s)] for s in SENTENCES],
            "words": [[w, phonemize(g, w)] for w in WORDS],
        }
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
