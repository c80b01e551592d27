// The bar at the top of every page: the pages, who is here, who you are.

import type { Session } from "./session";

export type Page = "notebooks" | "runs" | "models";

export function header(session: Session, active: Page, title = ""): HTMLElement {
  const bar = document.createElement("header");
  bar.className = "bar";
  bar.innerHTML = `
    <a class="brand" href="/">ferrolab</a>
    <nav class="pages">
      <a href="/" data-page="notebooks">Notebooks</a>
      <a href="/runs" data-page="runs">Runs</a>
      <a href="/models" data-page="models">Models</a>
    </nav>
    <span class="nb-title"></span>
    <span class="people"></span>
    <span class="me"></span>
    <button class="sign-out" type="button">Sign out</button>`;
  (bar.querySelector(".nb-title") as HTMLElement).textContent = title;
  (bar.querySelector(".me") as HTMLElement).textContent = `${session.user.name} · ${session.user.role}`;
  for (const link of bar.querySelectorAll<HTMLAnchorElement>("a[href]")) {
    if (link.dataset.page === active) link.classList.add("active");
    link.addEventListener("click", (event) => {
      event.preventDefault();
      session.navigate(link.pathname);
    });
  }
  bar.querySelector(".sign-out")?.addEventListener("click", () => {
    localStorage.clear();
    location.href = "/";
  });
  return bar;
}
