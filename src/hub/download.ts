// Downloads the files a Hub model needs into the Hugging Face cache, resumably and checked.
// Written on Node's fetch rather than @huggingface/hub: that client writes the cache layout but
// neither resumes a partial blob with a Range request nor reports progress per byte, and those
// are the point for multi-gigabyte shards.

import { createHash } from "node:crypto";
import { createReadStream, existsSync, lstatSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, copyFileSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, dirname, join, relative } from "node:path";
import { HubError, OutputError } from "../errors.js";
import { blobPath, cachedCommit, type HubSettings, normalizeEtag, refPath, repoFolder, snapshotDir } from "./cache.js";

/** How long a download waits for another process filling the same blob (a large shard at a slow link). */
const LOCK_WAIT_MS = 60 * 60 * 1000;
import { COMMIT_HASH, type HubRepoRef } from "./repoId.js";

export interface HubDownloadOptions {
  /** Bytes done and bytes in all, over the files still to fetch. */
  onProgress?: (done: number, total: number) => void;
  /** How often a dropped connection is resumed before giving up (default 3). */
  retries?: number;
}

export interface HubModel {
  /** The snapshot folder: a Hugging Face directory the loaders open as any other. */
  dir: string;
  commit: string;
  files: string[];
  /** Bytes fetched from the network in this call (0 when everything was cached). */
  downloadedBytes: number;
  /** True when the network was not used (HF_HUB_OFFLINE, or the Hub unreachable with a full cache). */
  fromCache: boolean;
}

/** Files besides the weights that loading needs; PyTorch .bin pickles are never fetched. */
const SIDE_FILES = new Set([
  "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
  "tokenizer.model", "added_tokens.json", "vocab.json", "merges.txt", "model.safetensors.index.json",
]);
const INDEX = "model.safetensors.index.json";

interface FileMeta {
  etag: string;
  size: number;
  /** Where the bytes are: the resolve URL, or the CDN an LFS file redirects to. */
  url: string;
}

interface Ctx {
  ref: HubRepoRef;
  settings: HubSettings;
  retries: number;
}

function repoPage(ctx: Ctx): string {
  return `${ctx.settings.endpoint}/${ctx.ref.repo}`;
}

/** The Authorization header only for the Hub itself, never for the CDN it redirects to. */
function headers(ctx: Ctx, url: string, extra: Record<string, string> = {}): Record<string, string> {
  // identity: a gzipped answer would not match Content-Length or the checksum.
  const h: Record<string, string> = { "accept-encoding": "identity", "user-agent": "shortgpt/0.1.0", ...extra };
  // The token goes to the Hub's own origin only (scheme, host and port), never to a CDN or a downgraded link.
  if (ctx.settings.token !== undefined && new URL(url).origin === new URL(ctx.settings.endpoint).origin) h["authorization"] = `Bearer ${ctx.settings.token}`;
  return h;
}

function causeText(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}

function unreachable(ctx: Ctx, err: unknown): HubError {
  return new HubError(`cannot reach ${ctx.settings.endpoint} for ${ctx.ref.repo}: ${causeText(err)}`, {
    hint: "check the network or HF_ENDPOINT; with HF_HUB_OFFLINE=1 models already in the cache are used without the network",
  });
}

/** One clear error per way the Hub says no, read from its status and X-Error-Code. */
function httpError(ctx: Ctx, res: Response, what: string): HubError {
  const code = res.headers.get("x-error-code");
  const page = repoPage(ctx);
  const { repo, revision } = ctx.ref;
  const hasToken = ctx.settings.token !== undefined;
  if (code === "GatedRepo") {
    return new HubError(`${repo} is a gated model: ${hasToken ? "the token in HF_TOKEN has not been granted access" : "downloading it needs an access token"} (HTTP ${res.status})`, {
      got: res.status, hint: `log in at ${page}, accept its license there, then set HF_TOKEN to a read token of that account (${ctx.settings.endpoint}/settings/tokens)`,
    });
  }
  if (code === "RepoNotFound" || (res.status === 404 && code === null && what === "model info")) {
    return new HubError(`model ${repo} not found on ${ctx.settings.endpoint} (HTTP ${res.status})`, {
      got: res.status, hint: hasToken ? "check the owner/name spelling, and that your token can read it if it is private" : "check the owner/name spelling; a private model needs HF_TOKEN; a local path that does not exist is also read as a Hub id",
    });
  }
  if (code === "RevisionNotFound") return new HubError(`revision "${revision}" not found in ${repo} (HTTP ${res.status})`, { got: res.status, hint: `check the branch, tag or commit after @; see ${page}/tree/main` });
  if (code === "EntryNotFound" || res.status === 404) return new HubError(`${what} not found in ${repo}@${revision} (HTTP ${res.status})`, { got: res.status, hint: `see the files at ${page}` });
  if (res.status === 401 || res.status === 403) {
    return new HubError(`${ctx.settings.endpoint} refused ${what} of ${repo} (HTTP ${res.status})`, { got: res.status, hint: hasToken ? "check that HF_TOKEN is valid and can read this model" : "set HF_TOKEN to an access token that can read this model" });
  }
  if (res.status === 429) return new HubError(`${ctx.settings.endpoint} is rate-limiting requests (HTTP 429)`, { got: 429, hint: "wait a minute and run again; a token (HF_TOKEN) has higher limits" });
  return new HubError(`${ctx.settings.endpoint} answered HTTP ${res.status} for ${what} of ${repo}`, { got: res.status, hint: "the Hub or mirror may be down; run again later" });
}

async function request(ctx: Ctx, url: string, init: { method: string; redirect: "manual" | "follow"; extra?: Record<string, string> }): Promise<Response> {
  try {
    return await fetch(url, { method: init.method, redirect: init.redirect, headers: headers(ctx, url, init.extra) });
  } catch (err) {
    throw unreachable(ctx, err);
  }
}

async function modelInfo(ctx: Ctx): Promise<{ sha: string; siblings: string[] }> {
  const url = `${ctx.settings.endpoint}/api/models/${ctx.ref.repo}/revision/${encodeURIComponent(ctx.ref.revision)}`;
  const res = await request(ctx, url, { method: "GET", redirect: "follow" });
  if (!res.ok) throw httpError(ctx, res, "model info");
  let body: { sha?: unknown; siblings?: unknown };
  try {
    body = (await res.json()) as typeof body;
  } catch (err) {
    throw new HubError(`${url} did not answer JSON: ${causeText(err)}`, { hint: "HF_ENDPOINT must point at the Hub or a mirror of its API" });
  }
  const siblings = Array.isArray(body.siblings) ? body.siblings.map((s) => (s as { rfilename?: unknown }).rfilename).filter((f): f is string => typeof f === "string") : undefined;
  if (typeof body.sha !== "string" || !COMMIT_HASH.test(body.sha) || siblings === undefined) {
    throw new HubError(`${url} answered without a commit sha and a file list`, { hint: "HF_ENDPOINT must point at the Hub or a mirror of its API" });
  }
  return { sha: body.sha, siblings };
}

/**
 * HEAD of a file's resolve URL, as huggingface_hub does it: relative redirects (a renamed repo) are
 * followed; an absolute one is the download link of an LFS file (a CDN), whose sha256 and size the
 * Hub gives on the redirect itself, in X-Linked-Etag and X-Linked-Size.
 */
async function fileMeta(ctx: Ctx, commit: string, file: string): Promise<FileMeta> {
  let url = `${ctx.settings.endpoint}/${ctx.ref.repo}/resolve/${commit}/${file.split("/").map(encodeURIComponent).join("/")}`;
  for (let hop = 0; hop < 10; hop++) {
    const res = await request(ctx, url, { method: "HEAD", redirect: "manual" });
    const location = res.headers.get("location");
    // Relative redirects (a renamed repo) are followed, as huggingface_hub does; an absolute one is the file's download link.
    if (res.status >= 300 && res.status < 400 && location !== null && isRelativeLocation(location)) {
      url = new URL(location, url).href;
      continue;
    }
    if (!(res.ok || (res.status >= 300 && res.status < 400))) throw httpError(ctx, res, file);
    const etag = normalizeEtag(res.headers.get("x-linked-etag") ?? res.headers.get("etag"));
    const size = Number(res.headers.get("x-linked-size") ?? res.headers.get("content-length"));
    if (etag === undefined || !Number.isSafeInteger(size) || size < 0 || /[/\\]|^\.\.?$/.test(etag)) {
      throw new HubError(`${url} gave no usable ETag and size`, { hint: "the file cannot be stored in the cache without them; HF_ENDPOINT must point at the Hub or a faithful mirror" });
    }
    return { etag, size, url: location !== null ? new URL(location, url).href : url };
  }
  throw new HubError(`${file} of ${ctx.ref.repo}: too many redirects`, { hint: "HF_ENDPOINT must point at the Hub or a faithful mirror" });
}

/** What the file's ETag promises about its bytes: sha256 for LFS files, git's blob sha1 otherwise. */
async function checksumMatches(path: string, etag: string, size: number): Promise<boolean> {
  const algorithm = /^[0-9a-f]{64}$/.test(etag) ? "sha256" : /^[0-9a-f]{40}$/.test(etag) ? "sha1" : undefined;
  if (algorithm === undefined) return true; // a mirror's own ETag format: the size check is all there is
  const hash = createHash(algorithm);
  if (algorithm === "sha1") hash.update(`blob ${size}\0`);
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex") === etag;
}

function diskError(err: unknown, path: string): OutputError | undefined {
  const code = (err as { code?: string }).code;
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new OutputError(`no space left on the disk while writing ${path}`, { file: path, hint: "free some space, or set HF_HUB_CACHE to a folder on a larger disk; the partial file is kept and the next run resumes it" });
  }
  if (code === "EACCES" || code === "EPERM" || code === "EROFS") return new OutputError(`cannot write ${path} (${code})`, { file: path, hint: "make the cache writable, or set HF_HUB_CACHE to a writable folder" });
  return undefined;
}

/** Fetches one blob into blobs/{etag}.incomplete, resuming what is there, then checks and renames it. */
async function downloadBlob(ctx: Ctx, file: string, first: FileMeta, blob: string, progress: (bytes: number) => void, refresh: () => Promise<FileMeta>): Promise<number> {
  let meta = first;
  const partial = `${blob}.incomplete`;
  try {
    mkdirSync(dirname(blob), { recursive: true });
    if (!existsSync(partial)) writeFileSync(partial, ""); // an empty file is complete at once
  } catch (err) {
    throw diskError(err, partial) ?? err;
  }
  let fetched = 0;
  for (let attempt = 0; ; attempt++) {
    if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(4000, 100 * 2 ** attempt))); // let a flaky link settle
    let have = existsSync(partial) ? statSync(partial).size : 0;
    if (have > meta.size) {
      truncateSync(partial, 0);
      have = 0;
    }
    progress(have);
    if (have === meta.size) break;
    let res: Response;
    try {
      res = await request(ctx, meta.url, { method: "GET", redirect: "follow", ...(have > 0 ? { extra: { range: `bytes=${have}-` } } : {}) });
    } catch (err) {
      if (attempt < ctx.retries) continue;
      throw err;
    }
    if (!res.ok) {
      // The CDN's signed URLs expire (about an hour on the Hub): ask the Hub for a fresh one.
      const offHub = new URL(meta.url).origin !== new URL(ctx.settings.endpoint).origin;
      if (offHub && [400, 403, 410].includes(res.status) && attempt < ctx.retries) {
        const fresh = await refresh();
        if (fresh.etag === meta.etag && fresh.size === meta.size) {
          meta = fresh;
          continue;
        }
      }
      if ((res.status >= 500 || res.status === 429) && attempt < ctx.retries) continue; // a passing outage
      throw httpError(ctx, res, file);
    }
    // A server that ignores Range sends the whole file again: start over rather than append.
    if (have > 0 && res.status !== 206) have = 0;
    let handle;
    try {
      handle = await open(partial, have > 0 ? "a" : "w");
    } catch (err) {
      throw diskError(err, partial) ?? err;
    }
    let lost: unknown;
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        try {
          await handle.write(chunk);
        } catch (err) {
          throw diskError(err, partial) ?? err;
        }
        have += chunk.length;
        fetched += chunk.length;
        progress(have);
      }
    } catch (err) {
      if (err instanceof OutputError) throw err;
      lost = err;
    } finally {
      await handle.close();
    }
    if (lost === undefined && have === meta.size) break;
    if (attempt >= ctx.retries) {
      throw new HubError(`connection lost while downloading ${file} of ${ctx.ref.repo} after ${have} of ${meta.size} bytes${lost === undefined ? "" : `: ${causeText(lost)}`}`, {
        file: partial, hint: "run the command again: the partial file is kept in the cache and the download resumes where it stopped",
      });
    }
  }
  if (!(await checksumMatches(partial, meta.etag, meta.size))) {
    unlinkSync(partial);
    throw new HubError(`${file} of ${ctx.ref.repo} does not match its checksum ${meta.etag}`, { file, hint: "the download was corrupted on the way and has been deleted; run again" });
  }
  renameSync(partial, blob);
  return fetched;
}

/** A Location header without a scheme or host ("/owner/name/resolve/..."). */
function isRelativeLocation(location: string): boolean {
  return !/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(location) && !location.startsWith("//");
}

/**
 * One process at a time fills a blob: parts of one run started together (a Slurm array on a shared
 * cache) would otherwise write the same .incomplete file. The lock is a file created exclusively
 * at {cache}/.locks/{repo folder}/{etag}.lock holding host and pid; a lock left by a dead process
 * on this host is taken over, one from another host is waited for (up to lockWaitMs).
 */
async function withBlobLock<T>(lock: string, waitMs: number, work: () => Promise<T>): Promise<T> {
  mkdirSync(dirname(lock), { recursive: true });
  const me = `${hostname()} ${process.pid}`;
  const started = Date.now();
  for (;;) {
    try {
      writeFileSync(lock, me, { flag: "wx" });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      if (lockIsStale(lock)) {
        rmSync(lock, { force: true });
        continue;
      }
      if (Date.now() - started > waitMs) {
        throw new HubError(`another process has been downloading ${basename(lock, ".lock")} for ${Math.round((Date.now() - started) / 1000)} s (lock ${lock})`, { hint: "wait for it, or delete the lock file if that process is gone" });
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
  try {
    return await work();
  } finally {
    rmSync(lock, { force: true });
  }
}

/** A lock whose owner is a process of this host that no longer exists (or an unreadable lock file). */
function lockIsStale(lock: string): boolean {
  let owner: string[];
  try {
    owner = readFileSync(lock, "utf8").split(" ");
  } catch {
    return false; // released between our attempts
  }
  const [host, pid] = [owner[0], Number(owner[1])];
  if (host !== hostname() || !Number.isInteger(pid) || pid <= 0) return host === hostname();
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
}

/** snapshots/{commit}/{file} -> ../../blobs/{etag}, relative as huggingface_hub makes it; a copy where links are refused. */
function link(blob: string, pointer: string): void {
  mkdirSync(dirname(pointer), { recursive: true });
  if (lstatExists(pointer)) unlinkSync(pointer);
  try {
    symlinkSync(relative(dirname(pointer), blob), pointer);
  } catch {
    copyFileSync(blob, pointer);
  }
}

function lstatExists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The shards the index names (or the single model.safetensors), checked against the repo's file list. */
function weightFiles(ctx: Ctx, dir: string, siblings: Set<string>): string[] {
  if (siblings.has(INDEX)) {
    let map: unknown;
    try {
      map = (JSON.parse(readFileSync(join(dir, INDEX), "utf8")) as { weight_map?: unknown }).weight_map;
    } catch (err) {
      throw new HubError(`${INDEX} of ${ctx.ref.repo} is not valid JSON: ${causeText(err)}`, { hint: `see ${repoPage(ctx)}` });
    }
    if (typeof map !== "object" || map === null) throw new HubError(`${INDEX} of ${ctx.ref.repo} has no weight_map`, { hint: `see ${repoPage(ctx)}` });
    const shards = [...new Set(Object.values(map as Record<string, unknown>))].filter((s): s is string => typeof s === "string").sort();
    // Shard names become paths under the snapshot: a hostile index must not point outside it.
    const unsafe = shards.find((s) => !/\.safetensors$/.test(s) || s.startsWith("/") || s.includes("\\") || s.split("/").some((seg) => seg === "" || seg === "." || seg === ".."));
    if (unsafe !== undefined) throw new HubError(`${INDEX} of ${ctx.ref.repo} names a shard "${unsafe}" that is not a safetensors file inside the repo`, { hint: `see ${repoPage(ctx)}` });
    const missing = shards.filter((s) => !siblings.has(s));
    if (missing.length > 0) throw new HubError(`${INDEX} of ${ctx.ref.repo} names shards the repo does not have: ${missing.join(", ")}`, { hint: `see ${repoPage(ctx)}` });
    return shards;
  }
  if (siblings.has("model.safetensors")) return ["model.safetensors"];
  const pickles = [...siblings].some((f) => /\.(bin|pt|pth|ckpt)$/.test(f));
  throw new HubError(`${ctx.ref.repo}@${ctx.ref.revision} has no safetensors weights${pickles ? " (only PyTorch pickles, which are never loaded)" : ""}`, {
    hint: pickles ? `look for a safetensors conversion, often a pull request: ${ctx.ref.repo}@refs/pr/N; see ${repoPage(ctx)}/discussions` : `see the files at ${repoPage(ctx)}; a GGUF file can be downloaded and passed as a path`,
  });
}

/** The snapshot of `ref` from the cache alone, when config.json and all its weights are there. */
export function cachedHubModel(ref: HubRepoRef, settings: HubSettings): HubModel | undefined {
  const commit = cachedCommit(settings.cacheDir, ref);
  if (commit === undefined) return undefined;
  const dir = snapshotDir(settings.cacheDir, ref.repo, commit);
  if (!existsSync(join(dir, "config.json"))) return undefined;
  let weights = ["model.safetensors"];
  if (existsSync(join(dir, INDEX))) {
    try {
      const map = (JSON.parse(readFileSync(join(dir, INDEX), "utf8")) as { weight_map?: Record<string, string> }).weight_map ?? {};
      weights = [...new Set(Object.values(map))];
    } catch {
      return undefined;
    }
  }
  if (!weights.every((w) => existsSync(join(dir, w)))) return undefined;
  return { dir, commit, files: weights, downloadedBytes: 0, fromCache: true };
}

/**
 * Makes the files of Hub model `ref` that loading needs present in the cache and returns its
 * snapshot folder. Offline, or when the Hub cannot be reached, a complete cached snapshot is used.
 */
export async function downloadHubModel(ref: HubRepoRef, settings: HubSettings, options: HubDownloadOptions = {}): Promise<HubModel> {
  const ctx: Ctx = { ref, settings, retries: options.retries ?? 3 };
  if (settings.offline) {
    const cached = cachedHubModel(ref, settings);
    if (cached) return cached;
    throw new HubError(`${ref.repo}@${ref.revision} is not in the Hugging Face cache ${settings.cacheDir}, and HF_HUB_OFFLINE is set`, {
      hint: "download it once with the network (unset HF_HUB_OFFLINE), or set HF_HUB_CACHE to the cache that holds it",
    });
  }
  let info: { sha: string; siblings: string[] };
  try {
    info = await modelInfo(ctx);
  } catch (err) {
    const cached = err instanceof HubError && err.details.got === undefined ? cachedHubModel(ref, settings) : undefined;
    if (cached) return cached; // the network is down, but the cache has it: as huggingface_hub does
    throw err;
  }
  const commit = info.sha;
  const dir = snapshotDir(settings.cacheDir, ref.repo, commit);
  const siblings = new Set(info.siblings);
  if (!siblings.has("config.json")) {
    throw new HubError(`${ref.repo} has no config.json: not a transformers model`, { hint: `see the files at ${repoPage(ctx)}; a GGUF file can be downloaded and passed as a path` });
  }
  try {
    if (ref.revision !== commit) {
      const path = refPath(settings.cacheDir, ref.repo, ref.revision);
      if (!existsSync(path) || readFileSync(path, "utf8") !== commit) {
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(path, commit);
      }
    }
  } catch (err) {
    throw diskError(err, settings.cacheDir) ?? err;
  }
  let downloadedBytes = 0;
  let done = 0;
  let total = 0;
  const fetchFiles = async (files: string[]): Promise<void> => {
    const todo: Array<{ file: string; meta: FileMeta }> = [];
    for (const file of files) {
      if (existsSync(join(dir, file))) continue; // a snapshot is immutable: present means complete
      const meta = await fileMeta(ctx, commit, file);
      todo.push({ file, meta });
      total += meta.size;
    }
    for (const { file, meta } of todo) {
      const blob = blobPath(settings.cacheDir, ref.repo, meta.etag);
      const before = done;
      // Another revision (or huggingface_hub) may hold the same blob already: then only a link is new.
      if (!existsSync(blob)) {
        const lock = join(settings.cacheDir, ".locks", basename(repoFolder(settings.cacheDir, ref.repo)), `${meta.etag}.lock`);
        downloadedBytes += await withBlobLock(lock, LOCK_WAIT_MS, async () =>
          // Another process may have finished it while this one waited.
          existsSync(blob) ? 0 : downloadBlob(ctx, file, meta, blob, (bytes) => options.onProgress?.(before + bytes, total), () => fileMeta(ctx, commit, file)));
      }
      done = before + meta.size;
      options.onProgress?.(done, total);
      try {
        link(blob, join(dir, file));
      } catch (err) {
        throw diskError(err, join(dir, file)) ?? err;
      }
    }
  };
  const side = [...SIDE_FILES].filter((f) => siblings.has(f)).sort();
  let weights: string[];
  if (siblings.has(INDEX)) {
    await fetchFiles(side); // the index names the shards
    weights = weightFiles(ctx, dir, siblings);
    await fetchFiles(weights);
  } else {
    weights = weightFiles(ctx, dir, siblings);
    await fetchFiles([...side, ...weights]); // one plan, so the progress total is right from the start
  }
  return { dir, commit, files: [...side, ...weights], downloadedBytes, fromCache: false };
}
