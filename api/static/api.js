// The dashboard's only way to the server: the public /v1 API, with the key kept in session storage
// (or the launch token of a server without --auth, kept in local storage).
"use strict";

const KEY_NAME = "darkmatter.key";
const LAUNCH_TOKEN_NAME = "darkmatter.launch-token";

// A server started without --auth prints its dashboard URL with ?token=<launch token>: keep the
// token (for this browser's tabs) and take it out of the address bar and the history.
(function takeLaunchToken() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (!token) return;
  localStorage.setItem(LAUNCH_TOKEN_NAME, token);
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
})();

const api = {
  key() { return sessionStorage.getItem(KEY_NAME) || localStorage.getItem(LAUNCH_TOKEN_NAME) || ""; },
  setKey(key) { key ? sessionStorage.setItem(KEY_NAME, key) : sessionStorage.removeItem(KEY_NAME); },
  headers(extra = {}) {
    const key = api.key();
    return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
  },

  async request(method, path, body) {
    const init = { method, headers: api.headers(body ? { "Content-Type": "application/json" } : {}) };
    if (body) init.body = JSON.stringify(body);
    const response = await fetch(path, init);
    if (!response.ok) throw await api.error(response);
    return response.json();
  },
  get(path, params) {
    const query = params ? "?" + new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null)) : "";
    return api.request("GET", path + query);
  },
  post(path, body) { return api.request("POST", path, body); },

  async error(response) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* not JSON */ }
    const error = new Error(`HTTP ${response.status}: ${detail}`);
    error.status = response.status;
    return error;
  },

  // An object URL for a binary answer (images, downloads): <img src> cannot send the key.
  async blobUrl(path) {
    const response = await fetch(path, { headers: api.headers() });
    if (!response.ok) throw await api.error(response);
    return URL.createObjectURL(await response.blob());
  },

  async download(path, filename) {
    const url = await api.blobUrl(path);
    const link = Object.assign(document.createElement("a"), { href: url, download: filename });
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  },

  // A job's Server-Sent Events through fetch (EventSource cannot send the key), resumed with
  // Last-Event-ID after a dropped connection. onEvent(kind, data); returns a stop function.
  stream(jobId, onEvent) {
    let stopped = false, lastId = null, controller = null;
    const run = async () => {
      while (!stopped) {
        controller = new AbortController();
        try {
          const headers = api.headers(lastId ? { "Last-Event-ID": lastId } : {});
          const response = await fetch(`/v1/jobs/${jobId}/events?stream=true`, { headers, signal: controller.signal });
          if (!response.ok) throw await api.error(response);
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "", ended = false;
          while (!ended) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let cut;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, cut);
              buffer = buffer.slice(cut + 2);
              const message = { event: "message", data: "", id: null };
              for (const line of block.split("\n")) {
                if (line.startsWith(":")) continue;
                const at = line.indexOf(":");
                const field = at < 0 ? line : line.slice(0, at);
                const text = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
                if (field === "event") message.event = text;
                else if (field === "data") message.data += text;
                else if (field === "id") message.id = text;
              }
              if (!message.data) continue;
              if (message.id) lastId = message.id;
              onEvent(message.event, JSON.parse(message.data));
              if (message.event === "end") ended = true;
            }
          }
          if (ended) return;
        } catch (error) {
          if (stopped) return;
          if (error.status && error.status < 500) { onEvent("error", { message: error.message }); return; }
        }
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    };
    run();
    return () => { stopped = true; if (controller) controller.abort(); };
  },
};
