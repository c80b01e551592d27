// A small SVG line chart for metric series: no chart library for a few lines.

export interface Series {
  name: string;
  color: string;
  points: [number, number][]; // (step, value)
}

const SVG = "http://www.w3.org/2000/svg";

function el(tag: string, attrs: Record<string, string | number>, text?: string) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

const fmt = (v: number) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : v.toPrecision(3));

export function lineChart(title: string, series: Series[], width = 420, height = 220): SVGSVGElement {
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart", role: "img" }) as SVGSVGElement;
  svg.append(el("title", {}, title));
  const pad = { left: 52, right: 12, top: 24, bottom: 28 };
  const all = series.flatMap((s) => s.points);
  svg.append(el("text", { x: pad.left, y: 15, class: "chart-title" }, title));
  if (all.length === 0) {
    svg.append(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "chart-empty" }, "no points yet"));
    return svg;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  if (y0 === y1) [y0, y1] = [y0 - Math.abs(y0 || 1) * 0.1, y1 + Math.abs(y1 || 1) * 0.1];
  const X = (x: number) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const Y = (y: number) => height - pad.bottom - ((y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  svg.append(el("line", { x1: pad.left, y1: height - pad.bottom, x2: width - pad.right, y2: height - pad.bottom, class: "axis" }));
  svg.append(el("line", { x1: pad.left, y1: pad.top, x2: pad.left, y2: height - pad.bottom, class: "axis" }));
  for (const v of [y0, (y0 + y1) / 2, y1]) {
    svg.append(el("text", { x: pad.left - 4, y: Y(v) + 4, "text-anchor": "end", class: "tick" }, fmt(v)));
  }
  for (const v of [x0, x1]) {
    svg.append(el("text", { x: X(v), y: height - pad.bottom + 16, "text-anchor": "middle", class: "tick" }, fmt(v)));
  }
  for (const s of series) {
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    if (pts.length === 1) {
      svg.append(el("circle", { cx: X(pts[0][0]), cy: Y(pts[0][1]), r: 3, fill: s.color, "data-series": s.name }));
    } else {
      svg.append(el("polyline", {
        points: pts.map((p) => `${X(p[0])},${Y(p[1])}`).join(" "),
        fill: "none", stroke: s.color, "stroke-width": 2, "data-series": s.name,
      }));
    }
  }
  return svg;
}
