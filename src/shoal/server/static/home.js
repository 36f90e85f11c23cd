// Home page: datasets, models and jobs, kept live by polling the API.
"use strict";
(() => {
  const { api, el, badge, pct, when, duration, progressBar, replaceRows, initial, poll, enc, confirmThen } = shoal;

  function progressText(status, progress) {
    if (!progress) return "";
    if (progress.total) return `${progress.done} / ${progress.total} images`;
    if (progress.total_steps && progress.stage) return progress.stage;  // computing features 40/122
    if (progress.epoch !== undefined) {
      const epoch = Number(progress.epoch);
      let text = `epoch ${Number.isInteger(epoch) ? epoch : epoch.toFixed(1)}${progress.epochs ? " of " + progress.epochs : ""}`;
      if (progress.device) text += ` · ${progress.device}`;
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
      if (m.status === "running" && m.progress && (m.progress.epoch !== undefined || m.progress.stage)) {
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
      const link = j.kind === "dataset" || j.kind === "lr_find" ? `/datasets/${enc(j.target)}` : `/models/${enc(j.target)}`;  // lr_find: its dataset
      const p = j.progress || {};
      const left = j.status === "running" && j.eta_s !== null && j.eta_s !== undefined ? ` · about ${duration(j.eta_s)} left` : "";
      let progressCell = el("td", { class: "small muted", text: j.error || (progressText(j.status, p) + left) });
      if (j.status === "running" && p.total) {
        progressCell = el("td", {}, progressBar(p.done / p.total), el("span", { class: "small muted", text: progressText(j.status, p) + left }));
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
        el("td", { class: "small", title: `queued ${when(j.created)}`, text: when(j.started) }),
        el("td", { class: "small", text: when(j.finished) }),
        el("td", {}, abort));
    });
  }

  function render(data) {
    replaceRows(document.getElementById("datasets-body"), datasetRows(data.datasets), "No datasets yet: create one, or build the built-in digits sample.", 7);
    replaceRows(document.getElementById("models-body"), modelRows(data.models), "No models yet.", 5);
    replaceRows(document.getElementById("jobs-body"), jobRows(data.jobs), "No jobs yet.", 9);
    document.getElementById("datasets-count").textContent = data.datasets.length || "";
    document.getElementById("models-count").textContent = data.models.length || "";
  }

  async function refresh() {
    const [datasets, models, jobs] = await Promise.all([api("GET", "/api/datasets"), api("GET", "/api/models"), api("GET", "/api/jobs")]);
    render({ datasets, models, jobs });
  }

  // The machine: CPU, memory, GPUs, disk, versions and the device of each running job.
  const gib = (b) => (b === null || b === undefined ? "–" : `${(b / 1073741824).toFixed(1)} GiB`);
  function renderSystem(sys) {
    const rows = [
      ["CPU", `${sys.cpu.cores} cores${sys.cpu.utilization === null ? "" : ", " + pct(sys.cpu.utilization) + " busy"}${sys.cpu.load ? ", load " + sys.cpu.load.map((v) => v.toFixed(2)).join(" ") : ""}`],
      ["memory", `${gib(sys.memory.used)} of ${gib(sys.memory.total)}`],
      ...sys.gpus.map((g) => [`GPU ${g.index}`, `${g.name}: ${pct(g.utilization)} busy, ${gib(g.memory_used)} of ${gib(g.memory_total)}`]),
      ["default device", sys.default_device + (sys.gpus.length ? "" : sys.default_device === "cuda" ? "" : " (no GPU found)")],
      ["store disk", `${gib(sys.disk.free)} free of ${gib(sys.disk.total)}`],
      ["torch", sys.versions.torch || "not installed"],
      ["onnxruntime", sys.versions.onnxruntime || sys.versions["onnxruntime-gpu"] || "not installed"],
      ["CUDA", sys.cuda || "–"],
      ...sys.jobs.map((j) => [`job ${j.id} (${j.kind} ${j.target})`, `${j.device}${j.eta_s === null ? "" : ", about " + duration(j.eta_s) + " left"}`]),
    ];
    document.getElementById("system-body").replaceChildren(...rows.map(([k, v]) => el("div", {}, el("span", { class: "k", text: k }), el("span", { class: "v", text: v }))));
    document.getElementById("system-versions").textContent = `shoal ${sys.versions.shoal || ""}`;
  }
  poll(async () => { renderSystem(await api("GET", "/api/system")); return true; }, 5000);

  render(initial("initial-home"));
  // Live through server-sent events (a snapshot at every change); polling only where they cannot work.
  if (window.EventSource) {
    let opened = false;
    const source = new EventSource("/api/jobs/stream");
    document.body.dataset.live = "sse";
    source.onmessage = (message) => { opened = true; render(JSON.parse(message.data)); };
    source.onerror = () => {
      if (opened) return;  // dropped: the browser reconnects with Last-Event-ID
      source.close();
      document.body.dataset.live = "polling";
      poll(async () => { await refresh(); return true; }, 2000);
    };
  } else {
    setTimeout(() => poll(async () => { await refresh(); return true; }, 2000), 2000);
  }
})();
