/* The pages' shared part: one WebSocket to the daemon, reconnecting by itself.
 *
 * The daemon sends the full state as the first message of every connection and then one
 * small message per change, so a page never polls and never reloads to catch up. While
 * the socket is down the body says data-conn="reconnecting": the CSS hides the data and
 * shows a banner, because a hall screen showing stale numbers as if live sends people to
 * the wrong counter.
 */
"use strict";

(function () {
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 3000; // a restarted daemon is back within seconds; TVs should be too
  const SILENCE_MS = 40000; // the daemon beats every 15 s: this long without a word is a dead link

  let skewMs = 0; // hall clock minus this PC's clock
  let offsetMin = 480; // the hall's UTC offset, from the daemon
  const params = new URLSearchParams(location.search);
  const tracing = params.has("trace");
  const trace = [];

  function setConn(state) {
    document.body.dataset.conn = state;
  }

  function connect(handlers) {
    const path = document.body.dataset.feed;
    if (!path) return null;
    let ws = null;
    let retry = RETRY_MIN_MS;
    let watchdog = 0;
    let stopped = false;

    function arm() {
      clearTimeout(watchdog);
      watchdog = setTimeout(function () {
        if (ws) ws.close(); // onclose reconnects
      }, SILENCE_MS);
    }

    function open() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      ws = new WebSocket(scheme + location.host + path);
      ws.onopen = function () {
        retry = RETRY_MIN_MS;
        arm();
      };
      ws.onmessage = function (ev) {
        arm();
        let m;
        try {
          m = JSON.parse(ev.data);
        } catch (e) {
          return;
        }
        if (typeof m.now === "number") {
          skewMs = m.now - Date.now();
          if (typeof m.utc_offset_min === "number") offsetMin = m.utc_offset_min;
        }
        if (m.t === "full") {
          if (m.build && upgraded(m.build)) return;
          setConn("online");
          handlers.full(m);
        } else if (m.t === "patch") {
          handlers.patch(m);
        } else if (m.t !== "hb" && handlers.other) {
          handlers.other(m);
        }
      };
      ws.onclose = function () {
        clearTimeout(watchdog);
        ws = null;
        if (stopped) return;
        setConn("reconnecting");
        // Jitter: a hall's screens should not all knock at the same instant after a restart.
        setTimeout(open, retry + Math.random() * retry * 0.5);
        retry = Math.min(retry * 2, RETRY_MAX_MS);
      };
    }

    open();
    return {
      stop: function () {
        stopped = true;
        if (ws) ws.close();
      },
    };
  }

  // The daemon's page files changed (an upgrade): load the new ones, once per version.
  function upgraded(build) {
    const mine = document.body.dataset.build;
    if (!mine || build === mine) return false;
    const key = "hall-reloaded-for";
    try {
      if (sessionStorage.getItem(key) === build) return false;
      sessionStorage.setItem(key, build);
    } catch (e) {
      return false;
    }
    location.reload();
    return true;
  }

  // The hall's local time as fields, whatever this PC's clock and time zone say.
  function hallTime() {
    const d = new Date(Date.now() + skewMs + offsetMin * 60000);
    return {
      year: d.getUTCFullYear(),
      month: d.getUTCMonth() + 1,
      day: d.getUTCDate(),
      weekday: d.getUTCDay(),
      hh: String(d.getUTCHours()).padStart(2, "0"),
      mm: String(d.getUTCMinutes()).padStart(2, "0"),
      ss: String(d.getUTCSeconds()).padStart(2, "0"),
    };
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // A bilingual label; CSS shows zh, en or both as the page's language says.
  function bi(zh, en) {
    const f = document.createDocumentFragment();
    f.appendChild(el("span", "zh", zh));
    f.appendChild(el("span", "en", en || zh));
    return f;
  }

  function setBi(node, zh, en) {
    node.replaceChildren(bi(zh, en));
  }

  function minutes(seconds) {
    return Math.max(1, Math.round(seconds / 60));
  }

  // "约 12 分钟" / "about 12 min"; under a minute is "即将" / "soon".
  function waitText(f) {
    if (!f || f.wait_s < 60) return ["即将", "soon"];
    const m = minutes(f.wait_s);
    return ["约 " + m + " 分钟", "about " + m + " min"];
  }

  function intervalText(f) {
    if (!f || f.p90_s < 60) return ["", ""];
    const lo = Math.floor(f.p10_s / 60);
    const hi = minutes(f.p90_s);
    return [lo + "–" + hi + " 分钟", lo + "–" + hi + " min"];
  }

  // For bench/display_bench.py (?trace): when the DOM shows a change, and when the frame
  // after it starts (the change is on screen by the end of that frame), in epoch ms.
  function mark(label) {
    if (!tracing) return;
    const report = function (what, t) {
      trace.push([what, t]);
      if (typeof window.benchReport === "function") window.benchReport(what, t);
    };
    report(label, performance.timeOrigin + performance.now());
    requestAnimationFrame(function () {
      report("frame:" + label, performance.timeOrigin + performance.now());
    });
  }

  window.HallFeed = {
    connect: connect,
    hallTime: hallTime,
    el: el,
    bi: bi,
    setBi: setBi,
    waitText: waitText,
    intervalText: intervalText,
    mark: mark,
    trace: trace,
    params: params,
  };
})();
