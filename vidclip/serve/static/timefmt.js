// Times for people, one format on the whole page and the same text as the CLI and
// vidclip.serve.media.format_time (tests/test_serve.py runs both on the same values):
// m:ss.s (h:mm:ss.s from one hour on), always one decimal. 1.5 -> "0:01.5", 4 -> "0:04.0".
"use strict";

(function (root) {
  function fmtTime(seconds) {
    let s = Number(seconds);
    if (!Number.isFinite(s) || s < 0) s = 0;
    const tenths = Math.floor(s * 10 + 0.5);  // round once, then split: never "0:60.0"
    const h = Math.floor(tenths / 36000), rem = tenths % 36000;
    const m = Math.floor(rem / 600), t = rem % 600;
    const sec = String(Math.floor(t / 10)).padStart(2, "0") + "." + (t % 10);
    return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
  }
  const fmtSpan = (start, end) => `${fmtTime(start)}\u2013${fmtTime(end)}`;
  root.vidclipTime = Object.freeze({ fmtTime, fmtSpan });
})(typeof window !== "undefined" ? window : globalThis);
