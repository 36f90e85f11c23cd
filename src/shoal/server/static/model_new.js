// New model: choose dataset, network and starting weights; preview the LR schedule; queue the training(s).
// A fitted head (the default when fine-tuning a frozen backbone) runs no loop: the loop's options are turned off.
"use strict";
(() => {
  const { api, upload, say, el } = shoal;
  const form = document.getElementById("model-form");
  if (!form) return;
  const message = document.getElementById("form-message");
  const start = shoalForms.choicePanels(form, "start", "start");
  const network = document.getElementById("f-network");
  const fileField = document.getElementById("network-file-field");
  const values = shoal.initial("initial-values") || {};
  document.getElementById("create-model").disabled = false;  // the form works once this script runs

  // A clone starts where its model started.
  if (values.pretrained === true) form.querySelector('input[name="start"][value="pretrained"]').click();
  if (values.network && ![...network.options].some((o) => o.value === values.network) && /\.py$/.test(values.network)) {
    const file = values.network.split("/").pop();
    const option = [...network.options].find((o) => o.value === `file:${file}`);
    if (option) option.selected = true;
  }
  if (fileField) network.addEventListener("change", () => { fileField.hidden = network.value !== "__upload__"; });

  // -- the learning-rate preview --------------------------------------------------------------------
  const field = (name) => form.querySelector(`[name="${name}"]`);
  const first = (raw) => raw.split(",")[0].trim();
  let timer = null;
  let asked = 0;  // the latest preview asked for: an older answer arriving after it is dropped
  async function preview() {
    const mine = ++asked;
    if (fitted()) return;  // a fitted head has no learning rate to draw
    const params = new URLSearchParams({ policy: field("lr_policy").value });
    const epochs = field("epochs").value.trim();
    const lr = first(field("lr").value);
    if (epochs) params.set("epochs", epochs);
    if (lr) params.set("lr", lr);
    for (const name of ["step_size", "gamma", "power"]) {
      if (field(name).value.trim()) params.set(name, field(name).value.trim());
    }
    if (field("step_values").value.trim()) params.set("step_values", field("step_values").value.trim());
    // Fine-tuning changes the defaults and the backbone's share of the rate: the server resolves them as a training.
    if (start() !== "scratch") params.set("pretrained", "true");
    if (field("freeze").value.trim()) params.set("freeze", field("freeze").value.trim());
    if (field("head").value) params.set("head", field("head").value);
    const text = document.getElementById("schedule-text");
    try {
      const found = await api("GET", `/api/schedule?${params}`);
      if (mine !== asked) return;
      const x = found.points.map((p) => p.epoch);
      const y = found.points.map((p) => p.lr);
      Plotly.react("lr-chart", [{ x, y, type: "scatter", mode: "lines", line: { color: "#0b6e79", width: 2 }, name: "learning rate" }], {
        margin: { l: 60, r: 12, t: 8, b: 40 }, xaxis: { title: { text: "epoch" } }, yaxis: { title: { text: "learning rate" }, exponentformat: "e" },
        showlegend: false,
      }, { displayModeBar: false, responsive: true });
      const backbone = found.backbone_scale < 1 ? ` The backbone learns at ${found.backbone_scale} of it.` : "";
      text.textContent = `${found.policy}: from ${shoal.num(y[0], 3)} to ${shoal.num(y[y.length - 1], 3)} over ${x[x.length - 1]} epochs.${backbone}`;
      text.className = "muted small";
    } catch (e) {
      if (mine !== asked) return;
      text.textContent = e.message;
      text.className = "message error";
    }
  }
  form.addEventListener("input", (event) => {
    if (["lr_policy", "epochs", "lr", "step_size", "step_values", "gamma", "power", "freeze"].includes(event.target.name)) {
      clearTimeout(timer);
      timer = setTimeout(preview, 250);
    }
  });
  form.addEventListener("change", (event) => { if (event.target.name === "lr_policy") preview(); });
  preview();

  // -- a fitted head: no loop, so no loop options (the server refuses them rather than ignore them) ----------
  // The head is fitted when chosen, or by default when fine-tuning a frozen backbone without colour jitter.
  function fitted() {
    const head = field("head").value;
    if (head) return head === "fit";
    const freeze = field("freeze").value.trim();
    return start() !== "scratch" && (freeze === "" || freeze === "backbone") && !(Number(field("color_jitter").value) > 0);
  }
  let wasFitted = null;
  function updateLoop() {
    const fit = fitted();
    if (fit === wasFitted) return;
    wasFitted = fit;
    form.querySelectorAll("[data-loop]").forEach((box) => {
      box.classList.toggle("off", fit);
      box.querySelectorAll("input, select").forEach((input) => { input.disabled = fit; });
    });
    document.getElementById("fit-note").hidden = !fit;
    document.getElementById("lr-chart").hidden = fit;
    document.getElementById("schedule-text").hidden = fit;
    document.getElementById("schedule-fit").hidden = !fit;
    const find = document.getElementById("lr-find");
    if (find) { find.disabled = fit; find.title = fit ? "A fitted head has no learning rate to find" : "Run the learning-rate range test (about 100 training steps) and use its suggestion"; }
    if (!fit) preview();  // drawn again at its box's width
  }
  form.addEventListener("change", updateLoop);
  form.addEventListener("input", updateLoop);
  updateLoop();

  // -- the form as the API's body (POST /api/models; POST /api/lr-find takes the same) -----------------
  async function requestBody() {
    const body = { dataset: field("dataset").value, options: shoalForms.options(document.getElementById("options")) };
    const name = field("name").value.trim();
    if (name) body.name = name;
    const processes = document.getElementById("f-processes").value.trim();
    if (processes) body.processes = /^\d+$/.test(processes) ? Number(processes) : processes;  // the server names a bad value
    if (network.value === "__upload__") {
      const file = document.getElementById("f-network-file").files[0];
      if (!file) throw new Error("Choose the network file (.py) to upload.");
      const data = new FormData();
      data.append("file", file);
      body.network_file = (await upload("/api/networks/files", data)).file;
    } else if (network.value.startsWith("file:")) {
      body.network_file = network.value.slice(5);
    } else {
      body.network = network.value;
    }
    const how = start();
    if (how === "pretrained") body.pretrained = true;
    if (how === "weights") body.weights = document.getElementById("f-weights").value;
    if (how === "previous") {
      body.previous = document.getElementById("f-previous").value;
      body.previous_epoch = document.getElementById("f-previous-epoch").value.trim() || "best";
    }
    return body;
  }

  // -- Find: the learning-rate range test, a queued job; its curve is drawn and its suggestion filled in ---
  const lrBox = form.querySelector('[data-field="lr"]');
  const findButton = el("button", { type: "button", id: "lr-find", title: "Run the learning-rate range test (about 100 training steps) and use its suggestion" }, "Find");
  lrBox.querySelector("input").after(findButton);
  findButton.disabled = fitted();
  const findPanel = document.getElementById("lr-find-panel");
  const findText = document.getElementById("lr-find-text");
  function drawFinding(found) {
    Plotly.react("lr-find-chart", [
      { x: found.lrs, y: found.losses, type: "scatter", mode: "lines", line: { color: "#b8c4de", width: 1 }, name: "loss" },
      { x: found.lrs, y: found.smoothed, type: "scatter", mode: "lines", line: { color: "#1e5ac8", width: 2 }, name: "smoothed" },
      { x: [found.valley], y: [found.smoothed[found.lrs.indexOf(found.valley)] ?? null], type: "scatter", mode: "markers",
        marker: { color: "#c82828", size: 9 }, name: "valley" },
    ], {
      margin: { l: 50, r: 12, t: 8, b: 40 }, xaxis: { type: "log", title: { text: "learning rate" }, exponentformat: "e" },
      yaxis: { title: { text: "training loss" }, range: [Math.min(...found.smoothed) * 0.9, Math.min(Math.max(...found.smoothed), 4 * Math.min(...found.smoothed))] },
      showlegend: false,
    }, { displayModeBar: false, responsive: true });
  }
  findButton.addEventListener("click", async () => {
    findButton.disabled = true;
    findPanel.hidden = false;
    say(findText, "Queued: the range test trains for up to 100 steps …", "info");
    try {
      const body = await requestBody();
      if (Array.isArray(body.options.batch_size)) body.options.batch_size = body.options.batch_size[0];
      delete body.options.lr;
      const job = await api("POST", "/api/lr-find", body);
      shoal.poll(async () => {
        const now = await api("GET", `/api/jobs/${job.id}`);
        const p = now.progress || {};
        if (now.status === "done" && p.finding) {
          const found = p.finding;
          drawFinding(found);
          field("lr").value = Number(found.suggestion.toPrecision(2));
          field("lr").dispatchEvent(new Event("input", { bubbles: true }));
          findText.className = "muted small";
          findText.textContent = `Suggested: ${shoal.num(found.suggestion, 2)} (filled in above). ${found.explanation}`;
          findButton.disabled = false;
          return false;
        }
        if (["failed", "aborted", "interrupted"].includes(now.status)) {
          say(findText, now.error || `the range test ${now.status}`);
          findButton.disabled = false;
          return false;
        }
        say(findText, now.status === "queued" ? `Queued (${now.queue_position} ahead) …`
          : `Trying learning rates: ${p.done_steps || 0}/${p.total_steps || "…"} steps …`, "info");
        return true;
      }, 500);
    } catch (e) {
      say(findText, e.message);
      findButton.disabled = false;
    }
  });

  // -- submit ---------------------------------------------------------------------------------------
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(message, null);
    const button = document.getElementById("create-model");
    button.disabled = true;
    try {
      const body = await requestBody();
      const accepted = await api("POST", "/api/models", body);
      window.location.href = accepted.models.length === 1 ? accepted.models[0].url : "/";
    } catch (e) {
      say(message, e.message);
      message.scrollIntoView({ behavior: "smooth", block: "center" });
      button.disabled = false;
    }
  });
})();
