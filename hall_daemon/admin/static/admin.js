// Shared by the admin pages: the language toggle and `adminPost`, which sends the session's
// CSRF token with every state-changing request.
"use strict";

(function () {
  const KEY = "hall-admin-lang";
  const order = ["lang-both", "lang-zh", "lang-en"];
  function apply(lang) {
    document.body.classList.remove(...order);
    document.body.classList.add(lang);
  }
  document.addEventListener("DOMContentLoaded", function () {
    const saved = window.localStorage.getItem(KEY);
    if (order.includes(saved)) apply(saved);
    const toggle = document.querySelector("[data-lang-toggle]");
    if (toggle) {
      toggle.addEventListener("click", function () {
        const now = order.find((c) => document.body.classList.contains(c)) || order[0];
        const next = order[(order.indexOf(now) + 1) % order.length];
        apply(next);
        window.localStorage.setItem(KEY, next);
      });
    }
  });
})();

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// POST JSON with the CSRF token; resolves to {ok, status, body}. A lost session sends the
// page to the login form.
async function adminPost(url, data) {
  const res = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify(data || {}),
  });
  if (res.status === 401) {
    window.location.href = "/admin/login?next=" + encodeURIComponent(window.location.pathname);
  }
  let body = null;
  try {
    body = await res.json();
  } catch (e) {
    body = null;
  }
  return { ok: res.ok, status: res.status, body: body };
}
window.adminPost = adminPost;
window.csrfToken = csrfToken;
