/* A big screen: the newest call large and flashing, recent calls, queues, counters, notice.
 *
 * Everything shown comes from the daemon's feed (feed.js): a full state when the socket
 * opens, then patches holding only what changed. Only the touched elements are rewritten,
 * so a call costs a few text nodes, not a re-render of the page.
 */
"use strict";

(function () {
  const F = window.HallFeed;
  const FLASH_MS = 6000; // how long the newest call flashes
  const LANG_SWAP_MS = 8000; // language "both": zh and en take turns this long each
  const NOTICE_PX_PER_S = 120; // the notice's scrolling speed, whatever its length

  const STATUS = {
    called: ["", ""],
    serving: ["办理中", "Serving"],
    done: ["已办结", "Done"],
    no_show: ["过号", "Missed"],
    suspended: ["暂挂", "On hold"],
    cancelled: ["已取消", "Cancelled"],
    waiting: ["", ""],
  };
  const COUNTER_STATE = { open: ["空闲", "Free"], paused: ["暂停服务", "Paused"], closed: ["未开放", "Closed"] };
  const WEEKDAYS_ZH = ["日", "一", "二", "三", "四", "五", "六"];
  const WEEKDAYS_EN = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  const MONTHS_EN = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  const $ = (id) => document.getElementById(id);
  const body = document.body;
  let meta = null;
  let counterNames = {};
  let flashTimer = 0;
  let flashAnimation = null;
  const chime = F.params.has("chime") ? makeChime() : null;

  // -- rendering -------------------------------------------------------------------------
  function applyMeta(m) {
    meta = m;
    body.classList.remove("landscape", "portrait", "lang-zh", "lang-en", "lang-both");
    body.classList.add(m.orientation, "lang-" + m.language);
    F.setBi($("hall"), m.hall.name, m.hall.name_en);
    $("title").textContent = m.title;
    counterNames = {};
    for (const c of m.counters) counterNames[c.id] = c;

    $("recent").replaceChildren(); // its rows name counters: rebuilt with the new names
    const rows = $("queues");
    rows.replaceChildren();
    for (const s of m.services) {
      const tr = F.el("tr");
      tr.dataset.service = s.code;
      const name = F.el("td", "name");
      name.appendChild(F.bi(s.name, s.name_en));
      tr.append(name, F.el("td", "waiting"), F.el("td", "wait"));
      rows.appendChild(tr);
    }

    const grid = $("counters");
    grid.replaceChildren();
    const n = m.counters.length;
    grid.style.setProperty("--cols", String(n <= 6 ? 3 : n <= 12 ? 4 : 6));
    for (const c of m.counters) {
      const cell = F.el("div", "counter");
      cell.dataset.counter = c.id;
      const name = F.el("div", "cname");
      name.appendChild(F.bi(c.name, c.name_en));
      cell.append(name, F.el("div", "cticket"), F.el("div", "cstate"));
      grid.appendChild(cell);
    }
  }

  // A bilingual label, rewritten only when it changes: a patch touches a few cells, and
  // leaving the rest alone spares the page their style, layout and paint.
  function setBi(node, zh, en) {
    if (node.dataset.zh === zh && node.dataset.en === en) return;
    node.dataset.zh = zh;
    node.dataset.en = en;
    node.replaceChildren(F.bi(zh, en));
  }

  function counterLabel(id) {
    const c = counterNames[id];
    return c ? [c.name, c.name_en || c.name] : [id + "号窗口", "Counter " + id];
  }

  function setQueue(code, q) {
    const tr = document.querySelector('#queues tr[data-service="' + code + '"]');
    if (!tr) return;
    setBi(tr.querySelector(".waiting"), q.waiting + " 人", q.waiting + "");
    // No counter open: a forecast would be a guess about when one opens; say so instead.
    const w =
      q.open === 0 ? ["暂无窗口", "no counter"] : q.waiting === 0 ? ["无需等候", "no wait"] : F.waitText(q);
    setBi(tr.querySelector(".wait"), w[0], w[1]);
    tr.dataset.waiting = q.waiting;
    tr.dataset.wait = q.wait_s;
  }

  function setCounter(id, c) {
    const cell = document.querySelector('#counters .counter[data-counter="' + id + '"]');
    if (!cell) return;
    cell.dataset.state = c.state;
    cell.dataset.ticket = c.ticket || "";
    const ticket = cell.querySelector(".cticket");
    if (ticket.textContent !== (c.ticket || "—")) ticket.textContent = c.ticket || "—";
    const label = c.ticket ? STATUS[c.status] || ["", ""] : COUNTER_STATE[c.state] || ["", ""];
    setBi(cell.querySelector(".cstate"), label[0], label[1]);
  }

  function setCalls(calls) {
    const first = calls[0];
    const now = $("now");
    if (first) {
      const name = counterLabel(first.counter);
      $("now-number").textContent = first.number;
      setBi($("now-counter"), name[0], name[1]);
      const st = STATUS[first.status] || ["", ""];
      setBi($("now-status"), st[0], st[1]);
      now.dataset.number = first.number;
      now.dataset.counter = first.counter;
      now.dataset.status = first.status;
    } else {
      $("now-number").textContent = "";
      setBi($("now-counter"), "", "");
      setBi($("now-status"), "", "");
      now.dataset.number = "";
      now.dataset.counter = "";
      now.dataset.status = "";
    }
    setRecent(calls.slice(1));
  }

  // The recent calls, keyed by number and counter. A new call moves every row down one:
  // the rows are moved, not rebuilt, so the page styles, shapes and lays out one new row
  // (rebuilding them all was the largest part of a call's cost on a screen PC's CPU).
  function setRecent(calls) {
    const list = $("recent");
    const rows = new Map();
    for (const li of Array.from(list.children)) {
      const key = li.dataset.number + "|" + li.dataset.counter;
      if (rows.has(key)) li.remove();
      else rows.set(key, li);
    }
    let at = list.firstElementChild;
    for (const call of calls) {
      const key = call.number + "|" + call.counter;
      let li = rows.get(key);
      if (li) rows.delete(key);
      else li = recentRow(call);
      if (li.dataset.status !== call.status) {
        li.dataset.status = call.status;
        const st = STATUS[call.status] || ["", ""];
        setBi(li.querySelector(".status"), st[0], st[1]);
      }
      if (li === at) at = at.nextElementSibling;
      else list.insertBefore(li, at);
    }
    for (const li of rows.values()) li.remove();
  }

  function recentRow(call) {
    const li = F.el("li", "call");
    li.dataset.number = call.number;
    li.dataset.counter = call.counter;
    const name = counterLabel(call.counter);
    const counter = F.el("span", "counter");
    counter.appendChild(F.bi(name[0], name[1]));
    li.append(F.el("span", "number", call.number), F.el("span", "arrow", "→"), counter, F.el("span", "status"));
    return li;
  }

  function flash(f) {
    const now = $("now");
    // The banner shows the flashed call even if a later patch already moved calls[0] on.
    const name = counterLabel(f.counter);
    $("now-number").textContent = f.number;
    setBi($("now-counter"), name[0], name[1]);
    $("flash-number").textContent = f.number;
    setBi($("flash-counter"), name[0], name[1]);
    now.dataset.number = f.number;
    now.dataset.counter = f.counter;
    now.dataset.flashes = String(Number(now.dataset.flashes || "0") + 1);
    now.dataset.recall = f.recall ? "1" : "0";
    // A recall flashes again from the start, even while the last flash still runs.
    if (flashAnimation) flashAnimation.cancel();
    flashAnimation = $("now-flash").animate([{ opacity: 1 }, { opacity: 0 }], {
      duration: 1000,
      iterations: FLASH_MS / 1000,
      easing: "steps(2, jump-none)", // on half a second, off half a second
    });
    now.classList.add("flash");
    clearTimeout(flashTimer);
    flashTimer = setTimeout(function () {
      now.classList.remove("flash");
    }, FLASH_MS);
    if (chime) chime();
  }

  function setNotice(text) {
    const footer = $("notice");
    const span = $("notice-text");
    footer.hidden = !text;
    if (span.textContent === text) return;
    span.textContent = text;
    span.classList.remove("scrolling");
    if (!text) return;
    // Same speed for a short or a long notice: the duration follows the distance.
    requestAnimationFrame(function () {
      const track = span.parentElement.offsetWidth;
      const width = span.offsetWidth;
      span.style.setProperty("--from", track + "px");
      span.style.setProperty("--to", -width + "px");
      span.style.animationDuration = (track + width) / NOTICE_PX_PER_S + "s";
      span.classList.add("scrolling");
    });
  }

  // -- the feed --------------------------------------------------------------------------
  function full(m) {
    applyMeta(m.screen);
    tick(); // the hall's clock, now that the daemon said what time it is
    for (const code in m.queues) setQueue(code, m.queues[code]);
    for (const id in m.counters) setCounter(id, m.counters[id]);
    setCalls(m.calls);
    setNotice(m.notice || "");
    body.dataset.seq = m.seq;
    F.mark("full:" + m.seq);
  }

  function patch(m) {
    if (!meta) return;
    if (m.queues) for (const code in m.queues) setQueue(code, m.queues[code]);
    if (m.counters) for (const id in m.counters) setCounter(id, m.counters[id]);
    if (m.calls) setCalls(m.calls);
    if (m.flash && m.flash.length) {
      const f = m.flash[m.flash.length - 1];
      flash(f);
      for (const each of m.flash) F.mark((each.recall ? "recall:" : "call:") + each.number + ":" + each.counter);
    }
    body.dataset.seq = m.seq;
  }

  function other(m) {
    if (m.t === "notice") setNotice(m.text);
  }

  // -- clock and languages ---------------------------------------------------------------
  function tick() {
    const t = F.hallTime();
    $("clock-time").textContent = t.hh + ":" + t.mm + ":" + t.ss;
    // The date changes once a day: rewriting it every second would lay out the header.
    setBi(
      $("clock-date"),
      t.year + "年" + t.month + "月" + t.day + "日 星期" + WEEKDAYS_ZH[t.weekday],
      WEEKDAYS_EN[t.weekday] + " " + t.day + " " + MONTHS_EN[t.month - 1] + " " + t.year
    );
  }

  function makeChime() {
    // Two soft tones made on the spot (no sound file to fetch). Off unless ?chime=1: the
    // broadcast module owns the hall's speakers; this is for screens with their own.
    let ctx = null;
    return function () {
      try {
        ctx = ctx || new AudioContext();
        const t0 = ctx.currentTime;
        [659.25, 523.25].forEach(function (hz, i) {
          const osc = ctx.createOscillator();
          const gain = ctx.createGain();
          osc.frequency.value = hz;
          gain.gain.setValueAtTime(0.0001, t0 + i * 0.45);
          gain.gain.exponentialRampToValueAtTime(0.3, t0 + i * 0.45 + 0.03);
          gain.gain.exponentialRampToValueAtTime(0.0001, t0 + i * 0.45 + 0.4);
          osc.connect(gain).connect(ctx.destination);
          osc.start(t0 + i * 0.45);
          osc.stop(t0 + i * 0.45 + 0.42);
        });
      } catch (e) {
        /* no audio device: the screen still works */
      }
    };
  }

  tick();
  setInterval(tick, 1000);
  setInterval(function () {
    if (body.classList.contains("lang-both")) body.classList.toggle("en-now");
  }, LANG_SWAP_MS);
  F.connect({ full: full, patch: patch, other: other });
})();
