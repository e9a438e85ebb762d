// The page works without this script for text queries (the server renders /?q=...). The script adds:
// searching without a page reload (the URL still changes, so results can be linked), query by example
// (upload an image or a video), and play-on-hover for the previews.
"use strict";

const form = document.getElementById("search");
const queryBox = document.getElementById("q");
const kBox = document.getElementById("k");
const fileInput = document.getElementById("file");
const statusLine = document.getElementById("status");
const grid = document.getElementById("results");

function resultItem(result, rank) {
  const item = document.createElement("li");
  item.className = "result";
  item.dataset.rank = String(rank);
  const video = document.createElement("video");
  video.src = result.url + "#t=0.5";  // the still shown before playing: not the (often black) first frame
  video.preload = "metadata";
  video.muted = true;
  video.loop = true;
  video.playsInline = true;
  video.controls = true;
  const meta = document.createElement("div");
  meta.className = "meta";
  for (const [cls, text] of [["rank", "#" + rank], ["score", result.score.toFixed(4)],
                             ["name", result.path.split("/").pop()]]) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    meta.append(span, " ");
  }
  const path = document.createElement("div");
  path.className = "path";
  path.title = result.path;
  path.textContent = result.path;
  item.append(video, meta, path);
  return item;
}

function show(response, label) {
  grid.replaceChildren(...response.results.map((r, i) => resultItem(r, i + 1)));
  statusLine.textContent = `${response.results.length} results for ${label} in ${response.took_ms.toFixed(1)} ms`;
  hoverToPlay();
}

async function answer(request, label) {
  statusLine.textContent = "searching...";
  try {
    const reply = await request;
    const text = await reply.text();
    let body;
    try { body = JSON.parse(text); } catch { body = { error: `${reply.status} ${text || reply.statusText}` }; }
    if (!reply.ok) throw new Error(body.error || reply.statusText);
    show(body, label);
  } catch (err) {
    grid.replaceChildren();
    statusLine.textContent = "";
    const span = document.createElement("span");
    span.className = "error";
    span.textContent = String(err.message || err);
    statusLine.append(span);
  }
}

function hoverToPlay() {
  for (const video of grid.querySelectorAll("video")) {
    video.addEventListener("mouseenter", () => video.play().catch(() => {}));
    video.addEventListener("mouseleave", () => video.pause());
  }
}

form.addEventListener("submit", (event) => {
  const q = queryBox.value.trim();
  if (!q) return;
  event.preventDefault();
  const params = new URLSearchParams({ q, k: kBox.value });
  history.pushState({}, "", "/?" + params);
  answer(fetch("/api/search?" + params), `"${q}"`);
});

fileInput.addEventListener("change", () => {
  const file = fileInput.files[0];
  if (!file) return;
  const limit = Number(fileInput.dataset.maxBytes);
  if (limit && file.size > limit) {
    statusLine.textContent = "";
    const span = document.createElement("span");
    span.className = "error";
    span.textContent = `${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MB; this server accepts at most ${(limit / 2 ** 20).toFixed(1)} MB`;
    statusLine.append(span);
    return;
  }
  const body = new FormData();
  body.append("file", file);
  body.append("k", kBox.value);
  answer(fetch("/api/search", { method: "POST", body }), `the ${file.type.split("/")[0] || "file"} ${file.name}`);
});

window.addEventListener("popstate", () => location.reload());
hoverToPlay();
document.body.dataset.ready = "1";  // the tests check that the script ran to the end
