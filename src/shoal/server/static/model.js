// Model page: live charts while it trains, abort/resume, download, classify one or many, evaluate.
// A fitted head (config head "fit") runs no epochs: the page shows its cross-validation curve instead.
"use strict";
(() => {
  const { api, el, badge, pct, num, duration, say, poll, enc, confirmThen, when } = shoal;
  let model = shoal.initial("initial-model");
  const base = `/api/models/${enc(model.name)}`;
  const live = (status) => status === "queued" || status === "running";
  const fitted = model.config.head === "fit";
  // The events the progress card shows (renderLive): the latest of these among new events.
  const LIVE_TYPES = fitted ? ["features", "cross_validation", "fit", "epoch"] : ["prepare", "features", "iteration", "epoch"];
  const manyClasses = () => ((model.card && model.card.labels) || []).length > 5;  // top-5 says something

  // -- charts -----------------------------------------------------------------------------------------
  const series = { it: { x: [], loss: [], lr: [] }, ep: { x: [], loss: [], acc: [], top5: [] } };
  let cursor = 0;
  const plotConfig = { displayModeBar: false, responsive: true };
  const colours = { train: "#1f63b5", val: "#d9822b", acc: "#1d7a46", top5: "#7aa874", lr: "#0b6e79" };

  let fit = model.fit || null;  // what fitting the head did (the run's "fit" event)
  const run = { device: null, bf16: null, processes: 1, started: null, finished: null, last: null };  // what the run really used
  function addEvents(events) {
    for (const e of events) {
      if (e.type === "start") {
        Object.assign(run, { device: e.device, bf16: e.bf16, processes: e.world_size || 1, started: e.time, finished: null });
      }
      if (e.type === "done" || e.type === "stopped") run.finished = e.time;
      if (e.elapsed_s !== undefined) run.last = e;
      if (e.type === "fit") {
        fit = e;
      } else if (e.type === "iteration") {
        series.it.x.push(e.epoch); series.it.loss.push(e.train_loss); series.it.lr.push(e.lr);
      } else if (e.type === "epoch" && e.val_loss !== undefined) {
        series.ep.x.push(e.epoch); series.ep.loss.push(e.val_loss); series.ep.acc.push(e.val_accuracy);
        series.ep.top5.push(e.val_top5 === undefined ? null : e.val_top5);
      } else if (e.type === "start" && e.resumed) {
        // A resumed run starts again after its last saved epoch: drop the points recorded past it.
        const cut = (xs, ...arrays) => {
          const i = xs.findIndex((x) => x > e.epoch);
          if (i >= 0) for (const a of [xs, ...arrays]) a.splice(i);
        };
        cut(series.it.x, series.it.loss, series.it.lr);
        cut(series.ep.x, series.ep.loss, series.ep.acc, series.ep.top5);
      }
    }
  }

  let revision = 0;
  function drawCharts() {
    if (fitted) { drawFit(); return; }
    revision += 1;  // the arrays grow in place: tell Plotly.react that the data changed
    const lossTraces = [
      { x: series.it.x, y: series.it.loss, name: "train loss", mode: "lines", line: { color: colours.train, width: 1.5 } },
      { x: series.ep.x, y: series.ep.loss, name: "val loss", mode: "lines+markers", line: { color: colours.val, width: 2 } },
      { x: series.ep.x, y: series.ep.acc, name: "val accuracy", mode: "lines+markers", yaxis: "y2", line: { color: colours.acc, width: 2 } },
    ];
    if (series.ep.top5.some((v) => v !== null)) {
      lossTraces.push({ x: series.ep.x, y: series.ep.top5, name: "val top-5", mode: "lines+markers", yaxis: "y2", line: { color: colours.top5, width: 1.5, dash: "dot" } });
    }
    const epochs = model.epochs || undefined;
    const xaxis = { title: { text: "epoch" }, range: epochs ? [0, epochs] : undefined, zeroline: false };
    Plotly.react("loss-chart", lossTraces, {
      datarevision: revision, margin: { l: 55, r: 55, t: 10, b: 40 }, xaxis,
      yaxis: { title: { text: "loss" }, rangemode: "tozero" },
      yaxis2: { title: { text: "accuracy" }, overlaying: "y", side: "right", range: [-0.01, 1.01], dtick: 0.2, tickformat: ".0%", showgrid: false },
      legend: { orientation: "h", y: -0.22 },
    }, plotConfig);
    Plotly.react("lr-chart", [{ x: series.it.x, y: series.it.lr, name: "learning rate", mode: "lines", line: { color: colours.lr, width: 2 } }], {
      datarevision: revision, margin: { l: 65, r: 20, t: 10, b: 40 }, xaxis, yaxis: { title: { text: "learning rate" }, exponentformat: "e", rangemode: "tozero" },
      showlegend: false,
    }, plotConfig);
    document.getElementById("loss-chart").dataset.points = String(series.it.x.length + series.ep.x.length);
    document.getElementById("lr-chart").dataset.points = String(series.it.x.length);
  }

  // The cross-validation curve: held-out log-loss and accuracy against C (log axis), the chosen C marked.
  const strength = (c) => (c >= 0.01 && c < 1000 ? Number(c.toPrecision(3)).toString() : Number(c).toExponential(1));
  function drawFit() {
    if (!fit) return;
    const C = fit.curve.map((p) => p.C);
    const chosen = fit.curve.reduce((a, b) => (Math.abs(Math.log(b.C / fit.strength)) < Math.abs(Math.log(a.C / fit.strength)) ? b : a));
    Plotly.react("fit-chart", [
      { x: C, y: fit.curve.map((p) => p.log_loss), name: "held-out log-loss", mode: "lines+markers", line: { color: colours.val, width: 2 } },
      { x: C, y: fit.curve.map((p) => p.accuracy), name: "held-out accuracy", mode: "lines+markers", yaxis: "y2", line: { color: colours.acc, width: 2 } },
      { x: [fit.strength], y: [chosen.log_loss], name: `chosen C = ${strength(fit.strength)}`, mode: "markers", marker: { color: colours.train, size: 13, symbol: "star" } },
    ], {
      margin: { l: 55, r: 55, t: 10, b: 40 },
      xaxis: { type: "log", title: { text: "C (larger: closer to the training images)" }, exponentformat: "power" },
      yaxis: { title: { text: "log-loss" }, rangemode: "tozero" },
      yaxis2: { title: { text: "accuracy" }, overlaying: "y", side: "right", range: [-0.01, 1.01], dtick: 0.2, tickformat: ".0%", showgrid: false },
      shapes: [{ type: "line", x0: fit.strength, x1: fit.strength, yref: "paper", y0: 0, y1: 1, line: { color: colours.train, width: 1, dash: "dot" } }],
      legend: { orientation: "h", y: -0.22 },
    }, plotConfig);
    const chart = document.getElementById("fit-chart");
    chart.dataset.points = String(C.length);
    chart.dataset.chosen = String(fit.strength);
    // The validation figures are in the progress card above.
    document.getElementById("fit-stats").replaceChildren(stat(strength(fit.strength), "chosen C"),
      stat(String(fit.folds), "cross-validation folds"), stat(num(chosen.log_loss), "held-out log-loss"),
      stat(pct(chosen.accuracy), "held-out accuracy"));
    document.getElementById("fit-text").textContent = `${C.length} strengths tried from C = ${strength(C[0])} to ${strength(C[C.length - 1])}, `
      + `each by ${fit.folds}-fold cross-validation on the training images; C = ${strength(fit.strength)} predicted the held-out images best `
      + `(log-loss ${num(chosen.log_loss)}, accuracy ${pct(chosen.accuracy)}).`;
  }

  async function fetchEvents() {
    const found = await api("GET", `${base}/events?after=${cursor}`);
    cursor = found.next;
    if (found.events.length) {
      addEvents(found.events);
      drawCharts();
      const last = [...found.events].reverse().find((e) => LIVE_TYPES.includes(e.type));
      if (last) renderLive(last);
    }
    return found.status;
  }

  // -- the run: device, precision, times, time left ------------------------------------------------------
  function renderRun() {
    const job = model.job;
    const text = (id, value) => { document.getElementById(id).textContent = value; };
    const processes = run.processes > 1 ? `, ${run.processes} data-parallel processes` : "";
    text("run-device", run.device ? run.device + processes
      : (job && job.progress && job.progress.device) || (live(model.status) ? "not started yet" : "–"));
    text("run-precision", run.device === null ? "–" : fitted ? "float32 (onnxruntime)" : run.bf16 ? "bfloat16 (autocast)" : "float32");
    let eta = null;
    const last = run.last;
    if (model.status === "running" && last && last.epoch > 0 && model.epochs && !fitted) eta = last.elapsed_s * (model.epochs - last.epoch) / last.epoch;
    else if (model.status === "running" && job) eta = job.eta_s;
    text("run-eta", model.status === "running" ? (eta === null || eta === undefined ? "estimating…" : `about ${duration(eta)}`) : "–");
    text("run-queued", when(job ? job.created : null));
    text("run-started", when((job && job.started) || run.started));
    text("run-finished", live(model.status) ? "–" : when((job && job.finished) || run.finished));
  }

  // -- the log --------------------------------------------------------------------------------------------
  let logNext = 0;
  let logBusy = false;
  async function refreshLog() {
    if (logBusy) return;
    logBusy = true;
    try {
      const part = await api("GET", `${base}/log?offset=${logNext}`);
      const box = document.getElementById("log-text");
      if (part.size < logNext) { logNext = 0; box.textContent = ""; return; }  // a new run began the log again
      if (part.text) {
        const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
        box.textContent = (logNext === 0 ? "" : box.textContent) + part.text;
        if (box.textContent.length > 400000) box.textContent = box.textContent.slice(-300000);
        if (atEnd) box.scrollTop = box.scrollHeight;
      }
      logNext = part.next;
      document.getElementById("log-size").textContent = part.size ? `${(part.size / 1024).toFixed(1)} KB` : "";
      if (part.next < part.size) setTimeout(refreshLog, 0);
    } catch (e) { /* the model has no folder yet */ } finally { logBusy = false; }
  }

  // -- status, stats, actions ---------------------------------------------------------------------------
  function stat(value, label) { return el("div", { class: "stat" }, el("div", { class: "v", text: value }), el("div", { class: "k", text: label })); }

  // A fitted head's progress: the features of every image, then the cross-validation folds, then the fit.
  function renderFitLive(last) {
    let done = 1;
    let text = "fitted";
    if (last.type === "features") {
      done = 0.8 * (last.done / last.total);
      text = `computing features: ${last.done} of ${last.total} images`;
    } else if (last.type === "cross_validation") {
      done = 0.8 + 0.2 * (last.done / last.total);
      text = `cross-validation: fold ${last.done} of ${last.total}`;
    }
    document.getElementById("epoch-bar").style.width = `${(100 * done).toFixed(1)}%`;
    document.getElementById("epoch-text").textContent = text;
    const record = model.history.length ? model.history[model.history.length - 1] : (last.type === "epoch" ? last : null);
    const stats = [
      stat(record ? pct(record.val_accuracy) : "–", "val accuracy"),
      stat(record ? num(record.val_loss) : "–", "val log-loss"),
      stat(record && record.val_unfamiliar !== null && record.val_unfamiliar !== undefined ? pct(record.val_unfamiliar) : "–", "val unfamiliar"),
      stat(duration(last.elapsed_s), "elapsed"),
    ];
    document.getElementById("stats").replaceChildren(...stats);
  }

  function renderLive(last) {
    if (fitted) { renderFitLive(last); return; }
    if (last.type === "prepare" || last.type === "features") {  // before the first step: say what it does
      const text = last.type === "features" ? `computing features ${last.done}/${last.total}` : last.message;
      document.getElementById("epoch-text").textContent = text;
      document.getElementById("epoch-bar").style.width = last.type === "features" ? `${(100 * last.done / last.total).toFixed(1)}%` : "0%";
      return;
    }
    const epochs = model.epochs || 0;
    const epoch = last.epoch || 0;
    document.getElementById("epoch-bar").style.width = `${epochs ? Math.min(100, (100 * epoch) / epochs) : 0}%`;
    document.getElementById("epoch-text").textContent = epochs ? `epoch ${Number.isInteger(Number(epoch)) ? epoch : Number(epoch).toFixed(1)} of ${epochs}` : "";
    const lastEpoch = model.history.length ? model.history[model.history.length - 1] : null;
    const valAcc = series.ep.acc.length ? series.ep.acc[series.ep.acc.length - 1] : (lastEpoch ? lastEpoch.val_accuracy : null);
    const valLoss = series.ep.loss.length ? series.ep.loss[series.ep.loss.length - 1] : (lastEpoch ? lastEpoch.val_loss : null);
    const stats = [
      stat(num(last.train_loss), "train loss"),
      stat(num(valLoss), "val loss"),
      stat(pct(valAcc), "val accuracy"),
      stat(last.lr === undefined ? "–" : Number(last.lr).toExponential(2), "learning rate"),
      stat(last.images_per_s ? `${Math.round(last.images_per_s)}` : "–", "images / s"),
      stat(duration(last.elapsed_s), "elapsed"),
    ];
    document.getElementById("stats").replaceChildren(...stats);
  }

  function renderModel() {
    renderRun();
    const status = document.getElementById("model-status");
    status.textContent = model.status;
    status.className = `badge ${model.status}`;
    document.getElementById("abort").hidden = !model.can_abort;
    document.getElementById("resume").hidden = !model.can_resume;
    document.getElementById("delete").hidden = live(model.status);
    const message = document.getElementById("model-message");
    if (model.error) say(message, model.error);
    else if (model.status === "queued") {
      const ahead = model.job && model.job.queue_position;
      say(message, ahead ? `Waiting: ${ahead} job(s) run or wait before this one on its device.` : "Starting…", "info");
    } else if (fitted && (model.status === "interrupted" || model.status === "aborted")) {
      say(message, `The fit ${model.status === "aborted" ? "was aborted" : "stopped when its process ended (the server restarted?)"}. A fitted head has no epochs to resume from: fitting it again takes seconds (Clone, then Train).`, "info");
    } else if (model.status === "interrupted") say(message, "The training stopped when its process ended (the server restarted?). Resume continues from the last saved epoch.", "info");
    else if (model.status === "aborted" && !model.history.length && model.can_resume && !model.card?.labels) say(message, "The training was aborted before it started. Resume starts it as it was asked for.", "info");
    else if (model.status === "aborted" && model.can_resume) say(message, "The training was aborted. Resume continues from the last saved epoch.", "info");
    else if (model.status === "aborted") say(message, "The training was aborted before it saved an epoch: there is nothing to resume from. Clone it to train it again.", "info");
    else say(message, null);
    if (!series.it.x.length && model.history.length) {
      const last = model.history[model.history.length - 1];
      renderLive(last);
    }
    if (fitted) drawFit();
    else renderEpochs();
    // Download choices: the best epoch's bundle, the last epoch, and every kept snapshot (a fitted head: its bundle).
    const select = document.getElementById("download-epoch");
    const previous = select.value;
    const choices = [];
    if (fitted) {
      if (model.bundle) choices.push(["best", "the fitted model"]);
    } else {
      if (model.bundle) choices.push(["best", `best epoch${model.summary?.best_epoch ? " (" + model.summary.best_epoch + ")" : ""}`]);
      if (model.history.length) choices.push(["last", `last epoch (${model.history[model.history.length - 1].epoch})`]);
      for (const s of model.snapshots) choices.push([String(s), `snapshot of epoch ${s}`]);
    }
    select.replaceChildren(...choices.map(([value, text]) => el("option", { value, text })));
    select.closest("label").hidden = fitted || !choices.length;
    if (select.dataset.chosen && choices.some(([v]) => v === previous)) select.value = previous;  // keep the user's pick
    updateDownload();
    document.getElementById("classify-button").disabled = !model.bundle;
    document.getElementById("camera-button").disabled = !model.bundle;
    document.getElementById("many-button").disabled = !model.bundle;
    document.getElementById("eval-button").disabled = !model.bundle;
    const evalText = document.getElementById("eval-text");
    const waiting = "Available once training has written the model bundle.";
    if (!model.bundle) evalText.textContent = waiting;
    else if (evalText.textContent === waiting) evalText.textContent = evalText.dataset.idle;
  }

  function renderEpochs() {
    const rows = [...model.history].reverse().map((h) => el("tr", {},
      el("td", { class: "num", text: h.epoch + (h.epoch === model.summary?.best_epoch ? " ★" : "") }),
      el("td", { class: "num", text: num(h.train_loss) }),
      el("td", { class: "num", text: num(h.val_loss) }),
      el("td", { class: "num", text: pct(h.val_accuracy) }),
      el("td", { class: "num", text: h.val_top5 === undefined ? "–" : pct(h.val_top5) }),
      el("td", { class: "num", text: h.lr === undefined ? "–" : Number(h.lr).toExponential(2) }),
      el("td", { class: "num", text: duration(h.elapsed_s) })));
    shoal.replaceRows(document.getElementById("epochs-body"), rows, live(model.status) ? "The first epoch is on its way." : "No validated epoch.", 7);
  }

  function updateDownload() {
    const select = document.getElementById("download-epoch");
    const link = document.getElementById("download-link");
    const note = document.getElementById("download-note");
    if (!select.value) {
      link.removeAttribute("href");
      link.classList.add("disabled");
      note.textContent = "Nothing to download yet: the bundle is written when training ends (snapshots as they are kept).";
      return;
    }
    link.href = `${base}/download?epoch=${enc(select.value)}`;
    link.classList.remove("disabled");
    if (fitted) note.textContent = "A fitted head has one result, this bundle: no epochs or snapshots to choose.";
    else note.textContent = select.value === "best" && model.bundle ? "" : "The first download of this epoch exports it (the network is rebuilt and converted to ONNX) in a queued job: the page shows its progress, then the file downloads.";
  }

  // Any epoch but the best's written bundle is exported by a queued job first: follow its progress, then download.
  document.getElementById("download-link").addEventListener("click", async (event) => {
    const link = event.currentTarget;
    const select = document.getElementById("download-epoch");
    if (!link.getAttribute("href") || link.classList.contains("disabled")) { event.preventDefault(); return; }
    if (select.value === "best" && model.bundle) return;  // the written bundle: the browser downloads it at once
    event.preventDefault();
    if (link.dataset.saving) return;
    const note = document.getElementById("download-note");
    const started = Date.now();
    const label = select.options[select.selectedIndex].text;
    const seconds = () => Math.round((Date.now() - started) / 1000);
    link.dataset.saving = "1";
    link.classList.add("busy");
    link.textContent = "Exporting…";
    try {
      const answer = await api("POST", `${base}/export?epoch=${enc(select.value)}`);
      let job = answer.job;
      while (job && (job.status === "queued" || job.status === "running")) {
        const where = job.status === "queued"
          ? `queued${job.queue_position ? ` behind ${job.queue_position} other export${job.queue_position > 1 ? "s" : ""}` : ""}`
          : (job.progress?.stage || "starting");
        note.textContent = `Exporting ${label}: ${where}… ${seconds()} s`;
        await new Promise((resolve) => setTimeout(resolve, 1000));
        job = await api("GET", `/api/jobs/${job.id}`);
      }
      if (job && job.status !== "done") throw new Error(job.error || `the export was ${job.status}`);
      const save = el("a", { href: answer.url, download: "", hidden: true });
      document.body.append(save);
      save.click();
      save.remove();
      note.replaceChildren(job ? `Exported in ${seconds()} s: ` : "Ready: ", el("a", { href: answer.url, text: `download ${label} again` }));
    } catch (e) {
      say(document.getElementById("model-message"), `Download: ${e.message}`);
      note.textContent = "";
    } finally {
      delete link.dataset.saving;
      link.classList.remove("busy");
      link.textContent = "Download";
    }
  });
  document.getElementById("download-epoch").addEventListener("change", (event) => {
    event.target.dataset.chosen = "1";
    updateDownload();
  });

  async function refreshModel() {
    model = await api("GET", base);
    renderModel();
  }

  document.getElementById("abort").addEventListener("click", () => confirmThen(`Abort training ${model.name}? Its saved epochs are kept.`, async () => {
    model = await api("POST", `${base}/abort`); renderModel(); startFollowing();
  }));
  document.getElementById("resume").addEventListener("click", async () => {
    try { await api("POST", `${base}/resume`); await refreshModel(); startFollowing(); } catch (e) { say(document.getElementById("model-message"), e.message); }
  });
  document.getElementById("delete").addEventListener("click", () => confirmThen(`Delete model ${model.name} and all its files?`, async () => {
    await api("DELETE", base); window.location.href = "/";
  }));

  let stopPolling = null;
  function startPolling() {
    if (stopPolling) stopPolling();
    let lastStatus = model.status;
    stopPolling = poll(async () => {
      const status = await fetchEvents();
      // The model can say "aborted" while its job still says "running" as the worker exits: look again
      // until the job has ended too, or Resume would stay hidden until a reload.
      if (status !== lastStatus || settling() || series.ep.x.length !== model.history.length) {
        lastStatus = status;
        await refreshModel();
      }
      return live(status) || settling();
    }, 1500);
  }
  const settling = () => Boolean(model.job && live(model.job.status));

  // -- the unfamiliar verdict ------------------------------------------------------------------------------
  const UNFAMILIAR = "It looks like none of the training images: its probabilities say little.";
  const reasonText = (reason) => (reason || "the model cannot tell").replace(/^the model cannot tell: /, "");
  function verdictBadge(r) {
    if (r.unfamiliar === true) return el("span", { class: "badge unfamiliar", title: `${UNFAMILIAR} (score ${num(r.unfamiliar_score, 3)})`, text: "unfamiliar" });
    if (r.unfamiliar === false) return el("span", { class: "badge familiar", title: `unfamiliar score ${num(r.unfamiliar_score, 3)}`, text: "familiar" });
    return el("span", { class: "muted small", title: reasonText(r.unfamiliar_reason), text: "unknown" });
  }
  function renderVerdict(box, r) {
    box.className = `verdict small${r.unfamiliar ? " unfamiliar" : ""}`;
    box.dataset.unfamiliar = String(r.unfamiliar);
    if (r.unfamiliar === true) {
      box.replaceChildren(verdictBadge(r), ` ${UNFAMILIAR} Its features are far from those of every training image (unfamiliar score ${num(r.unfamiliar_score, 3)}).`);
    } else if (r.unfamiliar === false) {
      box.replaceChildren(verdictBadge(r), ` It looks like the training images (unfamiliar score ${num(r.unfamiliar_score, 3)}).`);
    } else {
      box.replaceChildren(el("span", { class: "muted", text: `Familiar or not: unknown, ${reasonText(r.unfamiliar_reason)}.` }));
    }
  }

  // -- classify one (its rows: probabilityRows, the camera's too) --------------------------------------
  function probabilityRows(predictions) {
    return predictions.map((p, i) => el("tr", { class: i === 0 ? "top" : "" },
      el("td", {}, i === 0 ? el("strong", { text: p.label }) : p.label),
      el("td", {}, el("div", { class: "bar" }, el("div", { class: "track" }, el("div", { class: "fill", style: `width:${(100 * p.probability).toFixed(1)}%` })), el("span", { class: "mono", text: pct(p.probability) })))));
  }
  const classifyForm = document.getElementById("classify-form");
  classifyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("classify-message");
    say(message, null);
    const file = document.getElementById("classify-file").files[0];
    const url = document.getElementById("classify-url").value.trim();
    if (!file && !url) { say(message, "Choose an image file, or give the address of one."); return; }
    const form = new FormData();
    if (file && !url) form.append("file", file); else form.append("url", url);
    form.append("top", "5");
    const button = document.getElementById("classify-button");
    button.disabled = true;
    document.getElementById("layers-result").hidden = true;
    try {
      const result = await api("POST", `${base}/classify`, form);
      const image = document.getElementById("classify-image");
      image.src = file && !url ? URL.createObjectURL(file) : url;
      document.getElementById("classify-body").replaceChildren(...probabilityRows(result.predictions));
      renderVerdict(document.getElementById("classify-verdict"), result);
      document.getElementById("classify-result").hidden = false;
      document.getElementById("classify-result").dataset.label = result.predictions[0].label;
      const figure = document.getElementById("heatmap-figure");
      figure.hidden = true;
      if (document.getElementById("classify-heatmap").checked) {
        const heat = new FormData();
        if (file && !url) heat.append("file", file); else heat.append("url", url);
        try {
          const response = await fetch(`${base}/heatmap`, { method: "POST", body: heat, headers: { "X-Shoal-CSRF": document.querySelector('meta[name="csrf-token"]').content } });
          if (!response.ok) throw new Error((await response.json()).detail);
          document.getElementById("heatmap-image").src = URL.createObjectURL(await response.blob());
          document.getElementById("heatmap-caption").textContent = `where it looked for “${decodeURIComponent(response.headers.get("X-Shoal-Label") || "")}”`;
          figure.hidden = false;
        } catch (e) { say(message, `Heat-map: ${e.message}`, "info"); }
      }
      if (document.getElementById("classify-layers").checked) {
        const form = new FormData();
        if (file && !url) form.append("file", file); else form.append("url", url);
        try {
          showLayers(await api("POST", `${base}/layers`, form));
        } catch (e) { say(message, `Layers: ${e.message}`, "info"); }
      }
    } catch (e) {
      say(message, e.message);
      document.getElementById("classify-result").hidden = true;  // the previous image's result is not this one's
    } finally {
      button.disabled = !model.bundle;
    }
  });

  // Layers, as DIGITS showed them: the first convolution's filters, then per layer its output's statistics,
  // histogram and first channels.
  function showLayers(report) {
    const count = (n) => Number(n).toLocaleString("en-US");
    document.getElementById("layers-summary").textContent =
      `${report.layers.length} layers · ${count(report.total_parameters)} parameters · ${report.architecture}`;
    const weights = document.getElementById("layers-weights-figure");
    weights.hidden = !report.first_conv_weights;
    if (report.first_conv_weights) {
      document.getElementById("layers-weights").src = report.first_conv_weights;
      document.getElementById("layers-weights-caption").textContent = `weights of the first convolution (${report.first_conv})`;
    }
    const histogram = (layer) => {
      const peak = Math.max(...layer.histogram, 1);
      return el("div", { class: "hist", title: `${num(layer.edges[0])} … ${num(layer.edges[layer.edges.length - 1])}` },
        ...layer.histogram.map((n) => el("i", { style: `height:${(100 * n / peak).toFixed(1)}%` })));
    };
    // Three columns, so that a phone shows a whole row: the layer, its values, its activations.
    document.getElementById("layers-body").replaceChildren(...report.layers.map((layer) => el("tr", {},
      el("td", {}, el("div", { class: "mono", text: layer.name }),
        el("div", { class: "muted small", text: `${layer.kind} · ${layer.shape.join("×")}` }),
        el("div", { class: "muted small", text: `${count(layer.parameters)} parameters` })),
      el("td", { class: "small" }, el("div", { class: "mono", text: `mean ${num(layer.mean)}` }),
        el("div", { class: "mono", text: `std ${num(layer.std)}` }), histogram(layer)),
      el("td", {}, layer.image ? el("img", { class: "activations", src: layer.image, alt: `activations of ${layer.name}` }) : el("span", { class: "muted", text: "–" })))));
    document.getElementById("layers-result").hidden = false;
  }

  // -- the camera: classify its frames live, one request at a time (the rate the server sustains) ---------------
  let camera = null;
  async function cameraLoop(state) {
    const video = document.getElementById("camera-video");
    const canvas = document.createElement("canvas");
    let frames = 0;
    const started = performance.now();
    while (camera === state) {
      if (!video.videoWidth) { await new Promise((r) => setTimeout(r, 100)); continue; }
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0);
      const blob = await new Promise((r) => canvas.toBlob(r, "image/jpeg", 0.9));
      const form = new FormData();
      form.append("file", blob, "camera.jpg");
      form.append("top", "3");
      try {
        const result = await api("POST", `${base}/classify`, form);
        if (camera !== state) break;
        frames += 1;
        document.getElementById("camera-body").replaceChildren(...probabilityRows(result.predictions));
        renderVerdict(document.getElementById("camera-verdict"), result);
        const result_box = document.getElementById("camera-result");
        result_box.dataset.frames = String(frames);
        result_box.dataset.label = result.predictions[0].label;
        document.getElementById("camera-rate").textContent = `${(frames / ((performance.now() - started) / 1000)).toFixed(1)} frames / s classified`;
      } catch (e) {
        say(document.getElementById("classify-message"), `Camera: ${e.message}`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }
  document.getElementById("camera-button").addEventListener("click", async () => {
    const button = document.getElementById("camera-button");
    if (camera) {  // stop
      camera.stream.getTracks().forEach((t) => t.stop());
      camera = null;
      button.textContent = "Use camera";
      document.getElementById("camera-result").hidden = true;
      return;
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      say(document.getElementById("classify-message"), "This browser offers no camera here: cameras need a secure origin (localhost, or HTTPS with shoal serve --certfile --keyfile).");
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
      camera = { stream };
      document.getElementById("camera-video").srcObject = stream;
      document.getElementById("camera-result").hidden = false;
      button.textContent = "Stop camera";
      cameraLoop(camera);
    } catch (e) {
      say(document.getElementById("classify-message"), `Camera: ${e.message}`);
    }
  });

  // -- classify many ------------------------------------------------------------------------------------
  document.getElementById("many-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("many-message");
    say(message, null);
    const files = document.getElementById("many-files").files;
    const zip = document.getElementById("many-zip").files[0];
    if (!files.length && !zip) { say(message, "Choose image files, or a zip with one folder of images per class."); return; }
    const form = new FormData();
    for (const f of files) form.append("files", f);
    if (zip) form.append("archive", zip);
    const button = document.getElementById("many-button");
    button.disabled = true;
    try {
      const out = await api("POST", `${base}/classify-many`, form);
      const s = out.summary;
      const stats = [stat(String(s.images), "images")];
      if (s.with_truth) stats.push(stat(pct(s.top1_accuracy), "top-1 accuracy"));
      if (s.with_truth && manyClasses()) stats.push(stat(pct(s.top5_accuracy), "top-5 accuracy"));
      if (s.errors) stats.push(stat(String(s.errors), "unreadable"));
      if (s.unfamiliar !== null) stats.push(stat(String(s.unfamiliar), "unfamiliar"));
      document.getElementById("many-stats").replaceChildren(...stats);
      const note = document.getElementById("many-unfamiliar");
      note.hidden = !s.unfamiliar && s.unfamiliar !== null;
      note.className = `verdict small${s.unfamiliar ? " unfamiliar" : ""}`;
      note.textContent = s.unfamiliar === null ? `Familiar or not: unknown, ${reasonText(s.unfamiliar_reason)}.`
        : `${s.unfamiliar} of ${s.images} images look like none of the training images: their probabilities say little.`;
      const perClass = out.per_class.map((c) => el("tr", {},
        el("td", {}, c.label, c.known ? null : el("span", { class: "small muted", text: " (not a class of this model)" })),
        el("td", { class: "num", text: c.images }), el("td", { class: "num", text: pct(c.top1_accuracy) }), el("td", { class: "num", text: pct(c.top5_accuracy) })));
      document.getElementById("per-class-title").hidden = !perClass.length;
      document.getElementById("per-class-table").hidden = !perClass.length;
      document.getElementById("per-class-body").replaceChildren(...perClass);
      document.getElementById("many-body").replaceChildren(...out.results.map((r) => {
        const top = r.predictions[0];
        const mark = r.truth === null || r.truth === undefined ? "" : (r.top1 ? "right" : "wrong");
        return el("tr", {},
          el("td", { class: "mono", text: r.source }),
          el("td", { text: r.truth ?? "–" }),
          el("td", { class: mark }, r.error ? el("span", { class: "wrong", text: r.error }) : (top ? top.label : "–")),
          el("td", { class: "num", text: top ? pct(top.probability) : "–" }),
          el("td", { class: "small muted", text: r.predictions.slice(1, 3).map((p) => `${p.label} ${pct(p.probability)}`).join(", ") }),
          el("td", {}, r.error ? "–" : verdictBadge(r)));
      }));
      document.getElementById("many-result").hidden = false;
    } catch (e) {
      say(message, e.message);
      document.getElementById("many-result").hidden = true;
    } finally {
      button.disabled = !model.bundle;
    }
  });

  // -- evaluation ---------------------------------------------------------------------------------------
  document.getElementById("eval-button").addEventListener("click", async () => {
    const message = document.getElementById("eval-message");
    say(message, null);
    const split = document.getElementById("eval-split").value;
    const button = document.getElementById("eval-button");
    button.disabled = true;
    document.getElementById("eval-text").textContent = "Evaluating…";
    try {
      const ev = await api("GET", `${base}/evaluation?split=${enc(split)}`);
      renderEvaluation(ev);
      document.getElementById("eval-text").textContent = `${ev.images} images of the ${ev.split} split.`;
    } catch (e) {
      say(message, e.message);
      document.getElementById("eval-result").hidden = true;
      document.getElementById("eval-text").textContent = "";
    } finally {
      button.disabled = !model.bundle;
    }
  });

  // A wrong prediction is drawn in red, with its true class on a second line.
  // An unfamiliar image is framed in amber.
  function thumb(item, caption) {
    const wrong = item.truth !== item.predicted;
    const text = (wrong ? `${caption} · is ${item.truth}` : caption) + (item.unfamiliar ? " · unfamiliar" : "");
    return el("figure", { class: `thumb${wrong ? " wrong" : ""}${item.unfamiliar ? " odd" : ""}`, title: `${item.source}: ${text}` },
      el("img", { src: item.image, alt: text }), el("div", { class: "cap", text: caption }),
      wrong ? el("div", { class: "cap", text: `is ${item.truth}` }) : null);
  }

  // The reliability diagram: per confidence bin, the accuracy (bar) against the mean confidence (the diagonal).
  function drawReliability(calibration) {
    const bins = calibration.bins.filter((b) => b.count > 0);
    const mid = bins.map((b) => (b.low + b.high) / 2);
    const width = bins.map((b) => 0.92 * (b.high - b.low));
    const hover = bins.map((b) => `${b.low.toFixed(1)}–${b.high.toFixed(1)}: ${b.count} images<br>mean confidence ${pct(b.confidence)}<br>accuracy ${pct(b.accuracy)}`);
    Plotly.react("reliability-chart", [
      { x: mid, y: bins.map((b) => b.accuracy), width, type: "bar", name: "accuracy", marker: { color: colours.train }, customdata: hover, hovertemplate: "%{customdata}<extra></extra>" },
      { x: mid, y: bins.map((b) => b.confidence - b.accuracy), base: bins.map((b) => b.accuracy), width, type: "bar", name: "gap to confidence", marker: { color: "rgba(200, 40, 40, 0.45)" }, hoverinfo: "skip" },
      { x: [0, 1], y: [0, 1], mode: "lines", name: "calibrated", line: { color: "#444", dash: "dash", width: 1 }, hoverinfo: "skip" },
    ], {
      barmode: "overlay", margin: { l: 50, r: 10, t: 10, b: 45 }, legend: { orientation: "h", y: 1.12 },
      xaxis: { title: { text: "confidence (top-1 probability)" }, range: [0, 1] }, yaxis: { title: { text: "accuracy" }, range: [0, 1] },
    }, plotConfig);
  }

  function renderEvaluation(ev) {
    const stats = [stat(pct(ev.accuracy), "accuracy")];
    if (ev.top5_accuracy !== null && manyClasses()) stats.push(stat(pct(ev.top5_accuracy), "top-5 accuracy"));
    stats.push(stat(num(ev.log_loss), "log-loss"));
    stats.push(stat(pct(ev.calibration.ece), "calibration error (ECE)"));
    stats.push(stat(ev.unfamiliar_rate === null ? "–" : pct(ev.unfamiliar_rate), "unfamiliar"));
    stats.push(stat(String(ev.images), "images"));
    document.getElementById("eval-stats").replaceChildren(...stats);
    const labels = ev.labels;
    document.getElementById("eval-result").hidden = false;  // visible first, so the chart takes its box's width
    Plotly.react("confusion-chart", [{
      z: ev.confusion_matrix, x: labels, y: labels, type: "heatmap", colorscale: [[0, "#f4f8f9"], [1, "#0b6e79"]], showscale: false,
      hovertemplate: "true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>",
    }], {
      margin: { l: 90, r: 10, t: 10, b: 80 }, xaxis: { title: { text: "predicted" }, type: "category" },
      yaxis: { title: { text: "true" }, autorange: "reversed", type: "category" },
      annotations: labels.length <= 12 ? ev.confusion_matrix.flatMap((row, i) => row.map((v, j) => ({ x: labels[j], y: labels[i], text: String(v), showarrow: false, font: { color: v > 0.5 * Math.max(...row) ? "#fff" : "#1d2a35", size: 11 } }))) : [],
    }, plotConfig);
    document.getElementById("eval-classes").replaceChildren(...ev.per_class.map((c) => el("tr", {},
      el("td", { text: c.label }), el("td", { class: "num", text: pct(c.precision) }), el("td", { class: "num", text: pct(c.recall) }),
      el("td", { class: "num", text: pct(c.f1) }), el("td", { class: "num", text: c.support }),
      el("td", { class: "num", text: c.unfamiliar === null ? "–" : c.unfamiliar }))));
    drawReliability(ev.calibration);
    const wrong = ev.confidently_wrong.map((w) => thumb(w, `${w.predicted} ${pct(w.probability)}`));
    document.getElementById("eval-wrong").replaceChildren(...(wrong.length ? wrong : [el("p", { class: "empty", style: "grid-column: 1 / -1", text: "None: every image was classified correctly." })]));
    document.getElementById("eval-confident").replaceChildren(...Object.entries(ev.most_confident).map(([label, items]) => el("div", { class: "group" },
      el("div", { class: "group-label", text: label }),
      items.length ? el("div", { class: "thumbs small" }, ...items.map((w) => thumb(w, pct(w.probability))))
        : el("p", { class: "empty", text: `No image was predicted as ${label}.` }))));
    const odd = ev.unfamiliar.map((w) => thumb(w, `${w.predicted} · ${num(w.unfamiliar_score, 3)}`));
    const oddText = ev.unfamiliar_count === null ? `Unknown: ${reasonText(ev.unfamiliar_reason)}.`
      : "None: every image looks like some of the training images.";
    if (odd.length < (ev.unfamiliar_count || 0)) odd.push(el("p", { class: "empty", style: "grid-column: 1 / -1", text: `and ${ev.unfamiliar_count - odd.length} more.` }));
    document.getElementById("eval-unfamiliar").replaceChildren(...(odd.length ? odd : [el("p", { class: "empty", style: "grid-column: 1 / -1", text: oddText })]));
    document.getElementById("eval-result").hidden = false;
  }

  document.getElementById("eval-text").dataset.idle = document.getElementById("eval-text").textContent;

  // -- live: server-sent events; polling only where they cannot work ------------------------------------------
  let source = null;
  let lastState = null;
  let batch = [];
  let drawing = null;
  function flush() {
    drawing = null;
    const events = batch;
    batch = [];
    if (!events.length) return;
    addEvents(events);
    drawCharts();
    const last = [...events].reverse().find((e) => LIVE_TYPES.includes(e.type));
    if (last) renderLive(last);
    renderRun();
    refreshLog();
    if (series.ep.x.length !== model.history.length) refreshModel();  // a new epoch: its row in the table
  }
  function follow() {
    if (!window.EventSource) { startPolling(); return; }
    let opened = false;
    source = new EventSource(`${base}/stream?after=${cursor}`);
    document.body.dataset.live = "sse";
    source.onmessage = async (message) => {
      opened = true;
      const e = JSON.parse(message.data);
      if (e.type !== "status") {
        cursor = Number(message.lastEventId) || cursor + 1;
        batch.push(e);
        if (!drawing) drawing = setTimeout(flush, 150);
        return;
      }
      // Draw the events already received first: the status (say "done") never gets ahead of the chart.
      clearTimeout(drawing);
      flush();
      const key = JSON.stringify(e);
      if (key !== lastState) {
        try {
          await refreshModel();
          lastState = key;  // only once the page shows it: a failed look is tried again at the next status
        } catch (err) { console.warn(err); return; }
        refreshLog();
      }
      if (!live(e.status) && !live(e.job)) {  // the run and its job have ended: nothing more will come
        source.close();
        source = null;
        flush();
      }
    };
    source.onerror = () => {
      if (opened || !source) return;  // a dropped stream: the browser reconnects with Last-Event-ID
      source.close();  // no stream at all (a proxy that buffers?): poll instead
      source = null;
      document.body.dataset.live = "polling";
      startPolling();
    };
  }
  function startFollowing() {
    if (stopPolling) { stopPolling(); stopPolling = null; }
    if (source) { source.close(); source = null; }
    follow();
  }

  // -- start ----------------------------------------------------------------------------------------------
  renderModel();
  refreshLog();
  if (window.EventSource) { drawCharts(); follow(); }
  else fetchEvents().then(() => { drawCharts(); if (live(model.status) || settling()) startPolling(); });
})();
