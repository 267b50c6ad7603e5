// User settings: the form, their storage in localStorage, and the session.update they imply.

import { SESSION_RATE_HZ } from "./microphone.js";

const STORAGE_KEY = "mlx-realtime.settings";
const DEFAULTS = {
  mode: "hands-free",
  instructions: "",
  vadThreshold: 0.5,
  silenceDurationMs: 500,
  frameRateFps: 1,
  maxOutputTokens: "",
  apiKey: "",
};
const NUMERIC = new Set(["vadThreshold", "silenceDurationMs", "frameRateFps"]);

export function loadSettings() {
  let stored = {};
  try {
    stored = JSON.parse(localStorage.getItem(STORAGE_KEY)) ?? {};
  } catch {
    // A corrupt entry falls back to the defaults.
  }
  return { ...DEFAULTS, ...stored };
}

// Fills the form from `settings` and calls onChange(settings, changedName) after each edit.
export function bindSettingsForm(form, settings, onChange) {
  for (const [name, value] of Object.entries(settings)) {
    const field = form.elements.namedItem(name);
    if (field) field.value = String(value);
  }
  const thresholdOutput = form.querySelector("#vad-threshold-value");
  thresholdOutput.value = settings.vadThreshold;
  form.addEventListener("input", ({ target }) => {
    if (target.name === "vadThreshold") thresholdOutput.value = target.value;
  });
  form.addEventListener("change", ({ target }) => {
    if (!(target.name in DEFAULTS)) return;
    settings[target.name] = NUMERIC.has(target.name) ? Number(target.value) : target.value;
    localStorage.setItem(STORAGE_KEY, JSON.stringify(settings));
    onChange(settings, target.name);
  });
}

// serverDefaults: instructions and max_output_tokens from session.created, used while a field is blank.
export function sessionUpdate(settings, serverDefaults) {
  const turnDetection =
    settings.mode === "hands-free"
      ? {
          type: "server_vad",
          threshold: settings.vadThreshold,
          prefix_padding_ms: 300,
          silence_duration_ms: settings.silenceDurationMs,
          create_response: true,
          interrupt_response: true,
        }
      : null;
  const maxTokens = parseInt(settings.maxOutputTokens, 10);
  return {
    type: "session.update",
    session: {
      type: "realtime",
      output_modalities: ["text"],
      instructions: settings.instructions || serverDefaults.instructions,
      max_output_tokens: maxTokens > 0 ? maxTokens : serverDefaults.maxOutputTokens,
      audio: {
        input: {
          format: { type: "audio/pcm", rate: SESSION_RATE_HZ },
          turn_detection: turnDetection,
        },
      },
      // Extension: attach the newest camera frame to each user turn.
      frames: { max_per_turn: 1, min_interval_ms: 0 },
    },
  };
}
