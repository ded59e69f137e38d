"""process_docs functions for shortgpt's lm-evaluation-harness oracle.

Each function maps the rows of one shortgpt shared data file (see
shared/README.md) back to the fields of the Hugging Face dataset that the
harness's own task YAML reads, so that the YAML's doc_to_text / doc_to_choice /
doc_to_target templates can be used unchanged (or as close to unchanged as the
shared data allows; see README.md in this folder for every deviation).

Written for this project; the prompt logic mirrors lm-evaluation-harness 0.4.13.
"""

import re

LETTERS = ["A", "B", "C", "D", "E"]


def _map(dataset, fn):
    return dataset.map(fn, remove_columns=dataset.column_names)


def _strip_prefix(text, prefix):
    if not text.startswith(prefix):
        raise ValueError(f"expected {prefix!r} at the start of {text[:80]!r}")
    return text[len(prefix):]


# ---------------------------------------------------------------- ARC, OBQA
def process_arc(dataset):
    # {query: "Question: <question>", choices[], gold} -> harness ai2_arc fields
    def fn(doc):
        labels = LETTERS[: len(doc["choices"])]
        return {
            "question": _strip_prefix(doc["query"], "Question: "),
            "choices": {"text": list(doc["choices"]), "label": labels},
            "answerKey": labels[int(doc["gold"])],
        }

    return _map(dataset, fn)


def process_openbookqa(dataset):
    # {query: <question_stem>, choices[4], gold} -> harness openbookqa fields
    def fn(doc):
        labels = LETTERS[: len(doc["choices"])]
        return {
            "question_stem": doc["query"],
            "choices": {"text": list(doc["choices"]), "label": labels},
            "answerKey": labels[int(doc["gold"])],
        }

    return _map(dataset, fn)


# ---------------------------------------------------------------- PIQA
def process_piqa(dataset):
    # {query: "Question: <goal>\n", choices[2], gold} -> goal, sol1, sol2, label
    def fn(doc):
        q = _strip_prefix(doc["query"], "Question: ")
        if not q.endswith("\n"):
            raise ValueError(f"piqa query does not end with a newline: {q!r}")
        return {
            "goal": q[:-1],
            "sol1": doc["choices"][0],
            "sol2": doc["choices"][1],
            "label": int(doc["gold"]),
        }

    return _map(dataset, fn)


# ---------------------------------------------------------------- BoolQ
def process_boolq(dataset):
    # {query: "Passage: <passage>\nQuestion: <question>?", choices ["no","yes"], gold}
    def fn(doc):
        body = _strip_prefix(doc["query"], "Passage: ")
        # one passage itself contains "\nQuestion: "; the question is after the last one
        cut = body.rindex("\nQuestion: ")
        question = body[cut + len("\nQuestion: "):]
        if not question.endswith("?"):
            raise ValueError(f"boolq question without '?': {question!r}")
        return {
            "passage": body[:cut],
            "question": question[:-1],
            "label": int(doc["gold"]),
        }

    return _map(dataset, fn)


# ---------------------------------------------------------------- COPA
def process_copa(dataset):
    # {query: "<premise without final char>, because|therefore", choices[2] (first
    # letter already lower-cased), gold} -> premise, question, choice1, choice2, label
    def fn(doc):
        m = re.fullmatch(r"(.*), (because|therefore)", doc["query"], flags=re.S)
        if not m:
            raise ValueError(f"copa query shape: {doc['query']!r}")
        return {
            # the harness drops the premise's last character (its period); the
            # shared file already dropped it, so a "." is put back here
            "premise": m.group(1) + ".",
            "question": {"because": "cause", "therefore": "effect"}[m.group(2)],
            "choice1": doc["choices"][0],
            "choice2": doc["choices"][1],
            "label": int(doc["gold"]),
        }

    return _map(dataset, fn)


def _copa_choice(text):
    return text[0].lower() + text[1:]


def copa_doc_to_text(doc):
    connector = {"cause": "because", "effect": "therefore"}[doc["question"]]
    return doc["premise"].strip()[:-1] + " " + connector


def copa_doc_to_choice(doc):
    return [" " + _copa_choice(doc["choice1"]), " " + _copa_choice(doc["choice2"])]


def copa_doc_to_target(doc):
    return " " + _copa_choice(doc["choice1"] if doc["label"] == 0 else doc["choice2"])


# ---------------------------------------------------------------- Social IQA
_SIQA = re.compile(
    r"Context: (?P<context>.*)\nQuestion: (?P<question>.*)\nChoices:\n"
    r"A\. (?P<a>.*)\nB\. (?P<b>.*)\nAnswer:",
    flags=re.S,
)


def process_siqa(dataset):
    # lettered template holding only 2 of the 3 answers -> context, question,
    # answerA, answerB, label ("1"/"2" as in the harness's dataset)
    def fn(doc):
        m = _SIQA.fullmatch(doc["query"])
        if not m:
            raise ValueError(f"siqa query shape: {doc['query']!r}")
        return {
            "context": m.group("context"),
            "question": m.group("question"),
            "answerA": m.group("a"),
            "answerB": m.group("b"),
            "label": str(int(doc["gold"]) + 1),
        }

    return _map(dataset, fn)


# ---------------------------------------------------------------- CommonsenseQA
_CSQA = re.compile(
    r"Question: (?P<question>.*)\nChoices:\n"
    r"A\. (?P<a>.*)\nB\. (?P<b>.*)\nC\. (?P<c>.*)\nD\. (?P<d>.*)\nAnswer:",
    flags=re.S,
)


def process_commonsense_qa(dataset):
    # lettered template holding only 4 of the 5 choices -> question,
    # choices {label, text} (4), answerKey
    def fn(doc):
        m = _CSQA.fullmatch(doc["query"])
        if not m:
            raise ValueError(f"commonsense_qa query shape: {doc['query']!r}")
        return {
            "question": m.group("question"),
            "choices": {
                "label": LETTERS[:4],
                "text": [m.group("a"), m.group("b"), m.group("c"), m.group("d")],
            },
            "answerKey": LETTERS[int(doc["gold"])],
        }

    return _map(dataset, fn)


# ---------------------------------------------------------------- HellaSwag
def hellaswag_preprocess(text):
    # the harness's preprocess(), re-implemented
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def process_hellaswag(dataset):
    # rows prepared by run_harness.py from the 6-line bz2 file:
    # {ctx_line: "activity_label: context", label: "0".."3", endings[4]}
    def fn(doc):
        return {
            "query": hellaswag_preprocess(doc["ctx_line"]),
            "choices": [hellaswag_preprocess(e) for e in doc["endings"]],
            "gold": int(doc["label"]),
            "label": str(doc["label"]),
        }

    return _map(dataset, fn)


# ---------------------------------------------------------------- WinoGrande
# The shared file already holds the harness's doc_to_choice output
# (context_options) and doc_to_target output (continuation); the sentence with
# its "_" is not recoverable exactly, so the three functions read those fields.
def winogrande_doc_to_text(doc):
    return int(doc["gold"])


def winogrande_doc_to_choice(doc):
    return list(doc["context_options"])


def winogrande_doc_to_target(doc):
    return doc["continuation"].strip()


# ---------------------------------------------------------------- LAMBADA
def process_lambada(dataset):
    # {context, continuation} were made by text.split(' ') (last piece =
    # continuation), so joining with one space restores the harness's `text`
    def fn(doc):
        return {"text": doc["context"] + " " + doc["continuation"]}

    return _map(dataset, fn)


# ---------------------------------------------------------------- MMLU / CMMLU
def process_mmlu(dataset):
    # CSV row {question, choice0..choice3, answer "0".."3"} (all strings,
    # read with Python's csv module) -> question, choices[4], answer int
    def fn(doc):
        return {
            "question": doc["question"],
            "choices": [doc["choice0"], doc["choice1"], doc["choice2"], doc["choice3"]],
            "answer": int(doc["answer"]),
        }

    return _map(dataset, fn)


def process_cmmlu(dataset):
    # CSV row {"": index, Question, A, B, C, D, Answer letter} -> same names
    def fn(doc):
        return {k: doc[k] for k in ("Question", "A", "B", "C", "D", "Answer")}

    return _map(dataset, fn)
