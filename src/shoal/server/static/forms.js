// Shared by the new-dataset and new-model forms: source pickers and option values.
"use strict";
const shoalForms = (() => {
  // Show the panel of the checked radio in `group`, hide the others.
  function choicePanels(form, group, attribute) {
    const update = () => {
      const chosen = form.querySelector(`input[name="${group}"]:checked`);
      form.querySelectorAll(`[data-${attribute}]`).forEach((panel) => {
        panel.hidden = !chosen || panel.dataset[attribute] !== chosen.value;
      });
    };
    form.querySelectorAll(`input[name="${group}"]`).forEach((r) => r.addEventListener("change", update));
    update();
    return () => (form.querySelector(`input[name="${group}"]:checked`) || {}).value;
  }

  // Read the generated option fields inside `root`: empty and disabled fields are left out (the default applies).
  function options(root) {
    const out = {};
    root.querySelectorAll("[data-kind]").forEach((input) => {
      if (input.disabled) return;
      const name = input.name;
      const kind = input.dataset.kind;
      if (kind === "checkbox") { out[name] = input.checked; return; }
      const raw = input.value.trim();
      if (raw === "") return;
      if (kind === "number") {
        out[name] = Number.isFinite(Number(raw)) ? Number(raw) : raw;
      } else if (kind === "list") {
        const values = raw.split(",").map((s) => s.trim()).filter(Boolean).map((s) => (Number.isFinite(Number(s)) ? Number(s) : s));
        out[name] = values.length === 1 ? values[0] : values;
      } else if (name === "step_values") {
        out[name] = raw.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
      } else if (name === "freeze" && /^\d+$/.test(raw)) {
        out[name] = Number(raw);
      } else if (kind === "select" && /^\d+$/.test(raw) && name === "channels") {
        out[name] = Number(raw);
      } else {
        out[name] = raw;
      }
    });
    return out;
  }

  return { choicePanels, options };
})();
