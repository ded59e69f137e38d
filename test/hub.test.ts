// Hub models: a stand-in Hub on 127.0.0.1 serves stories260K converted to a Hugging Face folder;
// the downloader fills the Hugging Face cache file by file, resumes a dropped download, works
// offline from the cache, names gated and missing models clearly, and huggingface_hub itself
// reads the same cache without downloading again.

import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { convertModel } from "../src/convert/convertModel.js";
import { HubError, OutputError } from "../src/errors.js";
import { blobPath, type HubSettings, hubSettingsFromEnv, repoFolder } from "../src/hub/cache.js";
import { downloadHubModel } from "../src/hub/download.js";
import { parseHubId } from "../src/hub/repoId.js";
import { openModel, resolveModelPath } from "../src/load.js";
import { repoRoot } from "../src/shared.js";
import { MODEL_BIN, TINYSTORIES, tempDir } from "./helpers.js";
import { writeHfLlamaFixture } from "./fixtures/hfLlama.js";
import { startTestHub, type TestHub } from "./hubServer.js";

const REPO = "shortgpt/stories260K";
const GATED = "shortgpt/gated-260K";
const SHARDED = "shortgpt/tiny-llama-sharded";
const HOSTILE = "shortgpt/hostile-index";
let hub: TestHub;
let source: string;
let sharded: string;

before(async () => {
  source = join(tempDir("shortgpt-hub-src-"), "stories260K");
  convertModel(MODEL_BIN, source, { to: "safetensors" });
  sharded = join(tempDir("shortgpt-hub-sharded-"), "tiny");
  mkdirSync(sharded);
  writeHfLlamaFixture(sharded, { shards: 2 });
  const pickle = Buffer.from("a PyTorch pickle that must never be fetched");
  hub = await startTestHub({
    [REPO]: { dir: source, extra: { "pytorch_model.bin": pickle, "README.md": Buffer.from("# stories260K\n") } },
    [GATED]: { dir: source, gated: true },
    [HOSTILE]: { dir: sharded, extra: { "model.safetensors.index.json": Buffer.from(JSON.stringify({ weight_map: { "model.embed_tokens.weight": "../../../../escaped.safetensors" } })) } },
    [SHARDED]: { dir: sharded, extra: { "pytorch_model-00001-of-00002.bin": pickle, "pytorch_model.bin.index.json": Buffer.from("{}") } },
  });
});

after(async () => {
  await hub.close();
});

function settings(extra: Partial<HubSettings> = {}): HubSettings {
  return { endpoint: hub.url, cacheDir: tempDir("shortgpt-hub-cache-"), offline: false, ...extra };
}

/** The address of a port nobody listens on. */
async function closedPort(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

const ref = (id: string) => parseHubId(id)!;
const fetchedBytes = (from: number) => hub.requests.slice(from).filter((r) => r.method === "GET" && (r.path.includes("/resolve/") || r.path.startsWith("/cdn/")));

test("Hub ids are owner/name[@revision]; local paths and malformed names are not", () => {
  assert.deepEqual(parseHubId("TinyLlama/TinyLlama-1.1B-Chat-v1.0"), { repo: "TinyLlama/TinyLlama-1.1B-Chat-v1.0", revision: "main" });
  assert.deepEqual(parseHubId("owner/name@refs/pr/3"), { repo: "owner/name", revision: "refs/pr/3" });
  assert.throws(() => parseHubId("owner/name@../../escape"), /is not a branch, tag or commit name/);
  for (const notId of ["model.gguf", "a/b/c", "./a/b", "/abs/path", "a--b/c", "a/b..c", "-a/b"]) assert.equal(parseHubId(notId), undefined, notId);
});

test("settings come from the variables huggingface_hub reads", () => {
  assert.equal(hubSettingsFromEnv({}, "/home/u").cacheDir, "/home/u/.cache/huggingface/hub");
  assert.equal(hubSettingsFromEnv({ HF_HOME: "/h" }, "/home/u").cacheDir, "/h/hub");
  assert.equal(hubSettingsFromEnv({ HF_HOME: "/h", HF_HUB_CACHE: "/c" }, "/home/u").cacheDir, "/c");
  assert.equal(hubSettingsFromEnv({ XDG_CACHE_HOME: "/x" }, "/home/u").cacheDir, "/x/huggingface/hub");
  const s = hubSettingsFromEnv({ HF_ENDPOINT: "http://mirror/", HF_TOKEN: "hf_x", HF_HUB_OFFLINE: "1", HF_HOME: "/nonexistent" });
  assert.deepEqual([s.endpoint, s.token, s.offline], ["http://mirror", "hf_x", true]);
  assert.equal(hubSettingsFromEnv({ HF_HOME: "/nonexistent" }).endpoint, "https://huggingface.co");
});

test("a download fills the Hugging Face cache layout file by file, and a second run fetches nothing", async () => {
  const s = settings();
  const from = hub.requests.length;
  const seen: Array<[number, number]> = [];
  const model = await downloadHubModel(ref(REPO), s, { onProgress: (d, t) => seen.push([d, t]) });
  const commit = hub.commitOf(REPO);
  const folder = repoFolder(s.cacheDir, REPO);
  assert.equal(folder, join(s.cacheDir, "models--shortgpt--stories260K"));
  assert.equal(model.dir, join(folder, "snapshots", commit));
  assert.equal(readFileSync(join(folder, "refs", "main"), "utf8"), commit);
  assert.deepEqual(readdirSync(model.dir).sort(), readdirSync(source).sort(), "config, tokenizer and weights; no pickle, no README");
  for (const file of readdirSync(source)) {
    const pointer = join(model.dir, file);
    assert.ok(lstatSync(pointer).isSymbolicLink(), `${file} is a link`);
    assert.match(readlinkSync(pointer), /^\.\.\/\.\.\/blobs\/[0-9a-f]{40,64}$/, `${file} links relatively into blobs/`);
    assert.ok(readFileSync(pointer).equals(readFileSync(join(source, file))), `${file} has the served bytes`);
  }
  // LFS files are stored under their sha256, the others under git's blob sha1.
  const sha256 = (await import("node:crypto")).createHash("sha256").update(readFileSync(join(source, "model.safetensors"))).digest("hex");
  assert.equal(readlinkSync(join(model.dir, "model.safetensors")), `../../blobs/${sha256}`);
  assert.equal(model.downloadedBytes, readdirSync(source).reduce((n, f) => n + statSync(join(source, f)).size, 0));
  assert.ok(!hub.requests.slice(from).some((r) => /pytorch_model\.bin|README/.test(r.path)), "never asks for the pickle");
  assert.ok(!hub.requests.slice(from).some((r) => r.path.startsWith("/cdn/") && r.authorization !== undefined), "no token to the CDN");
  const last = seen[seen.length - 1]!;
  assert.equal(last[0], last[1], "progress ends at the total");
  assert.ok(!readdirSync(join(folder, "blobs")).some((f) => f.endsWith(".incomplete")));

  const again = hub.requests.length;
  const second = await downloadHubModel(ref(REPO), s);
  assert.equal(second.dir, model.dir);
  assert.equal(second.downloadedBytes, 0);
  assert.deepEqual(fetchedBytes(again), [], "nothing downloaded twice");
  // Pinned to the commit, and through a renamed repo's relative redirect, the same snapshot.
  assert.equal((await downloadHubModel(ref(`${REPO}@${commit}`), s)).dir, model.dir);
  const renamed = await downloadHubModel(ref("shortgpt/renamed"), settings());
  assert.ok(readFileSync(join(renamed.dir, "model.safetensors")).equals(readFileSync(join(source, "model.safetensors"))));
});

test("a sharded model: the index first, then the shards it names, and the folder loads", async () => {
  const from = hub.requests.length;
  const model = await downloadHubModel(ref(SHARDED), settings());
  const served = readdirSync(sharded).sort();
  assert.ok(served.includes("model.safetensors.index.json") && served.filter((f) => f.endsWith(".safetensors")).length === 2, served.join(", "));
  assert.deepEqual(readdirSync(model.dir).sort(), served.filter((f) => !/\.bin|pytorch/.test(f)).filter((f) => model.files.includes(f)).sort());
  for (const f of model.files) assert.ok(readFileSync(join(model.dir, f)).equals(readFileSync(join(sharded, f))), f);
  assert.ok(!hub.requests.slice(from).some((r) => r.path.includes("pytorch_model")), "never asks for the pickles");
  const opened = openModel(await resolveModelPath(SHARDED, settings({ cacheDir: join(model.dir, "..", "..", "..") })));
  assert.equal(opened.config.nLayers, 4);
  opened.close();
});

test("an index naming a shard outside the repo is refused before any path is made from it", async () => {
  const s = settings();
  await assert.rejects(downloadHubModel(ref(HOSTILE), s), /names a shard "\.\.\/\.\.\/\.\.\/\.\.\/escaped\.safetensors" that is not a safetensors file inside the repo/);
  assert.ok(!existsSync(join(s.cacheDir, "escaped.safetensors")) && !existsSync(join(s.cacheDir, "..", "escaped.safetensors")));
});

test("a dropped connection leaves a .incomplete blob that the next run resumes with a Range request", async () => {
  const s = settings();
  const size = statSync(join(source, "model.safetensors")).size;
  const cut = Math.floor(size / 3);
  hub.dropOnce("model.safetensors", cut);
  await assert.rejects(downloadHubModel(ref(REPO), s, { retries: 0 }), (err: unknown) => {
    assert.ok(err instanceof HubError);
    assert.match(err.message, /connection lost while downloading model\.safetensors .* after \d+ of \d+ bytes/);
    assert.match(err.details.hint!, /run the command again/);
    return true;
  });
  const partial = readdirSync(join(repoFolder(s.cacheDir, REPO), "blobs")).find((f) => f.endsWith(".incomplete"))!;
  assert.ok(partial, "the partial blob is kept");
  const kept = statSync(join(repoFolder(s.cacheDir, REPO), "blobs", partial)).size;
  assert.ok(kept > 0 && kept < size, `kept ${kept} of ${size}`);
  const from = hub.requests.length;
  const model = await downloadHubModel(ref(REPO), s);
  assert.ok(fetchedBytes(from).some((r) => r.path.startsWith("/cdn/") && r.range === `bytes=${kept}-`), "resumed from the kept bytes");
  assert.ok(readFileSync(join(model.dir, "model.safetensors")).equals(readFileSync(join(source, "model.safetensors"))));
  assert.ok(!existsSync(join(repoFolder(s.cacheDir, REPO), "blobs", partial)));

  // An expired CDN link mid-way: a fresh one is asked of the Hub, and the download goes on.
  const s3 = settings();
  hub.expireOnce("model.safetensors");
  const heads = hub.requests.length;
  const refreshed = await downloadHubModel(ref(REPO), s3);
  assert.ok(readFileSync(join(refreshed.dir, "model.safetensors")).equals(readFileSync(join(source, "model.safetensors"))));
  assert.equal(hub.requests.slice(heads).filter((r) => r.method === "HEAD" && r.path.endsWith("/model.safetensors")).length, 2, "asked the Hub again");

  // Within one run, a drop is resumed by itself.
  const s2 = settings();
  hub.dropOnce("model.safetensors", cut);
  const again = await downloadHubModel(ref(REPO), s2);
  assert.ok(readFileSync(join(again.dir, "model.safetensors")).equals(readFileSync(join(source, "model.safetensors"))));
});

test("bytes that do not match the ETag's sha256 are refused and deleted", async () => {
  const s = settings();
  hub.corruptOnce("model.safetensors");
  await assert.rejects(downloadHubModel(ref(REPO), s), /model\.safetensors of shortgpt\/stories260K does not match its checksum/);
  assert.ok(!readdirSync(join(repoFolder(s.cacheDir, REPO), "blobs")).some((f) => f.endsWith(".incomplete")));
  await downloadHubModel(ref(REPO), s); // and the next run gets it right
});

test("HF_HUB_OFFLINE=1 serves a cached model without the network and names what is missing", async () => {
  const s = settings();
  const online = await downloadHubModel(ref(REPO), s);
  const from = hub.requests.length;
  const offline = await downloadHubModel(ref(REPO), { ...s, offline: true });
  assert.equal(offline.dir, online.dir);
  assert.ok(offline.fromCache);
  assert.equal(hub.requests.length, from, "no request at all");
  await assert.rejects(downloadHubModel(ref(REPO), settings({ offline: true })), (err: unknown) => {
    assert.ok(err instanceof HubError);
    assert.match(err.message, /shortgpt\/stories260K@main is not in the Hugging Face cache .*HF_HUB_OFFLINE is set/);
    return true;
  });
  await assert.rejects(downloadHubModel(ref(`${REPO}@v2`), { ...s, offline: true }), /not in the Hugging Face cache/);
  // The Hub unreachable: a complete cached snapshot is used, as huggingface_hub does.
  const closed = await closedPort();
  const down = await downloadHubModel(ref(REPO), { ...s, endpoint: closed });
  assert.equal(down.dir, online.dir);
  await assert.rejects(downloadHubModel(ref(REPO), settings({ endpoint: closed })), /cannot reach http:\/\/127\.0\.0\.1:\d+ for shortgpt\/stories260K: ECONNREFUSED/);
});

test("a gated model names the page to accept its license, and downloads with the token", async () => {
  const page = `${hub.url}/${GATED}`;
  for (const token of [undefined, "hf_wrong"]) {
    await assert.rejects(downloadHubModel(ref(GATED), settings(token === undefined ? {} : { token })), (err: unknown) => {
      assert.ok(err instanceof HubError);
      assert.match(err.message, token === undefined ? /is a gated model: downloading it needs an access token \(HTTP 401\)/ : /has not been granted access \(HTTP 403\)/);
      assert.ok(err.details.hint!.includes(page), err.details.hint);
      assert.match(err.details.hint!, /accept its license.*HF_TOKEN/);
      return true;
    });
  }
  const from = hub.requests.length;
  const model = await downloadHubModel(ref(GATED), settings({ token: hub.token }));
  assert.ok(readFileSync(join(model.dir, "model.safetensors")).equals(readFileSync(join(source, "model.safetensors"))));
  const sent = hub.requests.slice(from);
  assert.ok(sent.filter((r) => r.path.includes("/resolve/")).every((r) => r.authorization === `Bearer ${hub.token}`));
  assert.ok(sent.filter((r) => r.path.startsWith("/cdn/")).every((r) => r.authorization === undefined), "the token stays with the Hub");
});

test("missing models and revisions are named", async () => {
  await assert.rejects(downloadHubModel(ref("shortgpt/no-such-model"), settings()), /model shortgpt\/no-such-model not found on http:\/\/127\.0\.0\.1:\d+ \(HTTP 401\)/);
  await assert.rejects(downloadHubModel(ref("shortgpt/no-such-model"), settings({ token: "hf_x" })), /not found .*\(HTTP 404\)/);
  await assert.rejects(downloadHubModel(ref(`${REPO}@no-such-branch`), settings()), /revision "no-such-branch" not found in shortgpt\/stories260K/);
  // A local path that exists is never taken for a Hub id.
  assert.equal(await resolveModelPath(source, settings({ endpoint: await closedPort() })), source);
});

test("a full disk is an output error that keeps the partial file", { skip: !existsSync("/dev/full") && "no /dev/full" }, async () => {
  const s = settings();
  const sha = (await import("node:crypto")).createHash("sha256").update(readFileSync(join(source, "model.safetensors"))).digest("hex");
  const blob = blobPath(s.cacheDir, REPO, sha);
  mkdirSync(join(blob, ".."), { recursive: true });
  symlinkSync("/dev/full", `${blob}.incomplete`); // every write there fails with ENOSPC
  await assert.rejects(downloadHubModel(ref(REPO), s), (err: unknown) => {
    assert.ok(err instanceof OutputError, String(err));
    assert.match(err.message, /no space left on the disk while writing .*\.incomplete/);
    assert.match(err.details.hint!, /HF_HUB_CACHE/);
    return true;
  });
});

const execFileAsync = promisify(execFile);

/** The CLI with the Hub variables set; asynchronous, so that the server in this process answers. */
async function cli(args: string[], env: Record<string, string>): Promise<{ status: number; stdout: string; stderr: string }> {
  try {
    const r = await execFileAsync(process.execPath, [join(repoRoot(), "dist", "src", "cli", "main.js"), ...args], { env: { ...process.env, CI: "true", HF_TOKEN: "", ...env }, maxBuffer: 1 << 24 });
    return { status: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { status: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

test("the CLI scores and prunes a Hub model: same scores as the local folder, pruned copy written locally", async () => {
  const cache = tempDir("shortgpt-hub-cli-");
  const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache };
  const out = tempDir("shortgpt-hub-out-");
  // A slice of the validation text: tokenizing the whole file would cost more than the scoring.
  const data = join(out, "stories.txt");
  writeFileSync(data, readFileSync(TINYSTORIES).subarray(0, 20_000));
  const scoreArgs = ["--data", data, "--seq-len", "64", "--max-tokens", "512", "--backend", "reference"];
  const viaHub = await cli(["score", REPO, ...scoreArgs, "--json", join(out, "hub.json")], env);
  assert.equal(viaHub.status, 0, viaHub.stderr);
  const local = await cli(["score", source, ...scoreArgs, "--json", join(out, "local.json")], {});
  assert.equal(local.status, 0, local.stderr);
  const bi = (f: string) => (JSON.parse(readFileSync(join(out, f), "utf8")) as { layers: Array<{ bi: number }> }).layers.map((l) => l.bi);
  assert.deepEqual(bi("hub.json"), bi("local.json"));

  const pruned = join(out, "pruned");
  const prune = await cli(["prune", REPO, "--layers", "1", "--out", pruned], { ...env, HF_HUB_OFFLINE: "1" });
  assert.equal(prune.status, 0, prune.stderr);
  assert.ok(!lstatSync(join(pruned, "model.safetensors")).isSymbolicLink(), "a local directory of real files");
  const inspect = await cli(["inspect", pruned, "--json", join(out, "inspect.json")], {});
  assert.equal(inspect.status, 0, inspect.stderr);
  assert.equal((JSON.parse(readFileSync(join(out, "inspect.json"), "utf8")) as { layers: number }).layers, 4);

  const offline = await cli(["inspect", "shortgpt/not-cached"], { ...env, HF_HUB_OFFLINE: "1" });
  assert.equal(offline.status, 1);
  assert.match(offline.stderr, /shortgpt inspect: error: shortgpt\/not-cached@main is not in the Hugging Face cache .* \(download it once/);
  const gated = await cli(["inspect", GATED], env);
  assert.equal(gated.status, 1);
  assert.ok(gated.stderr.includes(`accept its license there`) && gated.stderr.includes(`${hub.url}/${GATED}`), gated.stderr);
  const withToken = await cli(["inspect", GATED], { ...env, HF_TOKEN: hub.token });
  assert.equal(withToken.status, 0, withToken.stderr);
});

/** A Python with huggingface_hub, made once from the local wheel index; undefined where there is none. */
function hubPython(): string | undefined {
  const venv = join(tmpdir(), "shortgpt-hub-venv");
  const python = join(venv, "bin", "python3");
  if (existsSync(python) && spawnSync(python, ["-c", "import huggingface_hub"]).status === 0) return python;
  if (!existsSync("/opt/pypi/simple")) return undefined;
  if (spawnSync("python3", ["-m", "venv", venv]).status !== 0) return undefined;
  const pip = spawnSync(join(venv, "bin", "pip"), ["install", "-q", "--index-url", "file:///opt/pypi/simple", "--extra-index-url", "file:///opt/pypi-more/simple", "huggingface_hub"], { timeout: 120_000 });
  return pip.status === 0 ? python : undefined;
}

test("huggingface_hub reads the cache shortgpt filled without downloading, and shortgpt reuses what it fetched", { timeout: 180_000 }, async (t) => {
  const python = hubPython();
  if (python === undefined) return t.skip("no python3 with huggingface_hub (needs the local wheel index /opt/pypi)");
  const files = readdirSync(source).sort();
  const run = async (cache: string): Promise<Record<string, string>> => {
    const r = await execFileAsync(python, [join(repoRoot(), "test", "oracle", "hub_cache_oracle.py"), REPO, "main", ...files], {
      env: { ...process.env, HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_HUB_DISABLE_TELEMETRY: "1", HF_HUB_DISABLE_XET: "1", HF_TOKEN: "" },
    });
    return JSON.parse(r.stdout) as Record<string, string>;
  };
  // shortgpt first, then Python: same paths, no bytes fetched.
  const s = settings();
  const ours = await downloadHubModel(ref(REPO), s);
  let from = hub.requests.length;
  const paths = await run(s.cacheDir);
  assert.deepEqual(fetchedBytes(from), [], "huggingface_hub downloaded nothing");
  for (const f of files) assert.equal(paths[f], join(ours.dir, f));
  // Python first, then shortgpt: no bytes fetched either.
  const cache = tempDir("shortgpt-hub-py-");
  await run(cache);
  from = hub.requests.length;
  const reused = await downloadHubModel(ref(REPO), { ...s, cacheDir: cache });
  assert.deepEqual(fetchedBytes(from), [], "shortgpt downloaded nothing");
  assert.equal(reused.downloadedBytes, 0);
  for (const f of files) assert.ok(readFileSync(join(reused.dir, f)).equals(readFileSync(join(source, f))));
});

test("two downloads of one model into one cache at once (a job array on a shared cache) fetch each file once; a dead process's lock is taken over", async () => {
  const s = settings();
  const from = hub.requests.length;
  const [a, b] = await Promise.all([downloadHubModel(ref(REPO), s), downloadHubModel(ref(REPO), s)]);
  assert.equal(a.dir, b.dir);
  const gets = fetchedBytes(from).map((r) => r.path).filter((p) => !p.startsWith("/cdn/"));
  assert.equal(new Set(gets).size, gets.length, `each file fetched once: ${gets.join(", ")}`);
  assert.ok(openModel(a.dir).config.nLayers === 5);
  const locks = join(s.cacheDir, ".locks");
  assert.ok(existsSync(locks) && readdirSync(join(locks, readdirSync(locks)[0]!)).length === 0, "locks are released");
  // A lock left by a process of this host that no longer exists does not block.
  const fresh = settings();
  const first = await downloadHubModel(ref(REPO), { ...fresh, offline: false });
  const blobs = readdirSync(join(repoFolder(fresh.cacheDir, REPO), "blobs"));
  const other = settings();
  const lockDir = join(other.cacheDir, ".locks", `models--${REPO.replace("/", "--")}`);
  mkdirSync(lockDir, { recursive: true });
  for (const blob of blobs) writeFileSync(join(lockDir, `${blob}.lock`), `${(await import("node:os")).hostname()} 999999999`);
  const again = await downloadHubModel(ref(REPO), other);
  assert.ok(existsSync(join(again.dir, "config.json")) && first.dir.endsWith(again.dir.split("/").pop()!));
});
