// Tollgate admin dashboard: a small hand-written page script over the admin REST API.
// No framework and no build step. Every element is built with `h` (text is always set
// as text, never parsed as HTML). The session lives in an HttpOnly cookie; the CSRF
// token is kept in this script's memory only and sent with every change.
"use strict";

const session = { csrf: null, keyId: null, org: null, readOnly: false };
let timers = [];

// ---------- helpers ----------

function h(tag, attrs, ...children) {
  const svg = ["svg", "rect", "line", "text", "title", "g"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = session.csrf || "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "network", "The admin server cannot be reached: " + e.message);
  }
  if (res.status === 204) return null;
  let data = null;
  try { data = await res.json(); } catch (_) { data = null; }
  if (!res.ok) {
    const message = data && data.message ? data.message : "The server answered " + res.status;
    if (res.status === 401 && path !== "/dashboard/session") { signedOut(message); }
    throw new ApiError(res.status, data && data.error, message);
  }
  return data;
}

function fmtTime(rfc) {
  if (!rfc) return "—";
  return rfc.replace("T", " ").replace("Z", " UTC");
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), mm = Math.floor((s % 3600) / 60);
  if (d > 0) return d + " d " + hh + " h";
  if (hh > 0) return hh + " h " + mm + " min";
  if (mm > 0) return mm + " min";
  return s + " s";
}

function fmtClock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  const d = Math.floor(s / 86400);
  return (d > 0 ? d + " d " : "") + pad(Math.floor((s % 86400) / 3600)) + ":" + pad(Math.floor((s % 3600) / 60)) + ":" + pad(s % 60);
}

function num(n) { return Number(n).toLocaleString("en-US"); }

function badge(status) { return h("span", { class: "badge badge-" + status, "data-status": status }, status); }

function announce(text) { document.getElementById("status").textContent = text; }

function alertBox(id) { return h("p", { id, class: "alert", role: "alert" }); }

function showError(box, err) { box.textContent = err.message || String(err); }

function currentSecret(it) { return it.secrets.find((s) => s.role === "current"); }
function previousSecret(it) { return it.secrets.find((s) => s.role === "previous"); }

function view(title, ...children) {
  for (const t of timers) clearInterval(t);
  timers = [];
  const main = document.getElementById("main");
  main.replaceChildren(h("h1", { id: "page-title" }, title), ...children.filter((c) => c !== null && c !== undefined && c !== false));
  document.title = title + " · Tollgate admin";
  main.focus({ preventScroll: true });
}

function copyButton(input) {
  return h("button", { type: "button", class: "secondary", id: "copy-secret", onclick: async (ev) => {
    input.select();
    let ok = false;
    try { await navigator.clipboard.writeText(input.value); ok = true; } catch (_) {
      try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
    }
    ev.target.textContent = ok ? "Copied" : "Selected — press Ctrl+C";
    announce(ok ? "Secret copied to the clipboard" : "Secret selected; copy it with Ctrl+C");
  } }, "Copy");
}

function secretOnce(label, secret) {
  const input = h("input", { type: "text", id: "new-secret", readonly: true, value: secret, "aria-label": label,
    autocomplete: "off", spellcheck: "false" });
  return h("section", { class: "panel warning", id: "secret-once", "aria-labelledby": "secret-once-title" },
    h("h2", { id: "secret-once-title" }, label),
    h("p", { class: "alert" }, "This secret is shown only once and will not be shown again. " +
      "Copy it now into your secret manager; Tollgate keeps only a hash."),
    h("div", { class: "secret-box" }, input, copyButton(input)));
}

// ---------- session ----------

async function loadSession() {
  try {
    const info = await api("GET", "/dashboard/session");
    setSession(info);
    return true;
  } catch (_) {
    return false;
  }
}

function setSession(info) {
  session.csrf = info.csrf_token;
  session.keyId = info.admin_key_id;
  session.org = info.org_id;
  session.readOnly = info.read_only;
  document.getElementById("nav").hidden = false;
  document.getElementById("who").hidden = false;
  document.getElementById("who-key").textContent = "Signed in with " + info.admin_key_id +
    (info.org_id ? " (" + info.org_id + " only)" : "") + (info.read_only ? " · read-only" : "");
}

function signedOut(message) {
  session.csrf = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  renderSignIn(message);
}

function renderSignIn(message) {
  const error = alertBox("sign-in-error");
  if (message) error.textContent = message;
  const key = h("input", { type: "password", id: "admin-key", name: "admin_key", autocomplete: "off", required: true,
    "aria-describedby": "admin-key-hint sign-in-error" });
  const form = h("form", { id: "sign-in", onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    if (!key.value.trim()) { error.textContent = "Enter an admin key."; key.focus(); return; }
    try {
      const info = await api("POST", "/dashboard/session", { admin_key: key.value });
      key.value = "";
      setSession(info);
      if (location.hash === "#/integrations") route(); else location.hash = "#/integrations";
    } catch (err) { showError(error, err); key.focus(); }
  } },
    h("div", { class: "field" }, h("label", { for: "admin-key" }, "Admin key"),
      h("small", { id: "admin-key-hint" }, "The key is exchanged for a session cookie and is not stored by the browser."),
      key),
    error,
    h("button", { type: "submit" }, "Sign in"));
  view("Sign in", form);
  key.focus();
}

document.getElementById("sign-out").addEventListener("click", async () => {
  try { await api("DELETE", "/dashboard/session"); } catch (_) { /* signed out either way */ }
  signedOut("You are signed out.");
  history.replaceState(null, "", "#/sign-in");
});

// ---------- integrations list ----------

async function renderList(params) {
  const error = alertBox("list-error");
  const search = h("input", { type: "search", id: "search", value: params.get("q") || "", placeholder: "name or client id" });
  const org = h("input", { type: "text", id: "filter-org", value: params.get("org") || "" });
  const status = h("select", { id: "filter-status" },
    ["", "active", "disabled", "revoked"].map((s) => h("option", { value: s, selected: s === (params.get("status") || "") }, s || "any")));
  const body = h("tbody");
  const more = h("button", { type: "button", class: "secondary", id: "load-more", hidden: true }, "Load more");
  const count = h("p", { id: "list-count", class: "hint" });
  let rows = [];
  let cursor = null;

  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const shown = rows.filter((it) => !q || it.name.toLowerCase().includes(q) || it.client_id.toLowerCase().includes(q) || it.id.toLowerCase().includes(q));
    body.replaceChildren(...shown.map((it) => {
      const cur = currentSecret(it);
      return h("tr", { "data-id": it.id },
        h("td", {}, h("a", { href: "#/integrations/" + it.id }, it.name)),
        h("td", {}, it.org_id),
        h("td", {}, badge(it.status)),
        h("td", {}, h("meter", { min: 0, max: it.usage_today.limit, value: it.usage_today.used, high: it.usage_today.limit * 0.8,
          "aria-label": "Usage today of " + it.name }), " ", num(it.usage_today.used) + " / " + num(it.usage_today.limit)),
        h("td", {}, cur ? fmtDuration(cur.age_seconds) + (cur.due_at ? " (due in " + fmtDuration(cur.due_in_seconds) + ")" : "") : "—"),
        h("td", {}, h("code", {}, it.client_id)));
    }));
    count.textContent = shown.length + " of " + rows.length + " loaded integrations shown" + (cursor ? " (more to load)" : "");
  };

  const load = async () => {
    error.textContent = "";
    const qs = new URLSearchParams({ limit: "200" });
    if (org.value.trim()) qs.set("org_id", org.value.trim());
    if (status.value) qs.set("status", status.value);
    if (cursor) qs.set("cursor", cursor);
    try {
      const page = await api("GET", "/admin/v1/integrations?" + qs);
      rows = rows.concat(page.integrations);
      cursor = page.next_cursor;
      more.hidden = !cursor;
      draw();
    } catch (err) { showError(error, err); }
  };

  const filters = h("form", { class: "filters", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    const qs = new URLSearchParams();
    if (search.value.trim()) qs.set("q", search.value.trim());
    if (org.value.trim()) qs.set("org", org.value.trim());
    if (status.value) qs.set("status", status.value);
    location.hash = "#/integrations" + (qs.toString() ? "?" + qs : "");
  } },
    h("div", {}, h("label", { for: "search" }, "Search"), search),
    h("div", {}, h("label", { for: "filter-org" }, "Organisation"), org),
    h("div", {}, h("label", { for: "filter-status" }, "Status"), status),
    h("button", { type: "submit" }, "Apply"));
  search.addEventListener("input", draw);
  more.addEventListener("click", load);

  view("Integrations", filters, error, count,
    h("table", { id: "integrations" },
      h("thead", {}, h("tr", {}, ["Name", "Organisation", "Status", "Usage today", "Secret age", "Client id"].map((t) => h("th", { scope: "col" }, t)))),
      body),
    more);
  await load();
}

// ---------- create ----------

function field(id, label, input, hint) {
  const msg = h("span", { id: id + "-error", class: "error-text" });
  input.id = id;
  input.setAttribute("aria-describedby", (hint ? id + "-hint " : "") + id + "-error");
  return { el: h("div", { class: "field" }, h("label", { for: id }, label), hint ? h("small", { id: id + "-hint" }, hint) : null, input, " ", msg), msg, input };
}

function invalid(f, message) {
  f.msg.textContent = message;
  f.input.setAttribute("aria-invalid", message ? "true" : "false");
  return !!message;
}

function parseScopes(text) { return text.split(/[\s,]+/).filter(Boolean); }

function renderCreate() {
  const error = alertBox("create-error");
  const name = field("name", "Name", h("input", { type: "text", maxlength: 200 }), "What the integration is, e.g. CRM sync");
  const org = field("org", "Organisation", h("input", { type: "text", maxlength: 64 }), "1–64 of a-z, 0-9, _ and -");
  const scopes = field("scopes", "Scopes", h("input", { type: "text" }), "Separated by spaces, e.g. conversations:read contacts:write");
  const quota = field("quota", "Daily request quota", h("input", { type: "number", min: 1, step: 1 }), "Requests per UTC day");
  const ttl = field("ttl", "Token lifetime (seconds)", h("input", { type: "number", min: 60, step: 1, value: 3600 }));
  const rate = field("rate", "Token requests per minute", h("input", { type: "number", min: 1, step: 1, value: 600 }));
  const maxAge = field("max-age", "Maximum secret age (days)", h("input", { type: "number", min: 1, max: 3650, step: 1 }),
    "Optional. Secrets stop working at this age; a notice is audited 14 days ahead");
  if (session.org) org.input.value = session.org;

  const form = h("form", { id: "create-form", novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    let bad = false;
    bad = invalid(name, name.input.value.trim() ? "" : "Enter a name.") || bad;
    bad = invalid(org, /^[a-z0-9][a-z0-9_-]{0,63}$/.test(org.input.value.trim()) ? "" : "Use 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit.") || bad;
    const q = Number(quota.input.value);
    bad = invalid(quota, quota.input.value && Number.isInteger(q) && q >= 1 ? "" : "Enter a whole number of requests, at least 1.") || bad;
    bad = invalid(ttl, Number.isInteger(Number(ttl.input.value)) && Number(ttl.input.value) > 0 ? "" : "Enter a number of seconds.") || bad;
    bad = invalid(rate, Number.isInteger(Number(rate.input.value)) && Number(rate.input.value) > 0 ? "" : "Enter a whole number.") || bad;
    const age = maxAge.input.value.trim() ? Number(maxAge.input.value) : null;
    bad = invalid(maxAge, age === null || (Number.isInteger(age) && age >= 1 && age <= 3650) ? "" : "Enter 1 to 3650 days, or leave it empty for no limit.") || bad;
    if (bad) { form.querySelector("[aria-invalid=true]").focus(); return; }
    try {
      const created = await api("POST", "/admin/v1/integrations", {
        name: name.input.value.trim(), org_id: org.input.value.trim(), scopes: parseScopes(scopes.input.value),
        daily_quota: q, token_ttl_seconds: Number(ttl.input.value), token_requests_per_minute: Number(rate.input.value),
        secret_max_age_days: age,
      });
      renderCreated(created);
    } catch (err) { showError(error, err); error.focus(); }
  } },
    name.el, org.el, scopes.el, quota.el, ttl.el, rate.el, maxAge.el, error,
    h("button", { type: "submit" }, "Create integration"));
  view("New integration", form);
  name.input.focus();
}

function renderCreated(created) {
  const it = created.integration;
  view("Integration created",
    h("p", { class: "notice" }, "“" + it.name + "” is registered for " + it.org_id + "."),
    h("dl", { class: "props" },
      h("dt", {}, "Client id"), h("dd", {}, h("code", { id: "new-client-id" }, it.client_id)),
      h("dt", {}, "Token endpoint"), h("dd", {}, "POST /oauth/token with grant_type=client_credentials")),
    secretOnce("Client secret", created.client_secret),
    h("p", {}, h("a", { href: "#/integrations/" + it.id, id: "go-integration" }, "I have stored the secret — open the integration")));
}

// ---------- charts ----------

function barChart(id, label, values, labels, limit) {
  if (!values.some((v) => v > 0)) return h("p", { id, class: "hint" }, label + ": no requests counted yet.");
  const W = 620, H = 170, pad = 28, n = values.length;
  const max = Math.max(1, limit || 0, ...values);
  const bw = (W - pad * 2) / n;
  const y = (v) => H - pad - (v / max) * (H - pad * 2);
  const total = values.reduce((a, b) => a + b, 0);
  const svg = h("svg", { id, class: "chart", viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img",
    "aria-label": label + ": " + num(total) + " requests in all, highest " + num(Math.max(0, ...values)) });
  svg.append(h("title", {}, label));
  values.forEach((v, i) => {
    const top = y(v);
    const bar = h("rect", { class: limit && v >= limit ? "over" : "bar", x: pad + i * bw + 1, y: top, width: Math.max(1, bw - 2),
      height: Math.max(0, H - pad - top), "data-value": v });
    bar.append(h("title", {}, labels[i] + ": " + num(v)));
    svg.append(bar);
  });
  if (limit) {
    svg.append(h("line", { class: "quota", x1: pad, x2: W - pad, y1: y(limit), y2: y(limit) }),
      h("text", { x: W - pad, y: y(limit) - 4, "text-anchor": "end" }, "quota " + num(limit)));
  }
  svg.append(h("text", { x: pad, y: H - 8 }, labels[0]), h("text", { x: W - pad, y: H - 8, "text-anchor": "end" }, labels[n - 1]));
  return svg;
}

// ---------- integration page ----------

function graceCountdown(it, onFinished) {
  const prev = previousSecret(it);
  if (!prev || prev.expired || prev.expires_in_seconds === null) return null;
  const started = Date.now();
  const clock = h("span", { class: "countdown", id: "grace-countdown", "aria-live": "off" }, fmtClock(prev.expires_in_seconds));
  timers.push(setInterval(() => {
    clock.textContent = fmtClock(prev.expires_in_seconds - (Date.now() - started) / 1000);
  }, 1000));
  const error = alertBox("finish-error");
  const lastUse = prev.last_used_at
    ? "Last used " + fmtTime(prev.last_used_at) + " from " + (prev.last_used_ip || "an unknown address") + "."
    : "The old secret has never been used.";
  return h("section", { class: "panel warning", id: "grace-panel", "aria-labelledby": "grace-title" },
    h("h2", { id: "grace-title" }, "Rotation in progress: the old secret still works"),
    h("p", {}, "The old secret (slot ", h("code", {}, prev.slot_id), ") stops working at ", fmtTime(prev.expires_at), " — in ", clock, "."),
    h("p", { id: "old-secret-last-use" }, lastUse, " Finish the rotation once the integration has switched to the new secret."),
    error,
    session.readOnly ? null : h("button", { type: "button", id: "finish-rotation", onclick: async () => {
      try {
        await api("POST", "/admin/v1/integrations/" + it.id + "/rotation/finish");
        announce("Rotation finished: only the new secret works now.");
        onFinished();
      } catch (err) { showError(error, err); }
    } }, "Finish rotation now"));
}

async function renderIntegration(id) {
  let it;
  try { it = await api("GET", "/admin/v1/integrations/" + encodeURIComponent(id)); } catch (err) {
    const e = alertBox("page-error"); showError(e, err); view("Integration", e); return;
  }
  const reload = () => renderIntegration(id);
  const rw = !session.readOnly && it.status !== "revoked";

  const props = h("dl", { class: "props", id: "props" },
    h("dt", {}, "Status"), h("dd", { id: "status-badge" }, badge(it.status), it.disabled_reason ? " — " + it.disabled_reason : ""),
    h("dt", {}, "Integration id"), h("dd", {}, h("code", {}, it.id)),
    h("dt", {}, "Client id"), h("dd", {}, h("code", { id: "client-id" }, it.client_id)),
    h("dt", {}, "Organisation"), h("dd", {}, it.org_id),
    h("dt", {}, "Scopes"), h("dd", { id: "scopes" }, it.scopes.length ? it.scopes.join(" ") : "none"),
    h("dt", {}, "Daily quota"), h("dd", { id: "quota-value" }, num(it.daily_quota)),
    h("dt", {}, "Used today"), h("dd", { id: "used-today" },
      h("meter", { min: 0, max: it.usage_today.limit, value: it.usage_today.used, high: it.usage_today.limit * 0.8, "aria-label": "Usage today" }),
      " " + num(it.usage_today.used) + " of " + num(it.usage_today.limit) + " (" + num(it.usage_today.remaining) + " left)"),
    h("dt", {}, "Token lifetime"), h("dd", {}, fmtDuration(it.token_ttl_seconds)),
    h("dt", {}, "Token requests"), h("dd", {}, it.token_requests_per_minute + " per minute"),
    h("dt", {}, "Max secret age"), h("dd", { id: "max-age" }, it.secret_max_age_days ? it.secret_max_age_days + " days" : "no limit"),
    h("dt", {}, "Created"), h("dd", {}, fmtTime(it.created_at)),
    h("dt", {}, "Tokens valid after"), h("dd", {}, fmtTime(it.tokens_valid_after)));

  const secrets = h("table", { id: "secrets" },
    h("thead", {}, h("tr", {}, ["Secret", "Slot", "Issued", "Age", "Grace ends", "Due (max age)", "Last used", "From"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, it.secrets.map((s) => h("tr", { "data-role": s.role },
      h("td", {}, s.role === "current" ? "current" : s.expired ? "previous (expired)" : "previous (grace)"),
      h("td", {}, h("code", {}, s.slot_id)), h("td", {}, fmtTime(s.created_at)), h("td", {}, fmtDuration(s.age_seconds)),
      h("td", {}, fmtTime(s.expires_at)),
      h("td", { class: s.due_at && s.due_in_seconds === 0 ? "alert" : null }, s.due_at ? fmtTime(s.due_at) + (s.due_in_seconds === 0 ? " — expired" : " (in " + fmtDuration(s.due_in_seconds) + ")") : "—"),
      h("td", {}, fmtTime(s.last_used_at)), h("td", {}, s.last_used_ip || "—")))));

  // Settings: name, scopes, quota (PATCH only what changed).
  const settingsError = alertBox("settings-error");
  const sName = h("input", { type: "text", id: "edit-name", value: it.name, maxlength: 200 });
  const sScopes = h("input", { type: "text", id: "edit-scopes", value: it.scopes.join(" ") });
  const sQuota = h("input", { type: "number", id: "edit-quota", min: 1, step: 1, value: it.daily_quota });
  const sMaxAge = h("input", { type: "number", id: "edit-max-age", min: 0, max: 3650, step: 1, value: it.secret_max_age_days || 0 });
  const settings = rw ? h("form", { id: "settings", class: "inline", onsubmit: async (ev) => {
    ev.preventDefault();
    settingsError.textContent = "";
    const change = {};
    if (sName.value.trim() !== it.name) change.name = sName.value.trim();
    if (parseScopes(sScopes.value).join(" ") !== it.scopes.join(" ")) change.scopes = parseScopes(sScopes.value);
    const q = Number(sQuota.value);
    if (!Number.isInteger(q) || q < 1) { settingsError.textContent = "The daily quota must be a whole number of at least 1."; sQuota.focus(); return; }
    if (q !== it.daily_quota) change.daily_quota = q;
    const age = Number(sMaxAge.value || 0);
    if (!Number.isInteger(age) || age < 0 || age > 3650) { settingsError.textContent = "The maximum secret age must be 0 (no limit) to 3650 days."; sMaxAge.focus(); return; }
    if (age !== (it.secret_max_age_days || 0)) change.secret_max_age_days = age;
    if (!Object.keys(change).length) { settingsError.textContent = "Nothing changed."; return; }
    try {
      await api("PATCH", "/admin/v1/integrations/" + it.id, change);
      announce("Settings saved");
      reload();
    } catch (err) { showError(settingsError, err); }
  } },
    h("div", {}, h("label", { for: "edit-name" }, "Name"), sName),
    h("div", {}, h("label", { for: "edit-scopes" }, "Scopes"), sScopes),
    h("div", {}, h("label", { for: "edit-quota" }, "Daily quota"), sQuota),
    h("div", {}, h("label", { for: "edit-max-age" }, "Max secret age (days, 0 = none)"), sMaxAge),
    h("button", { type: "submit", id: "save-settings" }, "Save")) : null;

  // Disable / enable / revoke.
  const actionError = alertBox("action-error");
  const reason = h("input", { type: "text", id: "disable-reason", maxlength: 500 });
  const actions = [];
  if (rw && it.status === "active") {
    actions.push(h("div", { class: "panel", id: "disable-panel" },
      h("h2", {}, "Disable"),
      h("p", {}, "Refuses every token and request of this integration at once. Can be undone."),
      h("div", { class: "inline" },
        h("div", {}, h("label", { for: "disable-reason" }, "Reason (optional)"), reason),
        h("button", { type: "button", class: "danger", id: "disable", onclick: async () => {
          try {
            await api("POST", "/admin/v1/integrations/" + it.id + "/disable", reason.value.trim() ? { reason: reason.value.trim() } : undefined);
            announce("Integration disabled");
            reload();
          } catch (err) { showError(actionError, err); }
        } }, "Disable now"))));
  }
  if (rw && it.status === "disabled") {
    actions.push(h("div", { class: "panel", id: "enable-panel" }, h("h2", {}, "Disabled"),
      h("button", { type: "button", id: "enable", onclick: async () => {
        try { await api("POST", "/admin/v1/integrations/" + it.id + "/enable"); announce("Integration enabled"); reload(); }
        catch (err) { showError(actionError, err); }
      } }, "Enable")));
  }
  if (rw) {
    const confirmInput = h("input", { type: "text", id: "revoke-confirm", autocomplete: "off" });
    const revokeButton = h("button", { type: "button", class: "danger", id: "revoke", disabled: true, onclick: async () => {
      if (confirmInput.value !== it.name) return;
      try { await api("POST", "/admin/v1/integrations/" + it.id + "/revoke"); announce("Integration revoked"); reload(); }
      catch (err) { showError(actionError, err); }
    } }, "Revoke permanently");
    confirmInput.addEventListener("input", () => { revokeButton.disabled = confirmInput.value !== it.name; });
    actions.push(h("div", { class: "panel danger", id: "revoke-panel" },
      h("h2", {}, "Revoke"),
      h("p", {}, "Permanent: the secrets are erased and every token stops working. This cannot be undone."),
      h("label", { for: "revoke-confirm" }, "Type the integration's name (" + it.name + ") to confirm"),
      h("div", { class: "inline" }, confirmInput, revokeButton)));
  }

  // Usage charts.
  const charts = h("div", { class: "grid2", id: "usage" }, h("p", {}, "Loading usage…"));
  // Activity, paged.
  const activityBody = h("tbody");
  const olderButton = h("button", { type: "button", class: "secondary", id: "activity-older", hidden: true }, "Older entries");
  let activityCursor = null;
  const loadActivity = async () => {
    const qs = new URLSearchParams({ limit: "25" });
    if (activityCursor !== null) qs.set("cursor", String(activityCursor));
    const page = await api("GET", "/admin/v1/integrations/" + it.id + "/activity?" + qs);
    activityBody.append(...page.entries.map(auditRow));
    activityCursor = page.next_cursor;
    olderButton.hidden = activityCursor === null;
  };
  olderButton.addEventListener("click", () => loadActivity().catch((err) => showError(actionError, err)));

  view(it.name,
    props,
    graceCountdown(it, reload),
    rw ? h("p", {}, h("a", { href: "#/integrations/" + it.id + "/rotate", id: "rotate-link" }, "Rotate the secret…")) : null,
    h("h2", {}, "Secrets"), secrets,
    settings ? h("h2", {}, "Settings") : null, settings, settingsError,
    h("h2", {}, "Usage"), charts,
    actionError, ...actions,
    h("h2", {}, "Activity"),
    h("table", { id: "activity" }, auditHead(), activityBody), olderButton);

  try {
    const usage = await api("GET", "/admin/v1/integrations/" + it.id + "/usage?days=30");
    charts.replaceChildren(
      h("figure", {}, h("figcaption", {}, "Last 30 days"),
        barChart("chart-days", "Requests per day, last 30 days", usage.days.map((d) => d.count), usage.days.map((d) => d.date), usage.daily_quota)),
      h("figure", {}, h("figcaption", {}, "Today by hour (UTC)"),
        barChart("chart-hours", "Requests per hour today", usage.hourly_today, usage.hourly_today.map((_, i) => String(i).padStart(2, "0") + ":00"))));
  } catch (err) { charts.replaceChildren(h("p", { class: "alert" }, err.message)); }
  try { await loadActivity(); } catch (err) { showError(actionError, err); }
}

function auditHead() {
  return h("thead", {}, h("tr", {}, ["Time", "Event", "Outcome", "Source IP", "Integration", "Admin key", "Reason / details"].map((t) => h("th", { scope: "col" }, t))));
}

function fmtDetails(e) {
  if (!e.details || typeof e.details !== "object") return "";
  return Object.entries(e.details)
    .filter(([k, v]) => !(k === "reason" && v === e.reason))
    .map(([k, v]) => k + ": " + (typeof v === "string" ? v : JSON.stringify(v)))
    .join("; ");
}

function auditRow(e) {
  const details = fmtDetails(e);
  return h("tr", { "data-type": e.type, "data-seq": e.seq },
    h("td", { class: "time" }, fmtTime(e.at)), h("td", {}, h("code", {}, e.type)), h("td", {}, e.outcome),
    h("td", {}, e.source_ip || "—"),
    h("td", {}, e.integration_id ? h("a", { href: "#/integrations/" + e.integration_id }, e.integration_id) : "—"),
    h("td", {}, e.admin_key_id || "—"),
    h("td", {}, [e.reason, details].filter(Boolean).join(" ")));
}

// ---------- guided rotation ----------

async function renderRotate(id) {
  let it;
  try { it = await api("GET", "/admin/v1/integrations/" + encodeURIComponent(id)); } catch (err) {
    const e = alertBox("page-error"); showError(e, err); view("Rotate secret", e); return;
  }
  const error = alertBox("rotate-error");
  const routine = h("input", { type: "radio", name: "mode", id: "mode-routine", value: "routine", checked: true });
  const incident = h("input", { type: "radio", name: "mode", id: "mode-incident", value: "incident" });
  const grace = h("select", { id: "grace" },
    [[3600, "1 hour"], [86400, "24 hours"], [604800, "7 days"]].map(([v, t]) => h("option", { value: v, selected: v === 86400 }, t)));
  const go = h("button", { type: "submit", id: "rotate-now" }, "Rotate now");
  const sync = () => {
    grace.disabled = incident.checked;
    go.textContent = incident.checked ? "Rotate now and cut off the old secret" : "Rotate now";
    go.className = incident.checked ? "danger" : "";
  };
  routine.addEventListener("change", sync);
  incident.addEventListener("change", sync);

  const form = h("form", { id: "rotate-form", onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const body = incident.checked ? { mode: "incident" } : { mode: "routine", grace_seconds: Number(grace.value) };
    try {
      const rotated = await api("POST", "/admin/v1/integrations/" + it.id + "/rotate", body);
      renderRotated(rotated);
    } catch (err) { showError(error, err); }
  } },
    h("fieldset", {}, h("legend", {}, "How should the old secret end?"),
      h("div", { class: "field" }, routine, " ", h("label", { for: "mode-routine" }, "Routine — the old secret keeps working for a grace window"),
        h("label", { for: "grace" }, "Grace window"), grace),
      h("div", { class: "field" }, incident, " ", h("label", { for: "mode-incident" }, "Incident — the old secret and every token issued with it stop working now"))),
    error, go);
  view("Rotate the secret of " + it.name,
    h("p", {}, h("a", { href: "#/integrations/" + it.id }, "← back to " + it.name)),
    graceCountdown(it, () => renderRotate(id)),
    h("p", {}, "Step 1 of 3: choose how. Step 2: copy the new secret. Step 3: once the integration uses it, finish the rotation."),
    form);
}

function renderRotated(rotated) {
  const it = rotated.integration;
  const done = () => {
    view("Rotation finished", h("p", { class: "notice", id: "rotation-finished" }, "Only the new secret of " + it.name + " works now."),
      h("p", {}, h("a", { href: "#/integrations/" + it.id }, "Open " + it.name)));
  };
  const next = rotated.previous_secret_expires_at
    ? graceCountdown(it, done)
    : h("p", { class: "notice", id: "incident-done" }, "The old secret and every token issued with it no longer work.");
  view("New secret for " + it.name,
    h("p", {}, "Step 2 of 3: give the new secret to the integration's owner."),
    secretOnce("New client secret", rotated.client_secret),
    h("p", {}, "Step 3 of 3:"),
    next,
    h("p", {}, h("a", { href: "#/integrations/" + it.id, id: "back-to-integration" }, "Back to " + it.name)));
}

// ---------- global audit ----------

function toRfc3339(local) {
  if (!local) return null;
  const d = new Date(local + (local.length === 16 ? ":00" : "") + "Z");
  return isNaN(d) ? null : d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

async function renderAudit(params) {
  const error = alertBox("audit-error");
  const verify = h("p", { id: "chain-status" }, "Verifying the chain…");
  const inputs = {
    org_id: h("input", { type: "text", id: "audit-org", value: params.get("org_id") || "" }),
    integration_id: h("input", { type: "text", id: "audit-integration", value: params.get("integration_id") || "" }),
    type: h("input", { type: "text", id: "audit-type", value: params.get("type") || "", placeholder: "token. or integration.disabled" }),
    from: h("input", { type: "datetime-local", id: "audit-from", value: params.get("from") || "" }),
    to: h("input", { type: "datetime-local", id: "audit-to", value: params.get("to") || "" }),
  };
  const labels = { org_id: "Organisation", integration_id: "Integration id", type: "Event type", from: "From (UTC)", to: "To (UTC)" };
  const body = h("tbody");
  const older = h("button", { type: "button", class: "secondary", id: "audit-older", hidden: true }, "Older entries");
  let cursor = null;
  const load = async () => {
    error.textContent = "";
    const qs = new URLSearchParams({ limit: "50" });
    for (const [k, input] of Object.entries(inputs)) {
      const v = input.value.trim();
      if (!v) continue;
      if (k === "from" || k === "to") {
        const t = toRfc3339(v);
        if (!t) { error.textContent = labels[k] + " is not a valid time."; return; }
        qs.set(k, t);
      } else qs.set(k, v);
    }
    if (cursor !== null) qs.set("cursor", String(cursor));
    try {
      const page = await api("GET", "/admin/v1/audit?" + qs);
      body.append(...page.entries.map(auditRow));
      cursor = page.next_cursor;
      older.hidden = cursor === null;
      if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: 7 }, "No entries match.")));
    } catch (err) { showError(error, err); }
  };
  older.addEventListener("click", load);
  const filters = h("form", { class: "filters", id: "audit-filters", onsubmit: (ev) => {
    ev.preventDefault();
    const qs = new URLSearchParams();
    for (const [k, input] of Object.entries(inputs)) if (input.value.trim()) qs.set(k, input.value.trim());
    const target = "#/audit" + (qs.toString() ? "?" + qs : "");
    if (location.hash === target) route(); else location.hash = target;
  } },
    Object.entries(inputs).map(([k, input]) => h("div", {}, h("label", { for: input.id }, labels[k]), input)),
    h("button", { type: "submit" }, "Filter"));
  view("Audit log", verify, filters, error, h("table", { id: "audit" }, auditHead(), body), older);
  api("GET", "/admin/v1/audit/verify").then((r) => {
    verify.className = r.ok ? "notice" : "alert";
    verify.textContent = r.ok
      ? "Chain verified: all " + num(r.entries_checked) + " entries are intact."
      : "Chain broken at entry " + r.first_broken.seq + ": " + r.first_broken.problem;
  }).catch((err) => { verify.className = "alert"; verify.textContent = "Verification failed: " + err.message; });
  await load();
}

// ---------- webhooks ----------

const EVENT_TYPES = ["secret.rotated", "secret.grace_ending", "secret.expiring", "secret.leaked", "integration.disabled",
  "integration.enabled", "integration.revoked", "quota.warning", "quota.exhausted", "auth.lockout"];

async function renderWebhooks() {
  const error = alertBox("webhooks-error");
  const body = h("tbody");
  const load = async () => {
    const list = await api("GET", "/admin/v1/webhooks");
    body.replaceChildren(...list.webhooks.map((w) => h("tr", { "data-id": w.id },
      h("td", {}, h("a", { href: "#/webhooks/" + w.id }, w.url)), h("td", {}, w.org_id),
      h("td", {}, w.integration_id || "all"), h("td", {}, w.events.length ? w.events.join(" ") : "all"),
      h("td", {}, fmtTime(w.created_at)),
      h("td", {}, session.readOnly ? null : h("button", { type: "button", class: "danger", "aria-label": "Delete the webhook to " + w.url, onclick: async () => {
        try { await api("DELETE", "/admin/v1/webhooks/" + w.id); announce("Webhook deleted"); await load(); }
        catch (err) { showError(error, err); }
      } }, "Delete")))));
    if (!list.webhooks.length) body.append(h("tr", {}, h("td", { colspan: 6 }, "No webhooks yet.")));
  };
  const org = field("hook-org", "Organisation", h("input", { type: "text", maxlength: 64, value: session.org || "" }));
  const url = field("hook-url", "Endpoint URL", h("input", { type: "url" }), "http:// or https://; receives a signed POST per event");
  const integration = field("hook-integration", "Only this integration (optional)", h("input", { type: "text" }), "int_…");
  const boxes = EVENT_TYPES.map((t) => h("input", { type: "checkbox", id: "ev-" + t.replace(".", "-"), value: t }));
  const form = session.readOnly ? null : h("form", { id: "webhook-form", novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    let bad = invalid(org, org.input.value.trim() ? "" : "Enter an organisation.");
    bad = invalid(url, /^https?:\/\/./.test(url.input.value.trim()) ? "" : "Enter an http:// or https:// URL.") || bad;
    if (bad) return;
    const body = { org_id: org.input.value.trim(), url: url.input.value.trim(), events: boxes.filter((b) => b.checked).map((b) => b.value) };
    if (integration.input.value.trim()) body.integration_id = integration.input.value.trim();
    try {
      const created = await api("POST", "/admin/v1/webhooks", body);
      form.replaceWith(secretOnce("Webhook signing secret", created.secret),
        h("p", {}, "Verify each delivery's Tollgate-Signature header (t=<unix>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">) with this secret."));
      await load();
    } catch (err) { showError(error, err); }
  } },
    h("h2", {}, "Add a webhook"), org.el, url.el, integration.el,
    h("fieldset", {}, h("legend", {}, "Events (none checked: all)"),
      boxes.map((b) => h("div", {}, b, " ", h("label", { for: b.id, class: "inline-label" }, b.value)))),
    h("button", { type: "submit" }, "Add webhook"));
  view("Webhooks", error,
    h("table", { id: "webhooks" }, h("thead", {}, h("tr", {}, ["Endpoint", "Organisation", "Integration", "Events", "Created", ""].map((t) => h("th", { scope: "col" }, t)))), body),
    form);
  try { await load(); } catch (err) { showError(error, err); }
}

async function renderDeliveries(id) {
  const error = alertBox("deliveries-error");
  const body = h("tbody");
  const older = h("button", { type: "button", class: "secondary", id: "deliveries-older", hidden: true }, "Older deliveries");
  let cursor = null;
  const load = async () => {
    const qs = new URLSearchParams({ limit: "50" });
    if (cursor !== null) qs.set("cursor", String(cursor));
    const page = await api("GET", "/admin/v1/webhooks/" + encodeURIComponent(id) + "/deliveries?" + qs);
    body.append(...page.deliveries.map((d) => {
      const last = d.attempts[d.attempts.length - 1];
      return h("tr", { "data-status": d.status, "data-event": d.event_type },
        h("td", { class: "time" }, fmtTime(d.created_at)), h("td", {}, h("code", {}, d.event_type)),
        h("td", {}, h("code", {}, d.event_id)), h("td", {}, d.status), h("td", {}, String(d.attempts.length)),
        h("td", {}, last ? (last.status_code ? "HTTP " + last.status_code : last.error || "—") : "—"),
        h("td", {}, d.next_attempt_at ? fmtTime(d.next_attempt_at) : "—"));
    }));
    cursor = page.next_cursor;
    older.hidden = cursor === null;
    if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: 7 }, "No deliveries yet.")));
  };
  older.addEventListener("click", () => load().catch((err) => showError(error, err)));
  view("Webhook deliveries", h("p", {}, h("a", { href: "#/webhooks" }, "← all webhooks")), error,
    h("table", { id: "deliveries" }, h("thead", {}, h("tr", {},
      ["Queued", "Event", "Event id", "Status", "Attempts", "Last answer", "Next attempt"].map((t) => h("th", { scope: "col" }, t)))), body),
    older);
  try { await load(); } catch (err) { showError(error, err); }
}

// ---------- routing ----------

async function route() {
  const hash = location.hash || "#/integrations";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  if (!session.csrf && !(await loadSession())) { renderSignIn(); return; }
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "integrations" && parts[1] === "new") return renderCreate();
  if (parts[0] === "integrations" && parts[1] && parts[2] === "rotate") return renderRotate(parts[1]);
  if (parts[0] === "integrations" && parts[1]) return renderIntegration(parts[1]);
  if (parts[0] === "audit") return renderAudit(params);
  if (parts[0] === "webhooks" && parts[1]) return renderDeliveries(parts[1]);
  if (parts[0] === "webhooks") return renderWebhooks();
  if (parts[0] === "sign-in") { location.hash = "#/integrations"; return; }
  return renderList(params);
}

window.addEventListener("hashchange", route);
route();
