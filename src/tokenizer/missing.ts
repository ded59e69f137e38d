// Stands in for the tokenizer of a checkpoint that has none (a Hugging Face directory without
// tokenizer.json): token ids can still be fed directly, but text cannot be encoded.

import { TokenizerError } from "../errors.js";
import type { Tokenizer } from "./tokenizer.js";

export class MissingTokenizer implements Tokenizer {
  readonly description: string;
  readonly addsBos: boolean;
  constructor(readonly vocabSize: number, readonly bosId: number, readonly eosId: number, private readonly dir: string) {
    this.addsBos = bosId >= 0;
    this.description = `none (${dir} has no tokenizer.json)`;
  }
  private fail(): never {
    throw new TokenizerError(`${this.dir} has no tokenizer.json, so text cannot be tokenized for this model`, {
      file: this.dir, hint: "copy the model's tokenizer.json (and tokenizer_config.json) into the directory",
    });
  }
  encode(): number[] {
    return this.fail();
  }
  decode(): string {
    return this.fail();
  }
  decodeToken(): Uint8Array {
    return this.fail();
  }
}
