#!/usr/bin/env python3
"""Run lm-evaluation-harness (0.4.13) offline on one Hugging Face model directory
with the task YAMLs in ./tasks, and write a compact JSON golden.

usage: run_harness.py --model-dir DIR --out FILE [--limit 25]
                      [--run TASK[,TASK...]:SHOTS ...] [--label NAME]

Each --run is one lm_eval.simple_evaluate call (model='hf',
model_args='pretrained=DIR,dtype=float64', device cpu, batch size 1,
log_samples=True, no chat template, add_bos_token not passed).
Shared data is read from $SHORTGPT_SHARED (default ../shared beside the repository).
"""

import argparse
import bz2
import csv
import hashlib
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASK_DIR = HERE / "tasks"

DEFAULT_RUNS = [
    "arc_easy,arc_challenge,piqa,boolq,copa,openbookqa,social_iqa,commonsense_qa,"
    "hellaswag,winogrande,lambada_openai,mmlu_subset,cmmlu_subset:0",
    "mmlu_subset,cmmlu_subset:5",
]
MMLU_SUBJECTS = ["abstract_algebra", "anatomy", "high_school_european_history"]
CMMLU_SUBJECTS = ["agronomy", "chinese_history", "college_law"]


def sha(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def ids_sha(ids) -> str:
    return hashlib.sha256(",".join(str(int(i)) for i in ids).encode()).hexdigest()


# ------------------------------------------------------------------ data prep
def write_jsonl(path: Path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_csv_rows(path: Path):
    # Python's csv module keeps every cell a string (no NaN/number guessing)
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def prepare(shared: Path, tmp: Path) -> Path:
    """Write the inputs the json loader cannot read directly, and the task
    YAMLs with absolute paths filled in. Returns the YAML directory."""
    data = shared / "data"
    prep = tmp / "data"
    prep.mkdir(parents=True)

    # HellaSwag: 6 lines per item -> {ctx_line, label, endings}
    with bz2.open(data / "hellaswag" / "hellaswag_val_full.txt.bz2", "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise SystemExit(f"hellaswag: {len(lines)} lines is not a multiple of 6")
    rows = []
    for i in range(0, len(lines), 6):
        label = lines[i + 1].strip()
        if label not in ("0", "1", "2", "3"):
            raise SystemExit(f"hellaswag item {i // 6}: bad label {label!r}")
        rows.append({"ctx_line": lines[i], "label": label, "endings": lines[i + 2 : i + 6]})
    write_jsonl(prep / "hellaswag.jsonl", rows)

    for s in MMLU_SUBJECTS:
        for split in ("test", "dev"):
            rows = read_csv_rows(data / "mmlu" / split / f"{s}_{split}.csv")
            write_jsonl(prep / f"mmlu_{s}_{split}.jsonl", rows)
    for s in CMMLU_SUBJECTS:
        for split in ("test", "dev"):
            rows = read_csv_rows(data / "cmmlu" / split / f"{s}.csv")
            # the unnamed index column is dropped
            rows = [{k: v for k, v in r.items() if k} for r in rows]
            write_jsonl(prep / f"cmmlu_{s}_{split}.jsonl", rows)

    ydir = tmp / "tasks"
    ydir.mkdir()
    for p in TASK_DIR.iterdir():
        if p.name == "utils.py":
            shutil.copy(p, ydir / p.name)
        elif p.suffix == ".yaml" or p.name.endswith("_yaml"):
            text = p.read_text(encoding="utf-8")
            text = text.replace("@MC@", str(data / "multiple-choice")).replace("@PREP@", str(prep))
            (ydir / p.name).write_text(text, encoding="utf-8")
    return ydir


# ------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=25)
    ap.add_argument("--run", action="append", help="TASKS:SHOTS (repeatable)")
    ap.add_argument("--label", default=None, help="free text recorded as model.label")
    args = ap.parse_args()
    runs = args.run or DEFAULT_RUNS

    shared = Path(os.environ.get("SHORTGPT_SHARED", str(HERE.parents[2].parent / "shared"))).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="shortgpt-lm-eval-"))
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_DATASETS_CACHE", str(tmp / "hf_datasets_cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    try:
        ydir = prepare(shared, tmp)
        golden = run_all(args, runs, ydir, shared)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        dump(golden, f)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


def run_all(args, runs, ydir: Path, shared: Path):
    import lm_eval
    import torch
    import transformers
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    model_dir = str(Path(args.model_dir).resolve())

    # Record the token ids the harness itself built for every request, and the
    # model-side settings it used (wraps, does not change, the harness's method).
    captured = {}
    lm_info = {}
    orig = HFLM._loglikelihood_tokens

    def recording(self, requests, *a, **kw):
        lm_info.update(
            max_length=int(self.max_length),
            prefix_token_id=int(self.prefix_token_id),
            add_bos_token_arg=self.add_bos_token,
            model_dtype=str(self.model.dtype),
            tokenizer_class=type(self.tokenizer).__name__,
            batch_size=str(self.batch_size),
            backend=self.backend,
        )
        for (ctx, cont), cenc, nenc in requests:
            captured[(ctx, cont)] = (list(cenc), list(nenc))
        return orig(self, requests, *a, **kw)

    HFLM._loglikelihood_tokens = recording

    tm = TaskManager(include_path=str(ydir), include_defaults=False)
    out_tasks = []
    out_groups = []
    timings = []
    max_len_seen = None
    for spec in runs:
        names, shots = spec.rsplit(":", 1)
        names = [n for n in names.split(",") if n]
        shots = int(shots)
        t0 = time.time()
        res = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={model_dir},dtype=float64",
            tasks=names,
            num_fewshot=shots,
            batch_size=1,
            device="cpu",
            limit=args.limit,
            log_samples=True,
            apply_chat_template=False,
            task_manager=tm,
        )
        timings.append({"run": spec, "seconds": round(time.time() - t0, 2)})
        max_len_seen = lm_info.get("max_length")
        group_names = set(res.get("groups", {}).keys())
        for name, r in res["results"].items():
            metrics = {
                k.replace(",none", ""): v for k, v in r.items() if k not in ("alias", "name")
            }
            if name in group_names:
                out_groups.append(
                    {
                        "group": name,
                        "num_fewshot": shots,
                        "subtasks": res.get("group_subtasks", {}).get(name),
                        "metrics": metrics,
                    }
                )
                continue
            cfg = res["configs"][name]
            samples = res["samples"][name]
            out_tasks.append(task_entry(name, shots, cfg, metrics, res, samples, captured, lm_info))

    # BOS probe: tokenize the first context of the first task with the same
    # tokenizer, as the harness does (tok_encode with no add_special_tokens)
    tok = AutoTokenizer.from_pretrained(model_dir)
    probe_text = "Once upon a time"
    probe_ids = tok.encode(probe_text)
    all_first = [
        captured[k][0][0] for k in captured if k[0] != ""
    ]
    bos = tok.bos_token_id
    bos_info = {
        "bos_token_id": bos,
        "tokenizer_encode_probe": {"text": probe_text, "ids": probe_ids},
        "tokenizer_adds_bos": bool(probe_ids and probe_ids[0] == bos),
        "harness_contexts_total": len(all_first),
        "harness_contexts_starting_with_bos": sum(1 for i in all_first if i == bos),
    }
    return {
        "format": "shortgpt-lm-eval-golden/1",
        "harness": {
            "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "model": "hf",
            "model_args": "pretrained=<DIR>,dtype=float64",
            "device": "cpu",
            "batch_size": 1,
            "apply_chat_template": False,
            "add_bos_token": "not passed (tokenizer default)",
            "limit": args.limit,
        },
        "model": {
            "label": args.label,
            "dir_name": os.path.basename(model_dir),
            "config": json.load(open(os.path.join(model_dir, "config.json"))),
            "max_length": max_len_seen,
            **{k: v for k, v in lm_info.items() if k != "max_length"},
            "bos": bos_info,
        },
        "timings": timings,
        "request_fields": REQUEST_FIELDS,
        "notes": [
            "a request was left-truncated by the harness iff n_ctx_tokens + n_cont_tokens > max_length + 1",
            "items[].ctx_sha256: sha256 (utf-8) of the context string the harness built, when all requests share it",
            "items[].tokens_sha256: sha256 of '|'.join(','.join(ctx ids) + ',+,' + ','.join(cont ids)) over the requests, ids as the harness encoded them (before truncation)",
            "first_item_literal: the first item's literal strings and token ids (token lists over 1024 keep head/tail/sha256 of the comma-joined ids)",
        ],
        "groups": out_groups,
        "tasks": out_tasks,
    }


def clean_metric(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return v


REQUEST_FIELDS = [
    "loglik",
    "is_greedy (0/1)",
    "n_ctx_tokens",
    "n_cont_tokens",
    "continuation (literal if <= 24 chars, else 'sha256:<hex>')",
    "context sha256 (only where an item's requests have different contexts: winogrande)",
]
SHORT = 24  # continuations up to this many characters are stored literally
TOKENS_IN_FULL = 1024  # first-item token lists longer than this keep head/tail only


def cont_field(cont):
    return cont if len(cont) <= SHORT else "sha256:" + sha(cont)


def token_field(ids):
    if len(ids) <= TOKENS_IN_FULL:
        return list(ids)
    return {"n": len(ids), "head": list(ids[:64]), "tail": list(ids[-64:]), "sha256": ids_sha(ids)}


def task_entry(name, shots, cfg, metrics, res, samples, captured, lm_info):
    max_length = lm_info.get("max_length")
    items = []
    samples = sorted(samples, key=lambda s: s["doc_id"])
    for idx, s in enumerate(samples):
        pairs = [tuple(a) for a in s["arguments"]]
        contexts = sorted(set(c for c, _ in pairs), key=[c for c, _ in pairs].index)
        reqs = []
        for (ctx, cont), resp in zip(pairs, s["filtered_resps"]):
            ll, greedy = resp
            cenc, nenc = captured[(ctx, cont)]
            # compact row, see REQUEST_FIELDS
            r = [float(ll), int(bool(greedy)), len(cenc), len(nenc), cont_field(cont)]
            if len(contexts) > 1:
                r.append(sha(ctx))
            reqs.append(r)
        item = {"doc_id": s["doc_id"], "target": s["target"]}
        if name == "winogrande":
            item["gold"] = int(s["doc"]["gold"])
        if len(contexts) == 1:
            item["ctx_sha256"] = sha(contexts[0])
        # one hash over the harness's token ids of all requests of the item:
        # sha256 of "ctx ids,+,cont ids" per request joined by "|"
        item["tokens_sha256"] = hashlib.sha256(
            "|".join(
                ",".join(map(str, captured[p][0])) + ",+," + ",".join(map(str, captured[p][1]))
                for p in pairs
            ).encode()
        ).hexdigest()
        for m in ("acc", "acc_norm", "perplexity"):
            if m in s:
                item[m] = clean_metric(s[m])
        item["requests"] = reqs
        if idx == 0:
            item["first_item_literal"] = {
                "contexts": contexts,
                "continuations": [c for _, c in pairs],
                "context_tokens": [token_field(captured[next(p for p in pairs if p[0] == c)][0]) for c in contexts],
                "continuation_tokens": [captured[p][1] for p in pairs],
            }
        items.append(item)
    return {
        "task": name,
        "num_fewshot": shots,
        "n_samples": res.get("n-samples", {}).get(name),
        "prompt_config": {
            k: cfg.get(k)
            for k in (
                "output_type",
                "description",
                "target_delimiter",
                "fewshot_delimiter",
                "fewshot_split",
            )
        }
        | {
            "fewshot_sampler": (cfg.get("fewshot_config") or {}).get("sampler"),
        },
        "metrics": {k: clean_metric(v) for k, v in metrics.items()},
        "items": items,
    }


def dump(golden, f):
    """Readable but compact: one line per item."""
    tasks = golden.pop("tasks")
    head = json.dumps(golden, ensure_ascii=False, indent=1, default=str)
    f.write(head[:-2] + ',\n "tasks": [\n')
    for ti, t in enumerate(tasks):
        items = t.pop("items")
        th = json.dumps(t, ensure_ascii=False, default=str)
        f.write("  " + th[:-1] + ', "items": [\n')
        for ii, it in enumerate(items):
            f.write("   " + json.dumps(it, ensure_ascii=False, default=str))
            f.write(",\n" if ii + 1 < len(items) else "\n")
        f.write("  ]}" + (",\n" if ti + 1 < len(tasks) else "\n"))
    f.write(" ]\n}\n")


if __name__ == "__main__":
    main()
