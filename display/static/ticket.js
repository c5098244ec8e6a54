/* The applicant's page for one ticket (/t/<token>, the receipt's QR code): where it stands,
 * live. The daemon sends this ticket's view and nothing of any other ticket. */
"use strict";

(function () {
  const F = window.HallFeed;
  const $ = (id) => document.getElementById(id);
  if (!document.body.dataset.feed) return; // the not-found page: nothing to follow

  const STATES = {
    waiting: ["等候中", "Waiting"],
    called: ["请前往窗口", "Please go to the counter"],
    serving: ["正在办理", "Being served"],
    suspended: ["暂挂，请留意再次叫号", "On hold: you will be called again"],
    done: ["已办结，谢谢", "Done, thank you"],
    no_show: ["已过号，请重新取号或咨询工作人员", "Missed: please take a new ticket or ask the staff"],
    cancelled: ["已取消", "Cancelled"],
  };

  let last = null;
  let feed = null;

  function show(t) {
    const called = t.state === "called";
    const alert = called && (!last || last.state !== "called" || last.recalls !== t.recalls);
    last = t;
    const main = $("ticket");
    main.dataset.state = t.state;
    main.dataset.number = t.number;
    $("number").textContent = t.number;
    F.setBi($("service"), t.service_name, t.service_name_en);
    const st = STATES[t.state] || [t.state, t.state];
    F.setBi($("status"), st[0] + (t.priority ? " · 优先" : ""), st[1] + (t.priority ? " · priority" : ""));

    const call = $("call");
    if (t.counter !== null && (t.state === "called" || t.state === "serving")) {
      const zh = t.counter_name || t.counter + "号窗口";
      const en = t.counter_name_en || "Counter " + t.counter;
      F.setBi(call, (called ? "请到 " : "") + zh, (called ? "Please go to " : "") + en);
      call.dataset.counter = t.counter;
      call.hidden = false;
    } else {
      call.hidden = true;
      call.dataset.counter = "";
    }

    const waiting = t.state === "waiting";
    $("ahead-row").hidden = !waiting;
    $("wait-row").hidden = !waiting;
    if (waiting) {
      $("ahead").replaceChildren(F.bi(t.ahead + " 人", String(t.ahead)));
      $("ahead").dataset.ahead = t.ahead;
      const w = F.waitText(t.forecast);
      const iv = F.intervalText(t.forecast);
      $("wait").replaceChildren(
        F.bi(w[0] + (iv[0] ? "（" + iv[0] + "）" : ""), w[1] + (iv[1] ? " (" + iv[1] + ")" : ""))
      );
    }
    if (alert) {
      main.classList.remove("alert");
      void main.offsetWidth;
      main.classList.add("alert");
      if (navigator.vibrate) navigator.vibrate([300, 150, 300]);
    }
  }

  function gone() {
    // Whatever was shown goes: the number may belong to someone else tomorrow.
    $("ticket").hidden = true;
    $("ticket").replaceChildren();
    $("gone").hidden = false;
    document.body.dataset.conn = "gone";
    if (feed) feed.stop();
  }

  feed = F.connect({
    full: function (m) {
      show(m.ticket);
    },
    patch: function () {},
    other: function (m) {
      if (m.t === "ticket") show(m.ticket);
      else if (m.t === "gone") gone();
    },
  });
})();
