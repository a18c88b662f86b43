// synthreview page behaviour: maths rendering, keyboard shortcuts, form conveniences and
// error toasts. Loaded from static/ (the CSP allows no inline scripts).
(function () {
  "use strict";

  // --- Maths -------------------------------------------------------------------------------
  // The server emits escaped TeX in .math.inline / .math.block; KaTeX builds DOM nodes (its
  // styles are set through the CSSOM, which the CSP allows, unlike style="" attributes).
  function renderMath(root) {
    if (!window.katex) return;
    root.querySelectorAll(".math.inline, .math.block").forEach(function (el) {
      if (el.dataset.rendered) return;
      var tex = el.textContent;
      try {
        window.katex.render(tex, el, {
          displayMode: el.classList.contains("block"),
          throwOnError: false,
          trust: false,
          strict: "ignore",
          maxExpand: 1000,
        });
        el.dataset.rendered = "1";
        el.setAttribute("title", tex.trim());
      } catch (e) {
        el.textContent = tex;
      }
    });
  }

  // --- Toasts --------------------------------------------------------------------------------
  function toast(message, kind) {
    var box = document.getElementById("toasts");
    if (!box) return;
    var item = document.createElement("div");
    item.className = "toast " + (kind || "info");
    item.setAttribute("role", kind === "error" ? "alert" : "status");
    item.textContent = message;
    box.appendChild(item);
    setTimeout(function () { item.remove(); }, 6000);
  }

  // --- Turns and the current-turn cursor -------------------------------------------------------
  function turns() {
    return Array.prototype.slice.call(document.querySelectorAll("#transcript > article.turn"));
  }
  function currentTurn() {
    var active = document.activeElement && document.activeElement.closest("article.turn");
    if (active && !active.classList.contains("discarded")) return active;
    return document.querySelector("#transcript > article.turn.is-current");
  }
  function setCurrent(turn) {
    document.querySelectorAll("article.turn.is-current").forEach(function (t) {
      t.classList.remove("is-current");
    });
    if (!turn) return;
    turn.classList.add("is-current");
    turn.focus({ preventScroll: true });
    turn.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }
  function move(step) {
    var list = turns();
    if (!list.length) return;
    var index = list.indexOf(currentTurn());
    index = index === -1 ? (step > 0 ? 0 : list.length - 1) : index + step;
    setCurrent(list[Math.max(0, Math.min(list.length - 1, index))]);
  }
  function turnAction(name, missing) {
    var turn = currentTurn() || turns()[0];
    if (!turn) return;
    setCurrent(turn);
    var button = turn.querySelector('[data-action="' + name + '"]');
    if (button) button.click();
    else toast(missing || "This turn cannot be changed right now.", "info");
  }

  function openShortcuts() {
    var dialog = document.getElementById("shortcuts");
    if (dialog && !dialog.open) dialog.showModal();
  }

  var typing = /^(INPUT|TEXTAREA|SELECT)$/;
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (target.closest && target.closest("form") && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      var form = target.closest("form");
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    if (event.key === "Escape" && !document.querySelector("dialog[open]")) {
      // Close the Reject (or Reopen) form when the focus is in it; otherwise cancel the form
      // of the turn being worked on, wherever the focus is; otherwise close an open verdict form.
      var verdict = target.closest && target.closest("details.verdict-form[open]");
      var owner = (target.closest && target.closest("article.turn")) || currentTurn();
      var cancel = !verdict && ((owner && owner.querySelector("[data-cancel]")) || document.querySelector("#transcript [data-cancel]"));
      if (cancel) { event.preventDefault(); cancel.click(); return; }
      verdict = verdict || document.querySelector("details.verdict-form[open]");
      if (verdict) {
        event.preventDefault();
        verdict.open = false;
        verdict.querySelector("summary").focus();
        return;
      }
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing.test(target.tagName) || target.isContentEditable) return;
    if (document.querySelector("dialog[open]")) return;
    switch (event.key) {
      case "j": move(1); break;
      case "k": move(-1); break;
      case "e": turnAction("edit"); break;
      case "f": turnAction("flag"); break;
      case "y": turnAction("accept-suggestion", "This turn has no open judge suggestion."); break;
      case "x": turnAction("dismiss-suggestion", "This turn has no open judge suggestion."); break;
      case "a":
      case "A": {
        // Shift+A approves and opens the next dialogue in one step.
        var approve = document.getElementById(event.key === "A" ? "approve-next-button" : "approve-button");
        if (!approve) return;
        if (approve.disabled) {
          var hint = document.getElementById("approve-hint");
          toast(hint ? hint.textContent : "This dialogue cannot be approved right now.", "info");
        } else approve.click();
        break;
      }
      case "r": {
        var reject = document.getElementById("reject");
        if (!reject) return;
        reject.open = true;
        var reason = document.getElementById("reject-reason");
        if (reason) reason.focus();
        break;
      }
      case "n": {
        var next = document.getElementById("review-next-form");
        if (next) next.requestSubmit();
        break;
      }
      case "?": openShortcuts(); break;
      default: return;
    }
    event.preventDefault();
  });

  document.addEventListener("change", function (event) {
    // The queue's "tick every dialogue on this page" box.
    var all = event.target.matches && event.target.matches("[data-check-all]") && event.target;
    if (!all) return;
    document.querySelectorAll('input[type=checkbox][form="' + all.dataset.checkAll + '"]').forEach(function (box) {
      box.checked = all.checked;
    });
  });

  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("[data-shortcuts-open]")) openShortcuts();
    var turn = event.target.closest && event.target.closest("#transcript > article.turn");
    if (turn && !turn.classList.contains("is-current")) {
      document.querySelectorAll("article.turn.is-current").forEach(function (t) { t.classList.remove("is-current"); });
      turn.classList.add("is-current");
    }
  });

  // --- Forms ----------------------------------------------------------------------------------
  function charCount(textarea) {
    var form = textarea.closest("form");
    var out = form && form.querySelector("[data-char-count]");
    var max = parseInt(textarea.dataset.max || "0", 10);
    if (!out || !max) return;
    var n = textarea.value.length;
    out.textContent = n.toLocaleString() + " / " + max.toLocaleString() + " characters";
    out.classList.toggle("over", n > max);
  }
  document.addEventListener("input", function (event) {
    if (event.target.matches && event.target.matches("textarea[data-max]")) charCount(event.target);
  });

  function prepare(root) {
    renderMath(root);
    var focus = root.querySelector && root.querySelector("[data-autofocus]");
    if (focus && root !== document && document.activeElement !== focus) {
      focus.focus();
      if (focus.tagName === "TEXTAREA") {
        focus.setSelectionRange(focus.value.length, focus.value.length);
        charCount(focus);
      }
      var turn = focus.closest("article.turn");
      if (turn) {
        document.querySelectorAll("article.turn.is-current").forEach(function (t) { t.classList.remove("is-current"); });
        turn.classList.add("is-current");
      }
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    prepare(document);
    if (location.hash) {
      var target = document.querySelector(location.hash);
      if (target && target.matches("article.turn")) setCurrent(target);
    }
  });
  document.addEventListener("htmx:load", function (event) { prepare(event.target); });
  document.addEventListener("htmx:afterSwap", function (event) {
    // After a turn is saved or cancelled, keep the keyboard where the reviewer was.
    var turn = event.detail.target && event.detail.target.id && document.getElementById(event.detail.target.id);
    if (turn && turn.matches("article.turn") && !turn.querySelector("[data-autofocus]")) setCurrent(turn);
  });
  document.addEventListener("htmx:beforeSwap", function (event) {
    // An expired session answers with the login page (after a redirect): never swap it into a
    // turn, and keep whatever the reviewer typed on the screen.
    var url = event.detail.xhr && event.detail.xhr.responseURL;
    if (url && new URL(url).pathname.indexOf("/login/") === 0) {
      event.detail.shouldSwap = false;
      toast("Your session has ended, so nothing was saved. Log in again in a new tab, then repeat the action: your text is still here.", "error");
    }
  });
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr.status;
    var message = status === 403
      ? "You are not allowed to do that (reviewer access needed, or your session ended: log in again)."
      : "The server could not complete that (error " + status + "). Nothing you typed was lost; try again.";
    toast(message, "error");
  });
  document.addEventListener("htmx:sendError", function () {
    toast("Could not reach the server. Nothing you typed was lost; check the connection and try again.", "error");
  });
})();
