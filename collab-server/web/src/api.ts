// The REST side of the server: signing in, who we are, notebooks.

const TOKEN_KEY = "ferrolab.token";

export type Role = "viewer" | "editor" | "owner";
export interface User {
  name: string;
  role: Role;
  token_id: string;
}
export interface Entry {
  id: string;
  title: string;
  created: string;
  updated: string;
  notebook: string;
  runtime: string;
}

/**
 * Signs in with a token, if one is given (a sign-in link's `?token=`, or the
 * form): the server answers with an HttpOnly session cookie, and the token is
 * dropped — taken out of the address bar first, and never stored by the page,
 * so neither the page's script nor any link or URL holds it afterwards.
 */
export async function signInWith(token?: string | null): Promise<void> {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  // Tokens kept by an older version of this page.
  localStorage.removeItem(TOKEN_KEY);
  const given = token ?? fromUrl;
  if (!given) return;
  const response = await fetch("/api/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { Authorization: `Bearer ${given}` },
  });
  if (!response.ok) {
    const json = await response.json().catch(() => undefined);
    throw new ApiError(response.status, json?.error?.message ?? response.statusText);
  }
}

export async function signOut(): Promise<void> {
  await fetch("/api/session", { method: "DELETE", credentials: "same-origin" });
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The REST API, on the browser's session cookie. */
export class Api {
  async call<T>(method: string, path: string, body?: BodyInit): Promise<T> {
    let response: Response;
    try {
      response = await fetch(path, { method, body, credentials: "same-origin" });
    } catch (error) {
      throw new ApiError(0, `the server cannot be reached (${error}); is it running?`);
    }
    const text = await response.text();
    let json: unknown = undefined;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON */
    }
    if (!response.ok) {
      const message = (json as { error?: { message?: string } })?.error?.message ?? (text || response.statusText);
      throw new ApiError(response.status, message);
    }
    return json as T;
  }

  workspace() {
    return this.call<{ index: string; user: User }>("GET", "/api/workspace");
  }
  create(title: string) {
    return this.call<Entry>("POST", "/api/notebooks", JSON.stringify({ title }));
  }
  importFile(name: string, text: string) {
    const title = name.replace(/\.ipynb$/i, "");
    return this.call<Entry>("POST", `/api/notebooks?title=${encodeURIComponent(title)}`, text);
  }
  rename(id: string, title: string) {
    return this.call<Entry>("PATCH", `/api/notebooks/${encodeURIComponent(id)}`, JSON.stringify({ title }));
  }
  remove(id: string) {
    return this.call<void>("DELETE", `/api/notebooks/${encodeURIComponent(id)}`);
  }
  execute(id: string, cells: string[] | "all") {
    const body = cells === "all" ? { all: true } : { cells };
    return this.call<{ queued: string[] }>("POST", `/api/notebooks/${encodeURIComponent(id)}/kernel/execute`, JSON.stringify(body));
  }
  kernel(id: string, action: "interrupt" | "restart") {
    return this.call<{ ok: boolean }>("POST", `/api/notebooks/${encodeURIComponent(id)}/kernel/${action}`);
  }
  /** MLflow's REST API (and ferrolab's governance API) on the same token. */
  mlflow<T>(endpoint: string, body?: Record<string, unknown>, query?: Record<string, string>) {
    const base = endpoint.startsWith("ferrolab/") ? `/api/2.0/${endpoint}` : `/api/2.0/mlflow/${endpoint}`;
    const qs = query ? `?${new URLSearchParams(query)}` : "";
    return body === undefined
      ? this.call<T>("GET", base + qs)
      : this.call<T>("POST", base + qs, JSON.stringify(body));
  }
  /** A link that downloads the notebook as .ipynb (the session cookie goes with it). */
  ipynbLink(id: string) {
    return `/api/notebooks/${encodeURIComponent(id)}/ipynb`;
  }
  /**
   * The notebook as a self-contained HTML report (the server's `ferrolab export`);
   * `interactive` inlines the chart library so charts can be explored.
   */
  reportLink(id: string, interactive = false) {
    const charts = interactive ? "&interactive=1" : "";
    return `/api/notebooks/${encodeURIComponent(id)}/export?format=html&toc=1${charts}`;
  }
  /** The sync socket: the browser sends the session cookie with the upgrade. */
  syncUrl() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/sync`;
  }
}
