// ledgergate console: countdowns, a live inbox, and keyboard decisions. Loaded from /ui/static (CSP: script-src 'self').
"use strict";
(function () {
  function fmt(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + r + "s";
  }
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll(".countdown[data-expires]").forEach(function (el) {
      var left = parseFloat(el.dataset.expires) - now;
      el.textContent = left > 0 ? "expires in " + fmt(left) : "expired";
      el.classList.toggle("late", left < 60);
    });
    document.querySelectorAll(".age[data-created]").forEach(function (el) {
      // under "Waiting": how long so far ("Waiting 2m 5s"), the creation time kept as the hover title
      if (!el.title) el.title = el.textContent;
      el.textContent = fmt(now - parseFloat(el.dataset.created));
    });
  }
  var inbox = document.getElementById("inbox");
  function items() { return inbox ? Array.prototype.slice.call(inbox.querySelectorAll(".item")) : []; }
  function selected() { return inbox ? inbox.querySelector(".item.selected") : null; }
  function select(el) {
    items().forEach(function (i) { i.classList.toggle("selected", i === el); });
    if (el) { inbox.dataset.selected = el.dataset.id; el.scrollIntoView({block: "nearest"}); }
  }
  function busy() {
    if (!inbox) return false;
    var active = document.activeElement;
    if (active && inbox.contains(active) && (active.tagName === "INPUT" || active.tagName === "SELECT")) return true;
    return Array.prototype.some.call(inbox.querySelectorAll("input.reason"), function (i) { return i.value !== ""; }) ||
      Array.prototype.some.call(inbox.querySelectorAll("select.preset"), function (s) { return s.value !== ""; });
  }
  function poll() {
    if (!inbox || busy()) return;
    fetch(inbox.dataset.poll + "?selected=" + encodeURIComponent(inbox.dataset.selected || ""),
          {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || busy()) return;
        inbox.innerHTML = html;
        var keep = inbox.dataset.selected && document.getElementById(inbox.dataset.selected);
        select(keep || items()[0] || null);
        tick();
      })
      .catch(function () {});
  }
  function decide(verdict) {
    var el = selected();
    if (!el) return;
    var form = el.querySelector("form.decide");
    if (!form) return;
    form.dataset.verdict = verdict;
    el.querySelectorAll("button[name=verdict]").forEach(function (b) { b.classList.toggle("armed", b.value === verdict); });
    var reason = form.querySelector("input.reason");
    reason.placeholder = (verdict === "approve" ? "Approve" : "Deny") + ": type a reason, Enter to submit";
    reason.focus();
  }
  document.addEventListener("keydown", function (ev) {
    if (!inbox) return;
    var t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) {
      if (ev.key === "Enter" && t.tagName === "INPUT" && t.form && t.form.dataset.verdict) {
        ev.preventDefault();
        t.form.requestSubmit(t.form.querySelector("button[value=" + t.form.dataset.verdict + "]"));
      } else if (ev.key === "Escape") { t.blur(); }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var list = items(), i = list.indexOf(selected());
    if (ev.key === "j") { select(list[Math.min(list.length - 1, i + 1)] || null); ev.preventDefault(); }
    else if (ev.key === "k") { select(list[Math.max(0, i - 1)] || null); ev.preventDefault(); }
    else if (ev.key === "a") { decide("approve"); ev.preventDefault(); }
    else if (ev.key === "d") { decide("deny"); ev.preventDefault(); }
  });
  if (inbox) {
    inbox.addEventListener("click", function (ev) {
      var el = ev.target.closest && ev.target.closest(".item");
      if (el) select(el);
    });
    var first = (inbox.dataset.selected && document.getElementById(inbox.dataset.selected)) || items()[0];
    select(first || null);
    setInterval(poll, 2000);
  }
  tick();
  setInterval(tick, 1000);
})();
