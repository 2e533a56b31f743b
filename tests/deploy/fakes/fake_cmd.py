#!/usr/bin/env python3
"""A stand-in for kubectl, nvidia-smi, k3s, helm, curl, openssl, docker, id ... on PATH.

Installed (tests/deploy/conftest.py) as small wrappers named after the command they replace:
`exec python fake_cmd.py NAME "$@"`. Each call appends
{"cmd": name, "args": [...]} to $FAKE_LOG (JSON lines) and answers from $FAKE_RULES, a JSON
list of {"cmd", "match" (regex searched in the space-joined args), "stdout", "stderr", "rc",
"sleep", "times" (how many calls this rule answers; default unlimited)}; the first matching
rule wins, no match means exit 0 with no output. For `curl ... -o FILE` the stdout is written
to FILE instead (the K3s installer download).
"""
import json
import os
import re
import sys
import time

name = sys.argv[1]
args = sys.argv[2:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({"cmd": name, "args": args}) + "\n")

rules_path = os.environ.get("FAKE_RULES")
rules = json.load(open(rules_path)) if rules_path and os.path.exists(rules_path) else []
joined = " ".join(args)
for i, rule in enumerate(rules):
    if rule.get("cmd") != name or not re.search(rule.get("match", ""), joined):
        continue
    if "times" in rule:
        counter = f"{rules_path}.count{i}"
        used = int(open(counter).read()) if os.path.exists(counter) else 0
        if used >= rule["times"]:
            continue
        open(counter, "w").write(str(used + 1))
    out = rule.get("stdout", "")
    if name == "curl" and "-o" in args:
        with open(args[args.index("-o") + 1], "w") as f:
            f.write(out)
    else:
        sys.stdout.write(out)
    sys.stderr.write(rule.get("stderr", ""))
    sys.stdout.flush()
    if rule.get("sleep"):
        time.sleep(rule["sleep"])
    sys.exit(rule.get("rc", 0))
sys.exit(0)
