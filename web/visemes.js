// A client of the viseme stream (docs/viseme-stream.md): the tutor drawn on a canvas.
//
// Frames arrive on the data topic "avatar.visemes". Each packet carries the sender time at
// which its first frame's audio started to play into the avatar's track (t) and when it was
// sent (s). The smallest (arrival - s) over the last 5 s is the sender-to-page clock difference
// plus the network delay (which the audio shares); the audio then waits in the jitter buffer
// and the output device (getStats(): inbound-rtp and media-playout). Their sum maps a frame's
// t to the page time at which its audio is heard, and that frame is drawn then.
//
// One mouth is drawn from the blend of the visemes' shape parameters (opening, width,
// rounding, teeth), not from blended pictures.
(() => {
  const LK = LivekitClient;
  const q = new URLSearchParams(location.search);
  const measuring = q.has("measure");
  const NTP_EPOCH_MS = 2208988800000;
  const TOPIC = "avatar.visemes";
  // per viseme (sil PP FF TH DD kk CH SS nn RR aa E ih oh ou): [opening, width, rounding, teeth]
  const SHAPES = [
    [0.0, 0.50, 0.0, 0.0], [0.0, 0.44, 0.15, 0.0], [0.10, 0.52, 0.0, 1.0], [0.22, 0.50, 0.0, 0.8],
    [0.25, 0.54, 0.0, 0.7], [0.32, 0.50, 0.0, 0.5], [0.22, 0.40, 0.55, 0.9], [0.12, 0.60, 0.0, 1.0],
    [0.20, 0.50, 0.0, 0.6], [0.25, 0.40, 0.55, 0.4], [0.85, 0.60, 0.0, 0.3], [0.50, 0.70, 0.0, 0.6],
    [0.38, 0.64, 0.0, 0.7], [0.62, 0.36, 0.80, 0.2], [0.32, 0.26, 1.0, 0.0],
  ];
  const state = window.visemeClient = {
    frames: [],            // [sender time ms, 16 values], sorted, the last ~10 s
    packets: 0, offsetMs: null, drawn: 0, opening: 0, connected: false, error: null,
    netMs: null, jitterMs: 0, outputMs: 0,
  };
  const arrivals = [];  // [page epoch ms, arrival - s]
  window.avRecord = { ready: false, error: null };
  const status = (s) => { document.getElementById("status").textContent = s; };
  const g = document.getElementById("face").getContext("2d");
  let audioReceiver = null;

  function onData(payload, participant, _kind, topic) {
    if (topic !== TOPIC || !participant || !participant.identity.startsWith("avatar-")) return;
    let p;
    try { p = JSON.parse(new TextDecoder().decode(payload)); } catch { return; }
    if (p.v !== 1 || !Array.isArray(p.f)) return;
    const now = performance.timeOrigin + performance.now();
    arrivals.push([now, now - p.s]);
    while (arrivals.length && arrivals[0][0] < now - 5000) arrivals.shift();
    state.netMs = Math.min(...arrivals.map((a) => a[1]));
    state.offsetMs = state.netMs + state.jitterMs + state.outputMs;
    p.f.forEach((row, i) => state.frames.push([p.t + (i * 1000) / p.fps, row]));
    state.frames.sort((a, b) => a[0] - b[0]);
    const keepFrom = state.frames[state.frames.length - 1][0] - 10000;
    while (state.frames.length && state.frames[0][0] < keepFrom) state.frames.shift();
    state.packets++;
  }

  // the audio's receive delay: jitter buffer (over the last poll) and output device
  let last = null;
  async function pollDelays() {
    if (!audioReceiver) return;
    (await audioReceiver.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.jitterBufferEmittedCount) {
        if (last && s.jitterBufferEmittedCount > last.n) {
          state.jitterMs = (1000 * (s.jitterBufferDelay - last.d))
            / (s.jitterBufferEmittedCount - last.n);
        }
        last = { d: s.jitterBufferDelay, n: s.jitterBufferEmittedCount };
      }
      if (s.type === "media-playout" && s.totalSamplesCount) {
        state.outputMs = (1000 * s.totalPlayoutDelay) / s.totalSamplesCount;
      }
    });
  }
  setInterval(pollDelays, 250);

  function frameNow() {
    const pageNow = performance.timeOrigin + performance.now();
    const senderNow = pageNow - (state.offsetMs === null ? 120 : state.offsetMs);
    let row = null;
    for (const [t, r] of state.frames) {
      if (t > senderNow) break;
      row = r;
    }
    return row;
  }

  function draw() {
    const row = frameNow();
    const w = row ? row.slice(0, 15) : [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    const blink = row ? row[15] : 0;
    const shape = [0, 0, 0, 0];
    const total = w.reduce((a, b) => a + b, 0) || 1;
    w.forEach((x, i) => SHAPES[i].forEach((v, k) => { shape[k] += (x / total) * v; }));
    const [open, width, round, teeth] = shape;
    g.clearRect(0, 0, 512, 512);
    g.fillStyle = "#f2c9a5";                                   // face
    g.beginPath(); g.ellipse(256, 260, 150, 185, 0, 0, 2 * Math.PI); g.fill();
    g.fillStyle = "#4a3426";                                   // hair
    g.beginPath(); g.ellipse(256, 150, 160, 100, 0, Math.PI, 2 * Math.PI); g.fill();
    for (const x of [200, 312]) {                              // eyes, lids closing on a blink
      g.fillStyle = "#fff";
      g.beginPath(); g.ellipse(x, 235, 22, 14 * (1 - 0.95 * blink), 0, 0, 2 * Math.PI); g.fill();
      if (blink < 0.7) {
        g.fillStyle = "#3b2a20";
        g.beginPath(); g.arc(x, 235, 8, 0, 2 * Math.PI); g.fill();
      }
    }
    const mw = 40 + 70 * width - 20 * round;                   // one mouth from the blend
    const mh = 3 + 56 * open;
    g.fillStyle = "#b5535b";
    g.beginPath(); g.ellipse(256, 360, mw + 6, mh / 2 + 6, 0, 0, 2 * Math.PI); g.fill();
    g.fillStyle = "#3a1418";
    g.beginPath(); g.ellipse(256, 360, mw, mh / 2, 0, 0, 2 * Math.PI); g.fill();
    if (teeth > 0.3 && open > 0.05) {
      g.fillStyle = "#f4f1ea";
      g.fillRect(256 - mw * 0.6, 360 - mh / 2, mw * 1.2, Math.min(mh * 0.3, 10) * teeth);
    }
    state.opening = open;
    state.drawn++;
    if (measuring) window.avMeasure.rec.video.push([performance.now(), 100 * open]);
    requestAnimationFrame(draw);
  }
  requestAnimationFrame(draw);

  (async () => {
    const room = new LK.Room({ adaptiveStream: false, dynacast: false });
    window.lkRoom = room;
    room.on(LK.RoomEvent.DataReceived, onData);
    room.on(LK.RoomEvent.TrackPublished, (pub, p) => {
      if (p.identity.startsWith("avatar-") && pub.kind === "audio") pub.setSubscribed(true);
    });
    room.on(LK.RoomEvent.TrackSubscribed, (track, _pub, p) => {
      if (measuring) window.avMeasure.tap(track, p.identity.startsWith("avatar-"));
      if (!p.identity.startsWith("avatar-") || track.kind !== "audio") return;
      track.attach(document.getElementById("voice"));
      audioReceiver = track.receiver;
      status(`your tutor: ${p.name || p.identity}`);
    });
    room.on(LK.RoomEvent.AudioPlaybackStatusChanged, () => {
      document.getElementById("unmute").hidden = room.canPlaybackAudio;
    });
    document.getElementById("unmute").onclick = () => room.startAudio();
    try {
      await room.connect(q.get("url"), q.get("token"), {
        autoSubscribe: false,  // the tutor's audio only: no video is needed to draw it
        ...(measuring ? { rtcConfig: { encodedInsertableStreams: true } } : {}),
      });
      for (const p of room.remoteParticipants.values()) {
        if (!p.identity.startsWith("avatar-")) continue;
        for (const pub of p.trackPublications.values()) {
          if (pub.kind === "audio") pub.setSubscribed(true);
        }
      }
      state.connected = true;
      window.avRecord.ready = true;
      if (!audioReceiver) status("waiting for the tutor…");
    } catch (e) {
      state.error = window.avRecord.error = String(e);
      status(`could not join: ${e}`);
    }
  })();
})();
