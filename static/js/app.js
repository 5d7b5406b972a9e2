// The pages' small behaviours, without inline script (the Content-Security-Policy allows only
// scripts served from this site). Each behaviour is asked for with a data- attribute:
//   <form data-confirm="确定…？">   asks before submitting; "{name}" is replaced by the trimmed
//                                   value of the form's field of that name
//   <select data-autosubmit>        submits its form when the choice changes
//   <button data-print>             opens the print dialog
(function () {
  "use strict";

  function fill(message, form) {
    return message.replace(/\{([a-z_]+)\}/g, function (whole, name) {
      var field = form.elements[name];
      return field && typeof field.value === "string" ? field.value.trim() : whole;
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-confirm")) return;
    if (!window.confirm(fill(form.getAttribute("data-confirm"), form))) event.preventDefault();
  });

  document.addEventListener("change", function (event) {
    var field = event.target;
    if (field && field.hasAttribute && field.hasAttribute("data-autosubmit") && field.form) field.form.submit();
  });

  document.addEventListener("click", function (event) {
    var button = event.target && event.target.closest ? event.target.closest("[data-print]") : null;
    if (button) window.print();
  });
})();
