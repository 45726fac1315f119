// The dashboard's pages: jobs, one job (live charts from its event stream), leaderboard, datasets.
"use strict";

const STATES = ["", "queued", "running", "cancelling", "retrying", "succeeded", "failed", "cancelled"];
const KINDS = ["", "pretrain", "evaluate", "embed-index"];

function cancelButton(job, after) {
  if (TERMINAL.includes(job.state) || job.state === "cancelling") return "";
  const button = h("button", { class: "cancel", "data-job": job.id }, "cancel");
  button.addEventListener("click", async () => {
    if (button.dataset.armed !== "1") {  // two clicks: a cancel is not undone
      button.dataset.armed = "1";
      button.textContent = "click again to cancel";
      setTimeout(() => { button.dataset.armed = ""; button.textContent = "cancel"; }, 4000);
      return;
    }
    button.disabled = true;
    try {
      await api.post(`/v1/jobs/${job.id}/cancel`);
      after();
    } catch (error) { notice(error.message); }
  });
  return button;
}

function itemSize(stats) {
  // an image dataset's channels × side², an audio dataset's rate and median clip length
  if (stats.image_size) return `${stats.channels || ""}×${stats.image_size}²`;
  if (stats.modality === "audio" && stats.seconds) return `${stats.sample_rate / 1000} kHz, ${stats.seconds.median.toFixed(1)} s`;
  return "";
}

function progressBar(job) {
  const share = Math.round(100 * (job.progress || 0));
  return h("div", { class: "progress", title: `${job.step}/${job.total_steps}` },
    h("div", { class: `fill state-${job.state}`, style: `width:${share}%` }), h("span", {}, `${share}%`));
}

const pages = {
  async jobs(view) {
    const filters = { state: "", kind: "", method: "" };
    const select = (name, options) => h("select", { name, onchange: (e) => { filters[name] = e.target.value; load(); } },
      options.map((o) => h("option", { value: o }, o || `any ${name}`)));
    const methodBox = h("input", { name: "method", placeholder: "method", size: 10,
                                    onchange: (e) => { filters.method = e.target.value.trim(); load(); } });
    const body = h("tbody");
    const total = h("span", { class: "muted" });
    view.append(h("h1", {}, "Jobs"), h("div", { class: "filters" }, select("state", STATES), select("kind", KINDS), methodBox, total),
      h("table", { id: "jobs-table" },
        h("thead", {}, h("tr", {}, ["id", "state", "progress", "kind", "method", "dataset", "attempt", "age", ""].map((c) => h("th", {}, c)))),
        body));
    async function load() {
      const page = await api.get("/v1/jobs", { ...filters, limit: 100 });
      total.textContent = `${page.total} job${page.total === 1 ? "" : "s"}`;
      body.replaceChildren(...page.data.map((job) => h("tr", { "data-job": job.id },
        h("td", {}, h("a", { href: `#/job/${job.id}` }, job.id)), h("td", {}, badge(job.state)), h("td", {}, progressBar(job)),
        h("td", {}, job.kind), h("td", {}, job.method || ""), h("td", {}, job.spec.dataset || ""),
        h("td", {}, `${job.attempt}/${job.max_attempts}`), h("td", { title: job.created_at }, age(job.created_at)),
        h("td", {}, cancelButton(job, load)))));
      if (!page.data.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No jobs yet.")));
    }
    await load();
    const timer = setInterval(() => load().catch((e) => notice(e.message)), 3000);
    app.onLeave(() => clearInterval(timer));
  },

  async job(view, id) {
    const job = await api.get(`/v1/jobs/${id}`);
    const head = h("div", { class: "job-head" });
    const unit = { text: "sequences / s", audio: "clips / s" }[job.recipe && job.recipe.modality] || "images / s";  // all logged as img_per_s
    const plots = { loss: "loss", lr: "learning rate", img_per_s: unit };
    const grid = h("div", { class: "charts" });
    const lines = {};
    for (const [name, title] of Object.entries(plots)) {
      const canvas = h("canvas", { id: `chart-${name}` });
      grid.append(h("div", { class: "chart" }, canvas));
      lines[name] = charts.lines(canvas, title, "");
    }
    const healthCanvas = h("canvas", { id: "chart-health" });
    const healthBox = h("div", { class: "chart", hidden: true }, healthCanvas);
    grid.append(healthBox);
    lines.health = charts.lines(healthCanvas, "representation health", "", ["rankme"]);
    const log = h("ol", { class: "events", id: "events" });
    const checkpoints = h("div");
    const scores = h("div");
    view.append(head, grid, h("div", { class: "columns" },
      h("section", {}, h("h2", {}, "Events"), log),
      h("section", {}, h("h2", {}, "Checkpoints"), checkpoints, h("h2", {}, "Scores"), scores)),
      h("section", {}, h("h2", {}, "Resolved spec"), h("pre", { class: "spec" }, JSON.stringify({ spec: job.spec, recipe: job.recipe }, null, 2))));

    const showHead = (j) => head.replaceChildren(h("h1", {}, `${j.kind} ${j.method || ""} `, h("small", {}, j.id)),
      h("div", { class: "facts" }, badge(j.state), progressBar(j), h("span", {}, `step ${j.step}/${j.total_steps}`),
        h("span", {}, `attempt ${j.attempt}/${j.max_attempts}`), h("span", {}, `dataset ${j.spec.dataset || ""}`),
        h("span", {}, computeText(j)), cancelButton(j, refresh)),
      j.error ? h("p", { class: "error" }, j.error) : "");
    let current = job;
    async function refresh() {
      const j = current = await api.get(`/v1/jobs/${id}`);
      showHead(j);
      const rows = (await api.get("/v1/checkpoints", { job: id })).data;
      checkpoints.replaceChildren(rows.length ? h("table", {}, h("thead", {}, h("tr", {}, ["id", "step", "size", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, rows.map((c) => h("tr", {}, h("td", {}, c.id, c.final ? h("span", { class: "muted" }, " final") : ""),
          h("td", {}, c.step), h("td", {}, bytes(c.bytes)),
          h("td", {}, ...["backbone", "full"].filter((p) => p in c.parts).map((p) =>
            h("button", { onclick: () => api.download(`/v1/checkpoints/${c.id}/download?part=${p}`, `${c.id}-${p}.safetensors`).catch((e) => notice(e.message)) }, p)),
            h("button", { onclick: () => api.download(`/v1/checkpoints/${c.id}/download?format=onnx`, `${c.id}-backbone.onnx`).catch((e) => notice(e.message)) }, "onnx"))))))
        : h("p", { class: "muted" }, "None yet."));
      const scored = [];
      for (const c of rows.slice(0, 10)) scored.push(...(await api.get(`/v1/checkpoints/${c.id}/scores`)).data);
      scores.replaceChildren(scored.length ? h("table", { id: "job-scores" }, h("thead", {}, h("tr", {}, ["protocol", "metric", "value", "checkpoint"].map((c) => h("th", {}, c)))),
        h("tbody", {}, scored.map((s) => h("tr", {}, h("td", {}, s.protocol), h("td", {}, s.metric), h("td", {}, fmt(s.value)), h("td", {}, s.checkpoint_id)))))
        : h("p", { class: "muted" }, "None yet."));
    }
    showHead(job);
    await refresh();

    let pending = false;
    const draw = () => {
      pending = false;
      Object.values(lines).forEach((l) => l.render());
      if (!head.querySelector("[data-armed=\"1\"]")) showHead(current);  // not while a cancel awaits its second click
    };
    const stop = api.stream(id, (kind, data) => {
      if (kind === "metrics") {
        const step = Math.max(current.step, data.job_step || 0, data.step);
        const total = data.total_steps || current.total_steps;
        current = { ...current, step, total_steps: total, progress: total ? Math.min(1, step / total) : current.progress };
        for (const [name, value] of Object.entries(data.values)) {
          if (name in lines) lines[name].add(name, data.step, value);
          else if (name.startsWith("health/")) { healthBox.hidden = false; lines.health.add(name.slice(7), data.step, value); }
        }
        if (!pending) { pending = true; requestAnimationFrame(draw); }
      } else if (kind === "end") {
        draw();
        refresh().catch((e) => notice(e.message));
      } else if (kind !== "error") {
        log.prepend(h("li", { class: `event-${kind}` }, h("time", { title: data.at }, (data.at || "").slice(11, 19)), " ",
          h("b", {}, kind), " ", data.message));
        if (kind === "state" || kind === "checkpoint") refresh().catch((e) => notice(e.message));
      } else notice(data.message);
    });
    app.onLeave(stop);
  },

  async leaderboard(view) {
    const answer = await api.get("/v1/scores", { limit: 500 });
    const board = answer.leaderboard;
    const dsName = (r) => r.dataset_name || r.dataset;
    const group = (r) => `${dsName(r)} · ${r.protocol} · ${r.metric}`;
    const groups = [...new Set(board.map(group))];
    const picker = h("select", { id: "board-group" }, groups.map((g) => h("option", { value: g }, g)));
    const canvas = h("canvas", { id: "chart-leaderboard" });
    const better = (r) => r.direction === "higher" ? "higher is better" : r.direction === "lower" ? "lower is better" : `${r.kind}, not ranked`;
    const meanStd = (r) => r.std === null || r.std === undefined ? fmt(r.mean) : `${fmt(r.mean)} ± ${fmt(r.std, 2)}`;
    const table = h("table", { id: "leaderboard" },
      h("thead", {}, h("tr", {}, ["rank", "method", "backbone", "recipe", "dataset", "protocol", "metric", "mean ± std", "n", "runs", "per compute-hour", "checkpoint"].map((c) => h("th", {}, c)))),
      h("tbody", {}, board.map((r) => h("tr", {}, h("td", { class: "num" }, r.rank ?? "—"), h("td", {}, r.method || ""), h("td", {}, r.backbone || ""),
        h("td", {}, r.recipe || ""), h("td", {}, dsName(r)), h("td", {}, r.protocol), h("td", { title: better(r) }, `${r.metric} (${better(r)})`),
        h("td", { class: "num" }, meanStd(r)), h("td", { class: "num" }, r.n), h("td", { class: "num" }, r.runs),
        h("td", { class: "num" }, r.score_per_compute_hour ? fmt(r.score_per_compute_hour, 3) : "—"), h("td", {}, r.checkpoint || "")))));
    view.append(h("h1", {}, "Leaderboard"), h("p", { class: "muted" }, "Mean ± std over seeds per configuration (method, backbone, recipe, protocol options) for each dataset, protocol and metric, ranked by the metric's direction; runs counts training runs. Score per pretraining compute-hour for scores only."),
      board.length ? h("div", { class: "filters" }, picker) : h("p", {}, "No scores yet."),
      h("div", { class: "chart wide" }, canvas), table);
    let chart = null;
    const draw = () => {
      const rows = board.filter((r) => group(r) === picker.value);
      if (chart) chart.destroy();
      const label = (r) => [r.method, r.backbone, r.recipe].filter(Boolean).join(" · ");
      chart = charts.bars(canvas, rows.map(label), rows.map((r) => r.mean), `${picker.value} (${rows[0] ? better(rows[0]) : ""})`,
        rows[0] ? `${rows[0].metric}, mean over seeds` : "");
    };
    picker.addEventListener("change", draw);
    if (board.length) {
      const knn = groups.find((g) => g.includes("· knn ·"));
      if (knn) picker.value = knn;
      draw();
    }
  },

  async datasets(view) {
    const rows = (await api.get("/v1/datasets")).data;
    view.append(h("h1", {}, "Datasets"), h("table", { id: "datasets" },
      h("thead", {}, h("tr", {}, ["id", "name", "format", "state", "train", "test", "classes", "size", "hash", "age"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.map((d) => h("tr", {}, h("td", {}, h("a", { href: `#/dataset/${d.id}` }, d.id)), h("td", {}, d.name), h("td", {}, d.format),
        h("td", {}, badge(d.state)), h("td", { class: "num" }, d.n_items ?? ""), h("td", { class: "num" }, d.n_test ?? ""),
        h("td", { class: "num" }, d.n_classes ?? ""), h("td", {}, itemSize(d.stats)),
        h("td", {}, (d.content_hash || "").slice(0, 12)), h("td", {}, age(d.created_at)))))));
    if (!rows.length) view.append(h("p", { class: "muted" }, "No datasets yet."));
  },

  async dataset(view, id) {
    const d = await api.get(`/v1/datasets/${id}`);
    const stats = Object.entries(d.stats).filter(([k]) => !["prepared", "shards"].includes(k));
    const grid = h("div", { class: "thumbs", id: "thumbs" });
    view.append(h("h1", {}, d.name, " ", h("small", {}, d.id)),
      h("div", { class: "facts" }, badge(d.state), h("span", {}, `${d.n_items ?? "?"} train`), h("span", {}, `${d.n_test ?? "?"} test`),
        h("span", {}, `${d.n_classes ?? "?"} classes`), h("span", {}, d.format)),
      h("table", {}, h("tbody", {}, stats.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, typeof v === "object" ? JSON.stringify(v) : fmt(v)))))),
      h("h2", {}, "Samples"), grid);
    if (d.state !== "ready" || (d.stats.modality && d.stats.modality !== "image")) return;  // pictures of images only
    const count = Math.min(24, d.n_items || 0);
    for (let i = 0; i < count; i++) {
      const img = h("img", { alt: `item ${i}`, width: 64, height: 64 });
      grid.append(h("figure", {}, img, h("figcaption", {}, `#${i}`)));
      api.blobUrl(`/v1/datasets/${id}/items/${i}?scale=4`).then((url) => { img.src = url; }).catch(() => img.remove());
    }
  },

  async maps(view) {
    const jobs = (await api.get("/v1/jobs", { kind: "embed-index", state: "succeeded", limit: 100 })).data;
    view.append(h("h1", {}, "Embedding maps"), h("p", { class: "muted" }, "A t-SNE map of each finished embed-index job."),
      jobs.length ? h("ul", { class: "links" }, jobs.map((j) => h("li", {}, h("a", { href: `#/map/${j.id}` }, j.id),
        ` ${j.spec.checkpoint} on ${j.spec.dataset} (${j.spec.split}), ${age(j.created_at)}`)))
        : h("p", {}, "No embed-index jobs yet: submit {\"kind\": \"embed-index\", \"checkpoint\": …, \"dataset\": …}."));
  },
};

// Compute is counted when a run ends; while it runs, say how long it has been running instead of "0 s".
function computeText(j) {
  if (["running", "cancelling"].includes(j.state) && j.started_at) {
    const started = Date.parse(j.started_at.endsWith("Z") ? j.started_at : `${j.started_at}Z`);
    return `running for ${Math.max(0, Math.round((Date.now() - started) / 1000))} s`;
  }
  return `compute ${fmt(j.compute_seconds, 3)} s`;
}
