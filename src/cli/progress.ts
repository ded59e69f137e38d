// A progress line on stderr (done, rate, time left) that stays quiet when stderr is not a terminal.

export class Progress {
  private readonly start = Date.now();
  private lastDraw = 0;
  private readonly enabled: boolean;

  constructor(private readonly label: string, private readonly unit: string) {
    this.enabled = Boolean(process.stderr.isTTY) && !process.env["CI"];
  }

  update(done: number, total: number): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.lastDraw < 100 && done < total) return;
    this.lastDraw = now;
    const seconds = (now - this.start) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const left = rate > 0 ? (total - done) / rate : 0;
    const width = 24;
    const filled = Math.round((done / Math.max(total, 1)) * width);
    const bar = "#".repeat(filled) + "-".repeat(width - filled);
    process.stderr.write(`\r${this.label} [${bar}] ${done}/${total} ${this.unit} ${rate.toFixed(0)} ${this.unit}/s ${left.toFixed(0)}s left   `);
  }

  done(): void {
    if (this.enabled) process.stderr.write("\r\x1b[K");
  }

  /** A callback for library functions that report (done, total). */
  get callback(): (done: number, total: number) => void {
    return (done, total) => this.update(done, total);
  }
}
