import { defineConfig } from "vite";

// The chart script `ferrolab export --interactive` inlines into reports: one
// self-contained classic script (no modules, no chunks, nothing fetched), next to
// the workspace in dist/. Runs after the workspace build, which empties dist/.

// d3-dsv (vega's CSV/TSV reader) builds each row's object with `new Function`,
// which the report's policy forbids (no 'unsafe-eval'). The build swaps in a
// closure that does the same, and fails if the library no longer has the code.
const DSV_CONVERTER = `function objectConverter(columns) {
  return new Function("d", "return {" + columns.map(function(name, i) {
    return JSON.stringify(name) + ": d[" + i + "] || \\"\\"";
  }).join(",") + "}");
}`;
const noEvalDsv = {
  name: "ferrolab-dsv-without-eval",
  transform(code: string, id: string) {
    if (!/d3-dsv\/dist\/d3-dsv\.mjs$/.test(id)) return null;
    const patched = code.replace(
      DSV_CONVERTER,
      `function objectConverter(columns) {
  return function(d) { return Object.fromEntries(columns.map(function(name, i) { return [name, d[i] || ""]; })); };
}`,
    );
    if (patched === code) throw new Error("d3-dsv's objectConverter changed; revisit vite.report.config.ts");
    return { code: patched, map: null };
  },
};

export default defineConfig({
  plugins: [noEvalDsv],
  define: { "process.env.NODE_ENV": JSON.stringify("production") },
  build: {
    target: "es2022",
    outDir: "dist",
    emptyOutDir: false,
    copyPublicDir: false,
    sourcemap: false,
    reportCompressedSize: false,
    chunkSizeWarningLimit: 4096,
    lib: {
      entry: "src/report-charts.ts",
      formats: ["iife"],
      name: "ferrolabReportCharts",
      fileName: () => "report-charts.js",
    },
  },
});
