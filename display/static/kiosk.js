/* The touch kiosk: one button per service, a priority button, a code field for a
 * keyboard-wedge QR scanner; shows the ticket while the receipt prints, then resets.
 *
 * Tickets are issued by POSTing to the daemon, which runs the same TakeTicket / CheckIn
 * commands a serial dispenser does. Which services can be taken (open, not full) and their
 * queues arrive over the feed like a screen's.
 *
 * A kiosk the hall knows by a key (config.yaml kiosks: key_file) is opened once as
 * /kiosk?key=<key>: the page keeps the key in this browser's storage, takes it out of the
 * address bar, and sends it with every request.
 */
"use strict";

(function () {
  const F = window.HallFeed;
  const body = document.body;
  const IDLE_MS = Number(body.dataset.idle || "15") * 1000;
  const KIOSK = body.dataset.kiosk || "kiosk";
  const REQUEST_TIMEOUT_MS = 8000;
  const KEY_STORE = "hall-kiosk-key";
  const KEY = kioskKey();

  const ERRORS = {
    "service-closed": ["该业务当前不在办理时间", "This service is closed now"],
    "daily-limit": ["该业务今日号已取完", "No more tickets for this service today"],
    "unknown-service": ["未知业务", "Unknown service"],
    "no-appointment-now": [
      "该预约码现在不能签到：请在临近预约时间时签到，或到窗口咨询",
      "No appointment to check in with this code now: check in shortly before your time, or ask at a counter",
    ],
    "store-unavailable": ["系统繁忙，请重试", "System busy, please try again"],
    network: ["网络故障，请重试或联系工作人员", "Network problem: try again or ask the staff"],
    "not-a-kiosk": ["本机未登记为取号机，请联系工作人员", "This machine is not registered as a kiosk: please ask the staff"],
    "too-many-tickets": ["取号过于频繁，请稍候再试", "Too many tickets at once: please wait a moment"],
    "too-many-codes": ["预约码错误次数过多，请稍后再试或到窗口办理", "Too many wrong codes: try again later or ask at a counter"],
  };
  const FALLBACK = ["暂时无法取号，请联系工作人员", "Cannot issue a ticket now: please ask the staff"];
  const REASONS = { closed: ["未到办理时间", "Closed now"], full: ["今日已满", "Full today"] };

  const $ = (id) => document.getElementById(id);
  let meta = null;
  const entries = {};
  let priority = false;
  let busy = false;
  let shown = null; // the number on screen, to match its receipt's "printed" message
  let early = null; // a fast printer's "printed" can arrive before the ticket's own answer
  let idleTimer = 0;

  // -- services ----------------------------------------------------------------------------
  function render(m) {
    meta = m;
    F.setBi(document.querySelector(".top .hall"), m.hall.name, m.hall.name_en);
    const box = $("services");
    box.replaceChildren();
    for (const s of m.services) {
      const b = F.el("button", "service");
      b.type = "button";
      b.dataset.service = s.code;
      b.append(F.el("span", "sname", s.name), F.el("span", "sname-en", s.name_en || ""), F.el("span", "sinfo"));
      b.addEventListener("click", function () {
        take(s.code);
      });
      box.appendChild(b);
    }
  }

  function setService(code, e) {
    entries[code] = e;
    const b = document.querySelector('#services .service[data-service="' + code + '"]');
    if (!b) return;
    b.dataset.available = e.available ? "1" : "0";
    b.disabled = !e.available || busy;
    const info = b.querySelector(".sinfo");
    if (e.available) {
      const w = F.waitText(e);
      info.replaceChildren(F.bi("等候 " + e.waiting + " 人 · " + w[0], e.waiting + " waiting · " + w[1]));
    } else {
      const r = REASONS[e.reason] || ["暂停取号", "Unavailable"];
      info.replaceChildren(F.bi(r[0], r[1]));
    }
  }

  function setBusy(b) {
    busy = b;
    for (const code in entries) setService(code, entries[code]);
  }

  // -- issuing -----------------------------------------------------------------------------
  function kioskKey() {
    const url = new URL(window.location.href);
    const given = url.searchParams.get("key");
    try {
      if (given) {
        window.localStorage.setItem(KEY_STORE, given);
        url.searchParams.delete("key"); // off the screen and out of the history
        window.history.replaceState(null, "", url.pathname + url.search + url.hash);
      }
      return window.localStorage.getItem(KEY_STORE) || "";
    } catch (e) {
      return given || ""; // no storage (private mode): the key lasts as long as the page
    }
  }

  async function post(path, payload) {
    const headers = { "Content-Type": "application/json" };
    if (KEY) headers["X-Kiosk-Key"] = KEY;
    const ctl = new AbortController();
    const timer = setTimeout(function () {
      ctl.abort();
    }, REQUEST_TIMEOUT_MS);
    try {
      const r = await fetch(path, {
        method: "POST",
        headers: headers,
        body: JSON.stringify(payload),
        signal: ctl.signal,
      });
      const data = await r.json().catch(function () {
        return {};
      });
      if (!r.ok) return { error: (data.error && data.error.slug) || "failed" };
      return data;
    } catch (e) {
      return { error: "network" };
    } finally {
      clearTimeout(timer);
    }
  }

  async function take(code) {
    if (busy) return; // one tap, one ticket: a double tap must not issue two
    setBusy(true);
    hideError();
    early = null;
    const res = await post("/kiosk/ticket", { service: code, priority: priority, kiosk: KIOSK });
    setBusy(false);
    res.error ? showError(res.error) : showTicket(res);
  }

  async function submitCode(ev) {
    ev.preventDefault();
    const input = $("code");
    const code = input.value.trim();
    input.value = "";
    if (!code || busy) return;
    setBusy(true);
    hideError();
    early = null;
    const res = await post("/kiosk/code", { code: code, kiosk: KIOSK });
    setBusy(false);
    res.error ? showError(res.error) : showTicket(res);
  }

  function showTicket(res) {
    const t = res.ticket;
    shown = t.number;
    $("result-number").textContent = t.number;
    F.setBi($("result-service"), t.service_name, t.service_name_en);
    if (t.state === "waiting") {
      F.setBi($("result-ahead"), "前面还有 " + t.ahead + " 人", t.ahead + (t.ahead === 1 ? " person" : " people") + " ahead of you");
      const w = F.waitText(t.forecast);
      const iv = F.intervalText(t.forecast);
      F.setBi(
        $("result-wait"),
        "预计等候 " + w[0] + (iv[0] ? "（" + iv[0] + "）" : ""),
        "Expected wait " + w[1] + (iv[1] ? " (" + iv[1] + ")" : "")
      );
    } else {
      $("result-ahead").replaceChildren();
      $("result-wait").replaceChildren();
    }
    const receipt = $("result-receipt");
    receipt.dataset.state = res.receipt;
    if (res.receipt === "printing") F.setBi(receipt, "正在打印小票…", "Printing your receipt…");
    else F.setBi(receipt, "请记下您的号码", "Please note your number");
    const r = $("result");
    r.dataset.number = t.number;
    r.dataset.existing = res.existing ? "1" : "0";
    $("home").hidden = true;
    r.hidden = false;
    if (early && early.number === t.number) printed(early);
    early = null;
    touch();
  }

  function printed(m) {
    if (m.kiosk !== KIOSK) return;
    if (m.number !== shown) {
      early = m;
      return;
    }
    const receipt = $("result-receipt");
    receipt.dataset.state = m.ok ? "printed" : "failed";
    if (m.ok) F.setBi(receipt, "请取走小票", "Please take your receipt");
    else F.setBi(receipt, "小票打印失败，请记下您的号码", "The receipt did not print: please note your number");
  }

  function showError(slug) {
    const msg = ERRORS[slug] || FALLBACK;
    const box = $("error");
    box.dataset.slug = slug;
    F.setBi(box, msg[0], msg[1]);
    box.hidden = false;
    touch();
  }

  function hideError() {
    $("error").hidden = true;
  }

  // -- idle reset ----------------------------------------------------------------------------
  function reset() {
    shown = null;
    priority = false;
    $("priority").setAttribute("aria-pressed", "false");
    $("code").value = "";
    hideError();
    $("result").hidden = true;
    $("home").hidden = false;
    body.dataset.resets = String(Number(body.dataset.resets || "0") + 1);
    focusCode();
  }

  function touch() {
    clearTimeout(idleTimer);
    idleTimer = setTimeout(reset, IDLE_MS);
  }

  // A keyboard-wedge scanner types into whatever has focus: keep it on the code field.
  // inputmode="none" keeps a touch screen's on-screen keyboard from popping up for it.
  function focusCode() {
    if (!$("home").hidden) $("code").focus({ preventScroll: true });
  }

  $("priority").addEventListener("click", function () {
    priority = !priority;
    this.setAttribute("aria-pressed", priority ? "true" : "false");
  });
  $("code-form").addEventListener("submit", submitCode);
  $("done").addEventListener("click", reset);
  $("code").addEventListener("blur", function () {
    setTimeout(focusCode, 0);
  });
  for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, touch, true);
  function clock() {
    const t = F.hallTime();
    $("clock-time").textContent = t.hh + ":" + t.mm;
  }
  setInterval(clock, 1000);

  F.connect({
    full: function (m) {
      clock();
      render(m.kiosk);
      for (const code in m.services) setService(code, m.services[code]);
      $("notice-text").textContent = m.notice || "";
      $("notice").hidden = !m.notice;
      focusCode();
    },
    patch: function (m) {
      if (!meta || !m.services) return;
      for (const code in m.services) setService(code, m.services[code]);
    },
    other: function (m) {
      if (m.t === "printed") printed(m);
      else if (m.t === "notice") {
        $("notice-text").textContent = m.text;
        $("notice").hidden = !m.text;
      }
    },
  });
  focusCode();
  touch();
})();
