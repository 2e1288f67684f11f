// entrega overview of a server of several apps: polls <base>/api/v1/apps and
// <base>/api/v1/groups?limit=N (the same read models the page started from) and redraws
// every app's environments and the recent release groups. Plain JS. (The team's DORA
// panel covers 90 days: it is drawn with the page and not polled.)
// <base> is <body data-base> ("" unless a proxy serves entrega under a path).
// Every value from the server goes in with textContent (never innerHTML): release names
// and messages cannot inject markup.
(function () {
  "use strict";
  const initial = JSON.parse(document.getElementById("initial-apps").textContent);
  const POLL_MS = initial.poll_ms || 1500;
  const BASE = document.body.dataset.base || "";
  let busy = false;

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) el.setAttribute(k, String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function weights(r) {
    return Object.entries(r.weights || {}).map(([v, w]) => `${v} ${w}%`).join(", ");
  }

  function step(r) {
    const n = (r.steps || []).length;
    if (!n) return null;
    const text = `step ${Math.min(r.step_index + 1, n)} of ${n}` + (r.step_index < n ? `: ${r.steps[r.step_index]}` : "");
    return h("span", { class: "step muted small" }, text);
  }

  function rolloutCell(env) {
    const r = env.rollout;
    if (r) {
      return h("td", {},
        h("span", { class: "rollout", "data-phase": r.phase }, `#${r.id} ${r.from_version || "∅"} → `,
          h("b", {}, r.version), " ", h("span", { class: `phase phase-${r.phase}` }, r.phase)),
        " ", h("span", { class: "weights-text" }, weights(r)), " ", step(r),
        r.message ? h("span", { class: "message" }, r.message) : null);
    }
    const l = env.last_rollout;
    if (l) {
      return h("td", {}, h("span", { class: "last muted", "data-phase": l.phase }, `last #${l.id} → ${l.version} `,
        h("span", { class: `phase phase-${l.phase}` }, l.phase)));
    }
    return h("td", {}, h("span", { class: "muted" }, "none yet"));
  }

  function appCard(status) {
    return h("div", { class: "card app-card", "data-app": status.app },
      h("h3", {}, h("a", { href: `${BASE}/apps/${encodeURIComponent(status.app)}/` }, status.app)),
      h("table", { class: "app-envs" },
        h("thead", {}, h("tr", {}, h("th", {}, "environment"), h("th", {}, "runs"), h("th", {}, "rollout"))),
        h("tbody", {}, status.environments.map((env) => h("tr", { "data-env": env.name },
          h("td", {}, env.name), h("td", {}, h("b", {}, env.current || "nothing yet")), rolloutCell(env))))));
  }

  function render(apps) {
    const list = document.getElementById("apps");
    list.replaceChildren(...(apps.length ? apps.map(appCard)
      : [h("p", { class: "muted", id: "no-apps" }, `Your token sees none of this server's ${initial.total} apps.`)]));
    document.getElementById("apps-count").textContent = `${apps.length} of ${initial.total}`;
    document.body.dataset.updated = String(Date.now());
  }

  function memberCell(stand) {
    if (!stand) return h("td", {}, h("span", { class: "muted" }, "–"));
    return h("td", {}, h("span", { class: `phase phase-${stand.phase}` }, stand.phase),
      stand.message ? [" ", h("span", { class: "message" }, stand.message)] : null);
  }

  function groupCard(g) {
    const there = (g.environment && g.progress[g.environment]) || {};
    return h("div", { class: "card group-card", "data-group": g.name },
      h("h3", {}, g.name, " ", h("span", { class: `phase phase-${g.phase}` }, g.phase), " ",
        h("span", { class: "muted small" }, g.environment ? `in ${g.environment}` : "no environment")),
      h("table", { class: "group-members" },
        h("thead", {}, h("tr", {}, h("th", {}, "app"), h("th", {}, "version"), h("th", {}, g.environment || "environment"))),
        h("tbody", {}, g.members.map((m) => h("tr", { "data-member": m.app },
          h("td", {}, m.app), h("td", {}, h("b", {}, m.version)), memberCell(there[m.app]))))),
      g.message ? h("p", { class: "message" }, g.message) : null);
  }

  function renderGroups(groups) {
    document.getElementById("groups").replaceChildren(...(groups.length ? groups.map(groupCard)
      : [h("p", { class: "muted", id: "no-groups" }, "No release group of the apps you may see yet.")]));
  }

  async function pollGroups() {
    const limit = initial.groups_limit || 10;
    const response = await fetch(`${BASE}/api/v1/groups?limit=${limit}`, { credentials: "same-origin", cache: "no-store" });
    if (response.ok) renderGroups(await response.json());
  }

  async function poll() {
    if (busy) return;
    busy = true;
    try {
      const response = await fetch(`${BASE}/api/v1/apps`, { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401) { window.location = `${BASE}/login?next=${BASE}/`; return; }
      if (response.ok) render((await response.json()).apps);
      await pollGroups();
    } catch (err) {
      document.body.dataset.offline = "1";
    } finally {
      busy = false;
    }
  }

  setInterval(poll, POLL_MS);
})();
