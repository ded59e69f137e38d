// Vega-Lite specs rendered to SVG in Node (no browser, no canvas): the report's charts are
// static markup that opens offline.

import * as vega from "vega";
import * as vegaLite from "vega-lite";

export type VegaLiteSpec = vegaLite.TopLevelSpec;

export async function renderSvg(spec: VegaLiteSpec): Promise<string> {
  const compiled = vegaLite.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
