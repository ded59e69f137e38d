"""Hugging Face `tokenizers` (the Rust library) as the oracle for tokenizer.json support.

Trains a small Llama-style SentencePiece BPE tokenizer (Metaspace pre-tokenizer, byte
fallback, 600 tokens) on the first paragraphs of TinyStories, saves it as
test/fixtures/hf-tokenizer/tokenizer.json with a tokenizer_config.json, and writes the ids
the Rust implementation gives for a set of strings (ASCII and not) to
test/oracle/golden/hf_tokenizer.json.

Usage: python3 test/oracle/hf_tokenizer_oracle.py [--shared DIR]   (needs `pip install tokenizers`)
"""
import argparse
import json
import os

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

STRINGS = [
    "Once upon a time, there was a little girl named Lily.",
    "Hello world!",
    "The café costs 5€ — naïve 日本",
    "  two  spaces\nnewline",
    "ünïcödé ✓ 🙂",
    "",
]


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.environ.get("SHORTGPT_SHARED", os.path.join(repo, "..", "shared")))
    args = ap.parse_args()
    text = open(os.path.join(args.shared, "data", "tinystories", "tinystories_val.txt"), encoding="utf-8").read()
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()][:400]

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=600 - 256, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(paragraphs, trainer)
    # Byte-fallback pieces <0x00>..<0xFF> are ordinary vocabulary entries (ids 3..258), as in
    # Llama's tokenizer.json; the trainer cannot add them without making them special.
    spec = json.loads(tok.to_str())
    trained = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {}
    for piece, _ in trained[:3]:
        vocab[piece] = len(vocab)
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in trained[3:]:
        vocab.setdefault(piece, len(vocab))
    spec["model"]["vocab"] = vocab
    for added in spec["added_tokens"]:
        added["id"] = vocab[added["content"]]
    tok = Tokenizer.from_str(json.dumps(spec))

    out_dir = os.path.join(repo, "test", "fixtures", "hf-tokenizer")
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}, f, indent=2)
    golden = {
        "tokenizers": __import__("tokenizers").__version__,
        "bos_id": tok.token_to_id("<s>"),
        "eos_id": tok.token_to_id("</s>"),
        "vocab_size": tok.get_vocab_size(),
        "cases": [{"text": s, "ids": tok.encode(s, add_special_tokens=False).ids, "decoded": tok.decode(tok.encode(s).ids)} for s in STRINGS],
    }
    with open(os.path.join(repo, "test", "oracle", "golden", "hf_tokenizer.json"), "w") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
    print(json.dumps(golden, ensure_ascii=False)[:600])


if __name__ == "__main__":
    main()
