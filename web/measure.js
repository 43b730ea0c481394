// What the learner's page is shown and plays, each timed where it happens, for the tests and
// benchmarks that judge lip sync in a real browser (scripts/browser.py reads window.avMeasure.rec).
//
// Video: every frame the browser presents (requestVideoFrameCallback): its expected display time
// and how open the mouth is in a crop of it (share of dark cavity and bright teeth pixels).
//
// Audio: what a WebAudio tap hears is buffered again on the way, so it is not what the page plays.
// Instead the page reads the audio as it arrives, before the jitter buffer (an encoded-frame
// transform: RTP timestamp + Opus payload, decoded with WebCodecs into the loudness of every
// 10 ms), and WebRTC says when each packet is delivered to the track for playout
// (getSynchronizationSources(): RTP timestamp + time, polled every 2 ms). Joined on the RTP
// timestamp they give the loudness of the audio when it is played; the output device's own delay
// (getStats() media-playout) comes on top. Needs the room's peer connections made with
// encodedInsertableStreams, and every received track tapped (an untapped one would stall).
window.avMeasure = (() => {
  const rec = {
    video: [],        // [display time ms, open %]
    blocks: [],       // [RTP timestamp - first, rms]: each 10 ms of decoded audio
    delivered: [],    // [time ms, RTP timestamp - first]: a packet handed to playout
    outputDelayMs: null,  // the audio output device's average delay
    playoutEstimate: [],  // [time ms, audio, video]: getStats() estimatedPlayoutTimestamp
    errors: [],
  };
  const origin = performance.timeOrigin;
  let rtpBase = null;
  const tracks = {};  // the measured participant's, by kind
  const rtpRel = (rtp) => (rtpBase === null ? 0 : (rtp - rtpBase) >>> 0);  // RTP wraps at 2^32

  function video(el, crop, size) {
    const [x0, y0, x1, y1] = crop;
    const g = new OffscreenCanvas(x1 - x0, y1 - y0).getContext("2d", { willReadFrequently: true });
    const onFrame = (_now, meta) => {
      if (el.videoWidth === size) {
        g.drawImage(el, x0, y0, x1 - x0, y1 - y0, 0, 0, x1 - x0, y1 - y0);
        const px = g.getImageData(0, 0, x1 - x0, y1 - y0).data;
        let open = 0;
        for (let i = 0; i < px.length; i += 4) {
          const luma = (px[i] + px[i + 1] + px[i + 2]) / 3;
          if (luma < 90 || luma > 215) open++;
        }
        rec.video.push([meta.expectedDisplayTime, 100 * open / (px.length / 4)]);
      }
      el.requestVideoFrameCallback(onFrame);
    };
    el.requestVideoFrameCallback(onFrame);
  }

  // RFC 2198 RED (LiveKit sends Opus with redundancy): the primary block is the last one.
  function primaryBlock(frame) {
    const b = new Uint8Array(frame.data);
    if (!(frame.getMetadata().mimeType || "").endsWith("/red")) return b.slice(0);
    let i = 0, skip = 0;
    while (b[i] & 0x80) { skip += ((b[i + 2] & 0x03) << 8) | b[i + 3]; i += 4; }
    return b.slice(i + 1 + skip);
  }

  // Pass every received frame through; for the measured audio track, decode a copy.
  function tap(track, measured) {
    const { readable, writable } = track.receiver.createEncodedStreams();
    if (measured && !tracks.audio && !tracks.video) poll();
    if (measured) tracks[track.kind] = track;
    if (!measured || track.kind !== "audio") { readable.pipeTo(writable); return; }
    const pending = [];  // RTP timestamps in decode order: outputs keep it, DTX gaps and all
    const decoder = new AudioDecoder({
      output: (data) => {
        const x = new Float32Array(data.numberOfFrames);
        data.copyTo(x, { planeIndex: 0, format: "f32-planar" });
        const rtp = pending.shift();
        const n = data.sampleRate / 100;
        for (let i = 0; i + n <= x.length; i += n) {
          let acc = 0;
          for (let j = i; j < i + n; j++) acc += x[j] * x[j];
          rec.blocks.push([rtp + i * 48000 / data.sampleRate, Math.sqrt(acc / n)]);
        }
        data.close();
      },
      error: (e) => rec.errors.push(`audio decoder: ${e}`),
    });
    decoder.configure({ codec: "opus", sampleRate: 48000, numberOfChannels: 2 });
    readable.pipeThrough(new TransformStream({
      transform(frame, out) {
        const meta = frame.getMetadata();
        if (rtpBase === null) rtpBase = meta.rtpTimestamp;
        try {
          if (decoder.state === "configured") {
            pending.push(rtpRel(meta.rtpTimestamp));
            decoder.decode(new EncodedAudioChunk({
              type: "key", timestamp: 1e6 * rtpRel(meta.rtpTimestamp) / 48000,
              data: primaryBlock(frame) }));
          }
        } catch (e) {
          rec.errors.push(`audio tap: ${e}`);
        }
        out.enqueue(frame);  // the page plays it whatever happened above
      },
    })).pipeTo(writable);
  }

  function poll() {
    let last = null;
    setInterval(() => {
      if (!tracks.audio) return;
      for (const s of tracks.audio.receiver.getSynchronizationSources()) {
        if (s.timestamp === last || rtpBase === null) continue;
        last = s.timestamp;
        rec.delivered.push([s.timestamp - origin, rtpRel(s.rtpTimestamp)]);
      }
    }, 2);
    setInterval(async () => {
      const row = [performance.now(), null, null];
      for (const [i, t] of [[1, tracks.audio], [2, tracks.video]]) {
        if (!t) continue;
        (await t.receiver.getStats()).forEach((s) => {
          if (s.type === "inbound-rtp" && s.estimatedPlayoutTimestamp) row[i] = s.estimatedPlayoutTimestamp;
          if (s.type === "media-playout" && s.totalSamplesCount) {
            rec.outputDelayMs = 1000 * s.totalPlayoutDelay / s.totalSamplesCount;
          }
        });
      }
      rec.playoutEstimate.push(row);
    }, 500);
  }

  return { rec, video, tap };
})();
