// Chart.js helpers: the palette, live line charts of metrics by step, bar charts.
"use strict";

const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                 "#9c755f", "#bab0ac", "#1f77b4", "#8c564b"];

const charts = {
  color(i) { return PALETTE[((i % PALETTE.length) + PALETTE.length) % PALETTE.length]; },

  // A line chart of metric series by step; add(series, step, value) appends a point. Series named
  // in `rightAxis` (another scale, e.g. RankMe beside stds) are read on a second axis at the right.
  lines(canvas, title, yLabel, rightAxis = []) {
    const chart = new Chart(canvas, {
      type: "line",
      data: { datasets: [] },
      options: {
        animation: false, parsing: false, normalized: true, responsive: true, maintainAspectRatio: false,
        interaction: { mode: "nearest", intersect: false },
        elements: { point: { radius: 0, hitRadius: 6 }, line: { borderWidth: 1.5 } },
        plugins: { title: { display: true, text: title }, legend: { display: false }, decimation: { enabled: false } },
        scales: {
          x: { type: "linear", title: { display: true, text: "step" } },
          y: { type: "linear", title: { display: !!yLabel, text: yLabel } },
          y2: { type: "linear", position: "right", display: "auto", grid: { drawOnChartArea: false },
                title: { display: rightAxis.length > 0, text: rightAxis.join(", ") } },
        },
      },
    });
    const series = new Map();
    return {
      chart,
      add(name, step, value) {
        if (!Number.isFinite(value)) return;
        if (!series.has(name)) {
          const dataset = { label: name, data: [], borderColor: charts.color(series.size), backgroundColor: charts.color(series.size),
                            yAxisID: rightAxis.includes(name) ? "y2" : "y" };
          series.set(name, dataset);
          chart.data.datasets.push(dataset);
          chart.options.plugins.legend.display = series.size > 1;
        }
        series.get(name).data.push({ x: step, y: value });
      },
      render() { chart.update("none"); },
    };
  },

  bars(canvas, labels, values, title, yLabel) {
    return new Chart(canvas, {
      type: "bar",
      data: { labels, datasets: [{ label: yLabel, data: values, backgroundColor: labels.map((_, i) => charts.color(i)) }] },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        plugins: { title: { display: true, text: title }, legend: { display: false } },
        scales: { y: { beginAtZero: true, title: { display: true, text: yLabel } } },
      },
    });
  },
};
