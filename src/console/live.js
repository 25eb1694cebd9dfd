// The refresh of the Live page and the overview: every 2 s, the element marked `data-live` again
// from the same URL, unless paused. Without script the page has a Refresh link; nothing else of
// the console needs script.
"use strict";
(function () {
  const table = document.querySelector("[data-live]");
  const button = document.getElementById("pause");
  const status = document.getElementById("live-status");
  if (!table || !button || !status) return;
  let paused = false;
  button.hidden = false;
  button.addEventListener("click", function () {
    paused = !paused;
    button.textContent = paused ? "Resume" : "Pause";
    button.setAttribute("aria-pressed", paused ? "true" : "false");
    status.textContent = paused ? "Paused." : "Refreshing every 2 s.";
  });
  async function refresh() {
    if (paused) return;
    try {
      const r = await fetch(window.location.href, { credentials: "same-origin" });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.getElementById(table.id);
      if (fresh) table.replaceChildren(...fresh.childNodes);
    } catch (e) {
      status.textContent = "Not refreshing: the console does not answer.";
    }
  }
  status.textContent = "Refreshing every 2 s.";
  setInterval(refresh, 2000);
})();
