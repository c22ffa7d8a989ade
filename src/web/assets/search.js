// fhir-registers register browser: search-as-you-type and copy buttons. Every page works
// without this script; it only saves a press of Enter and a selection.
(function () {
  "use strict";

  // A search form marked `data-live` reloads its results section as the user types: it fetches
  // the same page with the typed text (the server answers from the $expand filter index) and
  // swaps the results in.
  function liveSearch(form) {
    var input = form.querySelector('input[type="search"]');
    var target = document.getElementById(form.getAttribute("data-live"));
    if (!input || !target) {
      return;
    }
    var timer = null;
    var pending = null;
    var last = input.value;

    function run() {
      var text = input.value;
      if (text === last) {
        return;
      }
      last = text;
      var params = new URLSearchParams(new FormData(form));
      params.delete("offset");
      var url = form.getAttribute("action") + "?" + params.toString();
      if (pending) {
        pending.abort();
      }
      pending = new AbortController();
      fetch(url, { signal: pending.signal, headers: { Accept: "text/html" } })
        .then(function (response) {
          return response.text().then(function (body) {
            return { ok: response.ok, body: body };
          });
        })
        .then(function (answer) {
          var doc = new DOMParser().parseFromString(answer.body, "text/html");
          var fresh = doc.getElementById(target.id);
          var announce = document.getElementById("announce");
          if (fresh) {
            target.replaceWith(fresh);
            target = fresh;
            var count = fresh.querySelector(".count");
            if (announce && count) {
              announce.textContent = count.textContent;
            }
          } else {
            var problem = doc.querySelector(".error");
            target.textContent = problem ? problem.textContent : "The search failed.";
          }
          window.history.replaceState(null, "", url);
        })
        .catch(function (e) {
          if (e.name !== "AbortError") {
            target.textContent = "The search failed: " + e.message;
          }
        });
    }

    input.addEventListener("input", function () {
      if (timer) {
        clearTimeout(timer);
      }
      timer = setTimeout(run, 80);
    });
  }

  // A copy button under each `pre.copy` block.
  function copyButton(pre) {
    if (!navigator.clipboard) {
      return;
    }
    var button = document.createElement("button");
    button.type = "button";
    button.className = "copy-button";
    button.textContent = "Copy";
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(pre.textContent).then(function () {
        button.textContent = "Copied";
      });
    });
    pre.insertAdjacentElement("afterend", button);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-live]").forEach(liveSearch);
    document.querySelectorAll("pre.copy").forEach(copyButton);
  });
})();
