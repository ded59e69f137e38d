"""Reads (or fills) a Hugging Face cache with huggingface_hub itself, for test/hub.test.ts.

usage: HF_ENDPOINT=... HF_HUB_CACHE=... python3 hub_cache_oracle.py REPO REVISION FILE...
Prints a JSON object {file: path} of the paths hf_hub_download returns. The caller decides from
its server's request log whether anything was downloaded (it should not be, when shortgpt filled
the cache first), and checks the paths are the snapshot files shortgpt made.
"""

import json
import sys

from huggingface_hub import hf_hub_download


def main() -> None:
    repo, revision, *files = sys.argv[1:]
    print(json.dumps({f: hf_hub_download(repo, f, revision=revision) for f in files}))


if __name__ == "__main__":
    main()
