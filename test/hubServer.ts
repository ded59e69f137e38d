// A stand-in for the Hugging Face Hub on 127.0.0.1, serving local folders as model repos through
// the endpoints the downloader and huggingface_hub use, with the Hub's own answers:
//   GET  /api/models/{repo}/revision/{rev}      {sha, siblings: [{rfilename}], gated}
//   GET  /api/models/{repo}/tree/{rev}          [{type, path, oid, size, lfs}] (huggingface_hub's snapshot_download)
//   HEAD /{repo}/resolve/{rev}/{file}           X-Repo-Commit, ETag (git blob sha1); for LFS files
//   GET                                          (*.safetensors) a 302 to /cdn/{sha256} with
//                                                X-Linked-Etag (the sha256) and X-Linked-Size
//   GET  /cdn/{sha256}                          the bytes, with Range and ETag (never needs a token),
//                                                on another host name (127.0.0.2)
// Errors carry X-Error-Code as the Hub sends it: RepoNotFound (401 without a token, 404 with one),
// RevisionNotFound, EntryNotFound, GatedRepo (401 without a token, 403 with a wrong one).
// A repo named "renamed" answers with a relative 307 to its new name, as the Hub does.

import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";

export interface ServedRepo {
  dir: string;
  gated?: boolean;
  /** Extra files the repo lists and serves (e.g. a pytorch_model.bin that must never be fetched). */
  extra?: Record<string, Buffer>;
}

export interface LoggedRequest {
  method: string;
  path: string;
  range?: string;
  authorization?: string;
  userAgent?: string;
}

export interface TestHub {
  url: string;
  token: string;
  requests: LoggedRequest[];
  commitOf(repo: string): string;
  /** The next GET of this file's bytes sends `afterBytes` bytes, then drops the connection. */
  dropOnce(file: string, afterBytes: number): void;
  /** The next GET of this file's bytes from the CDN is refused with 403, as an expired signed URL is. */
  expireOnce(file: string): void;
  /** The next GET of this file's bytes has one byte flipped. */
  corruptOnce(file: string): void;
  close(): Promise<void>;
}

interface Served {
  bytes: Buffer;
  lfs: boolean;
  gitSha1: string;
  sha256: string;
}

const gitBlobSha1 = (bytes: Buffer): string => createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex");

export async function startTestHub(repos: Record<string, ServedRepo>, token = "hf_test_token_260k"): Promise<TestHub> {
  const files = new Map<string, Map<string, Served>>();
  const commits = new Map<string, string>();
  const bySha256 = new Map<string, Served>();
  for (const [repo, spec] of Object.entries(repos)) {
    const map = new Map<string, Served>();
    const entries: Array<[string, Buffer]> = readdirSync(spec.dir).map((f) => [f, readFileSync(join(spec.dir, f))]);
    for (const [name, bytes] of [...entries, ...Object.entries(spec.extra ?? {})]) {
      const served: Served = { bytes, lfs: /\.(safetensors|bin)$/.test(name), gitSha1: gitBlobSha1(bytes), sha256: createHash("sha256").update(bytes).digest("hex") };
      map.set(name, served);
      bySha256.set(served.sha256, served);
    }
    files.set(repo, map);
    commits.set(repo, createHash("sha1").update(repo).update([...map.values()].map((s) => s.sha256).join()).digest("hex"));
  }
  const requests: LoggedRequest[] = [];
  const drops = new Map<string, number>();
  const corrupt = new Set<string>();
  const expired = new Set<string>();
  let base = "";
  let cdn = "";

  const fail = (res: ServerResponse, status: number, code: string | undefined, message: string): void => {
    res.writeHead(status, { "content-type": "application/json", ...(code ? { "x-error-code": code, "x-error-message": message } : {}) });
    res.end(JSON.stringify({ error: message }));
  };

  /** The repo's files, or an error answered as the Hub answers it. */
  const access = (req: IncomingMessage, res: ServerResponse, repo: string, rev: string, checkGate: boolean): Map<string, Served> | undefined => {
    const auth = req.headers.authorization;
    const map = files.get(repo);
    if (!map) {
      fail(res, auth ? 404 : 401, "RepoNotFound", "Repository not found");
      return undefined;
    }
    if (checkGate && repos[repo]!.gated && auth !== `Bearer ${token}`) {
      fail(res, auth ? 403 : 401, "GatedRepo", `Access to model ${repo} is restricted. Visit ${base}/${repo} to ask for access.`);
      return undefined;
    }
    if (rev !== "main" && rev !== commits.get(repo)) {
      fail(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
      return undefined;
    }
    return map;
  };

  const sendBytes = (req: IncomingMessage, res: ServerResponse, key: string, served: Served, extraHeaders: Record<string, string>): void => {
    let bytes = served.bytes;
    if (corrupt.delete(key)) {
      bytes = Buffer.from(bytes);
      bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 0xff;
    }
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    let start = 0;
    const headers: Record<string, string | number> = { ...extraHeaders, "accept-ranges": "bytes", "content-type": "application/octet-stream" };
    if (range) {
      start = Number(range[1]);
      if (start >= bytes.length) {
        res.writeHead(416, { "content-range": `bytes */${bytes.length}` });
        res.end();
        return;
      }
      headers["content-range"] = `bytes ${start}-${bytes.length - 1}/${bytes.length}`;
    }
    headers["content-length"] = bytes.length - start;
    res.writeHead(range ? 206 : 200, headers);
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    const drop = drops.get(key);
    if (drop !== undefined) {
      drops.delete(key);
      // Flush a part, then cut the socket: the client sees a body that ends early with an error.
      res.write(bytes.subarray(start, Math.max(start, drop)), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(bytes.subarray(start));
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", base);
    const path = decodeURIComponent(url.pathname);
    requests.push({
      method: req.method ?? "", path,
      ...(req.headers.range ? { range: req.headers.range } : {}),
      ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
      ...(req.headers["user-agent"] ? { userAgent: req.headers["user-agent"] } : {}),
    });
    if (/^\/(api\/models\/)?shortgpt\/renamed\//.test(path)) {
      res.writeHead(307, { location: url.pathname.replace("shortgpt/renamed/", "shortgpt/stories260K/") });
      res.end();
      return;
    }
    let m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(path);
    if (m && req.method === "GET") {
      const [, repo, rev] = m as unknown as [string, string, string];
      const map = access(req, res, repo, rev, false); // model info is public even for gated repos
      if (!map) return;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ _id: repo, id: repo, modelId: repo, sha: commits.get(repo), private: false, gated: repos[repo]!.gated ? "manual" : false, siblings: [...map.keys()].sort().map((rfilename) => ({ rfilename })) }));
      return;
    }
    // The file list huggingface_hub's snapshot_download reads (flat repos: one page, no folders).
    m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)$/.exec(path);
    if (m && req.method === "GET") {
      const [, repo, rev] = m as unknown as [string, string, string];
      const map = access(req, res, repo, rev, false);
      if (!map) return;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify([...map.entries()].sort().map(([path, s]) => ({
        type: "file", oid: s.gitSha1, size: s.bytes.length, path, ...(s.lfs ? { lfs: { oid: s.sha256, size: s.bytes.length, pointerSize: 134 } } : {}),
      }))));
      return;
    }
    m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (m && (req.method === "GET" || req.method === "HEAD")) {
      const [, repo, rev, file] = m as unknown as [string, string, string, string];
      const map = access(req, res, repo, rev, true);
      if (!map) return;
      const served = map.get(file);
      if (!served) return fail(res, 404, "EntryNotFound", `${file} does not exist on "${rev}"`);
      const common = { "x-repo-commit": commits.get(repo)!, etag: `"${served.gitSha1}"` };
      if (served.lfs) {
        res.writeHead(302, { ...common, location: `${cdn}/cdn/${served.sha256}`, "x-linked-etag": `"${served.sha256}"`, "x-linked-size": String(served.bytes.length), "content-length": 0 });
        res.end();
        return;
      }
      return sendBytes(req, res, file, served, common);
    }
    m = /^\/cdn\/([0-9a-f]{64})$/.exec(path);
    if (m && (req.method === "GET" || req.method === "HEAD")) {
      const served = bySha256.get(m[1]!);
      if (!served) return fail(res, 404, undefined, "no such object");
      const name = [...files.values()].flatMap((map) => [...map.entries()]).find(([, s]) => s === served)![0];
      if (expired.delete(name)) return fail(res, 403, undefined, "Request has expired");
      return sendBytes(req, res, name, served, { etag: `"${served.sha256}"` });
    }
    fail(res, 404, undefined, "not a Hub endpoint");
  });
  // The CDN on another host name, as the Hub's is: clients must not send it the token, and
  // huggingface_hub follows only redirects that stay on the Hub's host. All of 127/8 is loopback
  // on Linux; elsewhere the CDN falls back to another port of 127.0.0.1.
  const cdnServer = createServer(server.listeners("request")[0] as Parameters<typeof createServer>[1]);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const cdnHost = await new Promise<string>((resolve) => {
    cdnServer.once("error", () => cdnServer.listen(0, "127.0.0.1", () => resolve("127.0.0.1")));
    cdnServer.listen(0, "127.0.0.2", () => resolve("127.0.0.2"));
  });
  cdn = `http://${cdnHost}:${(cdnServer.address() as AddressInfo).port}`;
  return {
    url: base, token, requests,
    commitOf: (repo) => commits.get(repo)!,
    dropOnce: (file, afterBytes) => void drops.set(file, afterBytes),
    corruptOnce: (file) => void corrupt.add(file),
    expireOnce: (file) => void expired.add(file),
    close: async () => {
      for (const srv of [server, cdnServer]) {
        srv.closeAllConnections();
        await new Promise<void>((resolve) => srv.close(() => resolve()));
      }
    },
  };
}
