// A report folder (index.html + report.json) appears whole or not at all, and replaces only
// an earlier report: a folder holding anything else is refused.

import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { OutputError } from "../errors.js";
import { claimTempPath, syncToDisk } from "../util/atomicWrite.js";

const REPORT_FILES = ["index.html", "report.json"];

export function checkReportDir(dir: string): void {
  if (!existsSync(dirname(resolve(dir)))) throw new OutputError(`the folder of --report ${dir} does not exist`, { file: dir, option: "--report", hint: "create the parent folder first" });
  if (existsSync(dir)) {
    const other = readdirSync(dir).filter((f) => !REPORT_FILES.includes(f));
    if (other.length > 0) {
      throw new OutputError(`--report ${dir} exists and holds other files (${other.slice(0, 3).join(", ")})`, { file: dir, option: "--report", hint: "choose a new folder; only an earlier report is replaced" });
    }
  }
}

export function writeReport(dir: string, html: string, json: unknown): void {
  checkReportDir(dir);
  const temp = claimTempPath(dir);
  try {
    mkdirSync(temp);
    writeFileSync(join(temp, "index.html"), html, { flag: "wx" });
    writeFileSync(join(temp, "report.json"), JSON.stringify(json, null, 2) + "\n", { flag: "wx" });
    syncToDisk(temp);
    if (existsSync(dir)) rmSync(dir, { recursive: true });
    renameSync(temp, dir);
  } catch (err) {
    rmSync(temp, { recursive: true, force: true });
    throw err;
  }
}
