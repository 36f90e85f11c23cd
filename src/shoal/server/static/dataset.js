// Dataset page: build progress while it is built; once stored, paged thumbnails per class and split (each opens
// at full size with its source), and classifying a server-side list of images with a trained model.
"use strict";
(() => {
  const { api, el, say, poll, enc, confirmThen, pct } = shoal;
  const info = shoal.initial("initial-dataset");
  const base = `/api/datasets/${enc(info.name)}`;

  const deleteButton = document.getElementById("delete-dataset");
  if (deleteButton) {
    deleteButton.addEventListener("click", () => confirmThen(`Delete dataset ${info.name} and its files?`, async () => {
      await api("DELETE", base);
      window.location.href = "/";
    }));
  }
  const abortButton = document.getElementById("abort-build");
  if (abortButton) {
    abortButton.addEventListener("click", () => confirmThen("Abort this build?", async () => {
      await api("POST", `/api/jobs/${abortButton.dataset.job}/abort`);
      window.location.reload();
    }));
  }

  if (info.status !== "done") {
    const bar = document.getElementById("build-bar");
    const text = document.getElementById("build-text");
    const status = document.getElementById("ds-status");
    poll(async () => {
      const ds = await api("GET", base);
      status.textContent = ds.status;
      status.className = `badge ${ds.status}`;
      if (ds.status === "done") { window.location.reload(); return false; }
      const p = (ds.job && ds.job.progress) || {};
      if (p.total) {
        bar.style.width = `${(100 * p.done) / p.total}%`;
        text.textContent = `${ds.status} · ${p.done} / ${p.total} images decoded`;
      } else {
        text.textContent = ds.status + (ds.job && ds.job.queue_position ? ` · ${ds.job.queue_position} job(s) ahead` : "");
      }
      if (ds.error) say(document.getElementById("build-message"), ds.error);
      if (!["queued", "running"].includes(ds.status)) {
        if (abortButton) abortButton.hidden = true;
        return false;
      }
      return true;
    }, 1000);
    return;
  }

  // Thumbnails: one page of the chosen split and class at a time.
  const split = document.getElementById("split");
  const label = document.getElementById("label");
  const thumbs = document.getElementById("thumbs");
  const pageText = document.getElementById("page-text");
  let page = 0;
  let pages = 1;
  async function show() {
    const query = `split=${enc(split.value)}&page=${page}&per_page=48${label.value ? "&label=" + enc(label.value) : ""}`;
    const found = await api("GET", `${base}/images?${query}`);
    page = found.page;
    pages = Math.max(found.pages, 1);
    pageText.textContent = found.total ? `page ${page + 1} of ${pages} · ${found.total} images` : "no images";
    const shown = split.value;
    thumbs.replaceChildren(...found.items.map((item) => el("figure", {
      class: "thumb open", title: `${item.label} · ${item.file}`, tabindex: "0", "data-index": item.index,
      onclick: () => open(shown, item.index), onkeydown: (e) => { if (e.key === "Enter") open(shown, item.index); } },
      el("img", { src: `${base}/images/${enc(split.value)}/${item.index}.png`, alt: item.label, loading: "lazy" }),
      el("div", { class: "cap", text: label.value ? item.file : item.label }))));
    document.getElementById("prev").disabled = page <= 0;
    document.getElementById("next").disabled = page >= pages - 1;
  }
  split.addEventListener("change", () => { page = 0; show(); });
  label.addEventListener("change", () => { page = 0; show(); });
  document.getElementById("prev").addEventListener("click", () => { page -= 1; show(); });
  document.getElementById("next").addEventListener("click", () => { page += 1; show(); });
  show();

  // One image at full size: the file it was made from when the server may read it, else the stored pixels.
  const dialog = document.getElementById("image-dialog");
  const full = document.getElementById("image-full");
  document.getElementById("image-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
  const open = (splitName, index) => openImage(splitName, index)
    .catch((e) => say(document.getElementById("explore-message"), `Image ${index}: ${e.message}`));
  async function openImage(splitName, index) {
    const at = `${base}/images/${enc(splitName)}/${index}`;
    const meta = await api("GET", at);
    document.getElementById("image-title").textContent = `${meta.label} · ${splitName} image ${index}`;
    document.getElementById("image-source").textContent = meta.source;
    const note = document.getElementById("image-note");
    note.textContent = "";
    full.removeAttribute("style");
    full.onload = () => {
      full.style.width = `${Math.max(full.naturalWidth, 224)}px`;  // tiny images enlarged, pixels kept sharp
      note.textContent = meta.original
        ? `The source at full size: ${full.naturalWidth}×${full.naturalHeight} px (stored as ${meta.stored_size.join("×")}).`
        : `The stored image (${meta.stored_size.join("×")} px): the source cannot be shown, ${meta.original_reason}.`;
      dialog.dataset.loaded = meta.original ? "source" : "stored";
    };
    delete dialog.dataset.loaded;
    full.alt = `${meta.label}: ${meta.source}`;
    full.src = meta.original ? `${at}/source.png` : `${at}.png`;
    if (!dialog.open) dialog.showModal();
  }

  // Classify a list of images on the server with one of the trained models (this dataset's first).
  const listModel = document.getElementById("list-model");
  const listButton = document.getElementById("list-button");
  api("GET", "/api/models").then((found) => {
    const done = found.filter((m) => m.status === "done");
    done.sort((a, b) => (b.dataset === info.name) - (a.dataset === info.name) || a.name.localeCompare(b.name));
    if (!done.length) return;
    listModel.replaceChildren(...done.map((m) => el("option", { value: m.name, text: m.dataset === info.name ? m.name : `${m.name} (on ${m.dataset})` })));
    listButton.disabled = false;
  }).catch((e) => say(document.getElementById("list-message"), `Models: ${e.message}`));
  document.getElementById("list-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("list-message");
    const result = document.getElementById("list-result");
    say(message, null);
    const file = document.getElementById("list-file").value.trim();
    if (!file) { say(message, "Give the path of a list file on the server."); return; }
    listButton.disabled = true;
    try {
      const out = await api("POST", `/api/models/${enc(listModel.value)}/classify-list`, { list_file: file, top: 2 });
      const s = out.summary;
      const stat = (v, k) => el("div", { class: "stat" }, el("div", { class: "v", text: v }), el("div", { class: "k", text: k }));
      document.getElementById("list-stats").replaceChildren(
        stat(String(s.images), "images"), stat(String(s.errors), "not classified"),
        ...(s.with_truth ? [stat(pct(s.top1_accuracy), `top-1 accuracy (${s.with_truth} with a class)`)] : []),
        ...(s.unfamiliar === null ? [] : [stat(String(s.unfamiliar), "unfamiliar")]));
      // Paths inside the list file's folder are shown from there (the whole path is the cell's title).
      const folder = out.list_file.slice(0, out.list_file.lastIndexOf("/") + 1);
      const shortened = (path) => (folder && path.startsWith(folder) ? path.slice(folder.length) : path);
      document.getElementById("list-body").replaceChildren(...out.results.map((r) => {
        const top = r.predictions[0];
        const verdict = r.error ? "" : r.unfamiliar === null || r.unfamiliar === undefined ? "unknown" : r.unfamiliar ? "unfamiliar" : "familiar";
        return el("tr", {},
          el("td", { class: "mono path", title: r.source, text: shortened(r.source) }),
          el("td", { text: r.truth || "–" }),
          r.error ? el("td", { class: "wrong", colspan: "2", text: r.error })
            : el("td", {}, el("span", { class: r.truth ? (top.label === r.truth ? "right" : "wrong") : "", text: top.label }),
              " ", el("span", { class: "muted small mono nowrap", text: pct(top.probability) })),
          r.error ? null : el("td", {}, el("span", { class: `badge ${verdict}`, text: verdict })));
      }));
      result.hidden = false;
    } catch (e) {
      say(message, e.message);
      result.hidden = true;  // the previous list's result is not this one's
    } finally {
      listButton.disabled = false;
    }
  });
})();
