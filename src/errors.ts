// Typed errors: every failure the user can cause carries a code, what it names, and a hint on what to do.

export type ErrorCode =
  | "CHECKPOINT" // a model file is malformed or inconsistent
  | "TOKENIZER" // a tokenizer file is malformed or does not match the model
  | "DATA" // a text data file is empty, malformed or too short
  | "OPTION" // a command-line or API option is invalid
  | "OUTPUT" // an output path cannot be written safely
  | "UNSUPPORTED" // a valid input this version cannot handle
  | "DEVICE" // a GPU, its driver or libraries are missing, or the device ran out of memory
  | "HUB"; // a model on the Hugging Face Hub cannot be found, reached, accessed or downloaded

export interface ShortgptErrorDetails {
  file?: string;
  tensor?: string;
  option?: string;
  expected?: string | number;
  got?: string | number;
  hint?: string;
}

export class ShortgptError extends Error {
  readonly code: ErrorCode;
  readonly details: ShortgptErrorDetails;

  constructor(code: ErrorCode, message: string, details: ShortgptErrorDetails = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }

  /**
   * One line for the terminal: the message, then the hint. What a hostile file can put in a
   * message is defused: newlines are folded, control characters (escape sequences) become "?",
   * a run of more than 300 characters without a space is shortened, and so is the whole line
   * beyond 1000 characters (its start and its end, the hint, are kept).
   */
  describe(): string {
    const hint = this.details.hint ? ` (${this.details.hint})` : "";
    const line = `${this.message}${hint}`
      .replace(/\s*[\r\n]+\s*/g, " ")
      .replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, "?")
      .replace(/\S{301,}/g, (run) => `${run.slice(0, 120)}...(${run.length} characters)`);
    return line.length > 1000 ? `${line.slice(0, 650)} ...(${line.length - 950} characters)... ${line.slice(-300)}` : line;
  }
}

export class CheckpointError extends ShortgptError {
  constructor(message: string, details: ShortgptErrorDetails = {}) {
    super("CHECKPOINT", message, details);
  }
}

export class TokenizerError extends ShortgptError {
  constructor(message: string, details: ShortgptErrorDetails = {}) {
    super("TOKENIZER", message, details);
  }
}

export class DataError extends ShortgptError {
  constructor(message: string, details: ShortgptErrorDetails = {}) {
    super("DATA", message, details);
  }
}

export class OptionError extends ShortgptError {
  constructor(message: string, details: ShortgptErrorDetails = {}) {
    super("OPTION", message, details);
  }
}

export class OutputError extends ShortgptError {
  constructor(message: string, details: ShortgptErrorDetails = {}) {
    super("OUTPUT", message, details);
  }
}

export class UnsupportedError extends ShortgptError {
  constructor(message: string, details: ShortgptErrorDetails = {}) {
    super("UNSUPPORTED", message, details);
  }
}

export class DeviceError extends ShortgptError {
  constructor(message: string, details: ShortgptErrorDetails = {}) {
    super("DEVICE", message, details);
  }
}

export class HubError extends ShortgptError {
  constructor(message: string, details: ShortgptErrorDetails = {}) {
    super("HUB", message, details);
  }
}
