// The dashboard's shell: the key form, the hash router, and small DOM helpers the pages share.
"use strict";

const TERMINAL = ["succeeded", "failed", "cancelled"];

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name === "style") node.style.cssText = value;  // through the CSSOM: the CSP refuses style attributes
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function age(iso) {
  if (!iso) return "";
  const at = new Date(/[zZ]|[+-]\d\d:\d\d$/.test(iso) ? iso : iso + "Z");
  const seconds = Math.max(0, Math.round((Date.now() - at.getTime()) / 1000));
  for (const [size, unit] of [[86400, "d"], [3600, "h"], [60, "m"]]) {
    if (seconds >= size) return `${Math.floor(seconds / size)}${unit} ago`;
  }
  return `${seconds}s ago`;
}

function bytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function fmt(value, digits = 4) {
  return typeof value === "number" ? Number(value.toPrecision(digits)).toString() : String(value ?? "");
}

function badge(state) { return h("span", { class: `badge state-${state}` }, state); }

function notice(text, kind = "error") {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

const app = {
  cleanup: [],
  onLeave(fn) { app.cleanup.push(fn); },

  async route() {
    for (const fn of app.cleanup.splice(0)) fn();
    notice("");
    const [page, id] = location.hash.replace(/^#\/?/, "").split("/");
    const name = page || "jobs";
    document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === name ||
      (name === "job" && a.dataset.page === "jobs") || (name === "map" && a.dataset.page === "maps")));
    const view = document.getElementById("view");
    view.replaceChildren();
    const render = { jobs: pages.jobs, job: pages.job, leaderboard: pages.leaderboard, datasets: pages.datasets,
                     dataset: pages.dataset, maps: pages.maps, map: embeddingMap.page }[name];
    if (!render) { view.append(h("p", {}, "No such page.")); return; }
    try {
      await render(view, id && decodeURIComponent(id));
    } catch (error) {
      notice(error.status === 401 ? "This server asks for an API key (enter it above) or its launch token (open the dashboard URL the server printed)." : error.message);
    }
  },
};

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("key-input");
  api.setKey(input.value.trim());
  input.value = "";
  showKeyState();
  app.route();
});

function showKeyState() {
  document.getElementById("key-state").textContent = api.key() ? `key ${api.key().slice(0, 6)}… (this tab)` : "";
}

window.addEventListener("hashchange", app.route);
showKeyState();
app.route();
