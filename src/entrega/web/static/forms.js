// entrega: the login and logout forms, sent with the X-Entrega-Actor header.
// A page on another site can make a browser post a form here, but not add a header to
// it, so the server takes a cookie-writing POST only with this header: the same
// protection as the dashboard's promote/abort/rollback calls. Whatever the server
// answers is shown with textContent, never as markup. Each form posts to its own action,
// which the page wrote under its base path (/apps/<app>/login for one app of several).
(function () {
  "use strict";
  for (const form of document.querySelectorAll("form[data-entrega-post]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const shown = form.parentElement.querySelector(".form-error") || (() => {
        const p = document.createElement("p");
        p.className = "error form-error";
        form.after(p);
        return p;
      })();
      shown.textContent = "";
      let response;
      try {
        response = await fetch(form.action, {
          method: "POST", credentials: "same-origin", cache: "no-store",
          headers: { "Content-Type": "application/x-www-form-urlencoded",
                     "X-Entrega-Actor": "dashboard" },
          body: new URLSearchParams(new FormData(form)),
        });
      } catch (err) {
        shown.textContent = `could not reach the server: ${err}`;
        return;
      }
      if (response.ok && response.redirected) {
        window.location.assign(response.url);  // where the server sent us (same origin)
        return;
      }
      // The server answers a refused login with the login page, its reason in #login-error.
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const reason = page.getElementById("login-error");
      shown.textContent = reason ? reason.textContent : `refused (${response.status})`;
    });
  }
})();
