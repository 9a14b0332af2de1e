// agentmesh console: the live audit follow. The server renders every page;
// this script only adds the events that arrive after the page was made,
// from the console's own follow endpoint (server-sent events). It writes
// with textContent only, never as HTML.
"use strict";

(function () {
  const table = document.getElementById("events");
  if (!table || !window.EventSource) {
    return;
  }
  const body = table.tBodies[0];
  const status = document.getElementById("follow-state");
  const maxRows = 500;

  const url = new URL(table.dataset.follow, window.location.href);
  url.searchParams.set("after", table.dataset.after || "0");

  function say(text, on) {
    status.textContent = text;
    status.className = on ? "on" : "off";
  }

  function cell(tr, text) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function add(ev) {
    const tr = document.createElement("tr");
    tr.className = (ev.decision || "") + " fresh";
    tr.dataset.seq = String(ev.seq);
    const first = document.createElement("td");
    const link = document.createElement("a");
    link.href = "/audit/events/" + encodeURIComponent(String(ev.seq));
    link.textContent = ev.time;
    first.appendChild(link);
    tr.appendChild(first);
    cell(tr, ev.kind);
    cell(tr, ev.src);
    cell(tr, ev.dst);
    cell(tr, ev.what + (ev.count > 1 ? " \u00d7" + ev.count : ""));
    cell(tr, ev.decision);
    const reason = document.createElement("code");
    reason.textContent = ev.reason;
    cell(tr, "").appendChild(reason);
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > maxRows) {
      body.deleteRow(body.rows.length - 1);
    }
  }

  const source = new EventSource(url.toString());
  source.addEventListener("open", function () { say("Following: new events appear at the top.", true); });
  source.addEventListener("error", function () { say("Disconnected; reconnecting\u2026", false); });
  source.addEventListener("trouble", function (m) { say(JSON.parse(m.data), false); });
  source.addEventListener("audit", function (m) { add(JSON.parse(m.data)); });
})();
