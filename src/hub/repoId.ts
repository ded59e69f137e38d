// A Hub model named on the command line: `owner/name[@revision]`, checked with the Hub's own
// rules for repo ids so that a mistyped local path is not sent to the network.

import { OptionError } from "../errors.js";

export interface HubRepoRef {
  /** owner/name */
  repo: string;
  /** A branch, tag or 40-hex commit; "main" when not given. */
  revision: string;
}

// huggingface_hub's validate_repo_id: letters, digits, "-", "_", "."; no "--" or ".." (the
// cache folder joins owner and name with "--"); not starting or ending with "-" or "."; at most 96.
const PART = /^[A-Za-z0-9_.-]+$/;

function validPart(part: string): boolean {
  return PART.test(part) && !part.includes("--") && !part.includes("..") && !/^[-.]|[-.]$/.test(part);
}

/** The Hub reference in `text`, or undefined when it is not of the form owner/name[@revision]. */
export function parseHubId(text: string): HubRepoRef | undefined {
  const at = text.indexOf("@");
  const repo = at < 0 ? text : text.slice(0, at);
  const revision = at < 0 ? "main" : text.slice(at + 1);
  const parts = repo.split("/");
  if (parts.length !== 2 || repo.length > 96 || !parts.every(validPart)) return undefined;
  // The revision becomes a path under refs/: no empty, "." or ".." segments.
  if (at >= 0 && (!/^[A-Za-z0-9_.\-/]+$/.test(revision) || revision.split("/").some((seg) => seg === "" || seg === "." || seg === ".."))) {
    throw new OptionError(`"${text}": the revision "${revision}" is not a branch, tag or commit name`, { got: revision, hint: "write owner/name@revision, e.g. openai-community/gpt2@main" });
  }
  return { repo, revision };
}

export const COMMIT_HASH = /^[0-9a-f]{40}$/;
