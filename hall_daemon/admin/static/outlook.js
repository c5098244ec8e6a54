// The outlook page: one table per service, a row per day, a column per hour, each cell the
// expected wait in minutes shaded by how busy the hour is. Refreshed every five minutes.
"use strict";

(function () {
  const WEEKDAYS_ZH = ["日", "一", "二", "三", "四", "五", "六"];
  const WEEKDAYS_EN = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children || []) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    return e;
  }
  function bi(zh, en) {
    return [el("span", { class: "zh", text: zh }), el("span", { class: "en", text: en })];
  }
  function minutes(s) {
    return Math.round(s / 60);
  }

  // Shades are on one scale for the whole hall (at least half an hour for the darkest), so
  // a quiet service looks quiet beside a busy one.
  function worstWait(days) {
    let worst = 1800;
    for (const d of days) for (const h of d.hours) for (const x of h.services) {
      worst = Math.max(worst, x.forecast.wait_s);
    }
    return worst;
  }

  function table(service, days, worst) {
    const hours = new Set();
    const cells = {}; // date -> hour -> {crowd, forecast}
    for (const d of days) {
      cells[d.date] = {};
      for (const h of d.hours) {
        const mine = h.services.find((x) => x.service === service.code);
        if (!mine) continue;
        hours.add(h.hour);
        cells[d.date][h.hour] = mine;
      }
    }
    const cols = [...hours].sort((a, b) => a - b);
    if (!cols.length) return null;
    const head = el("tr", {}, [el("th", {}, bi("日期", "Day"))].concat(
      cols.map((h) => el("th", { class: "num", text: String(h).padStart(2, "0") + ":00" }))));
    const rows = days.map((d) => {
      const wd = new Date(d.date + "T12:00:00Z").getUTCDay();
      const label = el("th", {}, [d.date.slice(5) + " "].concat(bi("周" + WEEKDAYS_ZH[wd], WEEKDAYS_EN[wd])));
      return el("tr", { "data-date": d.date }, [label].concat(cols.map((h) => {
        const c = cells[d.date][h];
        if (!c) return el("td", { class: "num muted", text: "" });
        const f = c.forecast;
        const share = Math.min(f.wait_s / worst, 1);
        const tip = `${c.crowd === null ? "?" : c.crowd} 人/people · ${minutes(f.p10_s)}–${minutes(f.p90_s)} min`;
        const td = el("td", {
          class: "num",
          "data-hour": String(h),
          "data-wait": String(f.wait_s),
          title: tip,
          text: String(minutes(f.wait_s)),
        });
        // Through the CSSOM: the admin pages' CSP refuses inline style attributes.
        td.style.backgroundColor = `rgba(192, 57, 43, ${(0.06 + 0.6 * share).toFixed(2)})`;
        return td;
      })));
    });
    const name = service.name_en ? bi(service.name, service.name_en) : [service.name];
    return el("section", { class: "outlook-service", "data-service": service.code }, [
      el("h2", {}, [service.code + " "].concat(name)),
      el("table", {}, [el("thead", {}, [head]), el("tbody", {}, rows)]),
    ]);
  }

  async function load() {
    const status = document.getElementById("outlook-status");
    try {
      const r = await fetch("/admin/api/outlook", { credentials: "same-origin" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const view = await r.json();
      const root = document.getElementById("outlook");
      root.replaceChildren();
      if (!view.outlook) {
        status.replaceChildren(...bi("本厅的预测没有错峰数据。", "This hall's forecaster has no outlook."));
        status.dataset.state = "empty";
        return;
      }
      const worst = worstWait(view.outlook.days);
      for (const s of view.services) {
        const t = table(s, view.outlook.days, worst);
        if (t) root.appendChild(t);
      }
      status.replaceChildren(...bi("方法：" + view.outlook.method, "Method: " + view.outlook.method));
      status.dataset.state = "ready";
    } catch (err) {
      status.textContent = String(err);
      status.dataset.state = "error";
    }
  }

  load();
  setInterval(load, 5 * 60 * 1000);
})();
