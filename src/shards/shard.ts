// --shard i/n: the i-th of n disjoint parts of a run's windows or items. Round-robin (index % n)
// rather than contiguous ranges, so every part gets a mix of long and short windows and of
// subjects, and the parts finish at about the same time.

import { OptionError } from "../errors.js";

export interface Shard {
  /** 1-based, as Slurm's array ids and the command line count. */
  index: number;
  count: number;
}

export function parseShard(text: string, option = "--shard"): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  const index = m ? Number(m[1]) : NaN;
  const count = m ? Number(m[2]) : NaN;
  if (!m || !Number.isSafeInteger(index) || !Number.isSafeInteger(count) || count < 1 || index < 1 || index > count) {
    throw new OptionError(`${option} ${text}: expected i/n with 1 <= i <= n`, { option, got: text, hint: "e.g. --shard 2/8 runs the second of eight parts" });
  }
  return { index, count };
}

/** The indices in 0..total-1 that shard takes, in increasing order. */
export function shardIndices(total: number, shard: Shard): number[] {
  const out: number[] = [];
  for (let i = shard.index - 1; i < total; i += shard.count) out.push(i);
  return out;
}

/** Refuses a shard that would get nothing to do: the partial would prove nothing and merge could not tell it from a lost one. */
export function checkShardNotEmpty(total: number, shard: Shard, what: string): void {
  if (shard.index > total) {
    throw new OptionError(`--shard ${shard.index}/${shard.count}: the run has only ${total} ${what}, so this part would be empty`, {
      option: "--shard", expected: `at most ${total} parts`, got: shard.count, hint: `use --shard i/n with n <= ${total}`,
    });
  }
}
