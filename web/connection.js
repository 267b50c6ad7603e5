// The WebSocket to /v1/realtime: subprotocol auth, JSON events, reconnect with backoff.

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 10000;
// Close codes after which retrying with the same settings cannot help (1008: rejected key).
const FATAL_CLOSE_CODES = new Set([1008]);

export class Connection {
  constructor({ onEvent, onStatus }) {
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.socket = null;
    this.apiKey = "";
    this.retryMs = FIRST_RETRY_MS;
    this.retryTimer = null;
    // Counts dials, so the outcome of an older socket cannot override a newer one.
    this.attempt = 0;
  }

  get open() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  connect(apiKey) {
    this.apiKey = apiKey;
    this.retryMs = FIRST_RETRY_MS;
    this.dial();
  }

  // False when the event could not be sent; callers drop live audio and frames rather than queue them.
  send(event) {
    if (!this.open) return false;
    this.socket.send(JSON.stringify(event));
    return true;
  }

  // Closes the current socket as a network failure would, so the reconnect path runs.
  drop() {
    if (this.socket) this.socket.close(4000, "dropped by client");
  }

  dial() {
    clearTimeout(this.retryTimer);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close();
    }
    this.attempt += 1;
    const attempt = this.attempt;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const protocols = ["realtime"];
    if (this.apiKey) protocols.push(`openai-insecure-api-key.${this.apiKey}`);
    this.onStatus("connecting", "Connecting…");
    let socket;
    try {
      socket = new WebSocket(`${scheme}://${location.host}/v1/realtime`, protocols);
    } catch {
      // The key travels as a subprotocol token, which forbids spaces and separators.
      this.onStatus("rejected", "The API key has characters a WebSocket cannot carry");
      return;
    }
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.onStatus("connected", "Connected");
    };
    socket.onmessage = ({ data }) => {
      // Reset the backoff only once the server talks: a server that accepts and closes at once
      // (busy, 1013) must not be redialled every half second.
      this.retryMs = FIRST_RETRY_MS;
      this.onEvent(JSON.parse(data));
    };
    socket.onclose = ({ code, reason }) => this.closed(attempt, opened, code, reason);
  }

  async closed(attempt, opened, code, reason) {
    if (attempt !== this.attempt) return;
    this.socket = null;
    // A browser hides why a handshake failed; a server that answers /healthz but refused the
    // upgrade is rejecting the key (HTTP 401), and redialling with the same key cannot help.
    const refused = FATAL_CLOSE_CODES.has(code) || (!opened && (await serverIsUp()));
    if (attempt !== this.attempt) return;
    if (refused) {
      this.onStatus("rejected", "The server refused the connection; check the API key in Settings");
      return;
    }
    const delayMs = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
    const why = reason ? `${code}: ${reason}` : code;
    this.onStatus("reconnecting", `Disconnected (${why}); retrying in ${(delayMs / 1000).toFixed(1)} s`);
    this.retryTimer = setTimeout(() => this.dial(), delayMs);
  }
}

async function serverIsUp() {
  try {
    return (await fetch("/healthz", { cache: "no-store" })).ok;
  } catch {
    return false;
  }
}
