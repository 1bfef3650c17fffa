// The page: search by text or by a clip, list the hits, play each with its context.
// Every string from the server goes into textContent, never into HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
const player = $("#player");
const list = $("#hits");
const state = { hits: [], selected: -1, playing: -1, contextS: 1.0, recordS: 8 };

function say(message, kind = "") {
  $("#status").textContent = message;
  $("#status").className = kind;
}

function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  const rest = (seconds - 60 * minutes).toFixed(2).padStart(5, "0");
  if (minutes < 60) return `${minutes}:${rest}`;
  return `${Math.floor(minutes / 60)}:${String(minutes % 60).padStart(2, "0")}:${rest}`;
}

async function api(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    throw new Error("the server cannot be reached");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
  return body;
}

async function run(request, describe) {
  stop();
  say("Searching…");
  document.body.classList.add("busy");
  try {
    show(await request);
  } catch (error) {
    show({ hits: [] }, true);
    say(describe(error.message), "error");
  } finally {
    document.body.classList.remove("busy");
  }
}

function searchText(event) {
  event.preventDefault();
  const q = $("#q").value.trim();
  if (!q) {
    show({ hits: [] }, true);
    say("The query is empty: type a word or a short phrase, or search by example with a clip.", "warn");
    return;
  }
  const params = new URLSearchParams({ q, top: $("#top").value || "10", scoring: $("#scoring").value });
  if ($("#threshold").value) params.set("threshold", $("#threshold").value);
  history.replaceState(null, "", `?${params}`);
  run(api(`/api/search?${params}`), (reason) => `Search failed: ${reason}`);
}

function searchClip(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  const params = new URLSearchParams({ top: $("#top").value || "10" });
  if ($("#threshold").value) params.set("threshold", $("#threshold").value);
  run(api(`/api/search/audio?${params}`, { method: "POST", body: form }),
      (reason) => `That clip could not be searched: ${reason}`);
}

function show(result, quiet = false) {
  state.hits = result.hits;
  state.selected = -1;
  list.replaceChildren(...result.hits.map(render));
  if (quiet) return;
  const what = result.kind === "audio" ? `the clip ${result.query}` : `“${result.query}”`;
  if (!result.hits.length) {
    const floor = $("#threshold").value ? `, a lower min score` : "";
    say(`No hits for ${what}. Try another spelling or phrase${floor}, or another scoring.`, "warn");
  } else {
    say(`${result.hits.length} hit${result.hits.length > 1 ? "s" : ""} for ${what} in ${result.seconds.toFixed(2)} s`);
    select(0, false);
  }
}

function render(hit, index) {
  const item = document.createElement("li");
  item.className = "hit";
  item.tabIndex = -1;
  item.dataset.index = index;
  item.innerHTML = `<button class="play" type="button" aria-label="Play">▶</button>
    <div class="body"><div class="meta"><span class="rank"></span><span class="name"></span><span class="time"></span>
    <span class="score"></span></div><div class="words"></div><div class="bar" title="Click to seek">
    <div class="span"></div><div class="head"></div></div></div>`;
  item.querySelector(".rank").textContent = `#${index + 1}`;
  item.querySelector(".name").textContent = hit.name;
  item.querySelector(".name").title = hit.file;
  item.querySelector(".time").textContent = `${clock(hit.start)} – ${clock(hit.end)}`;
  item.querySelector(".score").textContent = `score ${hit.score.toFixed(3)}`;
  item.querySelector(".words").textContent = hit.text ? `“${hit.text}”` : "";
  item.querySelector(".play").addEventListener("click", () => { select(index, false); toggle(index); });
  item.querySelector(".bar").addEventListener("click", (event) => seek(index, event));
  item.addEventListener("click", () => select(index, false));
  placeSpan(item, hit, hit.end + state.contextS - hit.clip_start);
  return item;
}

function placeSpan(item, hit, clipS) {
  const span = item.querySelector(".span");
  span.style.left = `${(100 * (hit.start - hit.clip_start)) / clipS}%`;
  span.style.width = `${(100 * (hit.end - hit.start)) / clipS}%`;
}

function select(index, play) {
  if (!state.hits.length) return;
  index = Math.max(0, Math.min(state.hits.length - 1, index));
  list.querySelectorAll(".hit.selected").forEach((item) => item.classList.remove("selected"));
  const item = list.children[index];
  item.classList.add("selected");
  item.focus({ preventScroll: true });
  item.scrollIntoView({ block: "nearest" });
  state.selected = index;
  if (play) start(index);
}

function start(index) {
  const hit = state.hits[index];
  stop();
  state.playing = index;
  player.src = hit.audio_url;
  list.children[index].classList.add("playing");
  player.play().catch((error) => say(`The audio could not be played: ${error.message}`, "error"));
}

function stop() {
  player.pause();
  const item = list.children[state.playing];
  if (item) item.classList.remove("playing", "paused");
  state.playing = -1;
}

function toggle(index) {
  if (index < 0) return;
  const item = list.children[index];
  if (state.playing !== index) return start(index);
  if (player.paused) {
    item.classList.replace("paused", "playing");
    player.play();
  } else {
    item.classList.replace("playing", "paused");
    player.pause();
  }
}

function seek(index, event) {
  const bar = event.currentTarget.getBoundingClientRect();
  const fraction = (event.clientX - bar.left) / bar.width;
  if (state.playing !== index) start(index);
  const go = () => { player.currentTime = fraction * player.duration; };
  if (Number.isFinite(player.duration) && state.playing === index) go();
  else player.addEventListener("loadedmetadata", go, { once: true });
}

function progress() {
  const item = list.children[state.playing];
  if (item && Number.isFinite(player.duration) && player.duration > 0) {
    item.querySelector(".head").style.left = `${(100 * player.currentTime) / player.duration}%`;
  }
  requestAnimationFrame(progress);
}

player.addEventListener("loadedmetadata", () => {
  const item = list.children[state.playing];
  if (item) placeSpan(item, state.hits[state.playing], player.duration);
});
player.addEventListener("ended", () => {
  const item = list.children[state.playing];
  if (item) item.classList.replace("playing", "paused");
});
player.addEventListener("error", () => {
  if (state.playing >= 0) say("The hit's audio could not be loaded (was the file moved or removed?).", "error");
});

let recorder = null;
async function record() {
  if (recorder) return recorder.stop();
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    say("This browser cannot record here (a microphone needs https or localhost).", "error");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    say(`No microphone: ${error.message}`, "error");
    return;
  }
  const parts = [];
  recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (event) => parts.push(event.data));
  recorder.addEventListener("stop", () => {
    stream.getTracks().forEach((track) => track.stop());
    $("#record").classList.remove("on");
    $("#record").textContent = "● Record";
    const type = recorder.mimeType || "audio/webm";
    recorder = null;
    searchClip(new Blob(parts, { type }), type.includes("ogg") ? "recording.ogg" : "recording.webm");
  });
  recorder.start();
  $("#record").classList.add("on");
  $("#record").textContent = "■ Stop";
  say(`Recording: say the word, then press Stop (at most ${state.recordS} s).`);
  setTimeout(() => recorder && recorder.state === "recording" && recorder.stop(), state.recordS * 1000);
}

document.addEventListener("keydown", (event) => {
  const typing = event.target.matches("input, select, textarea");
  if ((event.key === "ArrowDown" || event.key === "ArrowUp") && state.hits.length) {
    if (typing && event.target.id !== "q") return;
    event.preventDefault();
    const step = event.key === "ArrowDown" ? 1 : -1;
    select(state.selected < 0 ? 0 : state.selected + step, true);
  } else if (event.key === " " && !typing && !event.target.matches("button") && state.selected >= 0) {
    event.preventDefault();
    toggle(state.selected);
  } else if (event.key === "/" && !typing) {
    event.preventDefault();
    $("#q").focus();
  }
});

$("#text-search").addEventListener("submit", searchText);
$("#clip").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) searchClip(file, file.name);
  event.target.value = "";
});
$("#record").addEventListener("click", record);

(async function boot() {
  try {
    const stats = await api("/api/stats");
    state.contextS = stats.play_context_s ?? state.contextS;
    state.recordS = Math.ceil(stats.limits.max_query_clip_s + 3);
    $("#stats").textContent = `${stats.files} files · ${stats.hours.toFixed(2)} hours · ${stats.windows} windows · ` +
      `${stats.words} transcript words · model ${stats.model}`;
    $("#scoring").replaceChildren(...stats.scorings.map((name) => new Option(name, name)));
  } catch (error) {
    $("#stats").textContent = `the index cannot be read: ${error.message}`;
  }
  const params = new URLSearchParams(location.search);
  if (params.get("q")) {
    $("#q").value = params.get("q");
    if (params.get("scoring")) $("#scoring").value = params.get("scoring");
    if (params.get("top")) $("#top").value = params.get("top");
    if (params.get("threshold")) $("#threshold").value = params.get("threshold");
    $("#text-search").requestSubmit();
  }
  requestAnimationFrame(progress);
})();
