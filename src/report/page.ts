// The report page: one self-contained HTML file (inline CSS and SVG, no scripts, nothing
// fetched), with charts, tables, and what produced the numbers.

import { renderSvg, type VegaLiteSpec } from "./render.js";

export interface ReportTable {
  header: string[];
  rows: (string | number)[][];
}

export interface ReportSection {
  title: string;
  text?: string;
  chart?: { name: string; spec: VegaLiteSpec };
  table?: ReportTable;
}

export interface ReportPage {
  title: string;
  sections: ReportSection[];
  /** What produced the numbers: tool and runtime versions, model, data hashes, options. */
  provenance: Record<string, string | number | boolean>;
}

const escape = (text: string): string => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

function tableHtml(t: ReportTable): string {
  return `<table><thead><tr>${t.header.map((h) => `<th>${escape(h)}</th>`).join("")}</tr></thead><tbody>${t.rows.map((r) => `<tr>${r.map((c) => `<td>${escape(String(c))}</td>`).join("")}</tr>`).join("")}</tbody></table>`;
}

const STYLE = `body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.2rem .6rem;text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
figure{margin:.5rem 0}p.note{color:#555}`;

export async function renderPage(page: ReportPage): Promise<string> {
  const sections: string[] = [];
  for (const s of page.sections) {
    const parts = [`<h2>${escape(s.title)}</h2>`];
    if (s.text) parts.push(`<p class="note">${escape(s.text)}</p>`);
    if (s.chart) parts.push(`<figure class="chart" data-chart="${escape(s.chart.name)}">${await renderSvg(s.chart.spec)}</figure>`);
    if (s.table) parts.push(tableHtml(s.table));
    sections.push(`<section>${parts.join("\n")}</section>`);
  }
  const provenance = tableHtml({ header: ["field", "value"], rows: Object.entries(page.provenance).map(([k, v]) => [k, String(v)]) });
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escape(page.title)}</title><style>${STYLE}</style></head>
<body><h1>${escape(page.title)}</h1>
${sections.join("\n")}
<section><h2>What produced these numbers</h2>${provenance}</section>
</body></html>
`;
}
