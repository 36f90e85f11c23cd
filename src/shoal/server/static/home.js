// Home page: datasets, models and jobs, kept live by polling the API.
"use strict";
(() => {
  const { api, el, badge, pct, when, progressBar, replaceRows, initial, poll, enc, confirmThen } = shoal;

  function progressText(status, progress, epochs) {
    if (!progress) return "";
    if (progress.total) return `${progress.done} / ${progress.total} images`;
    if (progress.epoch !== undefined) {
      let text = `epoch ${Number(progress.epoch).toFixed(1)}${epochs ? " / " + epochs : ""}`;
      if (progress.val_accuracy !== undefined) text += ` · acc ${pct(progress.val_accuracy)}`;
      return text;
    }
    return progress.stage || "";
  }

  function datasetRows(datasets) {
    return datasets.map((d) => {
      const c = d.counts || {};
      const status = d.status === "done" ? null : badge(d.status);
      return el("tr", { "data-name": d.name },
        el("td", {}, el("a", { href: `/datasets/${enc(d.name)}`, text: d.name })),
        el("td", { class: "num", text: d.classes ?? "–" }),
        el("td", { class: "num", text: c.train ?? "–" }),
        el("td", { class: "num", text: c.val ?? "–" }),
        el("td", { class: "num", text: c.test ?? "–" }),
        el("td", { class: "mono", text: d.size ? `${d.size[0]}×${d.size[1]}${d.channels === 1 ? " gray" : ""}` : "–" }),
        el("td", {}, status || badge("done")));
    });
  }

  function modelRows(models) {
    return models.map((m) => {
      const statusCell = el("td", {}, badge(m.status));
      if (m.status === "running" && m.progress && m.progress.epoch !== undefined) {
        statusCell.append(" ", el("span", { class: "small muted", text: progressText(m.status, m.progress) }));
      }
      if (m.status === "queued" && m.queue_position) {
        statusCell.append(" ", el("span", { class: "small muted", text: `${m.queue_position} ahead` }));
      }
      return el("tr", { "data-name": m.name },
        el("td", {}, el("a", { href: `/models/${enc(m.name)}`, text: m.name })),
        el("td", {}, m.dataset ? el("a", { href: `/datasets/${enc(m.dataset)}`, text: m.dataset }) : "–"),
        el("td", {}, el("code", { text: (m.network || "–").replace(/^.*\//, "") }), m.pretrained ? el("span", { class: "small muted", text: " fine-tuned" }) : null),
        statusCell,
        el("td", { class: "num", text: pct(m.val_accuracy) }));
    });
  }

  function jobRows(jobs) {
    return jobs.map((j) => {
      const link = j.kind === "dataset" ? `/datasets/${enc(j.target)}` : `/models/${enc(j.target)}`;
      const p = j.progress || {};
      let progressCell = el("td", { class: "small muted", text: j.error || progressText(j.status, p) });
      if (j.status === "running" && p.total) {
        progressCell = el("td", {}, progressBar(p.done / p.total), el("span", { class: "small muted", text: progressText(j.status, p) }));
      }
      const abort = (j.status === "queued" || j.status === "running")
        ? el("button", { class: "small danger", text: "Abort", onclick: () => confirmThen(`Abort job ${j.id} (${j.target})?`, async () => { await api("POST", `/api/jobs/${j.id}/abort`); refresh(); }) })
        : null;
      return el("tr", { "data-job": j.id },
        el("td", { class: "num", text: j.id }),
        el("td", { text: j.kind }),
        el("td", {}, el("a", { href: link, text: j.target })),
        el("td", { class: "mono", text: j.lane }),
        el("td", {}, badge(j.status), j.queue_position ? el("span", { class: "small muted", text: ` ${j.queue_position} ahead` }) : null),
        progressCell,
        el("td", { class: "small", text: when(j.started) }),
        el("td", {}, abort));
    });
  }

  function render(data) {
    replaceRows(document.getElementById("datasets-body"), datasetRows(data.datasets), "No datasets yet: create one, or build the built-in digits sample.", 7);
    replaceRows(document.getElementById("models-body"), modelRows(data.models), "No models yet.", 5);
    replaceRows(document.getElementById("jobs-body"), jobRows(data.jobs), "No jobs yet.", 8);
    document.getElementById("datasets-count").textContent = data.datasets.length || "";
    document.getElementById("models-count").textContent = data.models.length || "";
  }

  async function refresh() {
    const [datasets, models, jobs] = await Promise.all([api("GET", "/api/datasets"), api("GET", "/api/models"), api("GET", "/api/jobs")]);
    render({ datasets, models, jobs });
  }

  render(initial("initial-home"));
  setTimeout(() => poll(async () => { await refresh(); return true; }, 2000), 2000);
})();
