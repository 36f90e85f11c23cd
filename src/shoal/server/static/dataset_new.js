// New dataset: pick the images (server folder, list file, zip upload or the sample), then queue the build.
"use strict";
(() => {
  const { api, upload, say, el } = shoal;
  const form = document.getElementById("dataset-form");
  const message = document.getElementById("form-message");
  const source = shoalForms.choicePanels(form, "source", "source");
  document.getElementById("create-dataset").disabled = false;  // the form works once this script runs

  // Suggest sub-folders of what has been typed so far (inside the allowed roots).
  const folderInput = document.getElementById("f-folder");
  const folderList = document.getElementById("folder-list");
  let lastListed = null;
  async function suggest() {
    const typed = folderInput.value.trim();
    const base = typed.endsWith("/") ? typed : typed.replace(/\/[^/]*$/, "");
    if (base === lastListed) return;
    lastListed = base;
    try {
      const found = await api("GET", `/api/folders${base ? "?path=" + encodeURIComponent(base) : ""}`);
      // The roots themselves are choices too (a root may hold the class folders).
      const roots = found.roots.filter((r) => r.startsWith(typed) && !found.folders.includes(r));
      folderList.replaceChildren(...[...roots, ...found.folders].map((f) => el("option", { value: f })));
    } catch (e) { /* not a folder (yet): no suggestions */ }
  }
  if (folderInput) { folderInput.addEventListener("input", suggest); suggest(); }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(message, null);
    const button = document.getElementById("create-dataset");
    const name = form.elements.name.value.trim();
    const options = shoalForms.options(form.querySelector("fieldset:last-of-type"));
    if (!name) { say(message, "Give the dataset a name."); return; }
    button.disabled = true;
    try {
      let accepted;
      const kind = source();
      if (kind === "zip") {
        const file = form.elements.zip.files[0];
        if (!file) throw new Error("Choose a zip file to upload.");
        const data = new FormData();
        data.append("name", name);
        data.append("file", file);
        data.append("options", JSON.stringify(options));
        const bar = document.getElementById("upload-progress");
        bar.hidden = false;
        accepted = await upload("/api/datasets/upload", data, (f) => { bar.firstElementChild.style.width = `${f * 100}%`; });
      } else {
        const body = { name, options, sample: kind === "sample" };
        if (kind === "folder") {
          body.folder = form.elements.folder ? form.elements.folder.value.trim() : "";
          if (!body.folder) throw new Error("Give the folder on the server.");
          const val = form.elements.val_folder.value.trim();
          if (val) options.val_folder = val;
        }
        if (kind === "list") {
          const list = form.elements.list_file ? form.elements.list_file.value.trim() : "";
          if (!list) throw new Error("Give the list file on the server.");
          options.list_file = list;
        }
        accepted = await api("POST", "/api/datasets", body);
      }
      window.location.href = accepted.url;
    } catch (e) {
      say(message, e.message);
      button.disabled = false;
    }
  });
})();
