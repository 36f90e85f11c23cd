// Import page: upload a Caffe/DIGITS archive; the server imports it and the page links to the new model.
"use strict";
(() => {
  const { upload, say } = shoal;
  const button = document.getElementById("import-button");
  button.disabled = false;  // the form works once this script runs
  document.getElementById("import-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const message = document.getElementById("import-message");
    say(message, null);
    const file = form.elements.file.files[0];
    if (!form.elements.name.value.trim()) { say(message, "Give the model a name."); return; }
    if (!file) { say(message, "Choose the model's archive (.zip or .tar.gz)."); return; }
    const data = new FormData();
    data.append("name", form.elements.name.value.trim());
    if (form.elements.mean.value.trim()) data.append("mean", form.elements.mean.value.trim());
    if (form.elements.scale.value.trim()) data.append("scale", form.elements.scale.value.trim());
    data.append("file", file);
    button.disabled = true;
    try {
      const done = await upload("/api/models/import", data);
      const summary = document.getElementById("import-summary");
      summary.textContent = `Imported ${done.name}: ${done.labels.length} classes, ${done.input.size[0]}×${done.input.size[1]} input. `;
      const link = document.createElement("a");
      link.href = done.url;
      link.textContent = "Open the model";
      summary.append(link);
      const notes = document.getElementById("import-notes");
      notes.replaceChildren(...done.notes.map((n) => Object.assign(document.createElement("li"), { textContent: n })));
      document.getElementById("import-result").hidden = false;
    } catch (e) {
      say(message, e.message);
    } finally {
      button.disabled = false;
    }
  });
})();
