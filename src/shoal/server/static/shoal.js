// shoal: helpers every page uses. Pages talk to the JSON API under /api only.
"use strict";

const shoal = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  // Call the API; resolve with the parsed JSON (or null), reject with an Error carrying the server's detail.
  async function api(method, url, body) {
    const options = { method, headers: { "Accept": "application/json", "X-Shoal-CSRF": csrf() } };
    if (body instanceof FormData) {
      options.body = body;
    } else if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!response.ok) {
      const detail = data && data.detail ? data.detail : `${response.status} ${response.statusText}`;
      const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
      error.status = response.status;
      throw error;
    }
    return data;
  }

  // Upload with progress (fetch cannot report upload progress).
  function upload(url, form, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("X-Shoal-CSRF", csrf());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
      xhr.onload = () => {
        let data = null;
        try { data = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch (e) { data = null; }
        if (xhr.status >= 200 && xhr.status < 300) resolve(data);
        else reject(new Error(data && data.detail ? data.detail : `${xhr.status} ${xhr.statusText}`));
      };
      xhr.onerror = () => reject(new Error("the upload failed: the server could not be reached"));
      xhr.send(form);
    });
  }

  // Build DOM nodes; text always goes through textContent (never innerHTML), so data cannot inject markup.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "style") node.setAttribute("style", value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const badge = (status) => el("span", { class: `badge ${status}`, "data-status": status, text: status });
  const pct = (v) => (v === null || v === undefined) ? "–" : `${(100 * v).toFixed(1)} %`;
  // One notation per size: 0.1582, 0.001582, then 1.582e-5 (never 0.00001582 next to 9.974e-7).
  const num = (v, digits = 4) => {
    if (v === null || v === undefined) return "–";
    const x = Number(v);
    if (x === 0) return "0";
    return Math.abs(x) < 1e-3 || Math.abs(x) >= 1e6 ? x.toExponential(digits - 1) : x.toPrecision(digits);
  };
  const when = (ts) => {
    if (!ts) return "–";
    const d = new Date(ts * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  };
  const duration = (s) => {
    if (s === null || s === undefined) return "–";
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
  };

  function progressBar(fraction) {
    const inner = el("div", { style: `width:${Math.max(0, Math.min(1, fraction || 0)) * 100}%` });
    return el("div", { class: "progress" }, inner);
  }

  // Show an error (or info) in a message box; hide it with text null.
  function say(box, text, kind = "error") {
    if (!box) return;
    box.className = `message ${kind}`;
    box.textContent = text || "";
    box.hidden = !text;
  }

  // Call fn now and every ms milliseconds while it returns true (stops on false); pauses in hidden tabs.
  function poll(fn, ms) {
    let timer = null;
    let stopped = false;
    const tick = async () => {
      if (stopped) return;
      if (document.hidden) { timer = setTimeout(tick, ms); return; }
      let again = true;
      try { again = await fn(); } catch (e) { console.warn(e); }
      if (again !== false && !stopped) timer = setTimeout(tick, ms);
    };
    tick();
    return () => { stopped = true; clearTimeout(timer); };
  }

  function replaceRows(tbody, rows, emptyText, columns) {
    tbody.replaceChildren();
    if (!rows.length) {
      tbody.append(el("tr", {}, el("td", { class: "empty", colspan: columns, text: emptyText })));
      return;
    }
    tbody.append(...rows);
  }

  function initial(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  async function confirmThen(message, action) {
    if (!window.confirm(message)) return;
    try { await action(); } catch (e) { window.alert(e.message); }
  }

  const enc = encodeURIComponent;

  return { api, upload, el, badge, pct, num, when, duration, progressBar, say, poll, replaceRows, initial, confirmThen, enc };
})();
