// The --report page opens in headless Chromium (Debian's chromium, driven by playwright-core):
// no console errors, every chart rendered with marks and a size, and a screenshot saved.

import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { test } from "node:test";
import { chromium } from "playwright-core";
import { sharedPath } from "../src/shared.js";
import { MODEL_BIN, TINYSTORIES, runCli, tempDir } from "./helpers.js";

const CHROMIUM = "/usr/bin/chromium";
const WINDOW = ["--seq-len", "128", "--max-tokens", "2048"];

/** Opens a report and returns what the page showed: console errors, and each chart's size and mark count. */
async function inspectReport(dir: string, screenshot: string): Promise<{ errors: string[]; charts: { name: string; width: number; height: number; marks: number }[] }> {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} missing: .ci/run installs Debian's chromium`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()}`));
    await page.goto(pathToFileURL(join(dir, "index.html")).href, { waitUntil: "load" });
    const charts = await page.$$eval("figure.chart", (figures) => figures.map((f) => {
      const svg = f.querySelector("svg");
      const box = svg?.getBoundingClientRect();
      return { name: f.getAttribute("data-chart") ?? "", width: box?.width ?? 0, height: box?.height ?? 0, marks: svg ? svg.querySelectorAll("path, rect, line, circle").length : 0 };
    }));
    await page.screenshot({ path: screenshot, fullPage: true });
    return { errors, charts };
  } finally {
    await browser.close();
  }
}

test("compare and sweep reports open in headless Chromium with every chart drawn and no console errors", async () => {
  const dir = tempDir();
  const shots = join(dir, "screenshots");
  mkdirSync(shots);
  const compare = join(dir, "compare-report");
  let r = runCli(["compare", MODEL_BIN, "--data", TINYSTORIES, ...WINDOW, "--remove", "2", "--metrics", "bi,relative-magnitude,ppl,angular,reverse-order", "--eval", `ppl:${TINYSTORIES},piqa`, "--data-dir", sharedPath("data"), "--limit", "10", "--report", compare]);
  assert.equal(r.status, 0, r.stderr);
  const sweep = join(dir, "sweep-report");
  r = runCli(["sweep", MODEL_BIN, "--data", TINYSTORIES, ...WINDOW, "--max-remove", "2", "--eval", `ppl:${TINYSTORIES},piqa`, "--data-dir", sharedPath("data"), "--limit", "10", "--report", sweep]);
  assert.equal(r.status, 0, r.stderr);
  const score = join(dir, "score-report");
  r = runCli(["score", MODEL_BIN, "--data", TINYSTORIES, ...WINDOW, "--metric", "bi,ppl", "--bootstrap", "20", "--remove", "2", "--report", score]);
  assert.equal(r.status, 0, r.stderr);
  for (const [report, expected] of [[compare, ["metrics", "overlap"]], [sweep, ["scores-bi", "quality"]], [score, ["scores-bi", "scores-ppl", "intervals-bi", "intervals-ppl"]]] as const) {
    const html = readFileSync(join(report, "index.html"), "utf8");
    assert.doesNotMatch(html, /<script|https?:\/\/(?!www\.w3\.org)/, "the page loads nothing and runs nothing");
    assert.match(html, /What produced these numbers/);
    const screenshot = join(shots, `${report.split("/").pop()}.png`);
    const { errors, charts } = await inspectReport(report, screenshot);
    assert.deepEqual(errors, [], `${report}: console errors`);
    assert.deepEqual(charts.map((c) => c.name), expected);
    for (const c of charts) assert.ok(c.width > 100 && c.height > 100 && c.marks > 5, `${report} chart ${c.name}: ${JSON.stringify(c)}`);
    assert.ok(statSync(screenshot).size > 10_000, "a screenshot with content");
  }
  // The reports record what produced them.
  assert.match(readFileSync(join(compare, "index.html"), "utf8"), /data sha256/);
});

test("--report refuses a folder that holds other files, before any work, and writes nothing", () => {
  const dir = tempDir();
  writeFileSync(join(dir, "notes.txt"), "mine");
  const r = runCli(["score", MODEL_BIN, "--data", TINYSTORIES, "--report", dir]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--report .* exists and holds other files \(notes\.txt\)/);
  assert.equal(readFileSync(join(dir, "notes.txt"), "utf8"), "mine");
});
