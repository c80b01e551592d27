// Jupyter outputs (nbformat 4) rendered safely: HTML and SVG go through DOMPurify,
// text through ansi_up (which escapes it), images as data: URLs of known types.
// Outputs and markdown come from collaborators (and from whatever their code
// printed), so the sanitiser also drops what could restyle the page or send
// anything anywhere: `<style>`, forms and their controls, and every URL that would
// load something from elsewhere (only `data:` images and links that open in a new
// tab remain). The page's Content-Security-Policy blocks remote loads as well.

import DOMPurify from "dompurify";
import { AnsiUp } from "ansi_up";
import { marked } from "marked";

const ansi = new AnsiUp();
ansi.use_classes = true;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Bundle = Record<string, Json>;

const text = (value: Json | undefined): string =>
  Array.isArray(value) ? value.map((v) => String(v ?? "")).join("") : value == null ? "" : String(value);

const FORBID_TAGS = ["style", "link", "meta", "base", "form", "input", "button", "textarea", "select", "option", "iframe", "frame", "object", "embed", "portal"];
/** Attributes that make the browser fetch what they name. */
const LOADS = new Set(["src", "srcset", "poster", "background", "data", "xlink:href", "action", "formaction", "ping", "lowsrc", "dynsrc"]);
const SAFE_LINK = /^(https?:|mailto:|#)/i;

DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
  const name = data.attrName.toLowerCase();
  const value = data.attrValue.trim();
  if (LOADS.has(name) && !/^data:image\/(png|jpeg|gif|webp);/i.test(value) && !value.startsWith("#")) {
    data.keepAttr = false;
  } else if (name === "href" && node.nodeName.toLowerCase() !== "a") {
    if (!value.startsWith("#")) data.keepAttr = false;
  } else if (name === "href" && !SAFE_LINK.test(value)) {
    data.keepAttr = false;
  }
});
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName.toLowerCase() === "a" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

export function sanitizeHtml(html: string): string {
  return DOMPurify.sanitize(html, {
    USE_PROFILES: { html: true, svg: true, svgFilters: true },
    FORBID_TAGS,
    ADD_ATTR: ["target"],
  });
}

export function renderMarkdown(source: string): string {
  return sanitizeHtml(marked.parse(source, { async: false, gfm: true }) as string);
}

function pre(content: string, className: string): HTMLElement {
  const el = document.createElement("pre");
  el.className = className;
  el.innerHTML = ansi.ansi_to_html(content);
  return el;
}

const VEGA_LITE = /^application\/vnd\.vegalite\.v\d+\+json$/;

/** Automerge gives back its own objects; vega wants plain JSON. */
const plain = (value: Json | undefined): unknown => JSON.parse(JSON.stringify(value ?? null));

/**
 * A Vega-Lite chart, drawn by vega-embed (loaded only when a chart first shows).
 * Until then, or if it fails, the bundle's SVG or text stands in.
 */
function renderVegaLite(data: Bundle, mime: string): HTMLElement {
  const el = document.createElement("div");
  el.className = "output-data vega";
  const fallback = { ...data };
  delete fallback[mime];
  el.append(renderBundle(fallback));
  const spec = plain(data[mime]) as Record<string, unknown>;
  // vega-embed lets a spec's own `usermeta.embedOptions` override the options
  // below (turn the actions menu with "Open in Vega Editor" back on, swap the
  // loader); a notebook's output does not get to choose them.
  const usermeta = spec?.usermeta;
  if (usermeta && typeof usermeta === "object") delete (usermeta as { embedOptions?: unknown }).embedOptions;
  Promise.all([import("vega-embed"), import("./vega-offline")])
    .then(async ([{ default: embed }, { offlineEmbedOptions }]) => {
      const target = document.createElement("div");
      const errors: string[] = [];
      // The page allows no eval and no remote loads: vega's expression
      // interpreter and a loader that takes only data: URLs.
      const { view } = await embed(target, spec as never, offlineEmbedOptions(errors));
      await view.runAsync();
      if (errors.length > 0) throw new Error(errors[0]);
      el.replaceChildren(target);
    })
    .catch((error) => {
      el.title = `the chart could not be drawn interactively: ${error}`;
    });
  return el;
}

function renderBundle(data: Bundle): HTMLElement {
  const vega = Object.keys(data).find((k) => VEGA_LITE.test(k));
  if (vega) return renderVegaLite(data, vega);
  const el = document.createElement("div");
  el.className = "output-data";
  if (data["text/html"] !== undefined) {
    el.innerHTML = sanitizeHtml(text(data["text/html"]));
  } else if (data["image/svg+xml"] !== undefined) {
    el.innerHTML = DOMPurify.sanitize(text(data["image/svg+xml"]), { USE_PROFILES: { svg: true, svgFilters: true }, FORBID_TAGS });
  } else if (data["image/png"] !== undefined || data["image/jpeg"] !== undefined) {
    const kind = data["image/png"] !== undefined ? "image/png" : "image/jpeg";
    const img = document.createElement("img");
    img.src = `data:${kind};base64,${text(data[kind]).replace(/\s/g, "")}`;
    img.alt = "output image";
    el.append(img);
  } else if (data["text/markdown"] !== undefined) {
    el.innerHTML = renderMarkdown(text(data["text/markdown"]));
  } else if (data["application/json"] !== undefined) {
    el.append(pre(JSON.stringify(data["application/json"], null, 2), "output-text"));
  } else if (data["text/plain"] !== undefined) {
    el.append(pre(text(data["text/plain"]), "output-text"));
  } else {
    const kinds = Object.keys(data).join(", ");
    el.append(pre(`(an output this workspace does not display yet: ${kinds})`, "output-text muted"));
  }
  return el;
}

/** One output element per nbformat output. */
export function renderOutputs(outputs: Json[]): HTMLElement[] {
  return outputs.map((output) => {
    // Scalar strings come out of automerge as ImmutableString objects.
    const o = (output ?? {}) as Record<string, Json>;
    switch (text(o.output_type)) {
      case "stream":
        return pre(text(o.text), text(o.name) === "stderr" ? "output-stream stderr" : "output-stream");
      case "error": {
        const lines = Array.isArray(o.traceback) && o.traceback.length > 0
          ? (o.traceback as Json[]).map((l) => String(l)).join("\n")
          : `${text(o.ename)}: ${text(o.evalue)}`;
        return pre(lines, "output-error");
      }
      case "execute_result":
      case "display_data":
        return renderBundle((o.data ?? {}) as Bundle);
      default:
        return pre(`(unknown output type ${text(o.output_type)})`, "output-text muted");
    }
  });
}
