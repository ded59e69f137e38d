#!/usr/bin/env python3
"""Golden per-item log-likelihoods for the benchmark tasks, from the numpy float64 oracle
(llama_oracle.py's reader, tokenizer and forward pass), with the prompt templates and the
lm-evaluation-harness request logic re-implemented here independently of the TypeScript code:

  * context/continuation split: trailing spaces of the context move to the continuation; the
    continuation's tokens are encode(context + continuation)[len(encode(context)):];
    an empty context is the BOS token; no BOS otherwise (lm-eval's default);
  * input = (context + continuation)[:-1], cut from the left to the model's context length;
    log-likelihood = sum of log-softmax at the continuation's positions; greedy = all argmax;
  * acc = argmax of log-likelihoods; acc_norm = argmax of log-likelihood / len(choice).

Run: python3 test/oracle/tasks_oracle.py -> test/oracle/golden/stories260K_tasks.json
"""
import bz2
import csv
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_oracle import REPO_ROOT, Tokenizer, forward, load_model, log_softmax  # noqa: E402

ITEMS = 3
LETTERS = ["A", "B", "C", "D"]


def enc(tok, text):
    return tok.encode(text)[1:]                     # the oracle tokenizer always starts with BOS


def encode_pair(tok, context, continuation):
    n = len(context) - len(context.rstrip())
    if n > 0:
        continuation = context[-n:] + continuation
        context = context[:-n]
    if context == "":
        return [1], enc(tok, continuation)
    whole, ctx = enc(tok, context + continuation), enc(tok, context)
    return ctx, whole[len(ctx):]


def loglikelihood(cfg, w, tok, context, continuation):
    ctx, cont = encode_pair(tok, context, continuation)
    full = ctx + cont
    inp = full[:-1][-cfg["seq_len"]:]
    logits, _ = forward(cfg, w, inp)
    lp = log_softmax(logits[len(inp) - len(cont):])
    ll = float(sum(lp[k, t] for k, t in enumerate(cont)))
    greedy = all(int(np.argmax(lp[k])) == t for k, t in enumerate(cont))
    return ll, greedy


def mc_item(item_id, context, choices, gold):
    return dict(id=item_id, requests=[(context, " " + c) for c in choices], gold=gold, lengths=[len(c) for c in choices])


def mmlu_items(data, shots):
    subject = "abstract_algebra"
    rows = list(csv.reader(open(os.path.join(data, "mmlu/test", f"{subject}_test.csv"), encoding="utf-8")))[1:]
    dev = list(csv.reader(open(os.path.join(data, "mmlu/dev", f"{subject}_dev.csv"), encoding="utf-8")))[1:]
    q = lambda r: f"{r[0].strip()}\nA. {r[1]}\nB. {r[2]}\nC. {r[3]}\nD. {r[4]}\nAnswer:"
    prefix = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    prefix += "".join(f"{q(r)} {LETTERS[int(r[5])]}\n\n" for r in dev[:shots])
    return [mc_item(f"{subject}:{i}", prefix + q(r), LETTERS, int(r[5])) for i, r in enumerate(rows[:ITEMS])]


def cmmlu_items(data):
    subject = "agronomy"
    rows = list(csv.reader(open(os.path.join(data, "cmmlu/test", f"{subject}.csv"), encoding="utf-8")))[1:]
    prefix = f"以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"
    q = lambda r: f"{r[1].strip()}\nA. {r[2]}\nB. {r[3]}\nC. {r[4]}\nD. {r[5]}\n答案："
    return [mc_item(f"{subject}:{i}", prefix + q(r), LETTERS, LETTERS.index(r[6])) for i, r in enumerate(rows[:ITEMS])]


def hellaswag_prep(text):
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_items(data):
    lines = bz2.open(os.path.join(data, "hellaswag/hellaswag_val_full.txt.bz2"), "rt", encoding="utf-8").read().split("\n")
    out = []
    for i in range(ITEMS):
        block = lines[6 * i:6 * i + 6]
        out.append(mc_item(f"hellaswag:{i}", hellaswag_prep(block[0]), [hellaswag_prep(e) for e in block[2:6]], int(block[1])))
    return out


def jsonl(data, name):
    with open(os.path.join(data, "multiple-choice", name), encoding="utf-8") as f:
        return [(n + 1, json.loads(line)) for n, line in enumerate(f) if line.strip()][:ITEMS]


def choice_items(data, task, name):
    return [mc_item(f"{task}:{n}", r["query"], r["choices"], r["gold"]) for n, r in jsonl(data, name)]


def winogrande_items(data):
    return [dict(id=f"winogrande:{n}", requests=[(c, " " + r["continuation"]) for c in r["context_options"]], gold=r["gold"],
                 lengths=[len(r["continuation"])] * len(r["context_options"])) for n, r in jsonl(data, "winogrande.jsonl")]


def lambada_items(data):
    return [dict(id=f"lambada:{n}", requests=[(r["context"], " " + r["continuation"])], gold=0, lengths=[len(r["continuation"])], cloze=True)
            for n, r in jsonl(data, "lambada_openai.jsonl")]


def main():
    shared = os.environ.get("SHORTGPT_SHARED", os.path.join(REPO_ROOT, "..", "shared"))
    data = os.path.join(shared, "data")
    cfg, w = load_model(os.path.join(shared, "models/stories260K/stories260K.bin"))
    tok = Tokenizer(os.path.join(shared, "models/stories260K/tok512.bin"))
    tasks = {
        "mmlu": (0, mmlu_items(data, 0)), "mmlu@1": (1, mmlu_items(data, 1)), "cmmlu": (0, cmmlu_items(data)),
        "hellaswag": (0, hellaswag_items(data)),
        "piqa": (0, choice_items(data, "piqa", "piqa.jsonl")), "boolq": (0, choice_items(data, "boolq", "boolq.jsonl")),
        "arc_easy": (0, choice_items(data, "arc_easy", "arc_easy.jsonl")), "arc_challenge": (0, choice_items(data, "arc_challenge", "arc_challenge.jsonl")),
        "winogrande": (0, winogrande_items(data)), "lambada": (0, lambada_items(data)),
        "copa": (0, choice_items(data, "copa", "copa.jsonl")), "openbookqa": (0, choice_items(data, "openbookqa", "openbook_qa.jsonl")),
        "siqa": (0, choice_items(data, "siqa", "siqa.jsonl")), "commonsense_qa": (0, choice_items(data, "commonsense_qa", "commonsense_qa.jsonl")),
    }
    golden = dict(oracle="numpy float64 (test/oracle/tasks_oracle.py)", items_per_task=ITEMS, tasks={})
    for name, (shots, items) in tasks.items():
        out = []
        for item in items:
            scored = [loglikelihood(cfg, w, tok, c, x) for c, x in item["requests"]]
            lls = [s[0] for s in scored]
            out.append(dict(id=item["id"], gold=item["gold"], loglikelihoods=lls, greedy=[s[1] for s in scored],
                            predicted=int(np.argmax(lls)), predicted_norm=int(np.argmax([l / n for l, n in zip(lls, item["lengths"])]))))
        golden["tasks"][name] = dict(shots=shots, items=out)
    path = os.path.join(REPO_ROOT, "test", "oracle", "golden", "stories260K_tasks.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
