"""``index.html``: the gallery of a batch, one page that opens as fast at 10,000 clips as at 10.

The page is made from ``manifest.jsonl`` and needs nothing but the folder it is in: no
network, no CDN, every byte of style and script inline. It embeds the manifest's lines
as one JSON document (a ``<script type="application/json">`` element, every ``<``, ``>``,
``&`` and line separator escaped, so no prompt can end the element or be read as markup)
and renders one page of :data:`PAGE_SIZE` cards at a time from it, with ``textContent``
only, never markup from the data. A card's ``<video>`` is made when the card comes into
view (an ``IntersectionObserver``), so a page costs the players on screen, not one per
clip: a gallery of 10,000 clips is 10,000 small objects in memory and a few dozen
elements in the document.

Above the cards: the counts (the words of the summary and the manifest), any extra
lines the command gives (:func:`write_gallery`'s ``notes``), a link to the manifest,
filters (made, failed, not made; by model), and a search over every prompt, id, task id,
file and reason, whatever page it is on. Filters, search and page live in the address's
fragment (``#show=failed&q=fox&page=2``), so a view can be bookmarked; ``#clip-12``
opens the page with prompt 12.

Each card shows the prompt, its index and line, the model, the task id, the time its
task took to make and, for anything not made, what it is and why: a failure (red), a
task still being made at Novita, a prompt in doubt, one not sent yet. Each player marks
itself when its first frame is decoded (``data-state="loaded"``) or fails
(``data-state="error"``, the card turns red), for people and for tests.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from ._outputs import Entry, counts, kind_of, read_manifest, replacing_text

__all__ = ["PAGE_SIZE", "write_gallery"]

#: Cards on one page of the gallery: a screenful or two, whatever the batch's size.
PAGE_SIZE: Final = 48

#: The filters' groups, by the kinds the summary counts (:func:`kind_of`).
_GROUPS: Final = {"made": "made", "failed": "failed"}  # every other kind: "not made"


def _group(kind: str) -> str:
    return _GROUPS.get(kind, "notmade")


def _card(entry: Entry) -> dict[str, Any]:
    """What the page's script needs of one manifest line (short keys: 10,000 of them)."""
    card: dict[str, Any] = {
        "i": entry.index,
        "l": entry.line,
        "m": entry.model,
        "p": entry.prompt,
        "s": entry.status,
        "k": kind_of(entry),
    }
    optional = {
        "id": entry.id,
        "t": entry.task_id,
        "f": entry.file,
        "e": entry.error,
        "tm": entry.time_to_make,
        "x": list(entry.earlier_tasks) or None,
    }
    if entry.made_from:
        was = ", ".join(f"{name}: {value}" for name, value in entry.made_from.items())
        optional["mf"] = f"made from an earlier {was}"
    card.update((key, value) for key, value in optional.items() if value is not None)
    return card


def _script_json(value: Any) -> str:
    """JSON that is safe as the text of a ``<script>`` element: no ``</script>`` or
    ``<!--`` can appear (every ``<`` is escaped), and U+2028/U+2029, line breaks to a
    JavaScript parser, are escaped too."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def write_gallery(manifest: Path, path: Path, *, notes: Iterable[str] = ()) -> None:
    """Write ``index.html`` from ``manifest.jsonl``: every prompt, made or not.

    ``notes``: extra lines of plain text for the page's header, under the counts (what
    the run cost, say); each is escaped. The manifest is read twice, for the counts and
    then for the cards, each card written as it is read: a run's memory does not grow
    with its gallery.
    """
    groups: Counter[str] = Counter()
    models: Counter[str] = Counter()
    for entry in read_manifest(manifest):
        groups[_group(kind_of(entry))] += 1
        models[entry.model] += 1
    heading = html.escape(counts(manifest))
    with replacing_text(path) as file:
        file.write(
            '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>novita-video: {heading}</title>\n"
            f"<style>{_STYLE}</style>\n</head>\n<body>\n<header>\n"
            f"<h1>{heading}</h1>\n"
        )
        for note in notes:
            file.write(f'<p class="note">{html.escape(note)}</p>\n')
        file.write(_controls(groups.total(), groups, models))
        file.write(
            "</header>\n"
            '<main id="cards" aria-live="polite"></main>\n'
            '<nav class="pager" id="pager-bottom"></nav>\n'
            "<noscript><p>This gallery is drawn by JavaScript; "
            '<a href="manifest.jsonl">manifest.jsonl</a> lists every clip.</p></noscript>\n'
            '<script type="application/json" id="gallery-data">'
            f'{{"page":{PAGE_SIZE},"cards":['
        )
        for number, entry in enumerate(read_manifest(manifest)):
            file.write(("," if number else "") + _script_json(_card(entry)))
        file.write(f"]}}</script>\n<script>{_SCRIPT}</script>\n</body>\n</html>\n")


def _controls(total: int, groups: Counter[str], models: Counter[str]) -> str:
    buttons = [("all", "All", total)] + [
        (group, label, groups[group])
        for group, label in (("made", "Made"), ("failed", "Failed"), ("notmade", "Not made"))
    ]
    shown = "".join(
        f'<button type="button" data-show="{group}" aria-pressed="{str(group == "all").lower()}">'
        f"{label} <b>{count:,}</b></button>"
        for group, label, count in buttons
    )
    if len(models) > 1:
        options = "".join(
            f'<option value="{html.escape(model)}">{html.escape(model)} ({count:,})</option>'
            for model, count in sorted(models.items())
        )
        model = (
            '<label>model <select id="model"><option value="">every model</option>'
            f"{options}</select></label>"
        )
    else:
        only = next(iter(models), "")
        model = f'<span class="model">model {html.escape(only)}</span>'
    return (
        '<p class="links"><a href="manifest.jsonl">manifest.jsonl</a> has every line as '
        "JSON; press / to search</p>\n"
        f'<nav class="controls"><span class="show" role="group" aria-label="show">{shown}</span>'
        f"{model}"
        '<input id="search" type="search" placeholder="search every prompt, id, task id, reason"'
        ' aria-label="search every prompt" autocomplete="off">'
        '<span id="shown"></span></nav>\n'
        '<nav class="pager" id="pager-top"></nav>\n'
    )


_STYLE: Final = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5rem 2rem; background: #fafafa;
       color: #222; }
h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
.note, .links { margin: .2rem 0; color: #555; }
.controls { display: flex; flex-wrap: wrap; gap: .6rem 1rem; align-items: center;
            margin: .8rem 0 .4rem; }
.controls button, .pager button { font: inherit; padding: .25rem .7rem; border: 1px solid #bbb;
                                  border-radius: 6px; background: #fff; cursor: pointer; }
.controls button[aria-pressed="true"] { background: #222; color: #fff; border-color: #222; }
.show { display: inline-flex; gap: .3rem; }
#search { font: inherit; padding: .3rem .6rem; min-width: 22rem; border: 1px solid #bbb;
          border-radius: 6px; }
#shown { color: #555; }
.pager { display: flex; gap: .8rem; align-items: center; margin: .6rem 0; }
.pager button:disabled { opacity: .4; cursor: default; }
main { display: grid; gap: 1.2rem; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); }
figure { margin: 0; background: #fff; border-radius: 8px; box-shadow: 0 1px 3px #0002;
         overflow: hidden; }
.player, .missing { display: block; width: 100%; aspect-ratio: 16 / 9; background: #111; }
.player video { display: block; width: 100%; height: 100%; }
.missing { display: flex; flex-direction: column; align-items: center; justify-content: center;
           gap: .2rem; color: #eee; padding: 1rem; box-sizing: border-box; text-align: center; }
.missing small { opacity: .85; }
figure.failed .missing, figure.broken .player { background: #7a1f1f; }
figure.pending .missing { background: #1f4a7a; }
figure.unknown .missing { background: #7a5a12; }
figure.not-submitted .missing, figure.not-downloaded .missing { background: #555; }
figcaption { padding: .6rem .8rem; }
.index { color: #888; margin-right: .4rem; }
.meta { display: block; color: #666; font-size: 85%; margin-top: .3rem; }
.meta code { font-size: 95%; user-select: all; }
.reason { display: block; color: #a33; font-size: 90%; margin-top: .3rem; }
figure.pending .reason, figure.not-submitted .reason, figure.not-downloaded .reason
  { color: #555; }
figure.unknown .reason { color: #7a5a12; }
.empty { color: #555; }
"""

# Plain script, no library: the page must open offline, from the folder alone.
_SCRIPT: Final = r"""
"use strict";
(() => {
  const DATA = JSON.parse(document.getElementById("gallery-data").textContent);
  const CARDS = DATA.cards, PAGE = DATA.page;
  const GROUPS = ["made", "failed", "notmade"];
  const main = document.getElementById("cards");
  const search = document.getElementById("search");
  const model = document.getElementById("model");
  const state = { show: "all", model: "", q: "", page: 1 };
  let haystacks = null;  // every card's searchable text, made at the first search
  let rendered = 0;

  const group = (c) => (c.k === "made" || c.k === "failed") ? c.k : "notmade";
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  const duration = (s) => {
    const w = Math.max(0, Math.round(s));
    if (w < 60) return w + "s";
    if (w < 3600) return Math.floor(w / 60) + "m" + String(w % 60).padStart(2, "0") + "s";
    return Math.floor(w / 3600) + "h" + String(Math.floor(w % 3600 / 60)).padStart(2, "0") + "m";
  };
  // What a card without a clip is, in the manifest's words, and what comes of it.
  const NOTES = {
    failed: ["failed", "the task failed at Novita"],
    rejected: ["rejected", "Novita refused the prompt: the next run sends it again"],
    pending: ["pending", "being made at Novita: the next run waits for it"],
    unknown: ["unknown", "in doubt: its submit was on the wire when a run stopped"],
    not_submitted: ["not submitted", "not sent yet: the next run sends it"],
  };

  // Players are made when their card comes into view, and only then.
  const observer = new IntersectionObserver((seen) => {
    for (const entry of seen) {
      if (!entry.isIntersecting) continue;
      observer.unobserve(entry.target);
      play(entry.target);
    }
  }, { rootMargin: "300px 0px" });

  function play(holder) {
    const video = document.createElement("video");
    const mark = (how) => {
      video.dataset.state = how;
      video.dataset.size = video.videoWidth + "x" + video.videoHeight;
    };
    video.addEventListener("loadeddata", () => mark("loaded"));
    video.addEventListener("error", () => {
      mark("error");
      holder.closest("figure").classList.add("broken");
    });
    video.controls = video.muted = video.loop = video.playsInline = true;
    video.preload = "metadata";  // the first frame, for the card; the rest on play
    video.src = holder.dataset.src;
    holder.appendChild(video);
  }

  function card(c) {
    const figure = el("figure", "card " + c.k.replace(/ /g, "-"));
    figure.id = "clip-" + c.i;
    figure.dataset.kind = c.k;
    figure.dataset.model = c.m;
    if (c.f) {
      const holder = el("div", "player");
      holder.dataset.src = encodeURI(c.f).replace(/#/g, "%23").replace(/\?/g, "%3F");
      figure.appendChild(holder);
      observer.observe(holder);
    } else {
      const note = NOTES[c.s] || [c.s.replace(/_/g, " "), ""];
      const missing = el("div", "missing");
      const word = c.s === "succeeded"
        ? (c.e ? "succeeded, download failed" : "succeeded, not downloaded") : note[0];
      missing.appendChild(el("strong", "", word));
      if (c.s !== "succeeded" && note[1]) missing.appendChild(el("small", "", note[1]));
      figure.appendChild(missing);
    }
    const caption = el("figcaption");
    caption.appendChild(el("span", "index", "#" + c.i));
    caption.appendChild(document.createTextNode(c.p));
    const meta = el("span", "meta");
    const parts = ["line " + c.l];
    if (c.id) parts.push("id " + c.id);
    parts.push(c.m);
    meta.appendChild(document.createTextNode(parts.join(" · ")));
    if (c.t) {
      meta.appendChild(document.createTextNode(" · task "));
      meta.appendChild(el("code", "task", c.t));
    }
    const more = [];
    if (c.tm !== undefined) more.push("made in " + duration(c.tm));
    if (c.x) more.push("attempt " + (c.x.length + 1) + " (earlier tasks: " + c.x.join(", ") + ")");
    if (more.length) meta.appendChild(document.createTextNode(" · " + more.join(" · ")));
    caption.appendChild(meta);
    if (c.mf) caption.appendChild(el("span", "reason", c.mf));
    if (c.e) caption.appendChild(el("span", "reason", c.e));
    figure.appendChild(caption);
    return figure;
  }

  function matching() {
    const terms = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    if (terms.length && haystacks === null) {
      haystacks = CARDS.map((c) => ["#" + c.i, c.p, c.id, c.t, c.f, c.e, c.m, c.s, c.mf]
        .filter(Boolean).join("\n").toLowerCase());
    }
    const found = [];
    for (let n = 0; n < CARDS.length; n++) {
      const c = CARDS[n];
      if (state.show !== "all" && group(c) !== state.show) continue;
      if (state.model && c.m !== state.model) continue;
      if (terms.length && !terms.every((t) => haystacks[n].includes(t))) continue;
      found.push(c);
    }
    return found;
  }

  function pager(nav, pages) {
    nav.replaceChildren();
    if (pages <= 1) return;
    const go = (label, page, name) => {
      const button = el("button", "", label);
      button.type = "button";
      button.dataset.go = name;
      button.disabled = page < 1 || page > pages || page === state.page;
      button.addEventListener("click", () => { state.page = page; update(true); });
      nav.appendChild(button);
    };
    go("\u00ab first", 1, "first");
    go("\u2039 previous", state.page - 1, "previous");
    nav.appendChild(el("span", "where", "page " + state.page + " of " + pages));
    go("next \u203a", state.page + 1, "next");
    go("last \u00bb", pages, "last");
  }

  function render() {
    const found = matching();
    const pages = Math.max(1, Math.ceil(found.length / PAGE));
    state.page = Math.min(Math.max(1, state.page), pages);
    const first = (state.page - 1) * PAGE;
    for (const video of main.querySelectorAll("video")) {
      video.pause();  // free its decoder and file now, not at the next collection
      video.removeAttribute("src");
      video.load();
    }
    observer.disconnect();
    const cards = document.createDocumentFragment();
    for (const c of found.slice(first, first + PAGE)) cards.appendChild(card(c));
    if (!found.length) cards.appendChild(el("p", "empty", "No prompt matches."));
    main.replaceChildren(cards);
    const shown = document.getElementById("shown");
    const count = (n) => n.toLocaleString("en");
    const last = Math.min(first + PAGE, found.length);
    const of = found.length === CARDS.length ? "" : " matching (of " + count(CARDS.length) + ")";
    shown.textContent = found.length
      ? count(first + 1) + "\u2013" + count(last) + " of " + count(found.length) + of
      : "0 of " + count(CARDS.length);
    pager(document.getElementById("pager-top"), pages);
    pager(document.getElementById("pager-bottom"), pages);
    for (const button of document.querySelectorAll("button[data-show]")) {
      button.setAttribute("aria-pressed", String(button.dataset.show === state.show));
    }
    rendered += 1;
    document.body.dataset.rendered = String(rendered);
    document.body.dataset.matches = String(found.length);
    performance.mark("gallery-render-" + rendered);
  }

  function readHash() {
    const hash = decodeURIComponent(location.hash.slice(1));
    const clip = /^clip-(\d+)$/.exec(hash);
    if (clip) {  // a link to one prompt: the page that has it, everything shown
      const at = CARDS.findIndex((c) => String(c.i) === clip[1]);
      const page = Math.floor(Math.max(at, 0) / PAGE) + 1;
      Object.assign(state, { show: "all", model: "", q: "", page: page });
      return "clip-" + clip[1];
    }
    const params = new URLSearchParams(location.hash.slice(1));
    state.show = GROUPS.includes(params.get("show")) ? params.get("show") : "all";
    state.model = params.get("model") || "";
    state.q = params.get("q") || "";
    state.page = parseInt(params.get("page") || "1", 10) || 1;
    return null;
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (state.show !== "all") params.set("show", state.show);
    if (state.model) params.set("model", state.model);
    if (state.q) params.set("q", state.q);
    if (state.page > 1) params.set("page", String(state.page));
    const hash = params.toString();
    history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
  }

  let queued = false;
  function update(top) {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {  // one render per frame, however fast the typing
      queued = false;
      render();
      writeHash();
      if (top) document.querySelector("header").scrollIntoView();
    });
  }

  function sync() {
    search.value = state.q;
    if (model) model.value = state.model;
  }

  for (const button of document.querySelectorAll("button[data-show]")) {
    button.addEventListener("click", () => {
      state.show = button.dataset.show;
      state.page = 1;
      update(false);
    });
  }
  search.addEventListener("input", () => {
    state.q = search.value;
    state.page = 1;
    update(false);
  });
  if (model) {
    model.addEventListener("change", () => {
      state.model = model.value;
      state.page = 1;
      update(false);
    });
  }
  document.addEventListener("keydown", (event) => {
    if (event.key === "/" && document.activeElement !== search) {
      event.preventDefault();
      search.focus();
    }
  });
  window.addEventListener("hashchange", () => {
    const target = readHash();
    sync();
    render();
    if (target) document.getElementById(target)?.scrollIntoView();
  });

  const target = readHash();
  sync();
  render();
  if (target) document.getElementById(target)?.scrollIntoView();
  // The first screen is on the page once the frame after this render is painted.
  requestAnimationFrame(() => setTimeout(() => {
    performance.mark("gallery-first-screen");
    document.body.dataset.ready = "1";
  }, 0));
})();
"""
