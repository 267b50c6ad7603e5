// The camera: a live preview, downscaled JPEG frames on a timer, and single stills.

const MAX_SIDE_PX = 512;
const JPEG_QUALITY = 0.7;

export class Camera {
  constructor(video, { onFrame }) {
    this.video = video;
    this.onFrame = onFrame;
    this.stream = null;
    this.timer = null;
    this.canvas = document.createElement("canvas");
  }

  get running() {
    return this.stream !== null;
  }

  async start(frameRateFps) {
    if (this.running) return;
    this.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" },
    });
    this.video.srcObject = this.stream;
    this.video.hidden = false;
    await this.video.play();
    this.setFrameRate(frameRateFps);
  }

  stop() {
    if (!this.running) return;
    this.setFrameRate(0);
    for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    this.video.srcObject = null;
    this.video.hidden = true;
  }

  setFrameRate(frameRateFps) {
    clearInterval(this.timer);
    this.timer = null;
    if (this.running && frameRateFps > 0) {
      this.timer = setInterval(() => this.onFrame(this.captureJpeg()), 1000 / frameRateFps);
    }
  }

  // A data URI, or null before the first frame has been decoded.
  captureJpeg() {
    const { videoWidth, videoHeight } = this.video;
    if (!videoWidth || !videoHeight) return null;
    const scale = Math.min(1, MAX_SIDE_PX / Math.max(videoWidth, videoHeight));
    this.canvas.width = Math.round(videoWidth * scale);
    this.canvas.height = Math.round(videoHeight * scale);
    this.canvas.getContext("2d").drawImage(this.video, 0, 0, this.canvas.width, this.canvas.height);
    return this.canvas.toDataURL("image/jpeg", JPEG_QUALITY);
  }
}
