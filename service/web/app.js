// The translation page: plain JavaScript, no build step, only this server's API
// (/frontend/settings, /languages, /translate, /translate_file), as LibreTranslate's own page uses it.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { settings: null, languages: [], timer: null, inFlight: null, sequence: 0 };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function apiKey() {
  return $("api-key").value.trim();
}

async function call(path, body) {
  const options = body ? { method: "POST", body } : {};
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const reason = data && (data.error || data.detail);
    throw new Error(reason ? String(reason) : `The server answered ${response.status}.`);
  }
  return data;
}

function languageName(code) {
  const found = state.languages.find((l) => l.code === code);
  return found ? found.name : code;
}

function fillLanguages() {
  const source = $("source"), target = $("target");
  source.replaceChildren(new Option("Auto-detect", "auto"));
  for (const language of state.languages.filter((l) => l.targets.length)) {
    source.append(new Option(language.name, language.code));
  }
  const settings = state.settings.language;
  source.value = [...source.options].some((o) => o.value === settings.source.code) ? settings.source.code : "auto";
  fillTargets(settings.target.code);
}

function targetsFor(source) {
  if (source === "auto") {
    return [...new Set(state.languages.flatMap((l) => l.targets))].sort();
  }
  const language = state.languages.find((l) => l.code === source);
  return language ? language.targets : [];
}

function fillTargets(preferred) {
  const target = $("target");
  const codes = targetsFor($("source").value);
  target.replaceChildren(...codes.map((code) => new Option(languageName(code), code)));
  if (codes.includes(preferred)) target.value = preferred;
}

function updateCounter() {
  const length = $("text").value.length, limit = state.settings ? state.settings.charLimit : -1;
  const counter = $("counter");
  counter.textContent = limit > 0 ? `${length} / ${limit}` : String(length);
  counter.classList.toggle("over", limit > 0 && length > limit);
  return limit <= 0 || length <= limit;
}

function showAlternatives(alternatives) {
  const list = $("alternatives");
  list.replaceChildren();
  for (const alternative of alternatives || []) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = alternative;
    button.addEventListener("click", () => {
      const current = $("translation").value;
      $("translation").value = alternative;
      button.textContent = current;
    });
    item.append(button);
    list.append(item);
  }
  $("alternatives-box").hidden = !(alternatives && alternatives.length);
}

async function translate() {
  clearTimeout(state.timer);
  const text = $("text").value;
  const output = $("translation");
  if (!text.trim()) {
    output.value = "";
    $("detected").textContent = "";
    $("copy").disabled = true;
    showAlternatives([]);
    showError("");
    return;
  }
  if (!updateCounter()) {
    showError(`The text is longer than ${state.settings.charLimit} characters.`);
    return;
  }
  const sequence = ++state.sequence;
  const form = new FormData();
  form.append("q", text);
  form.append("source", $("source").value);
  form.append("target", $("target").value);
  form.append("format", "text");
  form.append("alternatives", String(Math.min(3, state.settings.alternativesLimit ?? 3))); // 3 as LibreTranslate's page, if allowed
  if (apiKey()) form.append("api_key", apiKey());
  output.setAttribute("aria-busy", "true");
  try {
    const answer = await call("translate", form);
    if (sequence !== state.sequence) return; // a newer request is on its way
    output.value = answer.translatedText;
    $("copy").disabled = !answer.translatedText;
    showAlternatives(answer.alternatives);
    const detected = answer.detectedLanguage;
    $("detected").textContent = detected ? `Detected: ${languageName(detected.language)} (${Math.round(detected.confidence)}%)` : "";
    showError("");
  } catch (error) {
    if (sequence === state.sequence) showError(error.message);
  } finally {
    if (sequence === state.sequence) output.setAttribute("aria-busy", "false");
  }
}

function translateSoon() {
  updateCounter();
  clearTimeout(state.timer);
  state.timer = setTimeout(translate, state.settings ? state.settings.frontendTimeout : 500);
}

function swap() {
  const source = $("source"), target = $("target");
  const from = source.value === "auto" ? null : source.value;
  const to = target.value;
  if (!to || ![...source.options].some((o) => o.value === to)) return;
  source.value = to;
  fillTargets(from || (targetsFor(to)[0] || ""));
  if ($("translation").value) $("text").value = $("translation").value;
  $("translation").value = "";
  translate();
}

async function copy() {
  try {
    await navigator.clipboard.writeText($("translation").value);
    $("copied").textContent = "Copied.";
  } catch (_) {
    $("translation").select();
    document.execCommand("copy");
    $("copied").textContent = "Copied.";
  }
  setTimeout(() => { $("copied").textContent = ""; }, 2000);
}

async function translateFile(event) {
  event.preventDefault();
  const file = $("file").files[0];
  const status = $("file-status"), link = $("download");
  link.hidden = true;
  if (!file) {
    showError("Choose a file first.");
    return;
  }
  const form = new FormData();
  form.append("file", file);
  form.append("source", $("source").value);
  form.append("target", $("target").value);
  if (apiKey()) form.append("api_key", apiKey());
  status.textContent = "Translating…";
  $("translate-file").disabled = true;
  try {
    const answer = await call("translate_file", form);
    link.href = answer.translatedFileUrl;
    link.download = file.name;
    link.hidden = false;
    status.textContent = "Done.";
    showError("");
    link.focus();
  } catch (error) {
    status.textContent = "";
    showError(error.message);
  } finally {
    $("translate-file").disabled = false;
  }
}

async function start() {
  try {
    [state.settings, state.languages] = await Promise.all([call("frontend/settings"), call("languages")]);
  } catch (error) {
    showError(`The server cannot be reached: ${error.message}`);
    return;
  }
  fillLanguages();
  updateCounter();
  const settings = state.settings;
  if (settings.apiKeys) {
    $("key-box").hidden = false;
    $("api-key").value = localStorage.getItem("translator-api-key") || "";
    $("api-key").required = settings.keyRequired;
    $("api-key").addEventListener("change", () => localStorage.setItem("translator-api-key", apiKey()));
  }
  if (settings.filesTranslation) {
    $("files-box").hidden = false;
    $("file").accept = settings.supportedFilesFormat.join(",");
    $("file-formats").textContent = `Formats: ${settings.supportedFilesFormat.join(", ")}`;
    $("file-form").addEventListener("submit", translateFile);
  }
  $("text").addEventListener("input", translateSoon);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); translate(); }
  });
  $("source").addEventListener("change", () => { fillTargets($("target").value); translate(); });
  $("target").addEventListener("change", translate);
  $("swap").addEventListener("click", swap);
  $("copy").addEventListener("click", copy);
  $("translate-form").addEventListener("submit", (event) => { event.preventDefault(); translate(); });
  document.body.dataset.ready = "true"; // the browser test waits for this
}

document.addEventListener("DOMContentLoaded", start);
