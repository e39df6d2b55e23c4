// mamori web console: one page, no framework, no build step.
//
// Rules this file keeps, because the page is served with `Content-Security-Policy: default-src 'self'`
// and shows data that comes from the network (host names, rule titles, log lines) and may be hostile:
// - the DOM is built with createElement/textContent only; innerHTML is never used;
// - every visible string is t() of a literal key, so a test can check that ja.json and en.json have every key
//   (keys that only the server knows, like a checklist item's `title_key`, go through `tKnown`);
// - links are only ever built from constant paths plus encodeURIComponent(data), never from raw data.
//
// The API it talks to is described in docs/console-api.md.
"use strict";

(() => {
  const SEVERITIES = ["critical", "high", "medium", "low", "informational"];
  const DEFAULT_LANG = "ja";
  const LANG_STORAGE_KEY = "mamori.console.lang";
  // Stream events arrive in bursts (a batch of events touches several topics): one refetch per burst.
  const LIVE_REFRESH_DEBOUNCE_MS = 300;
  const STREAM_RETRY_MS = 5000;

  const state = {
    lang: DEFAULT_LANG,
    dict: {},
    user: null,
    csrf: "",
    stream: null,
    streamRetryTimer: 0,
    liveState: "closed",
    page: null, // { name, topics, refresh }
    refreshTimer: 0,
    refreshWanted: false,
    dialogOpen: false,
    login: null, // login page state, see renderLogin
  };

  // ---------------------------------------------------------------------------------------------
  // i18n

  /** The translation of a key; `{name}` placeholders are replaced by `vars.name`. */
  function t(key, vars) {
    let text = Object.prototype.hasOwnProperty.call(state.dict, key) ? state.dict[key] : key;
    if (vars) {
      text = text.replace(/\{(\w+)\}/g, (whole, name) =>
        Object.prototype.hasOwnProperty.call(vars, name) ? String(vars[name]) : whole,
      );
    }
    return text;
  }

  /** The translation of a key the server chose (or a value that may be a key), else the fallback. */
  function tKnown(key, fallback) {
    if (typeof key === "string" && Object.prototype.hasOwnProperty.call(state.dict, key)) {
      return state.dict[key];
    }
    return fallback;
  }

  async function loadDictionary(lang) {
    const res = await fetch(`/api/i18n/${encodeURIComponent(lang)}`, {
      credentials: "same-origin",
      cache: "no-cache",
    });
    if (!res.ok) throw new Error(`i18n ${lang}: HTTP ${res.status}`);
    const dict = await res.json();
    state.dict = dict && typeof dict === "object" ? dict : {};
    state.lang = lang;
    document.documentElement.lang = lang;
    document.title = t("app.title");
  }

  function storedLang() {
    try {
      const lang = window.localStorage.getItem(LANG_STORAGE_KEY);
      return lang === "en" || lang === "ja" ? lang : DEFAULT_LANG;
    } catch (_) {
      return DEFAULT_LANG;
    }
  }

  function storeLang(lang) {
    try {
      window.localStorage.setItem(LANG_STORAGE_KEY, lang);
    } catch (_) {
      // Storage may be disabled by policy; the choice then lasts for this page only.
    }
  }

  function severityLabel(severity) {
    const labels = {
      critical: t("severity.critical"),
      high: t("severity.high"),
      medium: t("severity.medium"),
      low: t("severity.low"),
      informational: t("severity.informational"),
    };
    return labels[severity] ?? String(severity ?? "");
  }

  function roleLabel(role) {
    const labels = { admin: t("role.admin"), operator: t("role.operator"), auditor: t("role.auditor") };
    return labels[role] ?? String(role ?? "");
  }

  function agentStatusLabel(status) {
    const labels = {
      online: t("agent.status.online"),
      offline: t("agent.status.offline"),
      revoked: t("agent.status.revoked"),
      replaced: t("agent.status.replaced"),
    };
    return labels[status] ?? String(status ?? "");
  }

  function commandStatusLabel(status) {
    const labels = {
      pending: t("command.status.pending"),
      succeeded: t("command.status.succeeded"),
      failed: t("command.status.failed"),
    };
    return labels[status] ?? String(status ?? "");
  }

  function commandActionLabel(action) {
    const labels = {
      isolate: t("command.action.isolate"),
      release: t("command.action.release"),
      scan: t("command.action.scan"),
      quarantine_restore: t("command.action.quarantine_restore"),
      quarantine_delete: t("command.action.quarantine_delete"),
      backup_restore: t("command.action.backup_restore"),
    };
    return labels[action] ?? String(action ?? "");
  }

  function detectionStatusLabel(status) {
    const labels = {
      open: t("detection.status.open"),
      acknowledged: t("detection.status.acknowledged"),
      closed: t("detection.status.closed"),
      false_positive: t("detection.status.false_positive"),
      all: t("detection.status.all"),
    };
    return labels[status] ?? String(status ?? "");
  }

  function backupStatusLabel(status) {
    const labels = { completed: t("backup.status.completed"), failed: t("backup.status.failed") };
    return labels[status] ?? (status ? String(status) : t("backup.status.never"));
  }

  function checklistStatusLabel(status) {
    const labels = {
      ok: t("checklist.status.ok"),
      partial: t("checklist.status.partial"),
      missing: t("checklist.status.missing"),
    };
    return labels[status] ?? String(status ?? "");
  }

  /** The manager reports the outcome of the quarantine action (`success` / `failure`) as the state. */
  function quarantineStateLabel(value) {
    const labels = {
      success: t("quarantine.state.quarantined"),
      quarantined: t("quarantine.state.quarantined"),
      failure: t("quarantine.state.failed"),
      failed: t("quarantine.state.failed"),
      restored: t("quarantine.state.restored"),
      deleted: t("quarantine.state.deleted"),
    };
    return labels[value] ?? (value ? String(value) : "—");
  }

  function isQuarantined(item) {
    return item.state === "success" || item.state === "quarantined";
  }

  /** Audit actors are `user:<name>`, `manager`, `admin-token` or `anonymous`. */
  function actorLabel(actor) {
    const text = String(actor ?? "");
    if (text.startsWith("user:")) return text.slice(5);
    const labels = {
      manager: t("audit.actor_manager"),
      "admin-token": t("audit.actor_admin_token"),
      anonymous: t("audit.actor_anonymous"),
    };
    return labels[text] ?? text;
  }

  /** The page's text for an API error: `error.<code>` when known, else the server's message. */
  function errorText(err) {
    if (!(err instanceof ApiError)) return err && err.userText ? err.userText : t("error.unexpected");
    const known = {
      not_logged_in: t("error.not_logged_in"),
      forbidden: t("error.forbidden"),
      csrf: t("error.csrf"),
      bad_credentials: t("error.bad_credentials"),
      bad_code: t("error.bad_code"),
      locked: t("error.locked"),
      bad_request: t("error.bad_request"),
      not_found: t("error.not_found"),
      conflict: t("error.conflict"),
      network: t("error.network"),
      internal: t("error.internal"),
      challenge_expired: t("error.challenge_expired"),
      weak_password: t("error.weak_password"),
      bad_settings: t("error.bad_settings"),
      bad_username: t("error.bad_username"),
      last_admin: t("error.last_admin"),
      no_recipients: t("error.no_recipients"),
      mail_failed: t("error.mail_failed"),
      report_font: t("error.report_font"),
      unknown_agent: t("error.unknown_agent"),
      bad_passkey: t("error.bad_passkey"),
      no_passkey: t("error.no_passkey"),
      passkeys_unavailable: t("error.passkeys_unavailable"),
      registration_expired: t("error.registration_expired"),
      bad_name: t("error.bad_name"),
      passkey_exists: t("error.passkey_exists"),
    };
    const text = known[err.code];
    if (text === undefined) return err.message || t("error.unexpected");
    if (err.code === "weak_password") {
      // The message lists the policy's codes ("... policy: password_too_short, ...").
      const rules = {
        password_too_short: t("password.too_short"),
        password_too_long: t("password.too_long"),
        password_is_username: t("password.is_username"),
        password_too_common: t("password.too_common"),
      };
      const found = Object.keys(rules).filter((code) => String(err.message).includes(code)).map((code) => rules[code]);
      return found.length ? `${text} ${found.join(" ")}` : text;
    }
    // The server's message says which field or setting was wrong; the generic text alone would not.
    if (["bad_request", "conflict", "bad_settings", "bad_username", "mail_failed", "bad_passkey", "passkeys_unavailable"].includes(err.code) && err.message) {
      return `${text} (${err.message})`;
    }
    return text;
  }

  // ---------------------------------------------------------------------------------------------
  // DOM helpers

  const DOM_PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "selected", "open", "multiple"]);

  /** createElement with props: class, text, testid, data {..}, on<event>, DOM properties, attributes. */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    if (props) {
      for (const [name, value] of Object.entries(props)) {
        if (value === undefined || value === null || value === false) continue;
        if (name === "class") el.className = value;
        else if (name === "text") el.textContent = String(value);
        else if (name === "testid") el.dataset.testid = value;
        else if (name === "data") {
          for (const [key, v] of Object.entries(value)) if (v !== undefined && v !== null) el.dataset[key] = String(v);
        } else if (name.startsWith("on") && typeof value === "function") {
          el.addEventListener(name.slice(2), value);
        } else if (DOM_PROPERTIES.has(name)) el[name] = value;
        else el.setAttribute(name, value === true ? "" : String(value));
      }
    }
    appendChildren(el, children);
    return el;
  }

  function appendChildren(el, children) {
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      if (Array.isArray(child)) appendChildren(el, child);
      else if (child instanceof Node) el.appendChild(child);
      else el.appendChild(document.createTextNode(String(child)));
    }
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  function replaceContent(el, ...children) {
    clear(el);
    appendChildren(el, children);
  }

  function button(label, onClick, props = {}) {
    const cls = ["btn", props.class].filter(Boolean).join(" ");
    return h("button", { type: "button", ...props, class: cls, onclick: onClick }, label);
  }

  function badge(text, kind, props = {}) {
    return h("span", { ...props, class: `badge badge-${kind}` }, text);
  }

  function severityBadge(severity) {
    const known = SEVERITIES.includes(severity) ? severity : "informational";
    return badge(severityLabel(severity), `sev-${known}`, { data: { severity } });
  }

  function emptyRow(colspan, text) {
    return h("tr", { class: "empty" }, h("td", { colspan, text: text ?? t("common.none") }));
  }

  function loadingBlock() {
    return h("p", { class: "muted loading", text: t("common.loading") });
  }

  function errorBlock(err) {
    return h("div", { class: "alert alert-error", role: "alert", testid: "page-error" }, errorText(err));
  }

  function jsonBlock(value, testid) {
    return h("pre", { class: "json", testid, text: prettyJson(value) });
  }

  function prettyJson(value) {
    try {
      return JSON.stringify(value, null, 2) ?? "";
    } catch (_) {
      return String(value);
    }
  }

  function compactJson(value) {
    if (typeof value === "string") return value;
    try {
      return JSON.stringify(value) ?? "";
    } catch (_) {
      return String(value);
    }
  }

  function truncate(text, max) {
    const s = String(text ?? "");
    return s.length > max ? `${s.slice(0, max - 1)}…` : s;
  }

  function field(label, control, hint) {
    return h("label", { class: "field" }, h("span", { class: "field-label" }, label), control, hint ? h("span", { class: "field-hint" }, hint) : null);
  }

  function select(options, value, props = {}) {
    const el = h("select", props);
    for (const [optValue, optLabel] of options) {
      el.appendChild(h("option", { value: optValue, selected: optValue === value }, optLabel));
    }
    el.value = value;
    return el;
  }

  function definitionList(pairs) {
    return h(
      "dl",
      { class: "dl" },
      pairs.filter(Boolean).map(([term, desc]) => [h("dt", null, term), h("dd", null, desc)]),
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Formatting

  function locale() {
    return state.lang === "ja" ? "ja-JP" : "en-GB";
  }

  function parseTime(value) {
    if (!value) return null;
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  /** Local date and time, year first in both languages ("2025/05/01 09:30:00", "2025-05-01 09:30:00"):
   * day/month order differs between English-speaking countries, year first is never ambiguous. */
  function fmtTime(value) {
    const d = parseTime(value);
    if (!d) return value ? String(value) : "—";
    const two = (n) => String(n).padStart(2, "0");
    const sep = state.lang === "ja" ? "/" : "-";
    const date = [d.getFullYear(), two(d.getMonth() + 1), two(d.getDate())].join(sep);
    return `${date} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  }

  function fmtRelative(value) {
    const d = parseTime(value);
    if (!d) return "";
    const seconds = Math.round((d.getTime() - Date.now()) / 1000);
    const rtf = new Intl.RelativeTimeFormat(locale(), { numeric: "auto" });
    const abs = Math.abs(seconds);
    if (abs < 60) return rtf.format(seconds, "second");
    if (abs < 3600) return rtf.format(Math.round(seconds / 60), "minute");
    if (abs < 86400) return rtf.format(Math.round(seconds / 3600), "hour");
    return rtf.format(Math.round(seconds / 86400), "day");
  }

  /** A time cell: local date and time, with "5 minutes ago" beside it and the UTC value on hover. */
  function timeCell(value, withRelative) {
    const rel = withRelative ? fmtRelative(value) : "";
    return h(
      "span",
      { class: "time", title: value ? String(value) : null },
      fmtTime(value),
      rel ? h("span", { class: "muted rel" }, ` (${rel})`) : null,
    );
  }

  function fmtNumber(n) {
    return typeof n === "number" ? new Intl.NumberFormat(locale()).format(n) : "—";
  }

  function fmtBytes(n) {
    if (typeof n !== "number" || !Number.isFinite(n)) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = n;
    let unit = 0;
    while (Math.abs(value) >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${new Intl.NumberFormat(locale(), { maximumFractionDigits: unit ? 1 : 0 }).format(value)} ${units[unit]}`;
  }

  /** `datetime-local` value (local time) to RFC 3339 UTC, or "" when empty or invalid. */
  function localInputToRfc3339(value) {
    if (!value) return "";
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? "" : d.toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  /** Reads `a.b.c` from event data that may be flat (dotted keys, as logs are) or nested. */
  function pick(data, path) {
    if (!data || typeof data !== "object") return undefined;
    if (Object.prototype.hasOwnProperty.call(data, path)) return data[path];
    let cur = data;
    for (const part of path.split(".")) {
      if (!cur || typeof cur !== "object" || !Object.prototype.hasOwnProperty.call(cur, part)) return undefined;
      cur = cur[part];
    }
    return cur;
  }

  const SUMMARY_FIELDS = [
    "message",
    "rule.title",
    "rule.name",
    "title",
    "event.action",
    "file.path",
    "path",
    "process.command_line",
    "process.name",
    "error.message",
  ];

  /** One line that says what an event is about, for a table cell. */
  function eventSummary(data) {
    if (typeof data === "string") return truncate(data, 160);
    const parts = [];
    for (const key of SUMMARY_FIELDS) {
      const value = pick(data, key);
      if (value !== undefined && value !== null && typeof value !== "object" && !parts.includes(String(value))) {
        parts.push(String(value));
      }
      if (parts.length === 2) break;
    }
    return truncate(parts.length ? parts.join(" — ") : compactJson(data), 160);
  }

  // ---------------------------------------------------------------------------------------------
  // API

  class ApiError extends Error {
    constructor(status, code, message, body) {
      super(message);
      this.status = status;
      this.code = code;
      this.body = body;
      this.retryAfter = NaN;
      // Set when the error was already dealt with (session expiry): callers show nothing.
      this.handled = false;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (state.background > 0 && method === "GET") headers["X-Mamori-Background"] = "1";
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET" && method !== "HEAD") {
      if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
      if (method !== "DELETE" || body !== undefined) {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body ?? {});
      }
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, "network", String(e && e.message ? e.message : e), null);
    }
    const text = await res.text().catch(() => "");
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!res.ok) {
      const code = data && typeof data.error === "string" ? data.error : `http_${res.status}`;
      const message = data && typeof data.message === "string" ? data.message : res.statusText;
      const err = new ApiError(res.status, code, message, data);
      const retry = data && data.retry_after_s !== undefined ? data.retry_after_s : res.headers.get("Retry-After");
      err.retryAfter = Number(retry);
      if (res.status === 401 && code === "not_logged_in" && state.user) {
        err.handled = true;
        sessionExpired();
      }
      throw err;
    }
    return data ?? {};
  }

  function queryString(params) {
    const q = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") q.set(key, String(value));
    }
    const s = q.toString();
    return s ? `?${s}` : "";
  }

  // ---------------------------------------------------------------------------------------------
  // Roles

  function canOperate() {
    return state.user && (state.user.role === "admin" || state.user.role === "operator");
  }

  function isAdmin() {
    return state.user && state.user.role === "admin";
  }

  // ---------------------------------------------------------------------------------------------
  // Toasts and dialogs

  function toast(text, kind = "ok") {
    let box = document.getElementById("toasts");
    if (!box) {
      box = h("div", { id: "toasts", class: "toasts", "aria-live": "polite" });
      document.body.appendChild(box);
    }
    const item = h("div", { class: `toast toast-${kind}`, testid: "toast", role: kind === "error" ? "alert" : "status" }, text);
    box.appendChild(item);
    // A burst of actions must not cover the page with messages: keep the newest few.
    while (box.childElementCount > 4) box.firstElementChild.remove();
    window.setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
  }

  function reportError(err) {
    if (err instanceof ApiError && err.handled) return;
    toast(errorText(err), "error");
  }

  /**
   * A small modal form. `fields`: [{name, label, type: text|password|textarea|select, required, value,
   * options, hint}]. `onConfirm(values)` runs the action; the dialog stays open and shows the error
   * when it throws, so a rejected note can be corrected. Resolves to the action's result or null.
   */
  function openDialog({ title, message, fields = [], confirmLabel, danger = false, onConfirm, validate }) {
    return new Promise((resolve) => {
      const controls = {};
      const errorBox = h("div", { class: "alert alert-error", role: "alert", testid: "dialog-error", hidden: true });
      const confirmBtn = h("button", {
        type: "submit",
        class: danger ? "btn btn-danger" : "btn btn-primary",
        testid: "dialog-confirm",
      }, confirmLabel ?? t("common.ok"));
      const cancelBtn = button(t("common.cancel"), () => close(null), { testid: "dialog-cancel" });

      const fieldEls = fields.map((f) => {
        let control;
        const common = { name: f.name, testid: `dialog-${f.name}`, required: f.required || null };
        if (f.type === "textarea") {
          control = h("textarea", { ...common, rows: 3, maxlength: 2000, value: f.value ?? "" });
        } else if (f.type === "select") {
          control = select(f.options, f.value ?? f.options[0][0], common);
        } else {
          control = h("input", {
            ...common,
            type: f.type ?? "text",
            value: f.value ?? "",
            autocomplete: f.type === "password" ? "new-password" : "off",
            maxlength: 500,
          });
        }
        controls[f.name] = control;
        control.addEventListener("input", updateConfirm);
        return field(f.label, control, f.hint);
      });

      function values() {
        const out = {};
        for (const [name, control] of Object.entries(controls)) out[name] = control.value;
        return out;
      }

      function updateConfirm() {
        const v = values();
        const missing = fields.some((f) => f.required && !String(v[f.name]).trim());
        confirmBtn.disabled = missing;
      }

      const form = h(
        "form",
        { class: "dialog-form", novalidate: true },
        h("h2", { class: "dialog-title", testid: "dialog-title" }, title),
        message ? h("p", { class: "dialog-message" }, message) : null,
        fieldEls,
        errorBox,
        h("div", { class: "dialog-actions" }, cancelBtn, confirmBtn),
      );
      const dialog = h("dialog", { class: "dialog", testid: "dialog" }, form);

      let busy = false;
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        if (busy || confirmBtn.disabled) return;
        const v = values();
        const problem = validate ? validate(v) : null;
        if (problem) {
          errorBox.textContent = problem;
          errorBox.hidden = false;
          return;
        }
        busy = true;
        confirmBtn.disabled = true;
        errorBox.hidden = true;
        try {
          const result = onConfirm ? await onConfirm(v) : v;
          close(result ?? v);
        } catch (err) {
          if (err instanceof ApiError && err.handled) {
            close(null);
            return;
          }
          errorBox.textContent = errorText(err);
          errorBox.hidden = false;
          busy = false;
          updateConfirm();
        }
      });
      dialog.addEventListener("cancel", (ev) => {
        ev.preventDefault();
        if (!busy) close(null);
      });

      function close(result) {
        if (dialog.open) dialog.close();
        dialog.remove();
        state.dialogOpen = false;
        resolve(result);
        // Live updates that arrived while the dialog was open were held back so they would not
        // rebuild the page under it.
        if (state.refreshWanted) scheduleRefresh();
      }

      document.body.appendChild(dialog);
      state.dialogOpen = true;
      updateConfirm();
      dialog.showModal();
      const first = fields.length ? controls[fields[0].name] : confirmBtn;
      first.focus();
    });
  }

  function confirmDialog(title, message, onConfirm, danger = false) {
    return openDialog({ title, message, confirmLabel: t("common.confirm"), danger, onConfirm });
  }

  // ---------------------------------------------------------------------------------------------
  // Boot, login and session

  async function boot() {
    const bootEl = document.getElementById("boot");
    try {
      await loadDictionary(storedLang());
    } catch (_) {
      // Without translations the page cannot say anything; index.html holds a bilingual fallback.
      if (bootEl) bootEl.hidden = true;
      const failed = document.getElementById("boot-error");
      if (failed) failed.hidden = false;
      return;
    }
    if (bootEl) bootEl.hidden = true;
    let me = null;
    try {
      me = await api("GET", "/api/me");
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401) {
        showLogin({ error: errorText(err) });
        return;
      }
    }
    if (me && me.user) await startSession(me);
    else showLogin({});
  }

  function appRoot() {
    return document.getElementById("app");
  }

  function showLogin({ error, notice, errorCode, username }) {
    stopStream();
    state.user = null;
    state.csrf = "";
    state.page = null;
    state.login = {
      step: "password",
      username: username ?? (state.login ? state.login.username : ""),
      challenge: "",
      secret: "",
      uri: "",
      error: error ?? "",
      errorCode: errorCode ?? "",
      notice: notice ?? "",
      lockedUntil: 0,
    };
    renderLogin();
  }

  function sessionExpired() {
    if (!state.user) return;
    showLogin({ notice: t("login.session_expired"), username: state.user.username });
  }

  let lockTimer = 0;

  function renderLogin() {
    const ls = state.login;
    const root = appRoot();
    root.hidden = false;
    window.clearInterval(lockTimer);
    document.title = t("login.title");

    const langToggle = button(t("lang.switch_to"), async () => {
      const next = state.lang === "ja" ? "en" : "ja";
      const typed = root.querySelector("[data-testid=login-username]");
      if (typed) ls.username = typed.value;
      try {
        await loadDictionary(next);
        storeLang(next);
      } catch (err) {
        reportError(err);
      }
      renderLogin();
    }, { class: "btn-ghost lang-toggle", testid: "lang-toggle", lang: state.lang === "ja" ? "en" : "ja" });

    const messages = h("div", { class: "login-messages" });
    if (ls.notice) messages.appendChild(h("div", { class: "alert alert-info", role: "status", testid: "login-notice" }, ls.notice));
    const errorBox = h("div", {
      class: "alert alert-error",
      role: "alert",
      testid: "login-error",
      data: { code: ls.errorCode },
      hidden: !ls.error,
    }, ls.error);
    messages.appendChild(errorBox);

    let body;
    if (ls.step === "password") body = passwordStep(ls, errorBox);
    else body = totpStep(ls, errorBox);

    const card = h(
      "main",
      { class: "login-card", testid: "login-page" },
      h("div", { class: "login-top" }, h("div", { class: "brand brand-login" }, h("span", { class: "brand-mark", "aria-hidden": "true" }, "◆"), t("app.name")), langToggle),
      h("h1", { class: "login-title", testid: "page-title" }, ls.step === "password" ? t("login.title") : ls.secret ? t("login.totp_setup_title") : t("login.totp_title")),
      messages,
      body,
      h("p", { class: "login-foot muted" }, t("login.footer")),
    );
    replaceContent(root, h("div", { class: "login-wrap" }, card));
    const focus = root.querySelector(ls.step === "password" ? (ls.username ? "[data-testid=login-password]" : "[data-testid=login-username]") : "[data-testid=totp-code]");
    if (focus) focus.focus();
    if (ls.lockedUntil > Date.now()) startLockCountdown(errorBox, root.querySelector("[data-testid=login-submit]"));
  }

  function passwordStep(ls, errorBox) {
    const username = h("input", {
      type: "text",
      name: "username",
      autocomplete: "username",
      testid: "login-username",
      value: ls.username,
      required: true,
      maxlength: 100,
      autocapitalize: "off",
      spellcheck: "false",
    });
    const password = h("input", {
      type: "password",
      name: "password",
      autocomplete: "current-password",
      testid: "login-password",
      required: true,
      maxlength: 500,
    });
    const submit = h("button", { type: "submit", class: "btn btn-primary btn-block", testid: "login-submit" }, t("login.submit"));
    const form = h("form", { class: "login-form", novalidate: true },
      field(t("login.username"), username),
      field(t("login.password"), password),
      submit,
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (submit.disabled) return;
      ls.username = username.value.trim();
      if (!ls.username || !password.value) {
        showLoginError(errorBox, t("login.fill_both"), "missing");
        return;
      }
      submit.disabled = true;
      errorBox.hidden = true;
      try {
        const res = await api("POST", "/api/login", { username: ls.username, password: password.value });
        ls.challenge = String(res.challenge ?? "");
        ls.secret = res.stage === "totp_setup" ? String(res.secret ?? "") : "";
        ls.uri = res.stage === "totp_setup" ? String(res.otpauth_uri ?? "") : "";
        ls.passkey = res.passkey && res.passkey.publicKey ? res.passkey : null;
        ls.step = "totp";
        ls.error = "";
        ls.errorCode = "";
        ls.notice = "";
        renderLogin();
      } catch (err) {
        password.value = "";
        handleLoginError(err, errorBox, submit);
      }
    });
    return form;
  }

  function totpStep(ls, errorBox) {
    const code = h("input", {
      type: "text",
      name: "code",
      inputmode: "numeric",
      autocomplete: "one-time-code",
      pattern: "[0-9]{6}",
      maxlength: 6,
      testid: "totp-code",
      class: "totp-input",
      required: true,
      placeholder: "000000",
    });
    const submit = h("button", { type: "submit", class: "btn btn-primary btn-block", testid: "totp-submit" }, t("login.verify"));
    const back = button(t("login.back"), () => backToPassword(ls, null), { class: "btn-link", testid: "totp-back" });

    code.addEventListener("input", () => {
      // Authenticator apps show "123 456"; people type what they see.
      const digits = code.value.replace(/\D/g, "").slice(0, 6);
      if (digits !== code.value) code.value = digits;
    });

    let passkeyChoice = null;
    if (ls.passkey && passkeysSupported()) {
      const passkeyBtn = button(t("login.passkey"), () => passkeyLogin(ls, errorBox, passkeyBtn), { class: "btn btn-block", testid: "passkey-login" });
      passkeyChoice = h("div", { class: "login-alt" }, h("p", { class: "muted small" }, t("login.passkey_or")), passkeyBtn);
    }
    const form = h("form", { class: "login-form", novalidate: true },
      ls.secret ? totpSetupInstructions(ls) : h("p", { class: "login-help" }, t("login.totp_help")),
      field(t("login.code"), code, t("login.code_hint")),
      submit,
      passkeyChoice,
      h("div", { class: "login-back" }, back),
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (submit.disabled) return;
      const value = code.value.replace(/\D/g, "");
      if (value.length !== 6) {
        showLoginError(errorBox, t("login.code_six_digits"), "format");
        return;
      }
      submit.disabled = true;
      errorBox.hidden = true;
      try {
        const res = await api("POST", "/api/login/totp", { challenge: ls.challenge, code: value });
        state.login = null;
        await startSession(res);
      } catch (err) {
        code.value = "";
        if (err instanceof ApiError && err.code === "bad_code") {
          showLoginError(errorBox, errorText(err), err.code);
          submit.disabled = false;
          code.focus();
          return;
        }
        // Any other answer (locked, an expired challenge) means starting again with the password.
        backToPassword(ls, err);
      }
    });
    return form;
  }

  // ---------------------------------------------------------------------------------------------
  // Passkeys (WebAuthn), the alternative to the code

  function passkeysSupported() {
    return typeof window.PublicKeyCredential === "function" && !!navigator.credentials && window.isSecureContext;
  }

  function b64urlToBytes(text) {
    const b64 = String(text).replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(b64 + "===".slice((b64.length + 3) % 4));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }

  function bytesToB64url(buffer) {
    let bin = "";
    for (const b of new Uint8Array(buffer)) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  /** A copy without null members (the browser's JSON parsers want them absent). */
  function withoutNulls(value) {
    if (Array.isArray(value)) return value.map(withoutNulls);
    if (value && typeof value === "object") {
      return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => [k, withoutNulls(v)]));
    }
    return value;
  }

  /**
   * navigator.credentials.create ("create") or .get ("get") for options as the server sends them
   * (JSON with base64url members); returns the browser's answer as JSON for the server.
   */
  async function passkeyCeremony(kind, options) {
    const pk = withoutNulls(options.publicKey);
    const ids = (list) => (list || []).map((c) => ({ ...c, id: b64urlToBytes(c.id) }));
    let publicKey;
    if (kind === "create") {
      publicKey = typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function"
        ? PublicKeyCredential.parseCreationOptionsFromJSON(pk)
        : { ...pk, challenge: b64urlToBytes(pk.challenge), user: { ...pk.user, id: b64urlToBytes(pk.user.id) }, excludeCredentials: ids(pk.excludeCredentials) };
    } else {
      publicKey = typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function"
        ? PublicKeyCredential.parseRequestOptionsFromJSON(pk)
        : { ...pk, challenge: b64urlToBytes(pk.challenge), allowCredentials: ids(pk.allowCredentials) };
    }
    const credential = await navigator.credentials[kind]({ publicKey });
    if (!credential) throw new Error("no credential");
    if (typeof credential.toJSON === "function") return credential.toJSON();
    const r = credential.response;
    const response = kind === "create"
      ? { clientDataJSON: bytesToB64url(r.clientDataJSON), attestationObject: bytesToB64url(r.attestationObject) }
      : {
        clientDataJSON: bytesToB64url(r.clientDataJSON),
        authenticatorData: bytesToB64url(r.authenticatorData),
        signature: bytesToB64url(r.signature),
        userHandle: r.userHandle ? bytesToB64url(r.userHandle) : undefined,
      };
    return { id: credential.id, rawId: bytesToB64url(credential.rawId), type: credential.type, response, clientExtensionResults: credential.getClientExtensionResults() };
  }

  async function passkeyLogin(ls, errorBox, btn) {
    if (btn.disabled) return;
    btn.disabled = true;
    errorBox.hidden = true;
    let credential;
    try {
      credential = await passkeyCeremony("get", ls.passkey);
    } catch (_) {
      // Cancelled or timed out in the browser; nothing was sent, so the code still works.
      showLoginError(errorBox, t("login.passkey_cancelled"), "passkey_cancelled");
      btn.disabled = false;
      return;
    }
    try {
      const res = await api("POST", "/api/login/passkey", { challenge: ls.challenge, credential });
      state.login = null;
      await startSession(res);
    } catch (err) {
      // The challenge is used up whatever the answer: start again with the password.
      backToPassword(ls, err);
    }
  }

  /** Back to the password step, with the error that ended the second one (if any). */
  function backToPassword(ls, err) {
    ls.step = "password";
    ls.passkey = null;
    ls.challenge = "";
    ls.secret = "";
    ls.uri = "";
    if (err) setLoginError(ls, err);
    else ls.error = "";
    renderLogin();
  }

  function totpSetupInstructions(ls) {
    const grouped = ls.secret.replace(/\s+/g, "").replace(/(.{4})/g, "$1 ").trim();
    const copy = button(t("login.copy_secret"), async () => {
      try {
        await navigator.clipboard.writeText(ls.secret.replace(/\s+/g, ""));
        toast(t("login.copied"));
      } catch (_) {
        toast(t("login.copy_failed"), "error");
      }
    }, { class: "btn-small", testid: "totp-copy" });
    const qr = qrCodeSvg(ls.uri);
    return h("div", { class: "totp-setup", testid: "totp-setup" },
      h("p", null, t("login.totp_setup_intro")),
      h("ol", { class: "steps" },
        h("li", null, t("login.totp_setup_step1")),
        h("li", null, t("login.totp_setup_step2")),
        h("li", null, t("login.totp_setup_step3")),
      ),
      h("div", { class: "totp-secret-row" },
        qr ? h("div", { class: "qr", testid: "totp-qr", role: "img", "aria-label": t("login.qr_label") }, qr) : null,
        h("div", { class: "totp-secret-box" },
          h("div", { class: "field-label" }, t("login.secret")),
          h("code", { class: "totp-secret", testid: "totp-secret", data: { secret: ls.secret } }, grouped),
          copy,
          h("details", { class: "totp-uri" },
            h("summary", null, t("login.uri")),
            h("code", { class: "uri", testid: "totp-uri" }, ls.uri),
          ),
        ),
      ),
      h("p", { class: "muted small" }, t("login.totp_setup_keep_secret")),
    );
  }

  function showLoginError(errorBox, text, code) {
    errorBox.textContent = text;
    errorBox.dataset.code = code;
    errorBox.hidden = false;
  }

  function setLoginError(ls, err) {
    ls.errorCode = err instanceof ApiError ? err.code : "unexpected";
    if (err instanceof ApiError && err.code === "locked") {
      const seconds = Number.isFinite(err.retryAfter) && err.retryAfter > 0 ? err.retryAfter : 60;
      ls.lockedUntil = Date.now() + seconds * 1000;
      ls.error = lockedText(seconds);
    } else {
      ls.error = errorText(err);
    }
  }

  function handleLoginError(err, errorBox, submit) {
    const ls = state.login;
    setLoginError(ls, err);
    showLoginError(errorBox, ls.error, ls.errorCode);
    submit.disabled = false;
    if (ls.lockedUntil > Date.now()) startLockCountdown(errorBox, submit);
  }

  function lockedText(seconds) {
    const m = Math.floor(seconds / 60);
    const s = Math.max(0, Math.ceil(seconds % 60));
    const wait = m > 0 ? t("time.minutes_seconds", { m, s }) : t("time.seconds", { s });
    return `${t("error.locked")} ${t("login.retry_after", { wait })}`;
  }

  function startLockCountdown(errorBox, submit) {
    const ls = state.login;
    window.clearInterval(lockTimer);
    const tick = () => {
      const left = Math.ceil((ls.lockedUntil - Date.now()) / 1000);
      if (left <= 0) {
        window.clearInterval(lockTimer);
        ls.lockedUntil = 0;
        ls.error = t("login.unlocked");
        ls.errorCode = "";
        errorBox.textContent = ls.error;
        errorBox.className = "alert alert-info";
        if (submit) submit.disabled = false;
        return;
      }
      ls.error = lockedText(left);
      errorBox.textContent = ls.error;
      if (submit) submit.disabled = true;
    };
    tick();
    lockTimer = window.setInterval(tick, 1000);
  }

  async function startSession(me) {
    state.user = me.user;
    state.csrf = String(me.csrf ?? "");
    const wanted = me.user && (me.user.lang === "en" || me.user.lang === "ja") ? me.user.lang : state.lang;
    if (wanted !== state.lang) {
      try {
        await loadDictionary(wanted);
      } catch (_) {
        // Keep the language we have rather than show keys.
      }
    }
    renderShell();
    startStream();
    if (!location.hash || location.hash === "#" || location.hash === "#/") {
      history.replaceState(null, "", "#/overview");
    }
    route();
  }

  async function logout() {
    try {
      await api("POST", "/api/logout");
    } catch (err) {
      if (!(err instanceof ApiError && err.handled)) reportError(err);
    }
    showLogin({ notice: t("login.logged_out") });
    history.replaceState(null, "", "#/");
  }

  async function switchLanguage() {
    const next = state.lang === "ja" ? "en" : "ja";
    try {
      await api("PUT", "/api/me/lang", { lang: next });
      await loadDictionary(next);
      if (state.user) state.user.lang = next;
    } catch (err) {
      reportError(err);
      return;
    }
    renderShell();
    route();
  }

  function changePassword() {
    openDialog({
      title: t("account.change_password"),
      fields: [
        { name: "current", label: t("account.current_password"), type: "password", required: true },
        { name: "new", label: t("account.new_password"), type: "password", required: true, hint: t("account.password_hint") },
        { name: "repeat", label: t("account.confirm_password"), type: "password", required: true },
      ],
      confirmLabel: t("account.change"),
      validate: (v) => (v.new !== v.repeat ? t("account.password_mismatch") : null),
      onConfirm: (v) => api("POST", "/api/me/password", { current: v.current, new: v.new }),
    }).then((res) => {
      if (res) toast(t("account.password_changed"));
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Live updates

  function startStream() {
    stopStream();
    if (typeof EventSource === "undefined") return;
    const es = new EventSource("/api/stream", { withCredentials: true });
    state.stream = es;
    let dropped = false;
    setLive("connecting");
    es.addEventListener("open", () => {
      setLive("open");
      // Whatever changed while the stream was down was not announced.
      if (dropped) scheduleRefresh();
      dropped = false;
    });
    es.addEventListener("changed", (ev) => {
      let topics = [];
      try {
        const parsed = JSON.parse(ev.data);
        if (parsed && Array.isArray(parsed.topics)) topics = parsed.topics.map(String);
      } catch (_) {
        return;
      }
      const page = state.page;
      if (page && page.topics.some((topic) => topics.includes(topic))) scheduleRefresh();
    });
    es.addEventListener("error", () => {
      if (state.stream !== es) return;
      dropped = true;
      if (es.readyState === EventSource.CLOSED) {
        // EventSource gives up on an HTTP error (for example 401 when the session ended): find out
        // whether the session is still alive, then try again.
        setLive("closed");
        window.clearTimeout(state.streamRetryTimer);
        state.streamRetryTimer = window.setTimeout(async () => {
          if (state.stream !== es) return;
          try {
            await api("GET", "/api/me");
            startStream();
          } catch (_) {
            // Session expiry is handled by api(); otherwise retry later.
            if (state.user && state.stream === es) startStream();
          }
        }, STREAM_RETRY_MS);
      } else {
        setLive("connecting");
      }
    });
  }

  function stopStream() {
    window.clearTimeout(state.streamRetryTimer);
    if (state.stream) state.stream.close();
    state.stream = null;
    setLive("closed");
  }

  function setLive(value) {
    state.liveState = value;
    const el = document.querySelector("[data-testid=live-indicator]");
    if (!el) return;
    el.dataset.state = value;
    const labels = { open: t("live.open"), connecting: t("live.connecting"), closed: t("live.closed") };
    const label = el.querySelector(".live-label");
    if (label) label.textContent = labels[value] ?? value;
    el.title = t("live.hint");
  }

  function scheduleRefresh() {
    if (state.dialogOpen) {
      state.refreshWanted = true;
      return;
    }
    state.refreshWanted = false;
    window.clearTimeout(state.refreshTimer);
    state.refreshTimer = window.setTimeout(async () => {
      if (!state.page || !state.page.refresh) return;
      // Refetches after a live update are not the user's activity: the server does not let
      // them keep an unattended console logged in (X-Mamori-Background).
      state.background = (state.background || 0) + 1;
      try {
        await state.page.refresh(true);
      } finally {
        state.background -= 1;
      }
    }, LIVE_REFRESH_DEBOUNCE_MS);
  }

  // ---------------------------------------------------------------------------------------------
  // Shell and routing

  function navItems() {
    return [
      { name: "overview", label: t("nav.overview") },
      { name: "agents", label: t("nav.agents") },
      { name: "detections", label: t("nav.detections") },
      { name: "events", label: t("nav.events") },
      { name: "quarantine", label: t("nav.quarantine") },
      { name: "backups", label: t("nav.backups") },
      { name: "checklist", label: t("nav.checklist") },
      { name: "audit", label: t("nav.audit") },
      { name: "users", label: t("nav.users"), adminOnly: true },
      { name: "alerting", label: t("nav.alerting") },
      { name: "reports", label: t("nav.reports") },
    ];
  }

  function renderShell() {
    const root = appRoot();
    root.hidden = false;
    const user = state.user;
    const live = h("span", { class: "live", testid: "live-indicator", data: { state: state.liveState }, role: "status" },
      h("span", { class: "live-dot", "aria-hidden": "true" }),
      h("span", { class: "live-label" }),
    );
    const header = h("header", { class: "topbar" },
      h("a", { class: "brand", href: "#/overview" }, h("span", { class: "brand-mark", "aria-hidden": "true" }, "◆"), t("app.name")),
      h("div", { class: "topbar-right" },
        live,
        h("span", { class: "who" },
          h("span", { class: "who-name", testid: "user-name" }, user.username),
          h("span", { class: `badge badge-role role-${user.role}`, testid: "user-role", data: { role: user.role } }, roleLabel(user.role)),
        ),
        h("a", { class: "btn btn-ghost", href: "#/passkeys", testid: "btn-passkeys" }, t("passkeys.title")),
        button(t("account.change_password"), changePassword, { class: "btn-ghost", testid: "btn-change-password" }),
        button(t("lang.switch_to"), switchLanguage, { class: "btn-ghost lang-toggle", testid: "lang-toggle", lang: state.lang === "ja" ? "en" : "ja" }),
        button(t("nav.logout"), logout, { class: "btn-ghost", testid: "logout" }),
      ),
    );
    const nav = h("nav", { class: "sidenav", "aria-label": t("nav.label") },
      h("ul", null, navItems()
        .filter((item) => !item.adminOnly || isAdmin())
        .map((item) => h("li", null, h("a", { href: `#/${item.name}`, testid: `nav-${item.name}`, data: { page: item.name } }, item.label)))),
    );
    const main = h("main", { class: "content", id: "content", tabindex: "-1" });
    replaceContent(root, h("div", { class: "shell" }, header, nav, main));
    setLive(state.liveState);
  }

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [pathPart, queryPart] = raw.split("?");
    const parts = pathPart.split("/").filter(Boolean).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch (_) {
        return p;
      }
    });
    return { parts, query: new URLSearchParams(queryPart ?? "") };
  }

  /** Puts the page's filters in the address (so reload and back keep them) without re-routing. */
  function setHashQuery(pageName, params) {
    history.replaceState(null, "", `#/${pageName}${queryString(params)}`);
  }

  function route() {
    if (!state.user) return;
    const { parts, query } = parseHash();
    const name = parts[0] || "overview";
    const pages = {
      overview: overviewPage,
      agents: parts[1] ? agentDetailPage : agentsPage,
      detections: detectionsPage,
      events: eventsPage,
      quarantine: quarantinePage,
      backups: backupsPage,
      checklist: checklistPage,
      audit: auditPage,
      users: usersPage,
      alerting: alertingPage,
      reports: reportsPage,
      passkeys: passkeysPage,
    };
    let mount = pages[name];
    if (!mount || (name === "users" && !isAdmin())) {
      history.replaceState(null, "", "#/overview");
      mount = overviewPage;
    }
    for (const link of document.querySelectorAll(".sidenav a")) {
      const active = link.dataset.page === (pages[name] ? name : "overview");
      link.classList.toggle("active", active);
      if (active) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    const main = document.getElementById("content");
    if (!main) return;
    clear(main);
    window.clearTimeout(state.refreshTimer);
    const page = mount(main, { parts, query });
    state.page = page;
    main.scrollTop = 0;
    if (page.refresh) page.refresh(false);
  }

  /** Page heading with an optional row of actions on the right. */
  function pageHeader(title, ...actions) {
    document.title = `${title} — ${t("app.name")}`;
    return h("div", { class: "page-head" }, h("h1", { testid: "page-title" }, title), h("div", { class: "page-actions" }, actions));
  }

  /**
   * A refresh function for a page region: fetches, then renders only if no newer fetch started and
   * the region is still on screen. Live refreshes keep the old content until the new data is in.
   */
  function loader(region, fetchData, render) {
    let seq = 0;
    return async function refresh(live) {
      const mine = ++seq;
      if (!live) replaceContent(region, loadingBlock());
      try {
        const data = await fetchData();
        if (mine !== seq || !region.isConnected) return;
        const main = document.getElementById("content");
        const scroll = main ? main.scrollTop : 0;
        render(data);
        if (main && live) main.scrollTop = scroll;
      } catch (err) {
        if (mine !== seq || !region.isConnected) return;
        if (err instanceof ApiError && err.handled) return;
        if (live) reportError(err);
        else replaceContent(region, errorBlock(err));
      }
    };
  }

  /** A row that expands to show an object as formatted JSON (built with textContent). */
  function expandableRows(mainRow, colspan, expanded, key, detail) {
    const detailRow = h("tr", { class: "detail-row", hidden: !expanded.has(key) }, h("td", { colspan }, detail));
    const toggle = button(expanded.has(key) ? "▾" : "▸", () => {
      const open = detailRow.hidden;
      detailRow.hidden = !open;
      toggle.textContent = open ? "▾" : "▸";
      toggle.setAttribute("aria-expanded", String(open));
      if (open) expanded.add(key);
      else expanded.delete(key);
    }, { class: "btn-icon", testid: "btn-expand", "aria-expanded": String(expanded.has(key)), "aria-label": t("common.details") });
    mainRow.insertBefore(h("td", { class: "col-toggle" }, toggle), mainRow.firstChild);
    return [mainRow, detailRow];
  }

  // ---------------------------------------------------------------------------------------------
  // Overview

  function overviewPage(main) {
    const region = h("div", { class: "overview" });
    main.appendChild(pageHeader(t("overview.title")));
    main.appendChild(region);
    const refresh = loader(region, () => api("GET", "/api/overview"), (data) => {
      const agents = data.agents ?? {};
      const open = data.detections_open ?? {};
      const backups = Array.isArray(data.backups) ? data.backups : [];
      const agentCards = h("section", { class: "card" },
        h("h2", null, t("overview.agents")),
        h("div", { class: "stats" },
          stat(t("overview.online"), agents.online, "ok", "overview-agents-online", "#/agents"),
          stat(t("overview.offline"), agents.offline, agents.offline ? "warn" : "neutral", "overview-agents-offline", "#/agents"),
          stat(t("overview.isolated"), agents.isolated, agents.isolated ? "danger" : "neutral", "overview-agents-isolated", "#/agents"),
          stat(t("overview.total"), agents.total, "neutral", "overview-agents-total", "#/agents"),
        ),
      );
      const totalOpen = SEVERITIES.reduce((sum, s) => sum + (Number(open[s]) || 0), 0);
      const detectionCards = h("section", { class: "card" },
        h("h2", null, t("overview.open_detections"), h("span", { class: "muted count" }, ` ${t("common.count", { n: fmtNumber(totalOpen) })}`)),
        h("div", { class: "stats" },
          SEVERITIES.map((s) => stat(severityLabel(s), open[s] ?? 0, Number(open[s]) ? `sev-${s}` : "neutral", `overview-sev-${s}`, `#/detections?severity=${s}`)),
        ),
      );
      const backupRows = backups.map((b) => {
        const suspicious = Number(b.suspicious) || 0;
        const failed = b.last_status === "failed";
        const row = h("tr", {
          class: suspicious ? "row-danger" : failed || !b.last_backup ? "row-warn" : "",
          testid: "overview-backup-row",
          data: { host: b.host, suspicious },
        },
          h("td", null, b.agent_id ? h("a", { href: `#/agents/${encodeURIComponent(b.agent_id)}` }, b.host) : b.host),
          h("td", null, b.last_backup ? timeCell(b.last_backup, true) : h("span", { class: "muted" }, t("backup.status.never"))),
          h("td", null, b.last_status ? badge(backupStatusLabel(b.last_status), failed ? "danger" : "ok") : "—"),
          h("td", null, suspicious ? badge(t("overview.suspicious_count", { n: suspicious }), "danger", { testid: "suspicious-badge" }) : h("span", { class: "muted" }, t("overview.no_suspicious"))),
        );
        return row;
      });
      const backupCard = h("section", { class: "card card-wide" },
        h("h2", null, h("a", { href: "#/backups" }, t("overview.backups"))),
        h("table", { class: "table" },
          h("thead", null, h("tr", null,
            h("th", null, t("common.host")),
            h("th", null, t("overview.last_backup")),
            h("th", null, t("common.status")),
            h("th", null, t("overview.suspicious_snapshots")),
          )),
          h("tbody", null, backupRows.length ? backupRows : emptyRow(4, t("overview.no_backups"))),
        ),
      );
      replaceContent(region,
        h("div", { class: "grid-2" }, agentCards, detectionCards),
        backupCard,
        h("p", { class: "muted small" }, t("overview.generated", { time: fmtTime(data.generated) })),
      );
    });
    return { name: "overview", topics: ["agents", "detections", "backups", "commands"], refresh };
  }

  function stat(label, value, kind, testid, href) {
    return h("a", { class: `stat stat-${kind}`, testid, href },
      h("span", { class: "stat-value", data: { value: value ?? 0 } }, fmtNumber(Number(value) || 0)),
      h("span", { class: "stat-label" }, label),
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Agents

  function commandDialog(agent, action) {
    const titles = {
      isolate: t("agents.isolate_title", { host: agent.hostname }),
      release: t("agents.release_title", { host: agent.hostname }),
      scan: t("agents.scan_title", { host: agent.hostname }),
    };
    const messages = {
      isolate: t("agents.isolate_message"),
      release: t("agents.release_message"),
      scan: t("agents.scan_message"),
    };
    const confirmLabels = {
      isolate: t("agents.isolate"),
      release: t("agents.release"),
      scan: t("agents.scan"),
    };
    return openDialog({
      title: titles[action],
      message: messages[action],
      fields: [{ name: "reason", label: t("common.reason"), type: "textarea", required: true, hint: t("common.reason_hint") }],
      confirmLabel: confirmLabels[action],
      danger: action === "isolate",
      onConfirm: (v) => api("POST", `/api/agents/${encodeURIComponent(agent.id)}/${action}`, { reason: v.reason.trim() }),
    }).then((res) => {
      if (res) toast(t("agents.command_sent", { action: commandActionLabel(action), host: agent.hostname }));
      return res;
    });
  }

  function agentActions(agent, afterCommand) {
    if (!canOperate() || agent.status === "revoked" || agent.status === "replaced") return null;
    const run = (action) => commandDialog(agent, action).then((res) => {
      if (res && afterCommand) afterCommand();
    });
    return h("div", { class: "actions" },
      agent.isolated
        ? button(t("agents.release"), () => run("release"), { class: "btn-small", testid: "btn-release" })
        : button(t("agents.isolate"), () => run("isolate"), { class: "btn-small btn-danger-outline", testid: "btn-isolate" }),
      button(t("agents.scan"), () => run("scan"), { class: "btn-small", testid: "btn-scan" }),
    );
  }

  function agentStatusBadge(agent) {
    const kinds = { online: "ok", offline: "warn", revoked: "muted", replaced: "muted" };
    return badge(agentStatusLabel(agent.status), kinds[agent.status] ?? "muted", { testid: "agent-status", data: { status: agent.status } });
  }

  function isolatedBadge(agent) {
    return agent.isolated ? badge(t("agents.isolated"), "danger", { testid: "agent-isolated" }) : null;
  }

  function agentsPage(main) {
    const region = h("div");
    main.appendChild(pageHeader(t("agents.title")));
    main.appendChild(region);
    const refresh = loader(region, () => api("GET", "/api/agents"), (data) => {
      const agents = Array.isArray(data.agents) ? data.agents.slice() : [];
      agents.sort((a, b) => String(a.hostname).localeCompare(String(b.hostname)));
      const rows = agents.map((a) => h("tr", { testid: `agent-row-${a.hostname}`, data: { agentId: a.id, status: a.status, isolated: a.isolated ? "true" : "false" } },
        h("td", null, h("a", { href: `#/agents/${encodeURIComponent(a.id)}`, testid: `agent-link-${a.hostname}`, class: "strong" }, a.hostname)),
        h("td", null, agentStatusBadge(a), " ", isolatedBadge(a)),
        h("td", null, timeCell(a.last_seen, true)),
        h("td", { class: "mono" }, a.agent_version ?? "—"),
        h("td", { class: "num" }, a.pending_commands ? badge(fmtNumber(a.pending_commands), "warn", { title: t("agents.pending_commands") }) : "0"),
        h("td", null, agentActions(a, refresh)),
      ));
      replaceContent(region, h("table", { class: "table", testid: "agents-table" },
        h("thead", null, h("tr", null,
          h("th", null, t("common.host")),
          h("th", null, t("common.status")),
          h("th", null, t("agents.last_seen")),
          h("th", null, t("agents.version")),
          h("th", { class: "num" }, t("agents.pending_commands")),
          h("th", null, canOperate() ? t("common.actions") : ""),
        )),
        h("tbody", null, rows.length ? rows : emptyRow(6, t("agents.none"))),
      ));
    });
    return { name: "agents", topics: ["agents", "commands"], refresh };
  }

  function agentDetailPage(main, { parts }) {
    const id = parts[1];
    const head = h("div");
    const region = h("div");
    const expanded = new Set();
    main.appendChild(h("p", { class: "crumbs" }, h("a", { href: "#/agents" }, `← ${t("agents.back_to_list")}`)));
    main.appendChild(head);
    main.appendChild(region);
    replaceContent(head, pageHeader(t("agents.detail_title")));
    const refresh = loader(region, () => api("GET", `/api/agents/${encodeURIComponent(id)}`), (data) => {
      const agent = data.agent ?? {};
      const commands = Array.isArray(data.commands) ? data.commands : [];
      const events = Array.isArray(data.recent_events) ? data.recent_events : [];
      replaceContent(head, pageHeader(String(agent.hostname ?? id), agentActions(agent, refresh)));
      const info = h("section", { class: "card", testid: "agent-detail", data: { agentId: agent.id } },
        definitionList([
          [t("common.status"), h("span", null, agentStatusBadge(agent), " ", isolatedBadge(agent) ?? badge(t("agents.not_isolated"), "muted"))],
          [t("agents.last_seen"), timeCell(agent.last_seen, true)],
          [t("agents.enrolled_at"), timeCell(agent.enrolled_at)],
          [t("agents.version"), h("span", { class: "mono" }, agent.agent_version ?? "—")],
          [t("agents.id"), h("span", { class: "mono small" }, agent.id ?? "—")],
        ]),
      );
      const commandRows = commands.map((c) => h("tr", { testid: "command-row", data: { commandId: c.id, action: c.action, status: c.status } },
        h("td", null, commandActionLabel(c.action)),
        h("td", null, commandStatusBadge(c.status)),
        h("td", { class: "wrap" }, c.reason ?? ""),
        h("td", null, timeCell(c.created)),
        h("td", null, c.completed ? timeCell(c.completed) : "—"),
        h("td", { class: "wrap" }, c.message ?? ""),
      ));
      const eventRows = events.flatMap((e) => expandableRows(
        h("tr", { testid: "event-row", data: { kind: e.kind } },
          h("td", null, timeCell(e.time)),
          h("td", { class: "mono" }, e.kind),
          h("td", { class: "wrap" }, eventSummary(e.data)),
        ),
        4, expanded, `e${e.id}`, jsonBlock(e.data, "event-data"),
      ));
      replaceContent(region,
        info,
        h("section", { class: "card card-wide" },
          h("h2", null, t("agents.commands")),
          h("table", { class: "table", testid: "commands-table" },
            h("thead", null, h("tr", null,
              h("th", null, t("agents.command")),
              h("th", null, t("common.status")),
              h("th", null, t("common.reason")),
              h("th", null, t("agents.created")),
              h("th", null, t("agents.completed")),
              h("th", null, t("agents.result")),
            )),
            h("tbody", null, commandRows.length ? commandRows : emptyRow(6, t("agents.no_commands"))),
          ),
        ),
        h("section", { class: "card card-wide" },
          h("h2", null, t("agents.recent_events")),
          h("table", { class: "table" },
            h("thead", null, h("tr", null, h("th", { class: "col-toggle" }), h("th", null, t("common.time")), h("th", null, t("events.kind")), h("th", null, t("events.summary")))),
            h("tbody", null, eventRows.length ? eventRows : emptyRow(4, t("events.none"))),
          ),
        ),
      );
    });
    return { name: "agent", topics: ["agents", "commands"], refresh };
  }

  function commandStatusBadge(status) {
    const kinds = { pending: "warn", succeeded: "ok", failed: "danger" };
    return badge(commandStatusLabel(status), kinds[status] ?? "muted", { testid: "command-status", data: { status } });
  }

  // ---------------------------------------------------------------------------------------------
  // Detections

  function detectionsPage(main, { query }) {
    const filters = {
      status: query.get("status") || "open",
      severity: SEVERITIES.includes(query.get("severity")) ? query.get("severity") : "",
    };
    const expanded = new Set();
    const statusSelect = select([
      ["open", t("detections.filter_open")],
      ["acknowledged", detectionStatusLabel("acknowledged")],
      ["closed", detectionStatusLabel("closed")],
      ["false_positive", detectionStatusLabel("false_positive")],
      ["all", detectionStatusLabel("all")],
    ], filters.status, { testid: "filter-status" });
    const severitySelect = select([["", t("detections.all_severities")], ...SEVERITIES.map((s) => [s, severityLabel(s)])], filters.severity, { testid: "filter-severity" });
    const onFilter = () => {
      filters.status = statusSelect.value;
      filters.severity = severitySelect.value;
      setHashQuery("detections", { status: filters.status === "open" ? "" : filters.status, severity: filters.severity });
      refresh(false);
    };
    statusSelect.addEventListener("change", onFilter);
    severitySelect.addEventListener("change", onFilter);

    const region = h("div");
    const suppressionRegion = h("div");
    main.appendChild(pageHeader(t("detections.title")));
    main.appendChild(h("div", { class: "toolbar" },
      field(t("detections.status"), statusSelect),
      field(t("detections.severity"), severitySelect),
    ));
    main.appendChild(region);
    main.appendChild(h("details", { class: "card card-wide suppressions" },
      h("summary", null, t("detections.suppressions")),
      h("p", { class: "muted small" }, t("detections.suppressions_help")),
      suppressionRegion,
    ));

    const refreshDetections = loader(region,
      () => api("GET", `/api/detections${queryString({ status: filters.status, severity: filters.severity, limit: 500 })}`),
      (data) => {
        const list = Array.isArray(data.detections) ? data.detections : [];
        const rows = list.flatMap((d) => expandableRows(detectionRow(d, refresh), 6, expanded, String(d.id), detectionDetail(d)));
        replaceContent(region,
          h("p", { class: "muted small" }, t("common.count", { n: fmtNumber(list.length) })),
          h("table", { class: "table", testid: "detections-table" },
            h("thead", null, h("tr", null,
              h("th", { class: "col-toggle" }),
              h("th", null, t("detections.severity")),
              h("th", null, t("common.time")),
              h("th", null, t("detections.title_col")),
              h("th", null, t("detections.status")),
              h("th", null, canOperate() ? t("common.actions") : ""),
            )),
            h("tbody", null, rows.length ? rows : emptyRow(6, t("detections.none"))),
          ),
        );
      });
    const refreshSuppressions = loader(suppressionRegion, () => api("GET", "/api/suppressions"), (data) => {
      const list = Array.isArray(data.suppressions) ? data.suppressions : [];
      const rows = list.map((s) => h("tr", { testid: "suppression-row", data: { suppressionId: s.id } },
        h("td", { class: "mono" }, s.rule_id),
        h("td", null, s.host),
        h("td", { class: "wrap" }, s.note ?? ""),
        h("td", null, s.created_by ?? ""),
        h("td", null, timeCell(s.created)),
        h("td", null, canOperate() ? button(t("detections.unsuppress"), () => {
          confirmDialog(t("detections.unsuppress_title"), t("detections.unsuppress_message", { rule: s.rule_id, host: s.host }),
            () => api("DELETE", `/api/suppressions/${encodeURIComponent(s.id)}`), true)
            .then((res) => {
              if (res) {
                toast(t("detections.unsuppressed"));
                refreshSuppressions(true);
              }
            });
        }, { class: "btn-small", testid: "btn-unsuppress" }) : null),
      ));
      replaceContent(suppressionRegion, h("table", { class: "table" },
        h("thead", null, h("tr", null,
          h("th", null, t("detections.rule")),
          h("th", null, t("common.host")),
          h("th", null, t("detections.note")),
          h("th", null, t("detections.created_by")),
          h("th", null, t("agents.created")),
          h("th", null, ""),
        )),
        h("tbody", null, rows.length ? rows : emptyRow(6)),
      ));
    });
    function refresh(live) {
      refreshDetections(live);
      refreshSuppressions(live);
    }
    return { name: "detections", topics: ["detections"], refresh };
  }

  function detectionStatusBadge(status) {
    const kinds = { open: "danger-outline", acknowledged: "warn", closed: "ok", false_positive: "muted" };
    return badge(detectionStatusLabel(status), kinds[status] ?? "muted", { testid: "detection-status", data: { status } });
  }

  function detectionRow(d, refresh) {
    const actions = [];
    const open = d.status === "open" || d.status === "acknowledged";
    if (canOperate() && open) {
      if (d.status === "open") {
        actions.push(button(t("detections.acknowledge"), () => triage(d, "acknowledge", refresh), { class: "btn-small", testid: "btn-ack" }));
      }
      actions.push(button(t("detections.close"), () => triage(d, "close", refresh), { class: "btn-small", testid: "btn-close" }));
      actions.push(button(t("detections.false_positive"), () => triage(d, "false-positive", refresh), { class: "btn-small", testid: "btn-fp" }));
    }
    return h("tr", {
      testid: "detection-row",
      class: `sev-row sev-row-${SEVERITIES.includes(d.severity) ? d.severity : "informational"}`,
      data: { detectionId: d.id, severity: d.severity, status: d.status },
    },
      h("td", null, severityBadge(d.severity)),
      h("td", null, timeCell(d.time)),
      h("td", { class: "col-title" },
        h("div", { class: "wrap strong", testid: "detection-title" }, d.title ?? d.rule_id ?? ""),
        h("div", { class: "wrap muted small", testid: "detection-host" }, d.host ?? "—", d.source ? ` · ${d.source}` : ""),
      ),
      h("td", null, detectionStatusBadge(d.status)),
      h("td", null, h("div", { class: "actions actions-nowrap" }, actions)),
    );
  }

  function detectionDetail(d) {
    return h("div", { class: "detail" },
      definitionList([
        [t("detections.rule"), h("span", { class: "mono" }, d.rule_id ?? "—")],
        d.note ? [t("detections.note"), h("span", { class: "wrap" }, d.note)] : null,
        d.updated_by ? [t("detections.updated_by"), h("span", null, d.updated_by, " · ", fmtTime(d.updated))] : null,
      ]),
      h("div", { class: "field-label" }, t("detections.data")),
      jsonBlock(d.data, "detection-data"),
    );
  }

  async function triage(d, action, refresh) {
    const path = `/api/detections/${encodeURIComponent(d.id)}/${action}`;
    let res;
    if (action === "acknowledge") {
      try {
        res = await api("POST", path, {});
      } catch (err) {
        reportError(err);
        return;
      }
    } else {
      const fp = action === "false-positive";
      res = await openDialog({
        title: fp ? t("detections.fp_title") : t("detections.close_title"),
        message: h("span", null, fp ? t("detections.fp_message", { host: d.host ?? "" }) : t("detections.close_message"), h("br"), h("strong", null, d.title ?? "")),
        fields: [{ name: "note", label: t("detections.note"), type: "textarea", required: true, hint: t("detections.note_hint") }],
        confirmLabel: fp ? t("detections.false_positive") : t("detections.close"),
        onConfirm: (v) => api("POST", path, { note: v.note.trim() }),
      });
      if (!res) return;
    }
    const done = { acknowledge: t("detections.acknowledged"), close: t("detections.closed"), "false-positive": t("detections.marked_fp") };
    toast(done[action]);
    refresh(true);
  }

  // ---------------------------------------------------------------------------------------------
  // Events

  const EVENT_KINDS = [
    "scan.finding",
    "ransomware.detected",
    "fim.change",
    "fim.check",
    "response.action",
    "log.event",
    "log.problem",
    "backup.completed",
    "backup.failed",
    "scan.summary",
    "scan.problem",
    "agent.started",
    "agent.policy_applied",
  ];

  function eventsPage(main, { query }) {
    const tab = query.get("tab") === "syslog" ? "syslog" : "agent";
    const expanded = new Set();
    const q = h("input", { type: "search", testid: "events-q", value: query.get("q") ?? "", placeholder: t("events.q_placeholder"), maxlength: 200 });
    const kindList = h("datalist", { id: "event-kinds" }, EVENT_KINDS.map((k) => h("option", { value: k })));
    const kind = h("input", { type: "text", testid: "events-kind", list: "event-kinds", value: query.get("kind") ?? "", placeholder: t("events.kind_placeholder"), maxlength: 255 });
    const agentSelect = select([["", t("events.all_agents")]], "", { testid: "events-agent" });
    const since = h("input", { type: "datetime-local", testid: "events-since" });
    const until = h("input", { type: "datetime-local", testid: "events-until" });
    const limit = select([["100", "100"], ["500", "500"], ["1000", "1000"]], "100", { testid: "events-limit" });
    const region = h("div");

    api("GET", "/api/agents").then((data) => {
      const agents = Array.isArray(data.agents) ? data.agents.slice() : [];
      agents.sort((a, b) => String(a.hostname).localeCompare(String(b.hostname)));
      for (const a of agents) agentSelect.appendChild(h("option", { value: a.id }, a.hostname));
      const wanted = query.get("agent");
      if (wanted) agentSelect.value = wanted;
    }).catch(reportError);

    const tabs = h("div", { class: "tabs", role: "tablist" },
      h("a", { href: "#/events", class: tab === "agent" ? "tab active" : "tab", role: "tab", testid: "events-tab-agent", "aria-selected": String(tab === "agent") }, t("events.tab_agent")),
      h("a", { href: "#/events?tab=syslog", class: tab === "syslog" ? "tab active" : "tab", role: "tab", testid: "events-tab-syslog", "aria-selected": String(tab === "syslog") }, t("events.tab_syslog")),
    );
    const searchBtn = h("button", { type: "submit", class: "btn btn-primary", testid: "events-search" }, t("events.search"));
    const form = h("form", { class: "toolbar toolbar-wrap" },
      field(t("events.q"), q),
      tab === "agent" ? field(t("events.kind"), h("span", null, kind, kindList)) : null,
      tab === "agent" ? field(t("events.agent"), agentSelect) : null,
      field(t("events.since"), since),
      field(t("events.until"), until),
      field(t("events.limit"), limit),
      h("div", { class: "toolbar-submit" }, searchBtn),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      refresh(false);
    });
    main.appendChild(pageHeader(t("events.title")));
    main.appendChild(tabs);
    main.appendChild(form);
    main.appendChild(region);

    const refresh = loader(region, () => {
      const params = { q: q.value.trim(), since: localInputToRfc3339(since.value), until: localInputToRfc3339(until.value), limit: limit.value };
      if (tab === "agent") {
        params.kind = kind.value.trim();
        params.agent = agentSelect.value;
        return api("GET", `/api/events${queryString(params)}`);
      }
      return api("GET", `/api/logs${queryString(params)}`);
    }, (data) => {
      const events = Array.isArray(data.events) ? data.events : [];
      const rows = events.flatMap((e) => expandableRows(
        h("tr", { testid: "event-row", data: { kind: e.kind } },
          h("td", null, timeCell(e.time)),
          tab === "agent" ? h("td", null, e.agent_id ? h("a", { href: `#/agents/${encodeURIComponent(e.agent_id)}` }, e.hostname ?? e.agent_id) : (e.hostname ?? "—")) : h("td", { class: "mono" }, e.source ?? ""),
          tab === "agent" ? h("td", { class: "mono" }, e.kind ?? "") : null,
          h("td", { class: "wrap" }, eventSummary(e.data)),
        ),
        tab === "agent" ? 5 : 4, expanded, `${tab}${e.id}`, jsonBlock(e.data, "event-data"),
      ));
      replaceContent(region,
        h("p", { class: "muted small" }, t("common.count", { n: fmtNumber(events.length) })),
        h("table", { class: "table", testid: "events-table" },
          h("thead", null, h("tr", null,
            h("th", { class: "col-toggle" }),
            h("th", null, t("common.time")),
            h("th", null, tab === "agent" ? t("common.host") : t("events.source")),
            tab === "agent" ? h("th", null, t("events.kind")) : null,
            h("th", null, t("events.summary")),
          )),
          h("tbody", null, rows.length ? rows : emptyRow(tab === "agent" ? 5 : 4, t("events.none"))),
        ),
      );
    });
    // Search results stay as they are while the user reads them: no live topic.
    return { name: "events", topics: [], refresh };
  }

  // ---------------------------------------------------------------------------------------------
  // Quarantine

  function quarantinePage(main) {
    const region = h("div");
    main.appendChild(pageHeader(t("quarantine.title")));
    main.appendChild(h("p", { class: "muted" }, t("quarantine.help")));
    main.appendChild(region);
    const refresh = loader(region, () => api("GET", "/api/quarantine"), (data) => {
      const items = Array.isArray(data.items) ? data.items : [];
      const rows = items.map((q) => h("tr", { testid: "quarantine-row", data: { quarantineId: q.quarantine_id, state: q.state } },
        h("td", null, timeCell(q.time)),
        h("td", null, q.agent_id ? h("a", { href: `#/agents/${encodeURIComponent(q.agent_id)}` }, q.hostname) : q.hostname),
        h("td", { class: "mono wrap" }, q.path ?? ""),
        h("td", { class: "wrap" }, q.rule ?? ""),
        h("td", null, badge(quarantineStateLabel(q.state), isQuarantined(q) ? "warn" : (q.state === "failure" || q.state === "failed") ? "danger" : "muted")),
        h("td", null, canOperate() && isQuarantined(q) ? h("div", { class: "actions" },
          button(t("quarantine.restore"), () => quarantineAction(q, "restore", refresh), { class: "btn-small", testid: "btn-restore" }),
          button(t("quarantine.delete"), () => quarantineAction(q, "delete", refresh), { class: "btn-small btn-danger-outline", testid: "btn-delete" }),
        ) : null),
      ));
      replaceContent(region, h("table", { class: "table", testid: "quarantine-table" },
        h("thead", null, h("tr", null,
          h("th", null, t("common.time")),
          h("th", null, t("common.host")),
          h("th", null, t("quarantine.path")),
          h("th", null, t("quarantine.rule")),
          h("th", null, t("common.status")),
          h("th", null, canOperate() ? t("common.actions") : ""),
        )),
        h("tbody", null, rows.length ? rows : emptyRow(6, t("quarantine.none"))),
      ));
    });
    return { name: "quarantine", topics: ["commands", "agents", "detections"], refresh };
  }

  function quarantineAction(q, action, refresh) {
    const restore = action === "restore";
    openDialog({
      title: restore ? t("quarantine.restore_title") : t("quarantine.delete_title"),
      message: h("span", null, restore ? t("quarantine.restore_message") : t("quarantine.delete_message"), h("br"), h("code", null, q.path ?? ""), ` (${q.hostname ?? ""})`),
      fields: [{ name: "reason", label: t("common.reason"), type: "textarea", required: true, hint: t("common.reason_hint") }],
      confirmLabel: restore ? t("quarantine.restore") : t("quarantine.delete"),
      danger: !restore,
      onConfirm: (v) => api("POST", `/api/agents/${encodeURIComponent(q.agent_id)}/quarantine/${encodeURIComponent(q.quarantine_id)}/${action}`, { reason: v.reason.trim() }),
    }).then((res) => {
      if (!res) return;
      toast(t("quarantine.command_sent"));
      refresh(true);
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Backups

  function backupsPage(main) {
    const region = h("div");
    main.appendChild(pageHeader(t("backups.title")));
    main.appendChild(region);
    const refresh = loader(region, () => api("GET", "/api/backups"), (data) => {
      const hosts = Array.isArray(data.hosts) ? data.hosts : [];
      const alerts = Array.isArray(data.vault_alerts) ? data.vault_alerts : [];
      const alertBox = alerts.length
        ? h("section", { class: "card card-wide card-danger", testid: "vault-alerts" },
          h("h2", null, t("backups.vault_alerts")),
          h("ul", { class: "plain" }, alerts.map((a) => h("li", { testid: "vault-alert" },
            severityBadge(a.severity), " ", h("strong", null, a.title ?? a.rule_id ?? ""), " — ", a.host ?? "", " · ", fmtTime(a.time),
            " ", h("a", { href: "#/detections?status=all" }, t("backups.see_detections")),
          ))),
        )
        : null;
      const cards = hosts.map((host) => {
        const snapshots = Array.isArray(host.snapshots) ? host.snapshots : [];
        const suspicious = snapshots.filter((s) => s.suspicious).length;
        const rows = snapshots.map((s) => h("tr", { testid: "snapshot-row", class: s.suspicious ? "row-danger" : "", data: { snapshot: s.snapshot, suspicious: s.suspicious ? "true" : "false" } },
          h("td", { class: "mono" }, truncate(s.snapshot, 20)),
          h("td", null, timeCell(s.time)),
          h("td", { class: "num" }, fmtNumber(s.files)),
          h("td", { class: "num" }, fmtBytes(s.bytes_added)),
          h("td", { class: "wrap" }, s.suspicious
            ? h("span", null, badge(t("backups.suspicious"), "danger"), " ", (Array.isArray(s.reasons) ? s.reasons : []).map(String).join(", "))
            : h("span", { class: "muted" }, t("backups.clean"))),
          h("td", null, canOperate() && host.agent_id ? button(t("backups.restore"), () => backupRestore(host, s, refresh), { class: "btn-small", testid: "btn-backup-restore" }) : null),
        ));
        return h("section", { class: suspicious ? "card card-wide card-danger" : "card card-wide", testid: "backup-host", data: { host: host.hostname } },
          h("h2", null, host.agent_id ? h("a", { href: `#/agents/${encodeURIComponent(host.agent_id)}` }, host.hostname) : host.hostname,
            " ", host.last_status ? badge(backupStatusLabel(host.last_status), host.last_status === "failed" ? "danger" : "ok") : badge(backupStatusLabel(null), "warn"),
            suspicious ? [" ", badge(t("overview.suspicious_count", { n: suspicious }), "danger")] : null),
          h("p", { class: "muted small" }, t("overview.last_backup"), ": ", host.last_backup ? fmtTime(host.last_backup) : t("backup.status.never")),
          host.last_status === "failed" && host.last_error
            ? h("div", { class: "alert alert-error small wrap", testid: "backup-error" }, t("backups.last_error"), ": ", String(host.last_error))
            : null,
          h("table", { class: "table" },
            h("thead", null, h("tr", null,
              h("th", null, t("backups.snapshot")),
              h("th", null, t("common.time")),
              h("th", { class: "num" }, t("backups.files")),
              h("th", { class: "num" }, t("backups.bytes_added")),
              h("th", null, t("backups.analysis")),
              h("th", null, ""),
            )),
            h("tbody", null, rows.length ? rows : emptyRow(6, t("backups.no_snapshots"))),
          ),
        );
      });
      replaceContent(region, alertBox, cards.length ? cards : h("p", { class: "muted" }, t("overview.no_backups")));
    });
    return { name: "backups", topics: ["backups"], refresh };
  }

  // The restore runs on the host itself with its own device certificate (the vault serves a host
  // only its own snapshots): the console queues a command, and the agent restores into a new
  // folder under its restore folder, never over the live files.
  function backupRestore(host, snapshot, refresh) {
    openDialog({
      title: t("backups.restore_title", { host: host.hostname }),
      message: h("span", null, t("backups.restore_message"), h("br"), h("code", { testid: "restore-snapshot" }, snapshot.snapshot), " · ", fmtTime(snapshot.time),
        h("br"), t("backups.restore_where"),
        snapshot.suspicious ? [h("br"), h("strong", { class: "text-danger" }, t("backups.restore_suspicious_warning"))] : null),
      fields: [{ name: "reason", label: t("common.reason"), type: "textarea", required: true, hint: t("common.reason_hint") }],
      confirmLabel: t("backups.request_restore"),
      onConfirm: (v) => api("POST", `/api/agents/${encodeURIComponent(host.agent_id)}/backups/${encodeURIComponent(snapshot.snapshot)}/restore`, { reason: v.reason.trim() }),
    }).then((res) => {
      if (!res) return;
      toast(t("backups.restore_requested", { host: host.hostname }));
      refresh(true);
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Guideline checklist

  function checklistPage(main) {
    const region = h("div");
    main.appendChild(pageHeader(t("checklist.title")));
    main.appendChild(h("p", { class: "muted" }, t("checklist.help")));
    main.appendChild(region);
    const refresh = loader(region, () => api("GET", "/api/checklist"), (data) => {
      const items = Array.isArray(data.items) ? data.items : [];
      const counts = { ok: 0, partial: 0, missing: 0 };
      for (const item of items) if (item.status in counts) counts[item.status] += 1;
      const kinds = { ok: "ok", partial: "warn", missing: "danger" };
      const summary = h("div", { class: "stats stats-inline" },
        ["ok", "partial", "missing"].map((s) => h("div", { class: `stat stat-${kinds[s]}` },
          h("span", { class: "stat-value" }, fmtNumber(counts[s])),
          h("span", { class: "stat-label" }, checklistStatusLabel(s)),
        )),
      );
      const list = items.map((item) => h("section", { class: `card card-wide checklist-item status-${item.status}`, testid: "checklist-item", data: { itemId: item.id, status: item.status } },
        h("div", { class: "checklist-head" },
          badge(checklistStatusLabel(item.status), kinds[item.status] ?? "muted", { testid: "checklist-status" }),
          h("h2", null, tKnown(item.title_key, String(item.id ?? ""))),
        ),
        h("div", { class: "grid-2" },
          h("div", null,
            h("div", { class: "field-label" }, t("checklist.evidence")),
            stringList(item.evidence, t("checklist.no_evidence"), "checklist-evidence"),
          ),
          h("div", null,
            h("div", { class: "field-label" }, t("checklist.missing")),
            stringList(item.missing, t("checklist.nothing_missing"), "checklist-missing"),
          ),
        ),
      ));
      replaceContent(region, summary, list.length ? list : h("p", { class: "muted" }, t("common.none")));
    });
    if (canOperate()) main.appendChild(restoreTestForm(() => refresh(true)));
    if (isAdmin()) main.appendChild(inventoryForm(() => refresh(true)));
    return { name: "checklist", topics: ["agents", "backups", "audit", "detections"], refresh };
  }

  /** Records a restore test (POST /api/checklist/restore-test): the evidence for "restore tested". */
  function restoreTestForm(onSaved) {
    const hosts = h("datalist", { id: "restore-test-hosts" });
    const snapshots = h("datalist", { id: "restore-test-snapshots" });
    const host = h("input", { type: "text", list: "restore-test-hosts", testid: "restore-test-host", maxlength: 255, autocomplete: "off" });
    const snapshot = h("input", { type: "text", list: "restore-test-snapshots", testid: "restore-test-snapshot", maxlength: 255, autocomplete: "off" });
    const note = h("input", { type: "text", testid: "restore-test-note", maxlength: 2000, placeholder: t("checklist.restore_note_placeholder") });
    const submit = h("button", { type: "submit", class: "btn btn-primary", testid: "restore-test-submit" }, t("checklist.restore_record"));
    let snapshotsByHost = new Map();
    api("GET", "/api/backups").then((data) => {
      snapshotsByHost = new Map(asList(data.hosts).map((x) => [String(x.hostname), asList(x.snapshots).map((sn) => String(sn.snapshot))]));
      for (const name of snapshotsByHost.keys()) hosts.appendChild(h("option", { value: name }));
    }).catch(() => {
      // The lists only help typing; the form works without them.
    });
    host.addEventListener("input", () => {
      clear(snapshots);
      for (const id of snapshotsByHost.get(host.value) ?? []) snapshots.appendChild(h("option", { value: id }));
    });
    const form = h("form", { class: "toolbar toolbar-wrap" },
      field(t("common.host"), h("span", null, host, hosts)),
      field(t("backups.snapshot"), h("span", null, snapshot, snapshots)),
      field(t("detections.note"), note),
      h("div", { class: "toolbar-submit" }, submit),
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!host.value.trim() || !snapshot.value.trim()) {
        toast(t("checklist.restore_fill"), "error");
        return;
      }
      submit.disabled = true;
      try {
        await api("POST", "/api/checklist/restore-test", { host: host.value.trim(), snapshot: snapshot.value.trim(), note: note.value.trim() });
        toast(t("checklist.restore_recorded"));
        host.value = "";
        snapshot.value = "";
        note.value = "";
        onSaved();
      } catch (err) {
        reportError(err);
      } finally {
        submit.disabled = false;
      }
    });
    return h("details", { class: "card card-wide", testid: "restore-test" },
      h("summary", null, t("checklist.restore_title")),
      h("p", { class: "muted small" }, t("checklist.restore_help")),
      form,
    );
  }

  /** Registers the site's device inventory (PUT /api/checklist/inventory), compared with the enrolled agents. */
  function inventoryForm(onSaved) {
    const list = h("textarea", { rows: 8, testid: "inventory-hosts", spellcheck: "false", placeholder: "ward-pc-01\nward-pc-02\n…" });
    const fromAgents = button(t("checklist.inventory_from_agents"), async () => {
      try {
        const data = await api("GET", "/api/agents");
        const names = asList(data.agents).filter((a) => a.status !== "revoked" && a.status !== "replaced").map((a) => String(a.hostname));
        const current = list.value.split(/\r?\n/).map((x) => x.trim()).filter(Boolean);
        list.value = [...new Set([...current, ...names])].sort().join("\n");
      } catch (err) {
        reportError(err);
      }
    }, { testid: "inventory-from-agents" });
    const save = button(t("checklist.inventory_save"), async () => {
      const hosts = list.value.split(/\r?\n/).map((x) => x.trim()).filter(Boolean);
      save.disabled = true;
      try {
        const res = await api("PUT", "/api/checklist/inventory", { hosts });
        toast(t("checklist.inventory_saved", { n: fmtNumber(Number(res.hosts ?? hosts.length)) }));
        onSaved();
      } catch (err) {
        reportError(err);
      } finally {
        save.disabled = false;
      }
    }, { class: "btn-primary", testid: "inventory-save" });
    return h("details", { class: "card card-wide", testid: "inventory" },
      h("summary", null, t("checklist.inventory_title")),
      h("p", { class: "muted small" }, t("checklist.inventory_help")),
      list,
      h("div", { class: "actions" }, fromAgents, save),
    );
  }

  /** A list of strings from the server; each is shown translated when it is an i18n key. */
  function stringList(values, emptyText, testid) {
    const list = Array.isArray(values) ? values : [];
    if (!list.length) return h("p", { class: "muted small" }, emptyText);
    return h("ul", { class: "bullets", testid }, list.map((v) => h("li", null, tKnown(v, String(v)))));
  }

  // ---------------------------------------------------------------------------------------------
  // Audit log

  function auditPage(main) {
    const region = h("div");
    const verifyResult = h("div", { class: "verify-result", testid: "audit-verify-result", hidden: true, role: "status" });
    const verifyBtn = button(t("audit.verify"), async () => {
      verifyBtn.disabled = true;
      verifyResult.hidden = false;
      verifyResult.className = "verify-result alert alert-info";
      verifyResult.dataset.ok = "";
      verifyResult.textContent = t("audit.verifying");
      try {
        const res = await api("POST", "/api/audit/verify");
        const ok = res.ok === true;
        verifyResult.dataset.ok = ok ? "true" : "false";
        verifyResult.className = `verify-result alert ${ok ? "alert-ok" : "alert-error"}`;
        verifyResult.textContent = ok
          ? t("audit.verify_ok", { records: fmtNumber(res.records), checkpoints: fmtNumber(res.checkpoints) })
          : t("audit.verify_bad", { records: fmtNumber(res.records), seq: res.first_bad_seq ?? "?", reason: res.reason ?? "" });
      } catch (err) {
        verifyResult.dataset.ok = "error";
        verifyResult.className = "verify-result alert alert-error";
        verifyResult.textContent = errorText(err);
      } finally {
        verifyBtn.disabled = false;
      }
    }, { class: "btn-primary", testid: "audit-verify" });
    main.appendChild(pageHeader(t("audit.title"), verifyBtn));
    main.appendChild(h("p", { class: "muted" }, t("audit.help")));
    main.appendChild(verifyResult);
    main.appendChild(region);

    const PAGE_SIZE = 100;
    // Every record loaded so far, by seq. The log is append-only, so records the user paged back to
    // stay valid across live refreshes; only a gap (more new records than one page) resets it.
    const loaded = new Map();
    let head = {};
    let olderExhausted = false;
    const refresh = loader(region, () => api("GET", `/api/audit${queryString({ limit: PAGE_SIZE })}`), (data) => {
      const newest = auditRecords(data);
      const newestLow = Math.min(...newest.map((r) => r.seq));
      const knownHigh = Math.max(...loaded.keys());
      if (loaded.size && newest.length && newestLow > knownHigh + 1) {
        loaded.clear();
        olderExhausted = false;
      }
      for (const r of newest) loaded.set(r.seq, r);
      if (newest.length < PAGE_SIZE) olderExhausted = true;
      head = data.head ?? {};
      render();
    });

    function auditRecords(data) {
      const list = Array.isArray(data.records) ? data.records : [];
      return list.map((r) => ({ ...r, seq: Number(r.seq) })).filter((r) => Number.isInteger(r.seq));
    }

    async function loadOlder() {
      const lowest = Math.min(...loaded.keys());
      try {
        const older = await api("GET", `/api/audit${queryString({ before: lowest, limit: PAGE_SIZE })}`);
        const list = auditRecords(older);
        for (const r of list) loaded.set(r.seq, r);
        if (list.length < PAGE_SIZE) olderExhausted = true;
        render();
      } catch (err) {
        reportError(err);
      }
    }

    function render() {
      const records = [...loaded.values()].sort((a, b) => b.seq - a.seq);
      const lowest = records.length ? records[records.length - 1].seq : null;
      const more = lowest !== null && lowest > 1 && !olderExhausted
        ? button(t("audit.more"), loadOlder, { testid: "audit-more" })
        : null;
      const rows = records.map((r) => h("tr", { testid: "audit-row", data: { seq: r.seq, action: r.action, actor: r.actor } },
        h("td", { class: "num mono" }, String(r.seq ?? "")),
        h("td", null, timeCell(r.time)),
        h("td", { title: r.actor ?? "" }, actorLabel(r.actor)),
        h("td", { class: "mono" }, r.action ?? ""),
        h("td", { class: "wrap col-target" }, r.target === undefined || r.target === null ? "" : compactJson(r.target)),
        h("td", { class: "wrap small" }, r.detail === undefined || r.detail === null ? "" : truncate(compactJson(r.detail), 300)),
        h("td", { class: "mono small", title: r.hash ?? "" }, truncate(r.hash ?? "", 13)),
      ));
      replaceContent(region,
        h("p", { class: "muted small", testid: "audit-head" }, t("audit.head", { seq: head.seq ?? "—", hash: truncate(head.hash ?? "", 17) })),
        h("table", { class: "table", testid: "audit-table" },
          h("thead", null, h("tr", null,
            h("th", { class: "num" }, t("audit.seq")),
            h("th", null, t("common.time")),
            h("th", null, t("audit.actor")),
            h("th", null, t("audit.action")),
            h("th", null, t("audit.target")),
            h("th", null, t("audit.detail")),
            h("th", null, t("audit.hash")),
          )),
          h("tbody", null, rows.length ? rows : emptyRow(7)),
        ),
        more ? h("div", { class: "center" }, more) : null,
      );
    }
    return { name: "audit", topics: ["audit"], refresh };
  }

  // ---------------------------------------------------------------------------------------------
  // Users (admin)

  function usersPage(main) {
    const region = h("div");
    const username = h("input", { type: "text", testid: "user-create-username", maxlength: 100, autocomplete: "off", autocapitalize: "off", spellcheck: "false", required: true });
    const role = select([["operator", roleLabel("operator")], ["auditor", roleLabel("auditor")], ["admin", roleLabel("admin")]], "operator", { testid: "user-create-role" });
    const password = h("input", { type: "password", testid: "user-create-password", autocomplete: "new-password", maxlength: 500, required: true });
    const createBtn = h("button", { type: "submit", class: "btn btn-primary", testid: "user-create-submit" }, t("users.create"));
    const form = h("form", { class: "toolbar toolbar-wrap" },
      field(t("users.username"), username),
      field(t("users.role"), role),
      field(t("users.initial_password"), password, t("account.password_hint")),
      h("div", { class: "toolbar-submit" }, createBtn),
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!username.value.trim() || !password.value) {
        toast(t("users.fill_all"), "error");
        return;
      }
      createBtn.disabled = true;
      try {
        await api("POST", "/api/users", { username: username.value.trim(), role: role.value, password: password.value });
        toast(t("users.created", { user: username.value.trim() }));
        username.value = "";
        password.value = "";
        refresh(true);
      } catch (err) {
        reportError(err);
      } finally {
        createBtn.disabled = false;
      }
    });
    main.appendChild(pageHeader(t("users.title")));
    main.appendChild(h("section", { class: "card card-wide" }, h("h2", null, t("users.new_user")), h("p", { class: "muted small" }, t("users.new_user_help")), form));
    main.appendChild(region);

    const refresh = loader(region, () => api("GET", "/api/users"), (data) => {
      const users = Array.isArray(data.users) ? data.users : [];
      const rows = users.map((u) => {
        const locked = parseTime(u.locked_until) && parseTime(u.locked_until).getTime() > Date.now();
        const me = state.user && u.username === state.user.username;
        const status = [
          u.disabled ? badge(t("users.disabled"), "muted", { testid: "user-disabled" }) : badge(t("users.enabled"), "ok"),
          locked ? [" ", badge(t("users.locked_until", { time: fmtTime(u.locked_until) }), "danger", { testid: "user-locked" })] : null,
        ];
        const roleSelect = select([["admin", roleLabel("admin")], ["operator", roleLabel("operator")], ["auditor", roleLabel("auditor")]], u.role, { testid: "user-role-select", disabled: me, "aria-label": t("users.role") });
        roleSelect.addEventListener("change", () => {
          const next = roleSelect.value;
          confirmDialog(t("users.change_role_title"), t("users.change_role_message", { user: u.username, role: roleLabel(next) }),
            () => api("PUT", `/api/users/${encodeURIComponent(u.username)}`, { role: next }))
            .then((res) => {
              if (res) toast(t("users.updated"));
              refresh(true);
            });
        });
        const action = (label, testid, title, message, call, danger) => button(label, () => {
          confirmDialog(title, message, call, danger).then((res) => {
            if (res) {
              toast(t("users.updated"));
              refresh(true);
            }
          });
        }, { class: "btn-small", testid });
        const name = encodeURIComponent(u.username);
        return h("tr", { testid: `user-row-${u.username}`, data: { role: u.role, disabled: u.disabled ? "true" : "false" } },
          h("td", { class: "strong" }, u.username, me ? h("span", { class: "muted small" }, ` (${t("users.you")})`) : null),
          h("td", null, roleSelect),
          h("td", null, status),
          h("td", null, u.totp_enrolled ? badge(t("users.totp_enrolled"), "ok") : badge(t("users.totp_not_enrolled"), "warn"),
            u.passkeys > 0 ? [" ", badge(t("users.passkeys", { n: u.passkeys }), "ok", { testid: "user-passkeys" })] : null),
          h("td", null, u.last_login ? timeCell(u.last_login, true) : h("span", { class: "muted" }, t("users.never"))),
          h("td", null, h("div", { class: "actions" },
            me ? null : u.disabled
              ? action(t("users.enable"), "btn-enable", t("users.enable_title"), t("users.enable_message", { user: u.username }), () => api("PUT", `/api/users/${name}`, { disabled: false }))
              : action(t("users.disable"), "btn-disable", t("users.disable_title"), t("users.disable_message", { user: u.username }), () => api("PUT", `/api/users/${name}`, { disabled: true }), true),
            u.totp_enrolled ? action(t("users.reset_totp"), "btn-reset-totp", t("users.reset_totp_title"), t("users.reset_totp_message", { user: u.username }), () => api("POST", `/api/users/${name}/reset-totp`), true) : null,
            locked ? action(t("users.unlock"), "btn-unlock", t("users.unlock_title"), t("users.unlock_message", { user: u.username }), () => api("POST", `/api/users/${name}/unlock`)) : null,
            button(t("users.set_password"), () => {
              openDialog({
                title: t("users.set_password_title", { user: u.username }),
                fields: [
                  { name: "password", label: t("account.new_password"), type: "password", required: true, hint: t("account.password_hint") },
                  { name: "repeat", label: t("account.confirm_password"), type: "password", required: true },
                ],
                confirmLabel: t("users.set_password"),
                validate: (v) => (v.password !== v.repeat ? t("account.password_mismatch") : null),
                onConfirm: (v) => api("POST", `/api/users/${name}/password`, { password: v.password }),
              }).then((res) => {
                if (res) toast(t("users.password_set"));
              });
            }, { class: "btn-small", testid: "btn-set-password" }),
          )),
        );
      });
      replaceContent(region, h("table", { class: "table", testid: "users-table" },
        h("thead", null, h("tr", null,
          h("th", null, t("users.username")),
          h("th", null, t("users.role")),
          h("th", null, t("common.status")),
          h("th", null, t("users.totp")),
          h("th", null, t("users.last_login")),
          h("th", null, t("common.actions")),
        )),
        h("tbody", null, rows.length ? rows : emptyRow(6)),
      ));
    });
    return { name: "users", topics: ["audit"], refresh };
  }

  // ---------------------------------------------------------------------------------------------
  // The user's own passkeys

  function passkeysPage(main) {
    const region = h("div");
    main.appendChild(pageHeader(t("passkeys.title")));
    main.appendChild(h("p", { class: "muted" }, t("passkeys.intro")));
    main.appendChild(region);
    const refresh = loader(region, () => api("GET", "/api/me/passkeys"), (data) => {
      const keys = Array.isArray(data.passkeys) ? data.passkeys : [];
      const detail = data.detail || {};
      let adder;
      if (!data.available) {
        adder = h("div", { class: "alert alert-warn", testid: "passkeys-unavailable" }, t("passkeys.unavailable"), " ", h("code", null, String(detail.unavailable ?? "")));
      } else if (!passkeysSupported()) {
        adder = h("div", { class: "alert alert-warn", testid: "passkeys-unsupported" }, t("passkeys.unsupported"));
      } else if (location.origin !== detail.origin) {
        adder = h("div", { class: "alert alert-info", testid: "passkeys-wrong-origin" }, t("passkeys.open_at", { origin: String(detail.origin ?? "") }), " ",
          h("a", { href: `${detail.origin}/#/passkeys` }, String(detail.origin ?? "")));
      } else {
        adder = button(t("passkeys.add"), addPasskey, { class: "btn btn-primary", testid: "passkey-add" });
      }
      const rows = keys.map((k) => h("tr", { testid: "passkey-row", data: { id: String(k.id) } },
        h("td", { class: "strong" }, k.name),
        h("td", null, timeCell(k.created, false)),
        h("td", null, k.last_used ? timeCell(k.last_used, true) : h("span", { class: "muted" }, t("users.never"))),
        h("td", null, button(t("passkeys.remove"), () => {
          confirmDialog(t("passkeys.remove_title"), t("passkeys.remove_message", { name: k.name }), () => api("DELETE", `/api/me/passkeys/${encodeURIComponent(k.id)}`), true)
            .then((res) => {
              if (res) {
                toast(t("passkeys.removed"));
                refresh(true);
              }
            });
        }, { class: "btn-small", testid: "passkey-remove" })),
      ));
      replaceContent(region,
        h("section", { class: "card card-wide" }, adder),
        h("table", { class: "table", testid: "passkeys-table" },
          h("thead", null, h("tr", null,
            h("th", null, t("passkeys.name")),
            h("th", null, t("passkeys.created")),
            h("th", null, t("passkeys.last_used")),
            h("th", null, t("common.actions")),
          )),
          h("tbody", null, rows.length ? rows : emptyRow(4, t("passkeys.none"))),
        ));
    });

    function addPasskey() {
      openDialog({
        title: t("passkeys.add"),
        message: t("passkeys.add_help"),
        fields: [{ name: "name", label: t("passkeys.name"), required: true, hint: t("passkeys.name_hint") }],
        confirmLabel: t("passkeys.register"),
        onConfirm: async (v) => {
          const options = await api("POST", "/api/me/passkeys/options", {});
          let credential;
          try {
            credential = await passkeyCeremony("create", options);
          } catch (_) {
            // Cancelled, timed out, or this key is registered already (excludeCredentials).
            throw Object.assign(new Error("passkey ceremony failed"), { userText: t("passkeys.cancelled") });
          }
          return api("POST", "/api/me/passkeys", { name: v.name.trim(), credential });
        },
      }).then((res) => {
        if (res) {
          toast(t("passkeys.added"));
          refresh(true);
        }
      });
    }
    return { name: "passkeys", topics: [], refresh };
  }

  // ---------------------------------------------------------------------------------------------
  // Alerting settings (the structure of mamori-alert's Settings: smtp, webhooks, syslog, routes,
  // throttle, digest, lang; unknown fields are still shown, generically)

  function isPlainObject(v) {
    return v !== null && typeof v === "object" && !Array.isArray(v);
  }

  function asList(v) {
    return Array.isArray(v) ? v : [];
  }

  /** Only the host of a webhook URL: for Slack or Teams the URL itself is the secret. */
  function urlHost(url) {
    try {
      return new URL(String(url)).host;
    } catch (_) {
      return "—";
    }
  }

  function smtpSecurityLabel(value) {
    const labels = {
      starttls: t("alerting.security_starttls"),
      tls: t("alerting.security_tls"),
      none: t("alerting.security_none"),
    };
    return labels[value] ?? String(value ?? "");
  }

  function alertLangLabel(value) {
    const labels = { ja: t("reports.lang_ja"), en: t("reports.lang_en") };
    return labels[value] ?? String(value ?? "");
  }

  /** Settings of unknown shape as nested lists; secrets only ever appear as "set" / "not set". */
  function settingsTree(value, depth = 0) {
    if (isPlainObject(value)) {
      const entries = Object.entries(value);
      if (!entries.length) return h("span", { class: "muted" }, t("common.none"));
      return h("dl", { class: depth ? "dl dl-nested" : "dl" }, entries.map(([key, v]) => [
        h("dt", { class: "mono" }, key),
        h("dd", null, /(^|_)password_set$/.test(key) ? secretBadge(v) : settingsTree(v, depth + 1)),
      ]));
    }
    if (Array.isArray(value)) {
      if (!value.length) return h("span", { class: "muted" }, t("common.none"));
      if (value.every((v) => !isPlainObject(v) && !Array.isArray(v))) return h("span", null, value.map(String).join(", "));
      return h("ol", { class: "bullets" }, value.map((v) => h("li", null, settingsTree(v, depth + 1))));
    }
    if (typeof value === "boolean") return value ? badge(t("common.yes"), "ok") : badge(t("common.no"), "muted");
    if (value === null || value === undefined) return h("span", { class: "muted" }, "—");
    return h("span", { class: "mono" }, String(value));
  }

  function secretBadge(set) {
    return set ? badge(t("alerting.secret_set"), "ok") : badge(t("alerting.secret_not_set"), "warn");
  }

  const KNOWN_ALERTING_KEYS = ["smtp", "webhooks", "syslog", "routes", "throttle", "digest", "lang"];

  function alertingSummary(settings) {
    const smtp = isPlainObject(settings.smtp) ? settings.smtp : null;
    const routes = asList(settings.routes);
    const webhooks = asList(settings.webhooks);
    const syslog = asList(settings.syslog);
    const throttle = isPlainObject(settings.throttle) ? settings.throttle : null;
    const digest = isPlainObject(settings.digest) ? settings.digest : null;
    const none = (text) => h("span", { class: "muted" }, text ?? t("common.none"));

    const routeRows = routes.map((r) => h("tr", { testid: "alerting-route" },
      h("td", null, t("alerting.route_min", { severity: severityLabel(r.min_severity) })),
      h("td", { class: "wrap" }, asList(r.email).join(", ") || "—"),
      h("td", { class: "wrap" }, [...asList(r.webhooks).map((n) => `Webhook: ${n}`), ...asList(r.syslog).map((n) => `syslog: ${n}`)].join(", ") || "—"),
    ));
    const pairs = [
      [t("alerting.smtp"), smtp
        ? h("span", null,
          h("span", { class: "mono" }, `${smtp.host ?? ""}:${smtp.port ?? ""}`), ` (${smtpSecurityLabel(smtp.security)})`,
          h("br"), t("alerting.from"), ": ", smtp.from ?? "—",
          h("br"), t("alerting.smtp_user"), ": ", smtp.username || t("alerting.no_auth"), " ", smtp.username ? secretBadge(smtp.password_set) : null)
        : none(t("alerting.smtp_none"))],
      [t("alerting.routes"), routes.length
        ? h("table", { class: "table table-inner" },
          h("thead", null, h("tr", null, h("th", null, t("alerting.route_when")), h("th", null, t("alerting.route_email")), h("th", null, t("alerting.route_other")))),
          h("tbody", null, routeRows))
        : none(t("alerting.routes_none"))],
      [t("alerting.webhooks"), webhooks.length
        ? h("ul", { class: "plain" }, webhooks.map((w) => h("li", null, h("strong", null, w.name ?? ""), ` — ${w.format ?? "json"} — ${urlHost(w.url)}`)))
        : none()],
      [t("alerting.syslog"), syslog.length
        ? h("ul", { class: "plain" }, syslog.map((y) => h("li", null, h("strong", null, y.name ?? ""), ` — `, h("span", { class: "mono" }, y.address ?? ""), ` (${y.transport ?? "udp"})`)))
        : none()],
      throttle ? [t("alerting.throttle"), t("alerting.throttle_text", { max: throttle.max_per_window, minutes: Math.round((Number(throttle.window_s) || 0) / 60) })] : null,
      digest ? [t("alerting.digest"), digest.enabled
        ? t("alerting.digest_on", { hour: digest.hour_local, to: asList(digest.email).join(", ") || "—" })
        : none(t("alerting.digest_off"))] : null,
      settings.lang ? [t("alerting.lang"), alertLangLabel(settings.lang)] : null,
    ];
    const unknown = Object.fromEntries(Object.entries(settings).filter(([k]) => !KNOWN_ALERTING_KEYS.includes(k)));
    return h("div", null,
      definitionList(pairs),
      Object.keys(unknown).length ? settingsTree(unknown) : null,
    );
  }

  /** Test messages the settings allow: one mail to every recipient they name, each webhook, each syslog target. */
  function alertingTests(settings) {
    const tests = [];
    const emails = [...new Set([
      ...asList(settings.routes).flatMap((r) => asList(r.email)),
      ...(isPlainObject(settings.digest) ? asList(settings.digest.email) : []),
    ].map(String))];
    if (isPlainObject(settings.smtp) && emails.length) {
      tests.push({ id: "email", label: t("alerting.test_email", { to: emails.join(", ") }), delivery: { channel: "email", to: emails } });
    }
    for (const w of asList(settings.webhooks)) {
      tests.push({ id: `webhook-${w.name}`, label: t("alerting.test_webhook", { name: w.name }), delivery: { channel: "webhook", name: String(w.name) } });
    }
    for (const y of asList(settings.syslog)) {
      tests.push({ id: `syslog-${y.name}`, label: t("alerting.test_syslog", { name: y.name }), delivery: { channel: "syslog", name: String(y.name) } });
    }
    return tests;
  }

  function alertingPage(main) {
    const region = h("div");
    main.appendChild(pageHeader(t("alerting.title")));
    main.appendChild(h("p", { class: "muted" }, isAdmin() ? t("alerting.help_admin") : t("alerting.help_readonly")));
    main.appendChild(region);
    const refresh = loader(region, () => api("GET", "/api/alerting"), (data) => {
      // The manager answers {"settings": {...}}; a bare settings object is accepted too.
      const settings = isPlainObject(data) && isPlainObject(data.settings) ? data.settings : isPlainObject(data) ? data : {};
      const summary = h("section", { class: "card card-wide", testid: "alerting-summary" }, h("h2", null, t("alerting.summary")), alertingSummary(settings));
      if (!isAdmin()) {
        replaceContent(region, summary);
        return;
      }
      const tests = alertingTests(settings).map((test) => {
        const btn = button(test.label, async () => {
          btn.disabled = true;
          try {
            const res = await api("POST", "/api/alerting/test", { channel: test.delivery });
            if (res.ok === false) toast(t("alerting.test_failed", { error: res.error ?? "" }), "error");
            else toast(t("alerting.test_sent"));
          } catch (err) {
            reportError(err);
          } finally {
            btn.disabled = false;
          }
        }, { class: "btn-small", testid: `alerting-test-${test.id}` });
        return btn;
      });
      const textarea = h("textarea", { class: "json-edit", testid: "alerting-json", rows: 18, spellcheck: "false", value: prettyJson(settings) });
      const problem = h("div", { class: "alert alert-error wrap", role: "alert", hidden: true, testid: "alerting-error" });
      const save = button(t("alerting.save"), async () => {
        let parsed;
        try {
          parsed = JSON.parse(textarea.value);
        } catch (e) {
          problem.textContent = t("alerting.invalid_json", { error: String(e.message ?? e) });
          problem.hidden = false;
          return;
        }
        problem.hidden = true;
        save.disabled = true;
        try {
          await api("PUT", "/api/alerting", parsed);
          toast(t("alerting.saved"));
          refresh(false);
        } catch (err) {
          problem.textContent = errorText(err);
          problem.hidden = false;
        } finally {
          save.disabled = false;
        }
      }, { class: "btn-primary", testid: "alerting-save" });
      replaceContent(region,
        summary,
        h("section", { class: "card card-wide" },
          h("h2", null, t("alerting.test")),
          h("p", { class: "muted small" }, t("alerting.test_help")),
          h("div", { class: "actions" }, tests.length ? tests : h("span", { class: "muted" }, t("alerting.no_channels"))),
        ),
        h("section", { class: "card card-wide" },
          h("h2", null, t("alerting.edit")),
          h("p", { class: "muted small" }, t("alerting.edit_help")),
          textarea,
          problem,
          h("div", { class: "actions" }, save),
        ),
      );
    });
    // The editor would lose unsaved edits if rebuilt by a live update.
    return { name: "alerting", topics: [], refresh };
  }

  // ---------------------------------------------------------------------------------------------
  // Reports

  function previousMonth() {
    const now = new Date();
    const d = new Date(now.getFullYear(), now.getMonth() - 1, 1);
    return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}`;
  }

  function reportsPage(main) {
    const month = h("input", { type: "month", testid: "reports-month", value: previousMonth(), required: true });
    const lang = select([["ja", t("reports.lang_ja")], ["en", t("reports.lang_en")]], state.lang, { testid: "reports-lang" });
    const openHtml = h("a", { class: "btn", target: "_blank", rel: "noopener", testid: "reports-open-html" }, t("reports.open_html"));
    const downloadPdf = h("a", { class: "btn btn-primary", testid: "reports-download-pdf" }, t("reports.download_pdf"));
    const update = () => {
      const valid = /^\d{4}-\d{2}$/.test(month.value);
      for (const [link, format] of [[openHtml, "html"], [downloadPdf, "pdf"]]) {
        if (valid) link.setAttribute("href", `/api/reports/monthly${queryString({ month: month.value, lang: lang.value, format })}`);
        else link.removeAttribute("href");
        link.classList.toggle("disabled", !valid);
      }
      downloadPdf.setAttribute("download", `mamori-report-${valid ? month.value : "month"}-${lang.value}.pdf`);
    };
    month.addEventListener("input", update);
    lang.addEventListener("change", update);
    update();
    const send = canOperate()
      ? button(t("reports.send"), () => {
        if (!/^\d{4}-\d{2}$/.test(month.value)) return;
        confirmDialog(t("reports.send_title"), t("reports.send_message", { month: month.value }),
          () => api("POST", "/api/reports/monthly/send", { month: month.value, lang: lang.value }))
          .then((res) => {
            if (res) toast(t("reports.sent"));
          });
      }, { testid: "reports-send" })
      : null;
    main.appendChild(pageHeader(t("reports.title")));
    main.appendChild(h("section", { class: "card card-wide" },
      h("p", { class: "muted" }, t("reports.help")),
      h("div", { class: "toolbar" }, field(t("reports.month"), month), field(t("reports.lang"), lang)),
      h("div", { class: "actions" }, openHtml, downloadPdf, send),
    ));
    return { name: "reports", topics: [], refresh: null };
  }

  // ---------------------------------------------------------------------------------------------
  // QR code for the authenticator app (byte mode, error correction level M, versions 1-10).
  // A phone reads it faster and with fewer mistakes than a typed 32-character secret. Returns null
  // when the text does not fit, and the page then shows the secret and URI only.

  const QR_EC_M = {
    // version: [error-correction codewords per block, [blocks in group 1, data codewords], [group 2]]
    1: [10, [1, 16]],
    2: [16, [1, 28]],
    3: [26, [1, 44]],
    4: [18, [2, 32]],
    5: [24, [2, 43]],
    6: [16, [4, 27]],
    7: [18, [4, 31]],
    8: [22, [2, 38], [2, 39]],
    9: [22, [3, 36], [2, 37]],
    10: [26, [4, 43], [1, 44]],
  };
  const QR_ALIGNMENT = { 1: [], 2: [6, 18], 3: [6, 22], 4: [6, 26], 5: [6, 30], 6: [6, 34], 7: [6, 22, 38], 8: [6, 24, 42], 9: [6, 26, 46], 10: [6, 28, 50] };

  function qrMatrix(text) {
    const bytes = new TextEncoder().encode(text);
    let version = 0;
    for (let v = 1; v <= 10; v++) {
      const [, g1, g2] = QR_EC_M[v];
      const dataCodewords = g1[0] * g1[1] + (g2 ? g2[0] * g2[1] : 0);
      const countBits = v < 10 ? 8 : 16;
      if (4 + countBits + bytes.length * 8 <= dataCodewords * 8) {
        version = v;
        break;
      }
    }
    if (!version) return null;
    const [ecLen, g1, g2] = QR_EC_M[version];
    const capacity = g1[0] * g1[1] + (g2 ? g2[0] * g2[1] : 0);

    // Data bits: mode 0100 (byte), count, data, terminator, padding.
    const bits = [];
    const put = (value, length) => {
      for (let i = length - 1; i >= 0; i--) bits.push((value >>> i) & 1);
    };
    put(4, 4);
    put(bytes.length, version < 10 ? 8 : 16);
    for (const b of bytes) put(b, 8);
    put(0, Math.min(4, capacity * 8 - bits.length));
    while (bits.length % 8) bits.push(0);
    const data = [];
    for (let i = 0; i < bits.length; i += 8) data.push(bits.slice(i, i + 8).reduce((acc, bit) => (acc << 1) | bit, 0));
    for (let pad = 0xec; data.length < capacity; pad ^= 0xec ^ 0x11) data.push(pad);

    // Reed-Solomon over GF(256) with the polynomial 0x11d.
    const exp = new Array(512);
    const log = new Array(256);
    for (let i = 0, x = 1; i < 255; i++) {
      exp[i] = x;
      log[x] = i;
      x <<= 1;
      if (x & 0x100) x ^= 0x11d;
    }
    for (let i = 255; i < 512; i++) exp[i] = exp[i - 255];
    const mul = (a, b) => (a && b ? exp[log[a] + log[b]] : 0);
    let generator = [1];
    for (let i = 0; i < ecLen; i++) {
      const next = new Array(generator.length + 1).fill(0);
      for (let j = 0; j < generator.length; j++) {
        next[j] ^= generator[j];
        next[j + 1] ^= mul(generator[j], exp[i]);
      }
      generator = next;
    }
    const ecFor = (block) => {
      const rem = block.concat(new Array(ecLen).fill(0));
      for (let i = 0; i < block.length; i++) {
        const factor = rem[i];
        if (factor) for (let j = 0; j < generator.length; j++) rem[i + j] ^= mul(generator[j], factor);
      }
      return rem.slice(block.length);
    };
    const blocks = [];
    let offset = 0;
    for (const group of [g1, g2]) {
      if (!group) continue;
      for (let b = 0; b < group[0]; b++) {
        const block = data.slice(offset, offset + group[1]);
        offset += group[1];
        blocks.push({ data: block, ec: ecFor(block) });
      }
    }
    const codewords = [];
    const maxData = Math.max(...blocks.map((b) => b.data.length));
    for (let i = 0; i < maxData; i++) for (const b of blocks) if (i < b.data.length) codewords.push(b.data[i]);
    for (let i = 0; i < ecLen; i++) for (const b of blocks) codewords.push(b.ec[i]);

    // Function patterns.
    const size = version * 4 + 17;
    const modules = Array.from({ length: size }, () => new Array(size).fill(false));
    const reserved = Array.from({ length: size }, () => new Array(size).fill(false));
    const set = (x, y, dark) => {
      modules[y][x] = dark;
      reserved[y][x] = true;
    };
    for (const [cx, cy] of [[3, 3], [size - 4, 3], [3, size - 4]]) {
      for (let dy = -4; dy <= 4; dy++) {
        for (let dx = -4; dx <= 4; dx++) {
          const x = cx + dx;
          const y = cy + dy;
          if (x < 0 || y < 0 || x >= size || y >= size) continue;
          const d = Math.max(Math.abs(dx), Math.abs(dy));
          set(x, y, d !== 2 && d !== 4);
        }
      }
    }
    for (let i = 8; i < size - 8; i++) {
      set(6, i, i % 2 === 0);
      set(i, 6, i % 2 === 0);
    }
    const align = QR_ALIGNMENT[version];
    for (const ay of align) {
      for (const ax of align) {
        if ((ax === 6 && ay === 6) || (ax === 6 && ay === size - 7) || (ax === size - 7 && ay === 6)) continue;
        for (let dy = -2; dy <= 2; dy++) for (let dx = -2; dx <= 2; dx++) set(ax + dx, ay + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
      }
    }
    set(8, size - 8, true); // the dark module
    // Reserve format areas (filled after masking) and version areas (v7+).
    for (let i = 0; i < 9; i++) {
      reserved[8][i] = true;
      reserved[i][8] = true;
    }
    for (let i = 0; i < 8; i++) {
      reserved[8][size - 1 - i] = true;
      reserved[size - 1 - i][8] = true;
    }
    if (version >= 7) {
      let rem = version;
      for (let i = 0; i < 12; i++) rem = (rem << 1) ^ ((rem >>> 11) * 0x1f25);
      const versionBits = (version << 12) | rem;
      for (let i = 0; i < 18; i++) {
        const dark = ((versionBits >>> i) & 1) === 1;
        const a = size - 11 + (i % 3);
        const b = Math.floor(i / 3);
        set(a, b, dark);
        set(b, a, dark);
      }
    }

    // Data placement in the zigzag order.
    let bitIndex = 0;
    const totalBits = codewords.length * 8;
    for (let right = size - 1; right >= 1; right -= 2) {
      if (right === 6) right = 5;
      for (let vert = 0; vert < size; vert++) {
        for (let j = 0; j < 2; j++) {
          const x = right - j;
          const upward = ((right + 1) & 2) === 0;
          const y = upward ? size - 1 - vert : vert;
          if (reserved[y][x]) continue;
          if (bitIndex < totalBits) modules[y][x] = ((codewords[bitIndex >>> 3] >>> (7 - (bitIndex & 7))) & 1) === 1;
          bitIndex++;
        }
      }
    }

    const maskFns = [
      (x, y) => (x + y) % 2 === 0,
      (x, y) => y % 2 === 0,
      (x) => x % 3 === 0,
      (x, y) => (x + y) % 3 === 0,
      (x, y) => (Math.floor(x / 3) + Math.floor(y / 2)) % 2 === 0,
      (x, y) => ((x * y) % 2) + ((x * y) % 3) === 0,
      (x, y) => (((x * y) % 2) + ((x * y) % 3)) % 2 === 0,
      (x, y) => (((x + y) % 2) + ((x * y) % 3)) % 2 === 0,
    ];
    const drawFormat = (grid, mask) => {
      // Level M is 00.
      const dataBits = (0 << 3) | mask;
      let rem = dataBits;
      for (let i = 0; i < 10; i++) rem = (rem << 1) ^ ((rem >>> 9) * 0x537);
      const formatBits = ((dataBits << 10) | rem) ^ 0x5412;
      const bit = (i) => ((formatBits >>> i) & 1) === 1;
      for (let i = 0; i <= 5; i++) grid[i][8] = bit(i);
      grid[7][8] = bit(6);
      grid[8][8] = bit(7);
      grid[8][7] = bit(8);
      for (let i = 9; i < 15; i++) grid[8][14 - i] = bit(i);
      for (let i = 0; i < 8; i++) grid[8][size - 1 - i] = bit(i);
      for (let i = 8; i < 15; i++) grid[size - 15 + i][8] = bit(i);
      grid[size - 8][8] = true;
    };
    const penalty = (grid) => {
      let score = 0;
      for (let pass = 0; pass < 2; pass++) {
        for (let a = 0; a < size; a++) {
          let run = 1;
          for (let b = 1; b <= size; b++) {
            const cur = b < size ? (pass ? grid[b][a] : grid[a][b]) : null;
            const prev = pass ? grid[b - 1][a] : grid[a][b - 1];
            if (cur === prev) run++;
            else {
              if (run >= 5) score += run - 2;
              run = 1;
            }
          }
          for (let b = 0; b + 11 <= size; b++) {
            const line = [];
            for (let k = 0; k < 11; k++) line.push(pass ? grid[b + k][a] : grid[a][b + k]);
            const p = line.map((v) => (v ? 1 : 0)).join("");
            if (p === "10111010000" || p === "00001011101") score += 40;
          }
        }
      }
      for (let y = 0; y + 1 < size; y++) {
        for (let x = 0; x + 1 < size; x++) {
          const c = grid[y][x];
          if (c === grid[y][x + 1] && c === grid[y + 1][x] && c === grid[y + 1][x + 1]) score += 3;
        }
      }
      let dark = 0;
      for (const row of grid) for (const v of row) if (v) dark++;
      score += Math.floor(Math.abs(dark * 20 - size * size * 10) / (size * size)) * 10;
      return score;
    };
    let best = null;
    let bestScore = Infinity;
    for (let mask = 0; mask < 8; mask++) {
      const grid = modules.map((row, y) => row.map((v, x) => (reserved[y][x] ? v : v !== maskFns[mask](x, y))));
      drawFormat(grid, mask);
      const score = penalty(grid);
      if (score < bestScore) {
        bestScore = score;
        best = grid;
      }
    }
    return best;
  }

  function qrCodeSvg(text) {
    if (!text) return null;
    let matrix;
    try {
      matrix = qrMatrix(text);
    } catch (_) {
      return null;
    }
    if (!matrix) return null;
    const ns = "http://www.w3.org/2000/svg";
    const quiet = 4;
    const size = matrix.length + quiet * 2;
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
    svg.setAttribute("shape-rendering", "crispEdges");
    svg.setAttribute("class", "qr-svg");
    const bg = document.createElementNS(ns, "rect");
    bg.setAttribute("width", String(size));
    bg.setAttribute("height", String(size));
    bg.setAttribute("fill", "#fff");
    svg.appendChild(bg);
    let d = "";
    matrix.forEach((row, y) => row.forEach((dark, x) => {
      if (dark) d += `M${x + quiet} ${y + quiet}h1v1h-1z`;
    }));
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    path.setAttribute("fill", "#000");
    svg.appendChild(path);
    return svg;
  }

  // ---------------------------------------------------------------------------------------------

  window.addEventListener("hashchange", route);
  document.addEventListener("DOMContentLoaded", boot);
})();
