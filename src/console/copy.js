// The new key's Copy button: its value to the clipboard. Without script (or a clipboard) the
// value stays in a read-only field to select and copy by hand.
"use strict";
(function () {
  const field = document.getElementById("value");
  const button = document.getElementById("copy");
  const status = document.getElementById("copy-status");
  if (!field || !button || !status) return;
  button.hidden = false;
  button.addEventListener("click", async function () {
    field.focus();
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
      status.textContent = "Copied.";
    } catch (e) {
      status.textContent = "The browser did not allow copying: the value is selected, copy it by hand.";
    }
  });
})();
