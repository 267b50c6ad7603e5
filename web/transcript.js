// The conversation view: one list entry per conversation item, updated as events arrive.

const WHO = { user: "You", assistant: "Assistant", system: "System" };
const STATUS_LABELS = {
  cancelled: { turn_detected: "Interrupted", client_cancelled: "Stopped" },
  incomplete: { max_output_tokens: "Cut off at the token limit", content_filter: "Filtered" },
};

export class Transcript {
  constructor(list) {
    this.list = list;
    this.entries = new Map();
    this.itemsByResponse = new Map();
  }

  // Adds or refreshes the entry for a message item; responseId links assistant items to their response.
  upsertItem(item, responseId) {
    if (item.type !== "message") return;
    if (responseId) this.linkResponse(responseId, item.id);
    let entry = this.entries.get(item.id);
    if (!entry) entry = this.addEntry(item);
    if (item.role === "assistant") {
      const text = (item.content ?? []).map((part) => part.text ?? part.transcript ?? "").join("");
      if (text) this.setText(item.id, text);
    } else {
      this.keepScrolled(() => entry.body.replaceChildren(...userParts(item.content ?? [])));
    }
  }

  appendText(itemId, delta) {
    const entry = this.entries.get(itemId);
    // Answers often open with the space of their first word piece; it would show as an indent.
    const shown = entry?.text.textContent ? delta : delta.trimStart();
    if (entry) this.keepScrolled(() => entry.text.append(shown));
  }

  setText(itemId, text) {
    const entry = this.entries.get(itemId);
    if (entry) this.keepScrolled(() => (entry.text.textContent = text.trimStart()));
  }

  // The user's words, as the model transcribes them, replace the spoken turn's placeholder.
  appendTranscript(itemId, delta) {
    const voice = this.voiceOf(itemId);
    if (!voice) return;
    const before = voice.dataset.transcribed ? voice.textContent : "";
    this.keepScrolled(() => (voice.textContent = (before + delta).trimStart()));
    voice.dataset.transcribed = "true";
  }

  setTranscript(itemId, text) {
    const voice = this.voiceOf(itemId);
    if (!voice) return;
    this.keepScrolled(() => (voice.textContent = text || "(no words heard)"));
    voice.dataset.transcribed = "true";
  }

  transcriptionFailed(itemId, message) {
    const entry = this.entries.get(itemId);
    if (entry) this.keepScrolled(() => (entry.meta.textContent = `Transcription failed: ${message ?? "unknown error"}`));
  }

  voiceOf(itemId) {
    return this.entries.get(itemId)?.body.querySelector(".text.voice") ?? null;
  }

  // Marks each answer of the response with its outcome and the turn's timing summary.
  finishResponse(response, summary) {
    const itemIds = new Set(this.itemsByResponse.get(response.id) ?? []);
    for (const item of response.output ?? []) itemIds.add(item.id);
    this.itemsByResponse.delete(response.id);
    const label = statusLabel(response);
    const entries = [...itemIds].map((id) => this.entries.get(id)).filter(Boolean);
    if (entries.length === 0 && label) this.note(`Answer ${label.toLowerCase()} before it started`);
    this.keepScrolled(() => {
      for (const entry of entries) {
        entry.element.dataset.status = response.status;
        entry.element.removeAttribute("aria-busy");
        entry.meta.textContent = [label, summary].filter(Boolean).join(" · ");
      }
    });
  }

  note(text) {
    const element = document.createElement("li");
    element.className = "note";
    element.textContent = text;
    this.keepScrolled(() => this.list.append(element));
  }

  linkResponse(responseId, itemId) {
    const ids = this.itemsByResponse.get(responseId) ?? [];
    if (!ids.includes(itemId)) ids.push(itemId);
    this.itemsByResponse.set(responseId, ids);
  }

  addEntry(item) {
    this.list.querySelector("#empty-note")?.remove();
    const element = document.createElement("li");
    element.className = `turn ${item.role}`;
    element.dataset.itemId = item.id;
    element.dataset.status = item.status ?? "in_progress";
    // Screen readers announce a streaming answer once, when it is finished, not delta by delta.
    if (item.role === "assistant") element.setAttribute("aria-busy", "true");
    const who = document.createElement("p");
    who.className = "who";
    who.textContent = WHO[item.role] ?? item.role;
    const body = document.createElement("div");
    body.className = "body";
    const text = document.createElement("p");
    text.className = "text";
    const meta = document.createElement("p");
    meta.className = "meta";
    if (item.role === "assistant") body.append(text);
    element.append(who, body, meta);
    const entry = { element, body, text, meta };
    this.entries.set(item.id, entry);
    this.keepScrolled(() => this.list.append(element));
    return entry;
  }

  // Follows new content only when the reader is already at the bottom.
  keepScrolled(change) {
    const list = this.list;
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 32;
    change();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }
}

function userParts(content) {
  return content.map((part) => {
    if (part.type === "input_image" && part.image_url?.startsWith("data:image/")) {
      const image = document.createElement("img");
      image.className = "thumb";
      image.src = part.image_url;
      image.alt = "Camera image sent with this turn";
      return image;
    }
    const paragraph = document.createElement("p");
    paragraph.className = part.type === "input_audio" ? "text voice" : "text";
    paragraph.textContent = part.type === "input_audio" ? part.transcript || "Spoken turn" : part.text ?? "";
    if (part.type === "input_audio" && part.transcript) paragraph.dataset.transcribed = "true";
    return paragraph;
  });
}

function statusLabel(response) {
  const reason = response.status_details?.reason;
  if (response.status === "failed") {
    return `Failed: ${response.status_details?.error?.message ?? "unknown error"}`;
  }
  const labels = STATUS_LABELS[response.status];
  if (!labels) return "";
  return labels[reason] ?? response.status[0].toUpperCase() + response.status.slice(1);
}
