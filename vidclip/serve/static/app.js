// vidclip search page. Plain JS, no dependencies, no inline handlers (the page's CSP forbids them).
//
// Flow: the form calls GET /search; each hit becomes a button showing the thumbnail taken at the
// hit's best moment, its time span and score; clicking one loads GET /videos/{id}/stream into the
// <video> element and, once its metadata is known, sets currentTime to the span start (an exact
// seek; fastSeek would snap to a keyframe) and plays; a reranked hit plays from its best frame
// (frame_time) instead. The query lives in the URL (?q=&k=&segments=&rerank=) so results can be
// bookmarked and Back works. "Search by image" POSTs the chosen file as the body of /search/image.
// "Match" picks the mode (pictures, words, both) and "Filters" add path, duration, date and
// metadata filters (also in the URL); a hit found by its words shows them under it.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("search-form"), q = $("q"), kSelect = $("k"), segments = $("segments");
  const rerank = $("rerank"), imageInput = $("image"), mode = $("mode"), filtersBox = $("filters");
  // URL parameter -> input of the Filters box; meta is "KEY=VALUE; KEY=VALUE" (repeated &meta= in the URL)
  const FILTERS = [["path", $("f-path")], ["min_duration", $("f-min-duration")], ["max_duration", $("f-max-duration")],
                   ["modified_after", $("f-modified-after")], ["modified_before", $("f-modified-before")]];
  const metaInput = $("f-meta");
  let rerankDepth = 100;  // candidates re-scored on their frames when "Rerank on frames" is ticked
  const statusEl = $("status"), results = $("results"), notice = $("notice");
  const section = $("player-section"), video = $("player"), title = $("player-title");
  const info = $("player-info"), playerError = $("player-error"), closeButton = $("close-player");

  let searchSeq = 0;          // ignore responses of superseded searches
  let pendingMeta = null;     // the loadedmetadata handler of the clip being opened
  let currentButton = null;   // the result card whose video is in the player

  // One time format everywhere on the page (static/timefmt.js, loaded first): 1.5 -> "0:01.5".
  const { fmtTime } = window.vidclipTime;
  const fmtSpan = (hit) => window.vidclipTime.fmtSpan(hit.start, hit.end);

  function setStatus(text, isError = false) {
    statusEl.textContent = text;
    statusEl.classList.toggle("error", isError);
  }

  // FastAPI errors: {"detail": "text"} or {"detail": [{"loc": [...], "msg": "..."}]}
  function errorText(body, response) {
    const d = body && body.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d) && d.length) {
      return d.map((e) => `${(e.loc || []).slice(-1)[0] || "input"}: ${e.msg}`).join("; ");
    }
    return `The server answered ${response.status} ${response.statusText}`;
  }

  function addFilters(p) {
    for (const [name, input] of FILTERS) if (input.value.trim()) p.set(name, input.value.trim());
    for (const m of metaInput.value.split(";")) if (m.trim()) p.append("meta", m.trim());
    return p;
  }

  function paramsFromForm() {
    const p = new URLSearchParams({ q: q.value.trim(), k: kSelect.value });
    if (segments.checked) p.set("segments", "true");
    if (rerank.checked) p.set("rerank", String(rerankDepth));
    if (mode.value) p.set("mode", mode.value);
    return addFilters(p);
  }

  function formFromParams(p) {
    q.value = p.get("q") || "";
    const k = p.get("k");
    if (k && [...kSelect.options].some((o) => o.value === k)) kSelect.value = k;
    segments.checked = p.get("segments") === "true";
    rerank.checked = Number(p.get("rerank") || 0) > 0;
    const m = p.get("mode") || "";
    mode.value = [...mode.options].some((o) => o.value === m) ? m : "";
    for (const [name, input] of FILTERS) input.value = p.get(name) || "";
    metaInput.value = p.getAll("meta").join("; ");
    if (FILTERS.some(([, input]) => input.value) || metaInput.value) filtersBox.open = true;
  }

  async function runSearch(pushHistory) {
    const params = paramsFromForm();
    if (!params.get("q")) {
      setStatus("Type a description of what you are looking for.", true);
      q.focus();
      return;
    }
    if (pushHistory) history.pushState(null, "", "?" + params.toString());
    await fetchAndRender("/search?" + params.toString(), { headers: { Accept: "application/json" } },
                         `“${params.get("q")}”`);
  }

  // Search by example: the chosen file is the request body (no multipart form needed).
  async function runImageSearch(file) {
    const params = new URLSearchParams({ k: kSelect.value });
    if (segments.checked) params.set("segments", "true");
    if (rerank.checked) params.set("rerank", String(rerankDepth));
    addFilters(params);
    await fetchAndRender("/search/image?" + params.toString(), {
      method: "POST", body: file,
      headers: { Accept: "application/json", "Content-Type": file.type || "application/octet-stream" },
    }, `the image ${file.name}`);
  }

  async function fetchAndRender(url, init, label) {
    const seq = ++searchSeq;
    setStatus("Searching…");
    results.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(url, init);
      const body = await response.json().catch(() => null);
      if (seq !== searchSeq) return;
      if (!response.ok) throw new Error(errorText(body, response));
      render(body, label);
    } catch (err) {
      if (seq !== searchSeq) return;
      results.replaceChildren();
      setStatus(`Search failed: ${err.message}`, true);
    } finally {
      if (seq === searchSeq) results.removeAttribute("aria-busy");
    }
  }

  function render(body, label) {
    const hits = body.hits || [];
    const what = body.segments ? "moment" : "video";
    if (body.filters) label += " (filtered)";
    if (!hits.length) {
      results.replaceChildren();
      setStatus(`No ${what}s found for ${label}.`);
      return;
    }
    results.replaceChildren(...hits.map(card));
    setStatus(`${hits.length} ${what}${hits.length === 1 ? "" : "s"} for ${label} ` +
              `(${Math.round(body.took_ms)} ms). Choose one to play it from the matching moment.`);
  }

  function card(hit) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "hit";
    button.dataset.videoId = hit.video_id;
    button.dataset.start = hit.start;
    button.dataset.end = hit.end;

    const img = document.createElement("img");
    img.className = "thumb";
    img.src = hit.thumbnail_url;
    img.alt = `Frame at ${fmtTime(hit.moment)}`;
    img.width = 320;
    img.height = 180;
    img.loading = "lazy";
    img.decoding = "async";
    img.addEventListener("error", () => {
      const missing = document.createElement("span");
      missing.className = "thumb missing";
      missing.textContent = "No preview";
      img.replaceWith(missing);
    }, { once: true });

    const text = document.createElement("span");
    text.className = "hit-text";
    const name = document.createElement("span");
    name.className = "hit-name";
    name.textContent = hit.name;
    const meta = document.createElement("span");
    meta.className = "hit-meta";
    const span = document.createElement("span");
    span.className = "hit-span";
    span.textContent = fmtSpan(hit) + (hasFrame(hit) ? ` · best frame ${fmtTime(hit.frame_time)}` : "");
    const score = document.createElement("span");
    score.className = "hit-score";
    score.textContent = `score ${Number(hit.score).toFixed(3)}`;
    meta.append(span, score);
    text.append(name, meta);
    const words = matchLine(hit);
    if (words) text.append(words);
    button.append(img, text);
    button.addEventListener("click", () => play(hit, button));
    li.append(button);
    return li;
  }

  // "Matched budget, vote in subtitle a.srt 0:01.0–0:02.5: “the budget vote”" under a hit found by its words.
  function matchLine(hit) {
    const t = hit.match && hit.match.text;
    if (!t) return null;
    const line = document.createElement("span");
    line.className = "hit-match";
    const parts = ["Matched "];
    (t.words || []).forEach((w, i) => {
      const mark = document.createElement("mark");
      mark.textContent = w;
      parts.push(...(i ? [", ", mark] : [mark]));
    });
    const where = { name: "the name", subtitle: "subtitle", metadata: "metadata" }[t.kind] || t.kind || "";
    let place = ` in ${where}`;
    if (t.source && t.kind !== "name") place += ` ${t.source}`;
    if (t.kind === "subtitle" && Number.isFinite(t.start) && Number.isFinite(t.end)) {
      place += ` ${window.vidclipTime.fmtSpan(t.start, t.end)}`;
    }
    parts.push(place);
    if (t.text) parts.push(`: “${t.text.length > 160 ? t.text.slice(0, 157) + "…" : t.text}”`);
    line.append(...parts);
    return line;
  }

  const hasFrame = (hit) => hit.frame_time !== null && hit.frame_time !== undefined;
  // Where playback starts: a reranked hit's best frame, else the start of its matched span.
  const playFrom = (hit) => (hasFrame(hit) ? Number(hit.frame_time) : Number(hit.start));

  function play(hit, button) {
    if (currentButton) currentButton.removeAttribute("aria-current");
    currentButton = button;
    button.setAttribute("aria-current", "true");
    section.hidden = false;
    playerError.hidden = true;
    title.textContent = hit.name;
    const from = playFrom(hit);
    info.textContent = `Playing from ${fmtTime(from)}${hasFrame(hit) ? " (best frame)" : ""} ` +
                       `(matched ${fmtSpan(hit)}, score ${Number(hit.score).toFixed(3)}).`;

    if (pendingMeta) video.removeEventListener("loadedmetadata", pendingMeta);
    pendingMeta = () => {
      pendingMeta = null;
      const end = Number.isFinite(video.duration) ? video.duration : from;
      // The currentTime setter seeks exactly (fastSeek would snap to a keyframe).
      video.currentTime = Math.min(from, end);
      const p = video.play();
      if (p) p.catch((err) => {
        if (err.name !== "AbortError") info.textContent += " Press play to start.";
      });
    };
    video.addEventListener("loadedmetadata", pendingMeta);
    video.dataset.videoId = hit.video_id;
    video.dataset.start = from;
    video.dataset.contentType = hit.content_type || "";
    video.src = hit.stream_url;  // assigning src aborts any previous load
    title.focus({ preventScroll: true });
    section.scrollIntoView({ block: "nearest" });
  }

  // A format the browser cannot decode (e.g. AVI/MPEG-4 part 2 in Chromium): say so and offer
  // the file instead of a silent black box.
  video.addEventListener("error", () => {
    if (!video.getAttribute("src")) return;
    const type = video.dataset.contentType || "this format";
    const link = document.createElement("a");
    link.href = video.getAttribute("src");
    link.download = "";
    link.textContent = "download the file";
    playerError.replaceChildren(`This browser cannot play this video (${type}). You can `, link, " instead.");
    playerError.hidden = false;
  });

  function closePlayer() {
    video.pause();
    if (pendingMeta) video.removeEventListener("loadedmetadata", pendingMeta);
    pendingMeta = null;
    video.removeAttribute("src");
    video.load();
    section.hidden = true;
    if (currentButton) {
      currentButton.removeAttribute("aria-current");
      currentButton.focus();
      currentButton = null;
    }
  }

  closeButton.addEventListener("click", closePlayer);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !section.hidden) closePlayer();
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    runSearch(true);
  });
  imageInput.addEventListener("change", () => {
    const file = imageInput.files && imageInput.files[0];
    imageInput.value = "";  // choosing the same file again searches again
    if (file) runImageSearch(file);
  });
  window.addEventListener("popstate", () => {
    formFromParams(new URLSearchParams(location.search));
    if (q.value) runSearch(false);
  });

  // Limits and a warning about meaningless (random) weights come from /health.
  fetch("/health").then((r) => r.json()).then((h) => {
    const limits = h.limits || {};
    if (limits.max_query_chars) q.maxLength = limits.max_query_chars;
    if (Number.isFinite(limits.max_rerank)) rerankDepth = Math.min(rerankDepth, limits.max_rerank);
    if (rerankDepth < 1) rerank.closest("label").hidden = true;
    if (limits.max_k) {
      for (const o of [...kSelect.options]) if (Number(o.value) > limits.max_k) o.remove();
      if (!kSelect.options.length) kSelect.add(new Option(String(limits.max_k), String(limits.max_k), true, true));
    }
    if (h.random_weights) {
      notice.textContent = "This index was built with a randomly initialised model: rankings are " +
                           "arbitrary and only useful for testing.";
      notice.hidden = false;
    }
  }).catch(() => {});

  const initial = new URLSearchParams(location.search);
  if (initial.get("q")) {
    formFromParams(initial);
    runSearch(false);
  } else {
    q.focus();
  }
})();
