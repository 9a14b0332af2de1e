// agentmesh console: the live audit follow and the policy editor's live
// check. The server renders every page and every form works without this
// script; it only adds the events that arrive after the page was made (from
// the console's own follow endpoint, as server-sent events) and checks a
// policy draft as it is typed. It writes with textContent only, never as
// HTML.
"use strict";

(function () {
  const form = document.getElementById("policy-form");
  if (!form || !window.fetch) {
    return;
  }
  const editor = document.getElementById("document");
  const out = document.getElementById("live-check");
  const csrf = form.elements.namedItem("csrf").value;
  let timer = null;
  let seq = 0;

  function list(title, items) {
    if (!items || items.length === 0) {
      return;
    }
    const h = document.createElement("h3");
    h.textContent = title;
    out.appendChild(h);
    const ul = document.createElement("ul");
    for (const item of items) {
      const li = document.createElement("li");
      li.textContent = item;
      ul.appendChild(li);
    }
    out.appendChild(ul);
  }

  function show(res) {
    out.replaceChildren();
    out.hidden = false;
    out.className = "check " + (res.valid ? "good" : "bad");
    const h = document.createElement("h2");
    h.textContent = res.valid ? "Valid (live check)" : "Not valid (live check)";
    out.appendChild(h);
    if (res.valid) {
      const p = document.createElement("p");
      const changed = (res.diff || []).filter(function (d) { return d.op !== ""; }).length;
      p.textContent = res.summary + "; " + changed + " changed line(s) against the active version.";
      out.appendChild(p);
    }
    list("Problems", res.problems);
    list("Warnings", res.warnings);
  }

  async function check() {
    const mine = ++seq;
    const body = new URLSearchParams({ csrf: csrf, document: editor.value });
    try {
      const resp = await fetch(form.dataset.check, { method: "POST", body: body, credentials: "same-origin" });
      if (!resp.ok) {
        throw new Error("HTTP " + resp.status);
      }
      const res = await resp.json();
      if (mine === seq) {
        show(res);
      }
    } catch (err) {
      if (mine === seq) {
        show({ valid: false, problems: ["the live check failed: " + err.message + "; Check still works"] });
      }
    }
  }

  editor.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(check, 400);
  });
})();

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
