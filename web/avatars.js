// The avatar registration page (avatars.html): upload a photo to the router's /v1/avatars,
// follow its registration until ready or refused, show the mouths and the id, list and delete
// this backend's avatars. `window.avatarsUi` exposes the state for tests.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const q = new URLSearchParams(location.search);
  const ui = { state: "idle", id: null, reason: null, listed: [] };
  window.avatarsUi = ui;

  $("router").value = q.get("router") || sessionStorage.getItem("avatars.router") || location.origin;
  $("key").value = sessionStorage.getItem("avatars.key") || "";
  for (const f of ["router", "key"]) {
    $(f).addEventListener("change", () => {
      sessionStorage.setItem(`avatars.${f}`, $(f).value.trim());
      refreshList();
    });
  }

  const base = () => $("router").value.trim().replace(/\/+$/, "");
  const headers = () => ({ "X-API-Key": $("key").value.trim() });

  function setStatus(state, text) {
    ui.state = state;
    $("status").dataset.state = state;
    $("status").textContent = text;
  }

  async function api(path, opts = {}) {
    const r = await fetch(base() + path, { ...opts, headers: { ...headers(), ...(opts.headers || {}) } });
    let body = null;
    try { body = await r.json(); } catch { /* an image, or an empty body */ }
    if (!r.ok) {
      const why = body && (typeof body.detail === "string" ? body.detail : body.error);
      throw new Error(`${r.status} ${why || r.statusText}`);
    }
    return body;
  }

  async function upload(file) {
    if (!file) return;
    if (!$("key").value.trim()) { setStatus("error", "Enter the backend's API key first."); return; }
    if (file.size > 20 * 1024 * 1024) { setStatus("error", `${file.name} is over 20 MiB.`); return; }
    $("result").classList.add("hidden");
    ui.id = null; ui.reason = null;
    setStatus("uploading", `Uploading ${file.name}…`);
    const form = new FormData();
    form.append("file", file, file.name);
    if ($("name").value.trim()) form.append("name", $("name").value.trim());
    form.append("renderer", $("renderer").value);
    try {
      let av = await api("/v1/avatars", { method: "POST", body: form });
      ui.id = av.id;
      const t0 = Date.now();
      while (av.status === "pending") {
        setStatus("pending", `Finding the face and making its mouths… ${Math.round((Date.now() - t0) / 1000)} s`);
        await new Promise((res) => setTimeout(res, 500));
        av = await api(`/v1/avatars/${av.id}`);
      }
      show(av);
    } catch (e) {
      setStatus("error", `Upload failed: ${e.message}`);
    }
    refreshList();
  }

  async function show(av) {
    ui.id = av.id;
    ui.reason = av.reason;
    if (av.status !== "ready") {
      setStatus(av.status, `Not usable: ${av.reason || av.status}`);
      return;
    }
    $("avatar-id").textContent = av.id;
    const r = await fetch(base() + av.preview_url, { headers: headers() });
    if (r.ok) {
      const img = $("preview");
      const old = img.src;
      img.src = URL.createObjectURL(await r.blob());
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      await img.decode().catch(() => {});
    }
    $("result").classList.remove("hidden");
    setStatus("ready", `Ready: “${av.name}”, ${av.width}×${av.height}. Put its id in a join's avatar_id.`);
  }

  async function refreshList() {
    const tbody = $("list");
    if (!$("key").value.trim()) { tbody.replaceChildren(); return; }
    let avatars = [];
    try { avatars = (await api("/v1/avatars")).avatars; } catch { return; }
    ui.listed = avatars.map((a) => ({ id: a.id, status: a.status, name: a.name }));
    tbody.replaceChildren(...avatars.map((a) => {
      const tr = document.createElement("tr");
      const cells = [a.name, a.id, a.reason ? `${a.status}: ${a.reason}` : a.status];
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = c;  // text only: names and reasons are never markup
        tr.append(td);
      }
      const td = document.createElement("td");
      const del = document.createElement("button");
      del.type = "button"; del.textContent = "Delete";
      del.setAttribute("aria-label", `Delete ${a.name}`);
      del.addEventListener("click", async () => {
        if (!confirm(`Delete the avatar “${a.name}”? Lessons showing it keep it until they end.`)) return;
        await api(`/v1/avatars/${a.id}`, { method: "DELETE" });
        refreshList();
      });
      const view = document.createElement("button");
      view.type = "button"; view.textContent = "Show";
      view.addEventListener("click", () => show(a));
      td.append(view, " ", del);
      tr.append(td);
      return tr;
    }));
  }

  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); }
  });
  $("file").addEventListener("change", () => upload($("file").files[0]));
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    upload(e.dataTransfer.files[0]);
  });
  $("copy").addEventListener("click", () => navigator.clipboard?.writeText(ui.id || ""));
  refreshList();
})();
