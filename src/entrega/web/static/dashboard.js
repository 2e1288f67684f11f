// entrega dashboard: polls <base>/ui/state.json and redraws the live parts. Plain JS, no build.
// <base> is <body data-base>: "" at a server's root, /apps/<app> for one app of several;
// every path the page fetches or goes to is under it.
// Every value from the server is put in the page with textContent (never innerHTML),
// so release names, messages and users' comments cannot inject markup.
(function () {
  "use strict";
  const initial = JSON.parse(document.getElementById("initial-state").textContent);
  const POLL_MS = initial.poll_ms || 1500;
  const BASE = document.body.dataset.base || "";
  let caller = initial.caller;
  let busy = false;

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "style") el.setAttribute("style", v);
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function clock(ts) {
    if (!ts) return "–";
    const d = new Date(ts * 1000);
    return d.toTimeString().slice(0, 8);
  }

  function num(v) {
    if (v === null || v === undefined) return "–";
    return Math.abs(v) < 1 && v !== 0 ? (v * 100).toFixed(2) + "%" : Number(v).toPrecision(4);
  }

  function toast(text, isError) {
    const el = document.getElementById("toast");
    el.textContent = text;
    el.className = "toast" + (isError ? " error" : "");
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.hidden = true; }, 5000);
  }

  const CONFIRM = { abort: "confirm abort", rollback: "confirm rollback" };
  // A destructive button needs a second click within ARM_MS. The armed state lives here,
  // not in the button: the poll redraws the buttons every POLL_MS.
  const ARM_MS = 4000;
  let armed = null;

  function isArmed(env, action) {
    return armed && armed.env === env && armed.action === action && Date.now() < armed.until;
  }

  async function act(env, action, button, body) {
    if (CONFIRM[action] && !isArmed(env, action)) {
      armed = { env: env, action: action, until: Date.now() + ARM_MS };
      button.classList.add("armed");
      button.textContent = CONFIRM[action];
      setTimeout(poll, ARM_MS + 50);
      return;
    }
    armed = null;
    button.disabled = true;
    try {
      const response = await fetch(`${BASE}/api/v1/environments/${encodeURIComponent(env)}/${action}`, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-Entrega-Actor": "dashboard" },
        body: JSON.stringify(body || {}),
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        toast(`${action} failed: ${answer.error || response.status}` + (answer.hint ? ` (${answer.hint})` : ""), true);
      } else {
        toast(`${action} requested in ${env}` + (answer.rollout ? ` (rollout ${answer.rollout})` : ""));
      }
    } catch (err) {
      toast(`${action} failed: ${err}`, true);
    }
    poll();
  }

  function button(env, action, label, cls, enabled, body) {
    const allowed = caller && caller.can_deploy;
    const confirming = CONFIRM[action] && isArmed(env, action);
    return h("button", {
      type: "button", class: confirming ? cls + " armed" : cls, "data-action": action, "data-env": env,
      disabled: !(allowed && enabled),
      title: allowed ? null : "needs the deployer role: log in with a deployer token",
      onclick: (e) => act(env, action, e.currentTarget, body),
    }, confirming ? CONFIRM[action] : label);
  }

  function weightsBar(rollout) {
    const entries = Object.entries(rollout.weights || {});
    const bar = h("div", { class: "weights", "data-weights": entries.map(([v, w]) => `${v}=${w}`).join(",") });
    for (const [version, weight] of entries) {
      if (weight <= 0) continue;
      const cls = version === rollout.version ? "seg canary" : "seg stable";
      bar.append(h("div", { class: cls, style: `width:${weight}%`, title: `${version} ${weight}%` },
                   `${version} ${weight}%`));
    }
    return bar;
  }

  function steps(rollout) {
    if (!rollout.steps || !rollout.steps.length) return null;
    const live = rollout.phase === "progressing" || rollout.phase === "paused";
    return h("ol", { class: "steps" }, rollout.steps.map((step, i) =>
      h("li", { class: i < rollout.step_index ? "done" : (i === rollout.step_index && live ? "current" : "") }, step)));
  }

  function analysis(rollout) {
    const a = rollout.analysis;
    if (!a || !a.metrics || !a.metrics.length) return null;
    return h("table", { class: "analysis" },
      h("tr", {}, h("th", {}, "metric"), h("th", {}, "verdict"), h("th", { class: "num" }, "canary"),
        h("th", { class: "num" }, "stable"), h("th", {}, "why")),
      a.metrics.map((m) => h("tr", {},
        h("td", {}, m.metric), h("td", { class: `verdict-${m.verdict}` }, m.verdict),
        h("td", { class: "num" }, num(m.canary)), h("td", { class: "num" }, num(m.stable)),
        h("td", {}, m.reason))));
  }

  function envCard(env) {
    const r = env.rollout;
    const card = h("div", { class: "card env", "data-env": env.name },
      h("h3", {}, env.name, h("span", { class: "runs" }, "runs ", h("b", {}, env.current || "nothing yet"))));
    if (r) {
      card.append(h("div", { class: "rollout", "data-rollout": r.id, "data-phase": r.phase },
        h("div", {}, `rollout #${r.id}: ${r.from_version || "∅"} → `, h("b", {}, r.version),
          ` (${r.strategy}) `, h("span", { class: `phase phase-${r.phase}` }, r.phase)),
        weightsBar(r), steps(r), r.message ? h("p", { class: "message" }, r.message) : null,
        analysis(r)));
    } else if (env.last_rollout) {
      const l = env.last_rollout;
      card.append(h("div", { class: "last", "data-rollout": l.id, "data-phase": l.phase },
        `last rollout #${l.id}: ${l.from_version || "∅"} → ${l.version} `,
        h("span", { class: `phase phase-${l.phase}` }, l.phase),
        l.message ? h("p", { class: "message" }, l.message) : null));
    }
    if (env.hosts && env.hosts.length) {
      card.append(h("table", { class: "hosts" },
        h("tr", {}, h("th", {}, "host"), h("th", {}, "state"), h("th", {}, "instances")),
        env.hosts.map((host) => h("tr", { "data-host": host.name },
          h("td", {}, `${host.name} (${host.address})`),
          h("td", { class: host.reachable ? "verdict-pass" : "verdict-fail" },
            host.reachable ? "ok" : `unreachable: ${host.error}`),
          h("td", {}, Object.entries(host.instances).map(([v, n]) => `${v}: ${n}`).join(", ") || "none")))));
    }
    card.append(h("div", { class: "actions" },
      button(env.name, "promote", "promote", "primary", !!r),
      button(env.name, "abort", "abort", "danger", !!r),
      button(env.name, "rollback", "rollback", "danger", !r && !!env.current),
      (env.awaiting_approval || []).map((version) =>
        button(env.name, "approve", `approve ${version}`, "primary", true, { version: version }))));
    return card;
  }

  function render(state) {
    const envs = document.getElementById("environments");
    envs.replaceChildren(...state.environments.map(envCard));
    const tbody = document.querySelector("#history tbody");
    tbody.replaceChildren(...state.history.map((e) => h("tr", {},
      h("td", { class: "num" }, clock(e.time)), h("td", {}, e.environment || ""), h("td", {}, e.version || ""),
      h("td", {}, h("span", { class: `kind kind-${e.kind}` }, e.kind)), h("td", {}, e.actor), h("td", {}, e.message))));
    document.body.dataset.updated = String(state.time);
  }

  async function poll() {
    if (busy) return;
    busy = true;
    try {
      const response = await fetch(`${BASE}/ui/state.json`, { credentials: "same-origin", cache: "no-store" });
      // 401: logged out; 403: the token is limited to other apps (the login page says so)
      if (response.status === 401 || response.status === 403) {
        window.location = `${BASE}/login?next=${BASE}/`;
        return;
      }
      if (response.ok) {
        const state = await response.json();
        caller = state.caller;
        render(state);
      }
    } catch (err) {
      document.body.dataset.offline = "1";
    } finally {
      busy = false;
    }
  }

  render(initial.state);
  setInterval(poll, POLL_MS);
})();
