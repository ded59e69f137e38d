// --report DIR for score, prune, eval, sweep and compare: the command's result as a static page.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { renderPage, type ReportPage } from "../report/page.js";
import { checkReportDir, writeReport } from "../report/writeReport.js";
import { repoRoot } from "../shared.js";
import { type OptionSpec, type Parsed, str } from "./args.js";

export const REPORT_OPTIONS: OptionSpec = { report: { type: "string" } };

/** Refuses an unusable --report folder before any work is done. */
export function checkReportOption(p: Parsed): void {
  const dir = str(p, "report");
  if (dir !== undefined) checkReportDir(dir);
}

function packageVersion(name?: string): string {
  const pkg = JSON.parse(readFileSync(join(repoRoot(), name ? join("node_modules", name, "package.json") : "package.json"), "utf8")) as { version: string };
  return pkg.version;
}

/** Tool and runtime versions, the command line and the time, for every report. */
export function provenance(command: string, extra: Record<string, string | number | boolean>): ReportPage["provenance"] {
  return {
    tool: `shortgpt ${packageVersion()}`, command: `shortgpt ${command} ${process.argv.slice(3).join(" ")}`.trim(),
    node: process.version, "onnxruntime-node": packageVersion("onnxruntime-node"), "vega-lite": packageVersion("vega-lite"),
    created: new Date().toISOString(), ...extra,
  };
}

export async function writeReportIfAsked(p: Parsed, page: () => ReportPage, json: unknown): Promise<string> {
  const dir = str(p, "report");
  if (dir === undefined) return "";
  writeReport(dir, await renderPage(page()), json);
  return `\nreport: ${join(dir, "index.html")}`;
}
