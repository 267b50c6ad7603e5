// Per-turn timing: end of the user's turn to the first text delta, and decode speed.

export class TurnClock {
  constructor(now = () => performance.now()) {
    this.now = now;
    this.turnEndedAt = null;
    this.responses = new Map();
  }

  // The user's turn ended: speech_stopped, a push-to-talk release, or a typed send.
  turnEnded() {
    this.turnEndedAt = this.now();
  }

  responseCreated(responseId) {
    this.responses.set(responseId, { turnEndedAt: this.turnEndedAt, firstDeltaAt: null });
    this.turnEndedAt = null;
  }

  // True for the first delta of the response.
  delta(responseId) {
    const timing = this.responses.get(responseId);
    if (!timing || timing.firstDeltaAt !== null) return false;
    timing.firstDeltaAt = this.now();
    return true;
  }

  // A short summary such as "first text after 412 ms · 38.1 tok/s · 57 tokens", or "".
  done(response) {
    const timing = this.responses.get(response.id);
    this.responses.delete(response.id);
    if (!timing || timing.firstDeltaAt === null) return "";
    const parts = [];
    if (timing.turnEndedAt !== null) {
      parts.push(`first text after ${Math.round(timing.firstDeltaAt - timing.turnEndedAt)} ms`);
    }
    const outputTokens = response.usage?.output_tokens;
    const decodeS = (this.now() - timing.firstDeltaAt) / 1000;
    if (outputTokens > 1 && decodeS > 0) {
      // The first token arrives with the first delta, so the rest were decoded in decodeS.
      parts.push(`${((outputTokens - 1) / decodeS).toFixed(1)} tok/s`);
    }
    if (outputTokens !== undefined) parts.push(`${outputTokens} tokens`);
    return parts.join(" · ");
  }
}
