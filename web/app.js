// Page wiring: user controls and media become client events; server events update the view.

import { Camera } from "./camera.js";
import { Connection } from "./connection.js";
import { Microphone } from "./microphone.js";
import { TurnClock } from "./metrics.js";
import { bindSettingsForm, loadSettings, sessionUpdate } from "./settings.js";
import { Transcript } from "./transcript.js";

const MAX_ERRORS_SHOWN = 3;

const $ = (id) => document.getElementById(id);
const ui = {
  connection: $("connection"),
  activity: $("activity"),
  errors: $("errors"),
  mic: $("mic"),
  level: $("level"),
  camera: $("camera"),
  still: $("still"),
  talk: $("talk"),
  compose: $("compose"),
  message: $("message"),
  settings: $("settings"),
  instructions: $("instructions"),
  stop: $("stop"),
  demoBanner: $("demo-banner"),
};

const settings = loadSettings();
const transcript = new Transcript($("transcript"));
const clock = new TurnClock();
// Test and console hook: what the page sent and received, and a way to send raw events.
const debug = { counts: {}, last: {}, sentAudioMs: 0, sentFrames: 0, sessions: 0, micRateHz: null };
// The server's session defaults (from session.created), sent back while a setting is left blank.
const serverDefaults = { instructions: "", maxOutputTokens: undefined };
let activeResponseId = null;
let talking = false;
let heldAudioMs = 0;

const connection = new Connection({ onEvent: handleEvent, onStatus: showConnection });
const microphone = new Microphone({ onChunk: sendAudio, onLevel: (rms) => (ui.level.value = rms) });
const camera = new Camera($("preview"), { onFrame: sendFrame });

const handlers = {
  "session.created": ({ session }) => {
    debug.sessions += 1;
    if (debug.sessions > 1) transcript.note("Reconnected: a new session starts here");
    serverDefaults.instructions = session.instructions ?? "";
    serverDefaults.maxOutputTokens = session.max_output_tokens;
    ui.instructions.placeholder = serverDefaults.instructions || "Server default";
    connection.send(sessionUpdate(settings, serverDefaults));
  },
  "input_audio_buffer.speech_started": () => showActivity("hearing", "Hearing you"),
  "input_audio_buffer.speech_stopped": () => {
    clock.turnEnded();
    showActivity("thinking", "Thinking…");
  },
  "conversation.item.added": ({ item }) => transcript.upsertItem(item),
  "conversation.item.done": ({ item }) => transcript.upsertItem(item),
  "response.created": ({ response }) => {
    setActiveResponse(response.id);
    clock.responseCreated(response.id);
    if (!talking) showActivity("thinking", "Thinking…");
  },
  "response.output_item.added": ({ item, response_id }) => transcript.upsertItem(item, response_id),
  "response.output_text.delta": ({ response_id, item_id, delta }) => {
    if (clock.delta(response_id) && !talking) showActivity("answering", "Answering");
    transcript.appendText(item_id, delta);
  },
  "response.output_text.done": ({ item_id, text }) => transcript.setText(item_id, text),
  "response.done": ({ response }) => {
    transcript.finishResponse(response, clock.done(response));
    if (response.id === activeResponseId) setActiveResponse(null);
    if (!talking) showResting();
  },
  error: ({ error }) => showError(error.code ?? error.type, error.message),
};

function handleEvent(event) {
  debug.counts[event.type] = (debug.counts[event.type] ?? 0) + 1;
  debug.last[event.type] = event;
  handlers[event.type]?.(event);
}

function showConnection(state, text) {
  ui.connection.dataset.state = state;
  ui.connection.textContent = text;
  if (state !== "connected") {
    setActiveResponse(null);
    showResting();
  }
}

// The Stop button is offered exactly while an answer is being produced.
function setActiveResponse(responseId) {
  activeResponseId = responseId;
  ui.stop.hidden = responseId === null;
}

function showActivity(state, text) {
  ui.activity.dataset.state = state;
  ui.activity.textContent = text;
}

function showResting() {
  if (!microphone.running) showActivity("idle", "Idle");
  else if (settings.mode === "hands-free") showActivity("listening", "Listening");
  else showActivity("ready", "Ready to talk");
}

function showError(code, message) {
  const entry = document.createElement("div");
  entry.className = "error";
  const text = document.createElement("p");
  const codeText = document.createElement("strong");
  codeText.className = "code";
  codeText.textContent = code ?? "error";
  const messageText = document.createElement("span");
  messageText.className = "message";
  messageText.textContent = message ?? "";
  text.append(codeText, messageText);
  const dismiss = document.createElement("button");
  dismiss.type = "button";
  dismiss.textContent = "Dismiss";
  dismiss.setAttribute("aria-label", `Dismiss error ${codeText.textContent}`);
  dismiss.addEventListener("click", () => entry.remove());
  entry.append(text, dismiss);
  ui.errors.append(entry);
  while (ui.errors.children.length > MAX_ERRORS_SHOWN) ui.errors.firstElementChild.remove();
}

function sendAudio(audio, durationMs) {
  if (settings.mode === "push-to-talk" && !talking) return;
  if (!connection.send({ type: "input_audio_buffer.append", audio })) return;
  debug.sentAudioMs += durationMs;
  if (talking) heldAudioMs += durationMs;
}

function sendFrame(image) {
  if (image && connection.send({ type: "input_image_buffer.append", image })) debug.sentFrames += 1;
}

// Sends a user message, interrupting the answer in progress, and optionally asks for a reply.
function sendUserMessage(content, wantsAnswer) {
  if (wantsAnswer) cancelActiveResponse();
  connection.send({ type: "conversation.item.create", item: { type: "message", role: "user", content } });
  if (wantsAnswer) {
    clock.turnEnded();
    connection.send({ type: "response.create" });
  }
}

function cancelActiveResponse() {
  if (activeResponseId) connection.send({ type: "response.cancel", response_id: activeResponseId });
}

async function startTalking() {
  if (talking || settings.mode !== "push-to-talk") return;
  talking = true;
  heldAudioMs = 0;
  ui.talk.setAttribute("aria-pressed", "true");
  showActivity("talking", "Talking…");
  cancelActiveResponse();
  connection.send({ type: "input_audio_buffer.clear" });
  await runUserAction("microphone", () => startMicrophone());
}

function stopTalking() {
  if (!talking) return;
  talking = false;
  ui.talk.setAttribute("aria-pressed", "false");
  if (heldAudioMs === 0) {
    showResting();
    return;
  }
  connection.send({ type: "input_audio_buffer.commit" });
  clock.turnEnded();
  connection.send({ type: "response.create" });
  showActivity("thinking", "Thinking…");
}

async function startMicrophone() {
  await microphone.start();
  debug.micRateHz = microphone.contextRateHz;
  ui.mic.setAttribute("aria-pressed", "true");
  ui.mic.querySelector(".label").textContent = "Mic on";
  if (!talking) showResting();
}

async function toggleMicrophone() {
  if (!microphone.running) return startMicrophone();
  await microphone.stop();
  ui.mic.setAttribute("aria-pressed", "false");
  ui.mic.querySelector(".label").textContent = "Mic off";
  showResting();
}

async function toggleCamera() {
  if (camera.running) camera.stop();
  else await camera.start(settings.frameRateFps);
  ui.camera.setAttribute("aria-pressed", String(camera.running));
  ui.camera.textContent = camera.running ? "Camera on" : "Camera off";
  ui.still.disabled = !camera.running;
}

function sendStill() {
  const image = camera.captureJpeg();
  if (!image) return;
  const text = ui.message.value.trim();
  const content = [{ type: "input_image", image_url: image, detail: "auto" }];
  if (text) content.push({ type: "input_text", text });
  sendUserMessage(content, Boolean(text));
  ui.message.value = "";
}

// Media and permission failures become visible errors instead of silent rejections.
async function runUserAction(code, action) {
  try {
    await action();
  } catch (failure) {
    showError(code, failure.message ?? String(failure));
  }
}

function applyMode() {
  ui.talk.hidden = settings.mode !== "push-to-talk";
  if (!talking) showResting();
}

function settingsChanged(changed, name) {
  if (name === "apiKey") {
    connection.connect(changed.apiKey);
    return;
  }
  if (name === "frameRateFps") camera.setFrameRate(changed.frameRateFps);
  if (name === "mode") applyMode();
  connection.send(sessionUpdate(changed, serverDefaults));
}

// Space holds the talk button unless the focus is in something Space already operates.
function spaceTalks(event) {
  if (event.code !== "Space" || settings.mode !== "push-to-talk" || ui.settings.open) return false;
  const target = event.target;
  return target === ui.talk || !target.closest("input, textarea, select, button, a, dialog");
}

function bindControls() {
  ui.mic.addEventListener("click", () => runUserAction("microphone", toggleMicrophone));
  ui.camera.addEventListener("click", () => runUserAction("camera", toggleCamera));
  ui.still.addEventListener("click", sendStill);
  ui.talk.addEventListener("pointerdown", (event) => {
    ui.talk.setPointerCapture(event.pointerId);
    startTalking();
  });
  ui.talk.addEventListener("pointerup", stopTalking);
  ui.talk.addEventListener("pointercancel", stopTalking);
  ui.talk.addEventListener("contextmenu", (event) => event.preventDefault());
  document.addEventListener("keydown", (event) => {
    if (!spaceTalks(event)) return;
    event.preventDefault();
    if (!event.repeat) startTalking();
  });
  document.addEventListener("keyup", (event) => {
    if (!spaceTalks(event)) return;
    event.preventDefault();
    stopTalking();
  });
  ui.compose.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.message.value.trim();
    if (!text) return;
    sendUserMessage([{ type: "input_text", text }], true);
    ui.message.value = "";
  });
  ui.stop.addEventListener("click", cancelActiveResponse);
  $("open-settings").addEventListener("click", () => ui.settings.showModal());
}

// The server says whether it runs the random-weight demo model; the page says so too.
async function showDemoBanner() {
  try {
    const health = await (await fetch("healthz", { cache: "no-store" })).json();
    ui.demoBanner.hidden = !health.demo_model;
  } catch {
    // No health answer: the connection status already tells the user something is wrong.
  }
}

window.mlxRealtime = Object.assign(debug, {
  send: (event) => connection.send(event),
  drop: () => connection.drop(),
});

bindSettingsForm($("settings-form"), settings, settingsChanged);
bindControls();
applyMode();
connection.connect(settings.apiKey);
showDemoBanner();
