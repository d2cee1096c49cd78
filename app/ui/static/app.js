// Jobfleet dashboard: live regions that refresh themselves, and confirmation of forms that
// change something. The Content-Security-Policy forbids inline script, so behaviour hangs off
// data- attributes of the server's markup:
//
//   <section id="unique-id" data-refresh="5000">  every 5000 ms, fetch this page again and
//       replace the region's content with the same region of the fresh page. A fresh region
//       without data-refresh (a finished bulk operation) is shown, and the refreshing stops.
//       Optional data-refresh-url="/ui/..." fetches that URL instead of the page's own.
//   <form data-confirm="Delete this job?">  asks before the form is sent.
//
// Nothing is written to the console: failures show on the page instead.
(function () {
  "use strict";

  var LOGIN_PATH = "/ui/login";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) {
      return;
    }
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  function notice(region, text) {
    var box = region.previousElementSibling;
    if (!box || !box.classList.contains("refresh-notice")) {
      box = document.createElement("p");
      box.className = "notice refresh-notice";
      box.setAttribute("role", "status");
      region.parentNode.insertBefore(box, region);
    }
    box.textContent = text;
  }

  function clearNotice(region) {
    var box = region.previousElementSibling;
    if (box && box.classList.contains("refresh-notice")) {
      box.remove();
    }
  }

  function live(region) {
    var every = parseInt(region.getAttribute("data-refresh"), 10);
    if (!region.id || !(every >= 500)) {
      return;
    }
    var url = region.getAttribute("data-refresh-url") || window.location.href;
    var failures = 0;
    var timer = null;

    function later(delay) {
      window.clearTimeout(timer);
      timer = window.setTimeout(tick, delay);
    }

    function tick() {
      // Not while the page is hidden, nor under the hands of someone using a control in it.
      if (document.hidden || region.contains(document.activeElement)) {
        later(every);
        return;
      }
      fetch(url, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { "Accept": "text/html" },
      })
        .then(function (response) {
          if (new URL(response.url).pathname === LOGIN_PATH) {
            notice(region, "Signed out: sign in again to resume live updates.");
            return null;
          }
          if (!response.ok) {
            throw new Error(String(response.status));
          }
          return response.text();
        })
        .then(function (html) {
          if (html === null) {
            return; // signed out: stop
          }
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(region.id);
          if (!fresh) {
            notice(region, "This view is no longer available; reload the page.");
            return;
          }
          // Focus may have moved into the region while the fetch was in flight: what is being
          // typed there wins, and this copy is dropped.
          if (region.contains(document.activeElement)) {
            later(every);
            return;
          }
          var nodes = Array.prototype.map.call(fresh.childNodes, function (node) {
            return document.importNode(node, true);
          });
          region.replaceChildren.apply(region, nodes);
          region.classList.remove("stale");
          clearNotice(region);
          failures = 0;
          if (fresh.hasAttribute("data-refresh")) {
            later(every);
          } else {
            region.removeAttribute("data-refresh");
          }
        })
        .catch(function () {
          failures += 1;
          region.classList.add("stale");
          notice(region, "Live updates paused: the server did not answer. Retrying.");
          later(Math.min(every * Math.pow(2, failures), 60000));
        });
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && region.hasAttribute("data-refresh")) {
        later(0);
      }
    });
    later(every);
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-refresh]"), live);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
