// Audio thread: downmixes the mic to mono, resamples it from the context's rate to the session
// rate by linear interpolation, and posts fixed-size PCM16 little-endian chunks with their level.

class Pcm16ChunkProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRateHz, chunkMs } = options.processorOptions;
    this.inputStep = sampleRate / targetRateHz;
    this.chunkSamples = Math.round((targetRateHz * chunkMs) / 1000);
    // Fractional input index of the next output sample; -1..0 points between the previous
    // block's last sample and this block's first.
    this.position = 0;
    this.previousSample = 0;
    this.newChunk();
  }

  newChunk() {
    this.chunk = new DataView(new ArrayBuffer(this.chunkSamples * 2));
    this.filled = 0;
    this.sumSquares = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels.length === 0) return true;
    const mono = downmix(channels);
    const last = mono.length - 1;
    while (this.position < last) {
      const index = Math.floor(this.position);
      const before = index < 0 ? this.previousSample : mono[index];
      const after = mono[index + 1];
      this.push(before + (after - before) * (this.position - index));
      this.position += this.inputStep;
    }
    this.position -= mono.length;
    this.previousSample = mono[last];
    return true;
  }

  push(sample) {
    const clamped = Math.max(-1, Math.min(1, sample));
    this.chunk.setInt16(this.filled * 2, clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff, true);
    this.sumSquares += clamped * clamped;
    this.filled += 1;
    if (this.filled === this.chunkSamples) {
      const levelRms = Math.sqrt(this.sumSquares / this.chunkSamples);
      this.port.postMessage({ pcm: this.chunk.buffer, levelRms }, [this.chunk.buffer]);
      this.newChunk();
    }
  }
}

function downmix(channels) {
  if (channels.length === 1) return channels[0];
  const mono = new Float32Array(channels[0].length);
  for (const channel of channels) {
    for (let i = 0; i < mono.length; i += 1) mono[i] += channel[i] / channels.length;
  }
  return mono;
}

registerProcessor("pcm16-chunks", Pcm16ChunkProcessor);
