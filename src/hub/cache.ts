// The Hugging Face cache, laid out as Python's huggingface_hub lays it out, so that either tool
// reuses what the other downloaded:
//   {cache}/models--{owner}--{name}/blobs/{etag}               file contents, named by ETag
//   {cache}/models--{owner}--{name}/blobs/{etag}.incomplete    a partial download, resumed by Range
//   {cache}/models--{owner}--{name}/snapshots/{commit}/{file}  relative symlinks to ../../blobs/{etag}
//   {cache}/models--{owner}--{name}/refs/{revision}            the commit a branch or tag pointed at

import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { COMMIT_HASH, type HubRepoRef } from "./repoId.js";

/** Where and how to reach the Hub; built from the environment by the CLI (hubSettingsFromEnv). */
export interface HubSettings {
  /** The Hub or a mirror, without a trailing slash. */
  endpoint: string;
  /** The cache root (HF_HUB_CACHE). */
  cacheDir: string;
  /** A user access token for gated and private models. */
  token?: string;
  /** Use only the cache; never touch the network. */
  offline: boolean;
}

const TRUE = new Set(["1", "ON", "YES", "TRUE"]);

/**
 * The settings huggingface_hub derives from the same variables: HF_ENDPOINT, HF_HUB_CACHE (else
 * $HF_HOME/hub, HF_HOME defaulting to $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface),
 * HF_TOKEN (else the file HF_TOKEN_PATH or $HF_HOME/token that `hf auth login` writes) and
 * HF_HUB_OFFLINE. `env` is passed in so that the library never reads process.env itself.
 */
export function hubSettingsFromEnv(env: Record<string, string | undefined>, home = homedir()): HubSettings {
  const set = (key: string): string | undefined => (env[key] === undefined || env[key] === "" ? undefined : env[key]);
  const hfHome = set("HF_HOME") ?? join(set("XDG_CACHE_HOME") ?? join(home, ".cache"), "huggingface");
  const cacheDir = set("HF_HUB_CACHE") ?? set("HUGGINGFACE_HUB_CACHE") ?? join(hfHome, "hub");
  let token = set("HF_TOKEN") ?? set("HUGGING_FACE_HUB_TOKEN");
  if (token === undefined) {
    const tokenPath = set("HF_TOKEN_PATH") ?? join(hfHome, "token");
    try {
      token = existsSync(tokenPath) ? readFileSync(tokenPath, "utf8").trim() || undefined : undefined;
    } catch {
      token = undefined; // an unreadable token file is the same as none: public models still work
    }
  }
  return {
    endpoint: (set("HF_ENDPOINT") ?? "https://huggingface.co").replace(/\/+$/, ""),
    cacheDir,
    ...(token === undefined ? {} : { token }),
    offline: TRUE.has((set("HF_HUB_OFFLINE") ?? "").toUpperCase()),
  };
}

/** The folder of one model repo in the cache. */
export function repoFolder(cacheDir: string, repo: string): string {
  return join(cacheDir, `models--${repo.split("/").join("--")}`);
}

export function blobPath(cacheDir: string, repo: string, etag: string): string {
  return join(repoFolder(cacheDir, repo), "blobs", etag);
}

export function snapshotDir(cacheDir: string, repo: string, commit: string): string {
  return join(repoFolder(cacheDir, repo), "snapshots", commit);
}

export function refPath(cacheDir: string, repo: string, revision: string): string {
  return join(repoFolder(cacheDir, repo), "refs", ...revision.split("/"));
}

/** The commit a revision was last seen at, from refs/ (a commit hash is its own answer). */
export function cachedCommit(cacheDir: string, ref: HubRepoRef): string | undefined {
  if (COMMIT_HASH.test(ref.revision)) return ref.revision;
  const path = refPath(cacheDir, ref.repo, ref.revision);
  if (!existsSync(path)) return undefined;
  const commit = readFileSync(path, "utf8").trim();
  return COMMIT_HASH.test(commit) ? commit : undefined;
}

/**
 * ETags as the Hub sends them, in the form used for blob names: quotes and a weak "W/" prefix
 * dropped (huggingface_hub does the same, so both tools name a blob alike).
 */
export function normalizeEtag(etag: string | null): string | undefined {
  if (etag === null) return undefined;
  const bare = etag.replace(/^W\//, "").replace(/^"|"$/g, "");
  return bare === "" ? undefined : bare;
}
