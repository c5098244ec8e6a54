// The statistics page: asks /admin/api/stats for a period, fills the tables and draws the
// hourly charts as inline SVG (no library). Period and CSV links follow the URL's query.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  let report = null;

  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children || []) e.appendChild(c);
    return e;
  }
  function bi(zh, en) {
    const f = document.createDocumentFragment();
    f.appendChild(el("span", { class: "zh", text: zh }));
    f.appendChild(el("span", { class: "en", text: en }));
    return f;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  // Seconds as m:ss (h:mm:ss from an hour on); "—" when there is nothing to measure.
  function dur(s) {
    if (s === null || s === undefined) return "—";
    const t = Math.round(s);
    const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), sec = t % 60;
    const ss = String(sec).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
  }
  function num(v) {
    return v === null || v === undefined ? "—" : String(v);
  }

  // -- period and links --------------------------------------------------------------
  const root = document.getElementById("stats-root");
  const today = root.dataset.today;
  const fromInput = document.getElementById("from");
  const toInput = document.getElementById("to");

  function addDays(iso, n) {
    const d = new Date(iso + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }
  function currentPeriod() {
    const q = new URLSearchParams(window.location.search);
    return { from: q.get("from") || today, to: q.get("to") || q.get("from") || today };
  }
  function setLinks(p) {
    for (const by of ["service", "counter", "ticket"]) {
      const q = new URLSearchParams({ from: p.from, to: p.to, by: by });
      document.getElementById("csv-" + by).href = "/admin/stats.csv?" + q.toString();
    }
  }
  function go(p) {
    const q = new URLSearchParams({ from: p.from, to: p.to });
    window.history.pushState(null, "", "?" + q.toString());
    load();
  }
  document.getElementById("period").addEventListener("submit", function (e) {
    e.preventDefault();
    go({ from: fromInput.value, to: toInput.value });
  });
  for (const b of document.querySelectorAll("button[data-days]")) {
    b.addEventListener("click", function () {
      go({ from: addDays(today, 1 - Number(b.dataset.days)), to: today });
    });
  }
  window.addEventListener("popstate", load);
  document.getElementById("scope").addEventListener("change", drawCharts);

  async function load() {
    const p = currentPeriod();
    fromInput.value = p.from;
    toInput.value = p.to;
    setLinks(p);
    const status = document.getElementById("stats-status");
    const error = document.getElementById("stats-error");
    status.dataset.state = "loading";
    status.hidden = false;
    error.hidden = true;
    let res, body;
    try {
      res = await fetch("/admin/api/stats?" + new URLSearchParams(p).toString(), {
        credentials: "same-origin",
      });
      if (res.status === 401) {
        window.location.href = "/admin/login?next=" + encodeURIComponent(window.location.pathname);
        return;
      }
      body = await res.json();
    } catch (e) {
      body = { message: String(e) };
      res = { ok: false };
    }
    if (!res.ok) {
      error.textContent = body.message || body.error || "error";
      error.hidden = false;
      status.dataset.state = "error";
      status.hidden = true;
      return;
    }
    report = body;
    render();
    status.dataset.state = "ready";
    status.hidden = true;
  }

  // -- tables --------------------------------------------------------------------------
  const COLUMNS = [
    ["issued", "取号", "Issued", (r) => num(r.issued)],
    ["called", "叫号", "Called", (r) => num(r.called)],
    ["served", "办结", "Served", (r) => num(r.served)],
    ["no_show", "过号", "No-show", (r) => num(r.no_show)],
    ["cancelled", "取消", "Cancelled", (r) => num(r.cancelled)],
    ["transferred", "转移", "Transferred", (r) => num(r.transferred)],
    ["unfinished", "未办结", "Unfinished", (r) => num(r.unfinished)],
    ["wait_mean", "平均等候", "Mean wait", (r) => dur(r.wait.mean)],
    ["wait_median", "等候中位", "Median wait", (r) => dur(r.wait.median)],
    ["wait_p90", "等候P90", "Wait p90", (r) => dur(r.wait.p90)],
    ["handle_mean", "平均办理", "Mean handling", (r) => dur(r.handle.mean)],
    ["handle_median", "办理中位", "Median handling", (r) => dur(r.handle.median)],
    ["handle_p90", "办理P90", "Handling p90", (r) => dur(r.handle.p90)],
    ["ratings", "评价数", "Ratings", (r) => num(r.ratings.n)],
    ["rating_mean", "平均评分", "Mean rating", (r) => num(r.ratings.mean)],
    ["rating_dist", "1–5分分布", "1–5 stars", (r) => r.ratings.dist.join("/")],
    ["best_served", "历史同期最多办结", "Best served", (r) => num(r.best.served)],
    ["best_wait", "历史同期最短等候", "Best mean wait", (r) => dur(r.best.mean_wait)],
  ];
  const COUNTER_COLUMNS = [
    ["ratio", "办理时长/预期", "Handling vs expected", (r) => (r.outlier ? r.outlier.ratio + "×" : "—")],
    ["z", "z", "z", (r) => (r.outlier ? num(r.outlier.z) : "—")],
    ["flag", "异常", "Outlier", (r) => (r.outlier && r.outlier.flag ? "⚠" : "")],
  ];

  function table(id, keyHead, rows, columns) {
    const t = document.getElementById(id);
    t.replaceChildren();
    const head = el("tr", {}, [el("th", {}, [bi(keyHead[0], keyHead[1])])]);
    for (const [key, zh, en] of columns) {
      head.appendChild(el("th", { class: "num", "data-col": key }, [bi(zh, en)]));
    }
    t.appendChild(el("thead", {}, [head]));
    const body = el("tbody");
    for (const r of rows) {
      const flagged = r.outlier && r.outlier.flag;
      const tr = el("tr", { "data-key": String(r.key), class: flagged ? "outlier" : "" });
      const zh = String(r.name).includes(String(r.key)) ? r.name : `${r.key} ${r.name}`;
      tr.appendChild(el("td", { "data-col": "name" }, [bi(zh, r.name_en || r.name)]));
      for (const [key, , , get] of columns) {
        const cls = "num" + (key.startsWith("best") ? " best" : "") + (key === "flag" && flagged ? " flag" : "");
        tr.appendChild(el("td", { class: cls, "data-col": key, text: get(r) }));
      }
      body.appendChild(tr);
    }
    t.appendChild(body);
  }

  function summary() {
    const h = report.hall;
    const box = document.getElementById("summary");
    box.replaceChildren();
    const figs = [
      ["issued", "取号", "Issued", num(h.issued), null],
      ["served", "办结", "Served", num(h.served), num(h.best.served)],
      ["no_show", "过号", "No-shows", num(h.no_show), null],
      ["cancelled", "取消", "Cancelled", num(h.cancelled), null],
      ["wait_mean", "平均等候", "Mean wait", dur(h.wait.mean), dur(h.best.mean_wait)],
      ["wait_p90", "等候P90", "Wait p90", dur(h.wait.p90), null],
      ["handle_mean", "平均办理", "Mean handling", dur(h.handle.mean), null],
      ["rating_mean", "平均评分", "Mean rating", num(h.ratings.mean), null],
    ];
    for (const [key, zh, en, value, best] of figs) {
      const f = el("div", { class: "fig", "data-fig": key }, [bi(zh, en), el("b", { text: value })]);
      if (best !== null) {
        const b = el("span", { class: "best" }, [bi("历史同期最好 ", "best ")]);
        b.appendChild(document.createTextNode(best));
        f.appendChild(b);
      }
      box.appendChild(f);
    }
    const label = report.from === report.to ? report.from : `${report.from} – ${report.to}`;
    document.getElementById("period-label").textContent = label;
    for (const b of document.querySelectorAll(".lookback")) b.textContent = report.lookback_weeks;
  }

  function outliers() {
    const o = report.outliers;
    const note = document.getElementById("model-note");
    note.textContent = o.model.fitted
      ? `${o.model.tickets} 张已办结 / served tickets; ${o.tickets_flagged} 张异常 / flagged`
      : `未拟合 / no model: ${o.model.reason}`;
    const ct = document.getElementById("table-outlier-counters");
    ct.replaceChildren();
    if (o.counters.length) {
      ct.appendChild(el("thead", {}, [el("tr", {}, [
        el("th", {}, [bi("窗口", "Counter")]),
        el("th", { class: "num" }, [bi("办结", "Served")]),
        el("th", { class: "num" }, [bi("办理时长/预期", "Handling vs expected")]),
        el("th", { class: "num" }, [bi("z", "z")]),
      ])]));
      const body = el("tbody");
      for (const c of o.counters) {
        body.appendChild(el("tr", { "data-counter": String(c.counter), class: "outlier" }, [
          el("td", { text: String(c.counter) }),
          el("td", { class: "num", text: String(c.n) }),
          el("td", { class: "num flag", text: c.ratio + "×" }),
          el("td", { class: "num", text: String(c.z) }),
        ]));
      }
      ct.appendChild(body);
    }
    const tt = document.getElementById("table-outlier-tickets");
    tt.replaceChildren();
    if (!o.tickets.length) return;
    tt.appendChild(el("thead", {}, [el("tr", {}, [
      el("th", {}, [bi("日期", "Day")]),
      el("th", {}, [bi("号码", "Ticket")]),
      el("th", {}, [bi("服务", "Service")]),
      el("th", { class: "num" }, [bi("窗口", "Counter")]),
      el("th", { class: "num" }, [bi("时", "Hour")]),
      el("th", { class: "num" }, [bi("办理", "Handling")]),
      el("th", { class: "num" }, [bi("预期", "Expected")]),
      el("th", { class: "num" }, [bi("z", "z")]),
    ])]));
    const body = el("tbody");
    for (const t of o.tickets) {
      body.appendChild(el("tr", { "data-ticket": `${t.day}/${t.number}`, class: "outlier" }, [
        el("td", { text: t.day }),
        el("td", { text: t.number }),
        el("td", { text: t.service }),
        el("td", { class: "num", text: num(t.counter) }),
        el("td", { class: "num", text: num(t.hour) }),
        el("td", { class: "num flag", text: dur(t.handle_s) }),
        el("td", { class: "num", text: dur(t.expected_s) }),
        el("td", { class: "num", text: String(t.z) }),
      ]));
    }
    tt.appendChild(body);
  }

  // -- charts --------------------------------------------------------------------------
  function scopes() {
    const sel = document.getElementById("scope");
    const keep = sel.value;
    sel.replaceChildren();
    sel.appendChild(el("option", { value: "hall", text: "全厅 Whole hall" }));
    for (const s of report.services) {
      sel.appendChild(el("option", { value: "s:" + s.key, text: `${s.key} ${s.name} ${s.name_en}` }));
    }
    for (const c of report.counters) {
      sel.appendChild(el("option", { value: "c:" + c.key, text: `${c.name} ${c.name_en}` }));
    }
    if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  }
  function scopeRow() {
    const v = document.getElementById("scope").value || "hall";
    if (v === "hall") return report.hall;
    const [kind, key] = [v.slice(0, 2), v.slice(2)];
    const rows = kind === "s:" ? report.services : report.counters;
    return rows.find((r) => String(r.key) === key) || report.hall;
  }

  const W = 640, H = 240, L = 44, R = 10, T = 12, B = 28;

  // The smallest 4 × (1, 2, 2.5 or 5 × 10^k) at or above `top`: gridlines on round numbers.
  function niceMax(top) {
    const raw = Math.max(top, 1) / 4;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((k) => k * mag).find((v) => v >= raw - 1e-9);
    return Math.max(4, step * 4);
  }

  function frame(hours, ymax, yfmt) {
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img" });
    const plotH = H - T - B;
    for (let i = 0; i <= 4; i++) {
      const y = T + plotH - (plotH * i) / 4;
      s.appendChild(svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: "axis" }));
      const t = svg("text", { x: L - 4, y: y + 4, "text-anchor": "end" });
      t.textContent = yfmt((ymax * i) / 4);
      s.appendChild(t);
    }
    const step = Math.min((W - L - R) / Math.max(hours.length, 1), 64);
    hours.forEach((h, i) => {
      const t = svg("text", { x: L + step * (i + 0.5), y: H - 8, "text-anchor": "middle" });
      t.textContent = String(h.hour);
      s.appendChild(t);
    });
    return { s, step, y: (v) => T + plotH - (plotH * v) / (ymax || 1) };
  }

  function drawCounts(hours) {
    const box = document.getElementById("chart-counts");
    const top = Math.max(1, ...hours.map((h) => Math.max(h.issued, h.served, h.best_served || 0)));
    const ymax = niceMax(top);
    const { s, step, y } = frame(hours, ymax, (v) => String(Math.round(v)));
    const bw = step * 0.36;
    hours.forEach((h, i) => {
      const x0 = L + step * i + step * 0.12;
      const bars = [["issued", h.issued, x0], ["served", h.served, x0 + bw]];
      for (const [kind, v, x] of bars) {
        const r = svg("rect", {
          x: x, y: y(v), width: bw, height: y(0) - y(v), class: "bar-" + kind,
          "data-hour": h.hour, "data-kind": kind, "data-value": v,
        });
        const tip = svg("title");
        tip.textContent = `${h.hour}:00 ${kind} ${v}`;
        r.appendChild(tip);
        s.appendChild(r);
      }
      if (h.best_served !== null && h.best_served !== undefined) {
        s.appendChild(svg("line", {
          x1: x0 + bw - 2, x2: x0 + 2 * bw + 2, y1: y(h.best_served), y2: y(h.best_served),
          class: "best-served", "data-hour": h.hour, "data-value": h.best_served,
        }));
      }
    });
    box.replaceChildren(s);
  }

  function drawWait(hours) {
    const box = document.getElementById("chart-wait");
    const mins = (v) => (v === null || v === undefined ? null : v / 60);
    const top = Math.max(...hours.map((h) => Math.max(mins(h.mean_wait) || 0, mins(h.best_mean_wait) || 0)));
    const ymax = top <= 2 ? 2 : niceMax(top);
    const { s, step, y } = frame(hours, ymax, (v) => (ymax <= 2 ? v.toFixed(1) : String(v)));
    function path(key, cls) {
      let d = "";
      hours.forEach((h, i) => {
        const v = mins(h[key]);
        if (v === null) return;
        d += (d ? " L" : "M") + `${(L + step * (i + 0.5)).toFixed(1)} ${y(v).toFixed(1)}`;
      });
      if (d) s.appendChild(svg("path", { d: d, class: cls }));
    }
    path("best_mean_wait", "line-best");
    path("mean_wait", "line-wait");
    hours.forEach((h, i) => {
      if (h.best_mean_wait === null || h.best_mean_wait === undefined) return;
      const yb = y(mins(h.best_mean_wait));
      s.appendChild(svg("line", {
        x1: L + step * (i + 0.2), x2: L + step * (i + 0.8), y1: yb, y2: yb,
        class: "line-best", "data-hour": h.hour, "data-value": h.best_mean_wait,
      }));
    });
    hours.forEach((h, i) => {
      if (h.mean_wait === null) return;
      const c = svg("circle", {
        cx: L + step * (i + 0.5), cy: y(mins(h.mean_wait)), r: 3, class: "dot-wait",
        "data-hour": h.hour, "data-value": h.mean_wait,
      });
      const tip = svg("title");
      tip.textContent = `${h.hour}:00 ${dur(h.mean_wait)}`;
      c.appendChild(tip);
      s.appendChild(c);
    });
    box.replaceChildren(s);
  }

  function drawCharts() {
    if (!report) return;
    const hours = scopeRow().hourly;
    drawCounts(hours);
    drawWait(hours);
  }

  function render() {
    summary();
    table("table-services", ["服务", "Service"], report.services, COLUMNS);
    // Counters issue nothing: the dispensers do.
    const counterCols = COLUMNS.filter((c) => c[0] !== "issued").concat(COUNTER_COLUMNS);
    table("table-counters", ["窗口", "Counter"], report.counters, counterCols);
    outliers();
    scopes();
    drawCharts();
  }

  load();
})();
