// Plain-text tables and bar charts for the terminal.

export function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, c) => Math.max(...cells.map((r) => (r[c] ?? "").length)));
  const line = (r: string[]): string => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...cells.slice(1).map(line)].join("\n");
}

/** One bar per row, scaled to the largest value. */
export function barChart(rows: { label: string; value: number; mark?: string }[], width = 40): string {
  const max = Math.max(...rows.map((r) => r.value), 1e-12);
  const labelWidth = Math.max(...rows.map((r) => r.label.length));
  return rows
    .map((r) => `${r.label.padStart(labelWidth)} | ${"█".repeat(Math.max(0, Math.round((r.value / max) * width))).padEnd(width)} ${r.value.toFixed(4)}${r.mark ? `  ${r.mark}` : ""}`)
    .join("\n");
}

export function fixed(x: number, digits = 4): string {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}
