// Vega-Lite specs rendered to SVG in Node (no browser, no canvas): the report's charts are
// static markup that opens offline. Vega is loaded on the first chart, so commands run without
// it unless a report is asked for (and start faster).

import type * as VegaLite from "vega-lite";

export type VegaLiteSpec = VegaLite.TopLevelSpec;

export async function renderSvg(spec: VegaLiteSpec): Promise<string> {
  const [vega, vegaLite] = await Promise.all([import("vega"), import("vega-lite")]);
  const compiled = vegaLite.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
