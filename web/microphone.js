// The microphone: capture, the resampling worklet, and base64 PCM16 chunks for the socket.

export const SESSION_RATE_HZ = 24000;
const CHUNK_MS = 40;

export class Microphone {
  constructor({ onChunk, onLevel }) {
    this.onChunk = onChunk;
    this.onLevel = onLevel;
    this.context = null;
    this.stream = null;
  }

  get running() {
    return this.context !== null;
  }

  get contextRateHz() {
    return this.context?.sampleRate ?? null;
  }

  async start() {
    if (this.running) return;
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    // The context runs at the device rate (44.1 or 48 kHz); the worklet converts to the session rate.
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule(new URL("mic-worklet.js", import.meta.url));
    const node = new AudioWorkletNode(this.context, "pcm16-chunks", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      processorOptions: { targetRateHz: SESSION_RATE_HZ, chunkMs: CHUNK_MS },
    });
    node.port.onmessage = ({ data }) => {
      this.onLevel(data.levelRms);
      this.onChunk(bytesToBase64(new Uint8Array(data.pcm)), CHUNK_MS);
    };
    this.context.createMediaStreamSource(this.stream).connect(node);
    await this.context.resume();
  }

  async stop() {
    if (!this.running) return;
    for (const track of this.stream.getTracks()) track.stop();
    const context = this.context;
    this.context = null;
    this.stream = null;
    this.onLevel(0);
    await context.close();
  }
}

function bytesToBase64(bytes) {
  let binary = "";
  // fromCharCode takes arguments; 8 KiB slices stay far below the engine's argument limit.
  for (let i = 0; i < bytes.length; i += 8192) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return btoa(binary);
}
