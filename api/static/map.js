// The embedding map: a t-SNE scatter of an embed-index job, coloured by label. Hovering shows the
// item's image; clicking shows its nearest neighbours (POST /v1/neighbors).
"use strict";

const embeddingMap = {
  images: new Map(),  // "dataset/split/item" -> object URL

  image(dataset, split, item) {
    const key = `${dataset}/${split}/${item}`;
    if (!embeddingMap.images.has(key)) {
      embeddingMap.images.set(key, api.blobUrl(`/v1/datasets/${dataset}/items/${item}?split=${split}&scale=4`));
    }
    return embeddingMap.images.get(key);
  },

  async page(view, id) {
    const waiting = h("p", { class: "muted" }, "Computing the t-SNE map (the first time takes a few seconds per thousand items)…");
    view.append(waiting);
    const map = await api.get(`/v1/indexes/${id}/map`);
    waiting.remove();
    const labels = [...new Set(map.points.map((p) => p.label))].sort((a, b) => a - b);
    const datasets = labels.map((label, i) => ({
      label: label < 0 ? "unlabelled" : className(map, label),
      data: map.points.filter((p) => p.label === label),
      backgroundColor: charts.color(i), pointRadius: 3, pointHoverRadius: 6,
    }));
    const canvas = h("canvas", { id: "chart-map" });
    const side = h("aside", { class: "neighbors", id: "neighbors" }, h("p", { class: "muted" }, "Click a point to see its nearest neighbours."));
    view.append(h("h1", {}, "Embedding map ", h("small", {}, id)),
      h("p", { class: "muted" }, `${map.points.length} items of ${map.dataset} (${map.split}) embedded by ${map.checkpoint}; ${map.projection}.`),
      h("div", { class: "map-layout" }, h("div", { class: "chart map" }, canvas), side));
    const tooltip = document.getElementById("tooltip");
    const chart = new Chart(canvas, {
      type: "scatter",
      data: { datasets },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, parsing: { xAxisKey: "x", yAxisKey: "y" },
        scales: { x: { display: false }, y: { display: false } },
        plugins: {
          legend: { position: "right" },
          tooltip: { enabled: false, external: (context) => embeddingMap.hover(context, map, tooltip) },
        },
        onClick: (_, elements) => {
          if (elements.length) embeddingMap.neighbours(map, datasets[elements[0].datasetIndex].data[elements[0].index], side);
        },
      },
    });
    canvas.dataset.points = String(map.points.length);
    app.onLeave(() => { chart.destroy(); tooltip.hidden = true; });
  },

  hover(context, map, tooltip) {
    const { chart, tooltip: model } = context;
    if (!model.opacity || !model.dataPoints || !model.dataPoints.length) { tooltip.hidden = true; return; }
    const point = model.dataPoints[0].raw;
    const img = h("img", { alt: `item ${point.item}`, width: 96, height: 96 });
    tooltip.replaceChildren(img, h("div", {}, `item ${point.item}`), h("div", {}, className(map, point.label)));
    embeddingMap.image(map.dataset, map.split, point.item).then((url) => { img.src = url; }).catch(() => img.remove());
    const box = chart.canvas.getBoundingClientRect();
    tooltip.style.left = `${window.scrollX + box.left + model.caretX + 12}px`;
    tooltip.style.top = `${window.scrollY + box.top + model.caretY + 12}px`;
    tooltip.hidden = false;
  },

  async neighbours(map, point, side) {
    side.replaceChildren(h("p", { class: "muted" }, `Neighbours of item ${point.item}…`));
    try {
      const answer = await api.post("/v1/neighbors", { index: map.index, query: [point.item], k: 9 });
      const cards = answer.data[0].neighbors.map((n) => {
        const img = h("img", { alt: `item ${n.item}`, width: 64, height: 64 });
        embeddingMap.image(map.dataset, map.split, n.item).then((url) => { img.src = url; }).catch(() => img.remove());
        return h("figure", { "data-item": n.item }, img, h("figcaption", {}, `#${n.item} · ${n.class ?? `label ${n.label}`} · ${n.score.toFixed(3)}`));
      });
      side.replaceChildren(h("h2", {}, `Neighbours of item ${point.item} (${className(map, point.label)})`),
        h("div", { class: "thumbs", id: "neighbor-thumbs" }, cards));
    } catch (error) { side.replaceChildren(h("p", { class: "error" }, error.message)); }
  },
};

// A label's class name when the dataset has them (folder names, Fashion-MNIST's classes), else "label N".
function className(map, label) {
  return (map.classes && map.classes[label] !== undefined) ? map.classes[label] : `label ${label}`;
}
