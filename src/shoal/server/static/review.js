// Review: the suspects of a model's dataset with their thumbnails; relabel, exclude or keep each;
// Apply stores a new dataset version and offers to retrain with the same options.
"use strict";
(() => {
  const { api, el, say, enc } = shoal;
  const info = shoal.initial("review-model");
  if (!info) return;
  const message = document.getElementById("review-message");
  const grid = document.getElementById("suspects");
  const apply = document.getElementById("apply");
  const choices = new Map();  // image path -> {action: "relabel" | "exclude" | "keep", to}
  let newDataset = null;

  const KIND_TEXT = {
    label: "label probably wrong", duplicate: "near-duplicate", outlier: "outlier", ambiguous: "ambiguous",
  };

  function card(row, classes) {
    const choice = { action: row.action, to: row.suggested };
    choices.set(row.image, choice);
    const name = `act-${row.split}-${row.index}`;
    const select = el("select", { "aria-label": "relabel as", class: "relabel-to" },
      ...classes.filter((c) => c !== row.given).map((c) => el("option", { value: c, text: c, selected: c === row.suggested })));
    const radio = (value, text, extra) => el("label", { class: "check" },
      el("input", { type: "radio", name, value, checked: choice.action === value }), ` ${text}`, extra || null);
    const box = el("div", { class: "suspect", "data-image": row.image, "data-split": row.split },
      el("img", { src: row.thumbnail, alt: row.image.split("/").pop(), loading: "lazy" }),
      el("div", { class: "small" }, el("b", { text: KIND_TEXT[row.kind] || row.kind }), ` · ${row.split} · score ${shoal.num(row.score, 2)}`),
      el("div", { class: "small" }, `given `, el("b", { text: row.given }),
        row.suggested !== row.given ? ` · suggested ${row.suggested}` : "",
        ` · p(given) ${shoal.num(row.probability, 2)}`),
      el("div", { class: "muted small name", text: row.image.split("/").slice(-2).join("/") }),
      row.duplicate_of ? el("div", { class: "muted small", text: `duplicate of ${row.duplicate_of.split("/").slice(-2).join("/")}` }) : null,
      el("div", { class: "choices" }, radio("relabel", "relabel as ", select), radio("exclude", "exclude"), radio("keep", "keep")));
    box.addEventListener("change", (event) => {
      if (event.target === select) {
        choice.to = select.value;
        box.querySelector('input[value="relabel"]').checked = true;
        choice.action = "relabel";
      } else if (event.target.name === name) {
        choice.action = event.target.value;
      }
      box.dataset.action = choice.action;
      count();
    });
    box.dataset.action = choice.action;
    if (classes.length < 2) select.disabled = true;
    return box;
  }

  function count() {
    const all = [...choices.values()];
    const relabel = all.filter((c) => c.action === "relabel").length;
    const exclude = all.filter((c) => c.action === "exclude").length;
    apply.disabled = newDataset !== null || relabel + exclude === 0;
    apply.textContent = `Apply: relabel ${relabel}, exclude ${exclude}`;
  }

  async function load() {
    try {
      const review = await api("GET", `/api/models/${enc(info.name)}/review?top=100`);
      const flagged = Object.entries(review.counts).map(([k, n]) => `${n} ${k}`).join(", ");
      const total = Object.values(review.images).reduce((a, b) => a + b, 0);
      say(message, review.suspects.length
        ? `${total} images reviewed; flagged ${flagged}. Showing the ${review.suspects.length} most suspicious.`
        : `${total} images reviewed: nothing looks wrong.`, "info");
      const method = document.getElementById("review-method");
      method.textContent = `Probabilities: ${review.method}.`;
      method.hidden = false;
      grid.replaceChildren(...review.suspects.map((row) => card(row, review.classes)));
      count();
    } catch (e) {
      say(message, e.message);
    }
  }

  apply.addEventListener("click", async () => {
    apply.disabled = true;
    const body = { relabel: {}, exclude: [] };
    for (const [image, c] of choices) {
      if (c.action === "relabel") body.relabel[image] = c.to;
      if (c.action === "exclude") body.exclude.push(image);
    }
    try {
      const made = await api("POST", `/api/models/${enc(info.name)}/review/apply`, body);
      newDataset = made.dataset;
      const text = document.getElementById("applied-text");
      text.replaceChildren(`Stored dataset `, el("a", { href: made.dataset_url, text: made.dataset }),
        ` from ${made.parent}: ${made.relabelled} relabelled, ${made.excluded} excluded; every other image keeps its split.`);
      document.getElementById("applied").hidden = false;
      grid.querySelectorAll("input, select").forEach((input) => { input.disabled = true; });
      count();
    } catch (e) {
      say(message, e.message);
      apply.disabled = false;
    }
  });

  document.getElementById("retrain").addEventListener("click", async (event) => {
    event.target.disabled = true;
    try {
      const accepted = await api("POST", `/api/models/${enc(info.name)}/retrain`, { dataset: newDataset });
      window.location.href = accepted.url;
    } catch (e) {
      say(document.getElementById("retrain-message"), e.message);
      event.target.disabled = false;
    }
  });

  load();
})();
