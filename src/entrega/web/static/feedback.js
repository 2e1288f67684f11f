// entrega feedback widget: <script src="/.entrega/feedback.js" defer></script>
// Adds a small "Rate this page" button; ratings (1-5) and comments are posted to
// /.entrega/feedback on this page's own origin. entrega's router forwards that path to
// entrega's server and names the release this browser was served by (its pin cookie),
// so the page needs no configuration. Options, as attributes of the script tag:
//   data-label="How was it?"   data-tags="checkout,mobile"   data-user-id="u-123"
// Scripts may also call window.entregaFeedback.send({rating: 4, comment: "..."}).
(function () {
  "use strict";
  if (window.entregaFeedback) return;
  const script = document.currentScript;
  const opt = (name, fallback) => (script && script.getAttribute("data-" + name)) || fallback;
  const endpoint = opt("endpoint", "/.entrega/feedback");
  const tags = opt("tags", "").split(",").map((t) => t.trim()).filter(Boolean);

  async function send(feedback) {
    const body = Object.assign({ tags: tags, user_id: opt("user-id", null) }, feedback);
    const response = await fetch(endpoint, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) {
      const detail = await response.json().catch(() => ({}));
      throw new Error(detail.error || ("HTTP " + response.status));
    }
    return response.json();
  }
  window.entregaFeedback = { send: send };

  function mount() {
    const host = document.createElement("div");
    host.id = "entrega-feedback";
    const root = host.attachShadow({ mode: "open" });
    root.innerHTML = `
      <style>
        :host { all: initial; }
        .wrap { position: fixed; right: 18px; bottom: 18px; z-index: 2147483000;
                font: 14px/1.4 system-ui, sans-serif; color: #212529; }
        .open { background: #212529; color: #fff; border: 0; border-radius: 20px;
                padding: 8px 14px; cursor: pointer; box-shadow: 0 2px 10px rgba(0,0,0,.2); }
        .panel { background: #fff; border: 1px solid #dee2e6; border-radius: 10px; padding: 12px;
                 width: 260px; box-shadow: 0 4px 18px rgba(0,0,0,.18); }
        .stars button { font-size: 22px; background: none; border: 0; cursor: pointer; color: #ced4da; padding: 0 2px; }
        .stars button.on { color: #f08c00; }
        textarea { width: 100%; box-sizing: border-box; margin: 8px 0; min-height: 54px; font: inherit; }
        .row { display: flex; justify-content: space-between; align-items: center; }
        .send { background: #1c7ed6; color: #fff; border: 0; border-radius: 6px; padding: 5px 12px; cursor: pointer; }
        .close { background: none; border: 0; cursor: pointer; color: #868e96; }
        .msg { font-size: 12px; color: #495057; }
      </style>
      <div class="wrap">
        <button class="open" part="button"></button>
        <div class="panel" hidden>
          <div class="row"><strong class="title"></strong><button class="close" aria-label="close">✕</button></div>
          <div class="stars" role="radiogroup"></div>
          <textarea maxlength="2000" placeholder="Anything to add? (optional)"></textarea>
          <div class="row"><span class="msg"></span><button class="send">Send</button></div>
        </div>
      </div>`;
    const label = opt("label", "How was it?");
    root.querySelector(".open").textContent = "★ " + label;
    root.querySelector(".title").textContent = label;
    const panel = root.querySelector(".panel");
    const msg = root.querySelector(".msg");
    const stars = root.querySelector(".stars");
    let rating = null;
    for (let n = 1; n <= 5; n++) {
      const star = document.createElement("button");
      star.textContent = "★";
      star.setAttribute("aria-label", n + " of 5");
      star.dataset.rating = String(n);
      star.addEventListener("click", () => {
        rating = n;
        stars.querySelectorAll("button").forEach((b) => b.classList.toggle("on", Number(b.dataset.rating) <= n));
      });
      stars.append(star);
    }
    root.querySelector(".open").addEventListener("click", () => { panel.hidden = false; });
    root.querySelector(".close").addEventListener("click", () => { panel.hidden = true; });
    root.querySelector(".send").addEventListener("click", async () => {
      const comment = root.querySelector("textarea").value.trim();
      if (!rating && !comment) { msg.textContent = "Pick a rating or write a comment."; return; }
      try {
        await send({ rating: rating, comment: comment || null });
        msg.textContent = "Thank you!";
        setTimeout(() => { panel.hidden = true; }, 1200);
      } catch (err) {
        msg.textContent = "Not sent: " + err.message;
      }
    });
    document.body.append(host);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount);
  else mount();
})();
