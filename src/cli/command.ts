// What a command returns: the readable text for the terminal and the object for --json.

export interface CommandResult {
  text: string;
  json: unknown;
}

export interface Command {
  name: string;
  usage: string;
  summary: string;
  run(argv: string[]): Promise<CommandResult>;
}
