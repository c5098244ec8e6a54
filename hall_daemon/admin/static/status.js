// The live status page: one full status per change over /admin/ws, rendered into the
// tables; the buttons post admin actions (admin.js adds the CSRF token).
"use strict";

(function () {
  const STATE = {
    open: ["开放", "open"], paused: ["暂停", "paused"], closed: ["关闭", "closed"],
    waiting: ["等候", "waiting"], called: ["已呼叫", "called"], serving: ["办理中", "serving"],
    suspended: ["挂起", "suspended"], online: ["在线", "online"], offline: ["离线", "offline"],
    fault: ["故障", "fault"],
  };

  function esc(v) {
    return String(v === null || v === undefined ? "" : v).replace(/[&<>"']/g, (c) => ({
      "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
    })[c]);
  }
  function bi(zh, en) {
    return '<span class="zh">' + esc(zh) + '</span><span class="en">' + esc(en) + "</span>";
  }
  function st(s) {
    const l = STATE[s] || [s, s];
    return '<span class="state-' + esc(s) + '" data-state="' + esc(s) + '">' + bi(l[0], l[1]) + "</span>";
  }
  function dur(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + " min";
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }
  function forecast(f) {
    if (!f) return "–";
    return dur(f.wait_s) + ' <span class="muted">(' + dur(f.p10_s) + "–" + dur(f.p90_s) + ")</span>";
  }
  function btn(action, data, zh, en) {
    const attrs = Object.keys(data).map((k) => " data-" + k + '="' + esc(data[k]) + '"').join("");
    return '<button type="button" data-action="' + esc(action) + '"' + attrs + ">" + bi(zh, en) + "</button>";
  }
  function bytes(n) {
    if (n === null || n === undefined) return "–";
    return (n / 1e9).toFixed(1) + " GB";
  }

  function render(s) {
    document.getElementById("services").innerHTML = s.services.map((q) =>
      '<tr data-service="' + esc(q.service) + '"><td>' + esc(q.service) + " " + bi(q.name, q.name_en || q.name) +
      '</td><td class="num waiting">' + q.waiting + '</td><td class="num">' + dur(q.longest_wait_s) +
      '</td><td class="num">' + forecast(q.forecast) + '</td><td class="num">' + q.issued + "</td></tr>"
    ).join("");

    document.getElementById("counters").innerHTML = s.counters.map((c) => {
      const acts = [];
      if (c.state !== "open") acts.push(btn("counter.open", { counter: c.counter }, "开放", "Open"));
      if (c.state === "open") acts.push(btn("counter.pause", { counter: c.counter }, "暂停", "Pause"));
      if (c.state !== "closed") acts.push(btn("counter.close", { counter: c.counter }, "关闭", "Close"));
      if (c.ticket) acts.push(btn("call.replay", { counter: c.counter }, "重播", "Replay"));
      return '<tr data-counter="' + c.counter + '"><td>' + bi(c.name, c.name_en || c.name) +
        '</td><td class="state">' + st(c.state) + '</td><td class="ticket">' + esc(c.ticket || "–") +
        (c.ticket_state ? " " + st(c.ticket_state) : "") + "</td><td>" + esc(c.since || "–") +
        '</td><td class="acts">' + acts.join(" ") + "</td></tr>";
    }).join("");

    document.getElementById("tickets").innerHTML = s.tickets.map((t) => {
      const acts = [btn("ticket.cancel", { ticket: t.number }, "取消", "Cancel"),
        btn("ticket.reprint", { ticket: t.number }, "补打", "Reprint")];
      if (t.counter && (t.state === "called" || t.state === "serving")) {
        acts.push(btn("call.replay", { ticket: t.number }, "重播", "Replay"));
      }
      return '<tr data-ticket="' + esc(t.number) + '"><td>' + esc(t.number) + (t.priority ? " ★" : "") +
        "</td><td>" + esc(t.service) + '</td><td class="state">' + st(t.state) +
        (t.counter ? " → " + esc(t.counter) : "") + '</td><td class="num">' +
        (t.ahead === null ? "–" : t.ahead) + "</td><td>" + esc(t.issued) + " (" + dur(t.waited_s) +
        ')</td><td class="acts">' + acts.join(" ") + "</td></tr>";
    }).join("");

    document.getElementById("devices").innerHTML = s.devices.map((d) =>
      '<tr data-device="' + esc(d.device) + '"><td>' + esc(d.device) + ' <span class="muted">' + esc(d.kind || "") +
      " " + esc(d.port || "") + "</span></td><td>" + st(d.state || (d.online ? "online" : "offline")) +
      '</td><td class="num">' + (d.last_seen_s_ago === null ? "–" : dur(d.last_seen_s_ago)) +
      '</td><td class="num">' + (d.frames_good === null ? "–" : d.frames_good + " / " + d.frames_bad) +
      '</td><td class="num">' + (d.unresponsive === null ? "–" : d.unresponsive) + "</td><td>" + esc(d.detail || "") + "</td></tr>"
    ).join("") || "<tr><td colspan=6 class=muted>" + bi("无串口设备", "no serial devices") + "</td></tr>";

    const rows = [];
    const m = s.mqtt;
    if (m && m.enabled) {
      rows.push([bi("MQTT 连接", "MQTT link"), (m.connected ? '<span class="ok">' + bi("已连接", "connected") : '<span class="bad">' + bi("未连接", "disconnected")) + "</span> " + esc(m.broker)]);
      rows.push([bi("待发事件", "Outbox"), esc(m.outbox_depth) + (m.oldest_unsent ? " · " + bi("最早", "oldest") + " " + esc(m.oldest_unsent) : "")]);
    } else rows.push([bi("MQTT", "MQTT"), bi("未启用", "disabled")]);
    const v = s.voice;
    if (v && v.enabled) {
      rows.push([bi("语音", "Voice"), (v.ok ? '<span class="ok">OK</span>' : '<span class="bad">' + bi("故障", "fault") + "</span> " + esc(v.last_error)) +
        " · " + bi("队列", "queue") + " " + esc(v.queue) + " · " + bi("故障次数", "faults") + " " + esc(v.faults)]);
    } else rows.push([bi("语音", "Voice"), bi("未启用", "disabled")]);
    const p = s.printer;
    if (p) {
      const bits = Object.keys(p).filter((k) => typeof p[k] !== "object").map((k) => esc(k) + ": " + esc(p[k]));
      rows.push([bi("打印机", "Printer"), bits.join(" · ")]);
    }
    const d = s.disk || {};
    rows.push([bi("磁盘", "Disk"), esc(d.path) + " · " + bi("剩余", "free") + " " + bytes(d.free_bytes) + (d.free_percent !== undefined ? " (" + d.free_percent + " %)" : "")]);
    rows.push([bi("写入", "Writer"), (s.writer.healthy ? '<span class="ok">OK</span>' : '<span class="bad">' + bi("故障", "failing") + "</span> " + esc(s.writer.problem || "")) + " · seq " + esc(s.seq) + " · " + esc(s.writer.last_commit_ms) + " ms"]);
    rows.push([bi("事件循环延迟", "Loop lag"), esc(s.loop_lag_ms) + " ms"]);
    document.getElementById("system").innerHTML = rows.map((r) => "<tr><th>" + r[0] + "</th><td>" + r[1] + "</td></tr>").join("");

    const cur = document.getElementById("notice-current");
    cur.textContent = s.notice ? "“" + s.notice + "”" : (s.notice_default ? "(" + s.notice_default + ")" : "");
    cur.dataset.notice = s.notice;
  }

  function say(ok, text) {
    const el = document.getElementById("result");
    el.hidden = false;
    el.className = "flash " + (ok ? "ok" : "bad");
    el.textContent = text;
  }

  async function act(action, data) {
    const r = await adminPost("/admin/api/actions/" + action, data);
    if (r.ok) {
      const evs = (r.body.events || []).map((e) => e.type + (e.data.number ? " " + e.data.number : "")).join(", ");
      let text = action + ": " + (evs || "—");
      if (r.body.ticket) text += " → " + r.body.ticket.number;
      say(true, text);
    } else {
      say(false, action + ": " + (r.body && r.body.error ? r.body.error.message : "HTTP " + r.status));
    }
    return r;
  }

  function connect(delay) {
    const conn = document.getElementById("conn");
    const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + window.location.host + "/admin/ws");
    ws.onopen = () => { delay = 500; };
    ws.onmessage = (m) => {
      const s = JSON.parse(m.data);
      if (s.t === "status") {
        render(s);
        conn.dataset.conn = "live";
        conn.innerHTML = bi("实时", "live");
      }
    };
    ws.onclose = (e) => {
      conn.dataset.conn = "connecting";
      conn.innerHTML = bi("重新连接中…", "reconnecting…");
      if (e.code === 4401) { window.location.href = "/admin/login?next=/admin/"; return; }
      setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.body.addEventListener("click", function (e) {
      const b = e.target.closest("button[data-action]");
      if (!b) return;
      const data = {};
      if (b.dataset.counter) data.counter = Number(b.dataset.counter);
      if (b.dataset.ticket) data.ticket = b.dataset.ticket;
      act(b.dataset.action, data);
    });
    document.getElementById("form-issue").addEventListener("submit", function (e) {
      e.preventDefault();
      act("ticket.issue", { service: this.service.value, priority: this.priority.checked });
    });
    document.getElementById("form-notice").addEventListener("submit", function (e) {
      e.preventDefault();
      act("notice.set", { text: this.text.value });
    });
    const tf = document.getElementById("form-ticket");
    tf.addEventListener("click", function (e) {
      const b = e.target.closest("button[data-do]");
      if (!b) return;
      const data = { ticket: tf.ticket.value.trim() };
      if (b.dataset.do === "ticket.move") data.service = tf.service.value;
      act(b.dataset.do, data);
    });
    connect(500);
  });
})();
