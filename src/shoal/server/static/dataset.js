// Dataset page: build progress while it is built; paged thumbnails per class and split once stored.
"use strict";
(() => {
  const { api, el, say, poll, enc, confirmThen } = shoal;
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
    thumbs.replaceChildren(...found.items.map((item) => el("figure", { class: "thumb", title: `${item.label} · ${item.file}` },
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
})();
