// Pretrained page: upload weights for an architecture (with optional labels) or a network file.
"use strict";
(() => {
  const { api, upload, say, confirmThen, enc } = shoal;
  document.getElementById("upload-weights").disabled = false;  // the forms work once this script runs
  const fileForm = document.getElementById("file-form");  // absent unless the server runs with --allow-code
  if (fileForm) document.getElementById("upload-file").disabled = false;

  document.getElementById("weights-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const message = document.getElementById("weights-message");
    say(message, null);
    const file = form.elements.file.files[0];
    if (!form.elements.name.value.trim()) { say(message, "Give the weights a name."); return; }
    if (!file) { say(message, "Choose a weights file."); return; }
    const data = new FormData();
    for (const key of ["name", "architecture", "labels"]) data.append(key, form.elements[key].value);
    data.append("file", file);
    const button = document.getElementById("upload-weights");
    button.disabled = true;
    try {
      await upload("/api/pretrained", data);
      window.location.reload();
    } catch (e) {
      say(message, e.message);
      button.disabled = false;
    }
  });

  document.querySelectorAll("[data-delete]").forEach((button) => button.addEventListener("click", () =>
    confirmThen(`Delete the weights ${button.dataset.delete}?`, async () => {
      await api("DELETE", `/api/pretrained/${enc(button.dataset.delete)}`);
      window.location.reload();
    })));

  if (fileForm) fileForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("file-message");
    say(message, null);
    const file = document.getElementById("net-file").files[0];
    if (!file) { say(message, "Choose a .py file."); return; }
    const data = new FormData();
    data.append("file", file);
    try {
      await upload("/api/networks/files", data);
      window.location.reload();
    } catch (e) { say(message, e.message); }
  });
})();
