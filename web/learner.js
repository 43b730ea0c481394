// The learner's page (learner.html): one lesson room, joined with the router's token.
//
// - The tutor: the avatar's video and voice (participants "avatar-…", or `who`), with a ring
//   while it speaks (its audio level, read through WebAudio).
// - Captions: every transcription on "lk.transcription" (the tutor's words as they are spoken,
//   the learner's own utterances as the worker transcribes them). A stream's chunks are appended
//   as they arrive; a new stream for a segment already shown replaces its text. A caption whose
//   transcribed track is one of ours is the learner's ("You"), any other is the tutor's. Each
//   line's direction follows its language (right-to-left for Persian, Arabic, Hebrew, Urdu) or
//   its text.
// - Microphone on/off (button or M) with a level meter; published as the learner's microphone.
// - "Tap to start audio" when the browser blocks autoplay (room.startAudio() on the tap).
// - Connection quality, reconnection: livekit-client resumes by itself after a short drop
//   (Reconnecting -> Reconnected); if the room is lost anyway the page joins again with the
//   same token, backing off from 1 s to 15 s, unless the learner left or the lesson ended.
//
// window.learnerUi holds what the page shows (state, captions with their times, levels) for
// tests; window.lkRoom is the current Room.
(() => {
  const LK = LivekitClient;
  const q = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);
  const crop = q.get("measure") ? q.get("measure").split(",").map(Number) : null;
  const size = Number(q.get("size") || 512);
  const wantMic = !crop && q.get("mic") !== "0";
  const isTutor = (p) => (q.get("who") ? p.identity === q.get("who")
                                        : p.identity.startsWith("avatar-"));
  const RTL = new Set(["fa", "ar", "he", "ur", "ps"]);
  const ENDED = new Set([LK.DisconnectReason.CLIENT_INITIATED, LK.DisconnectReason.DUPLICATE_IDENTITY,
                         LK.DisconnectReason.PARTICIPANT_REMOVED, LK.DisconnectReason.ROOM_DELETED,
                         LK.DisconnectReason.ROOM_CLOSED]);

  const ui = window.learnerUi = {
    state: "connecting", quality: "unknown", micOn: false, micLevel: 0, audioBlocked: false,
    tutor: null, joins: 0, reconnects: 0, captions: [], tutorLevel: [], errors: [],
  };
  window.avRecord = { ready: false, error: null };  // measure mode: joined, or why not
  let room = null;
  let left = false;
  let retry = null;
  let audioCtx = null;
  let micAnalyser = null;
  let tutorAnalyser = null;

  function status(text, alert = false) {
    $("status").textContent = text;
    $("status").classList.toggle("alert", alert);
  }

  function setState(state) {
    ui.state = state;
    document.body.dataset.state = state;
  }

  function setQuality(quality) {
    ui.quality = quality;
    $("quality").dataset.q = quality;
    $("quality-text").textContent = {
      excellent: "excellent connection", good: "good connection", poor: "poor connection",
      lost: "connection lost", unknown: "connecting",
    }[quality] || quality;
  }

  // --- audio levels (WebAudio) ----------------------------------------------------------------
  function context() {
    if (!audioCtx) audioCtx = new AudioContext();
    return audioCtx;
  }

  function analyser(mediaStreamTrack) {
    const ctx = context();
    const node = ctx.createAnalyser();
    node.fftSize = 1024;
    ctx.createMediaStreamSource(new MediaStream([mediaStreamTrack])).connect(node);
    return node;
  }

  function rms(node) {
    if (!node) return 0;
    const buf = new Float32Array(node.fftSize);
    node.getFloatTimeDomainData(buf);
    let s = 0;
    for (const x of buf) s += x * x;
    return Math.sqrt(s / buf.length);
  }

  setInterval(() => {
    ui.micLevel = ui.micOn ? rms(micAnalyser) : 0;
    const pct = Math.min(100, Math.round(Math.sqrt(ui.micLevel) * 250));
    $("meter").firstElementChild.style.width = `${pct}%`;
    $("meter").setAttribute("aria-valuenow", String(pct));
    if (tutorAnalyser) {
      const level = rms(tutorAnalyser);
      $("stage").classList.toggle("speaking", level > 0.01);
      ui.tutorLevel.push([performance.now(), level]);
      if (ui.tutorLevel.length > 20000) ui.tutorLevel.splice(0, 5000);
    }
  }, 20);

  // --- captions -------------------------------------------------------------------------------
  const lines = new Map();  // segment id -> { li, entry }

  function line(segment, who, language) {
    let l = lines.get(segment);
    if (!l) {
      const li = document.createElement("li");
      li.className = who;
      li.innerHTML = '<span class="who"></span><span class="text"></span>';
      li.querySelector(".who").textContent = who === "you" ? "You" : (ui.tutor || "Tutor");
      const text = li.querySelector(".text");
      text.dir = RTL.has((language || "").split("-")[0]) ? "rtl" : "auto";
      if (language) text.lang = language;
      $("captions").appendChild(li);
      const entry = { id: segment, who, language: language || null, text: "", final: false,
                      firstAt: null, lastAt: null };
      ui.captions.push(entry);
      l = { li, entry };
      lines.set(segment, l);
      while ($("captions").children.length > 100) $("captions").firstElementChild.remove();
    }
    return l;
  }

  async function onTranscription(reader, from) {
    const a = reader.info.attributes || {};
    const track = a["lk.transcribed_track_id"];
    const mine = from.identity === room.localParticipant.identity
      || (track && room.localParticipant.trackPublications.has(track));
    const { li, entry } = line(a["lk.segment_id"] || reader.info.id, mine ? "you" : "tutor",
                               a["lk.language"]);
    const text = li.querySelector(".text");
    const list = $("captions");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    entry.text = "";
    entry.final = false;
    li.classList.add("interim");
    try {
      for await (const chunk of reader) {
        entry.text += chunk;
        entry.lastAt = performance.now();
        if (entry.firstAt === null) entry.firstAt = entry.lastAt;
        text.textContent = entry.text;
        if (atBottom) list.scrollTop = list.scrollHeight;
      }
    } catch (e) {
      ui.errors.push(`caption: ${e}`);
    }
    entry.final = true;
    li.classList.remove("interim");
  }

  // --- the tutor ------------------------------------------------------------------------------
  function onTrack(track, pub, participant) {
    if (crop) window.avMeasure.tap(track, isTutor(participant));  // every track, or it stalls
    if (!isTutor(participant)) return;
    ui.tutor = participant.name || participant.identity;
    $("title").textContent = `Lesson with ${ui.tutor}`;
    if (track.kind === "video") {
      const el = $("tutor");
      track.attach(el);
      if (crop) window.avMeasure.video(el, crop, size);
    } else if (track.kind === "audio") {
      track.attach($("voice"));
      if (!crop) tutorAnalyser = analyser(track.mediaStreamTrack);
    }
    status(`your tutor: ${ui.tutor}`);
  }

  function showUnmute() {
    ui.audioBlocked = !!room && !room.canPlaybackAudio;
    $("unmute").classList.toggle("hidden", !ui.audioBlocked);
  }

  // --- microphone -----------------------------------------------------------------------------
  async function setMic(on) {
    const button = $("mic");
    button.disabled = true;
    try {
      const pub = await room.localParticipant.setMicrophoneEnabled(on);
      ui.micOn = on;
      micAnalyser = on && pub && pub.track ? analyser(pub.track.mediaStreamTrack) : null;
    } catch (e) {
      ui.micOn = false;
      ui.errors.push(`microphone: ${e}`);
      status(`microphone unavailable: ${e.message || e}`, true);
    } finally {
      button.disabled = false;
      button.setAttribute("aria-pressed", String(ui.micOn));
      button.textContent = ui.micOn ? "Microphone on" : "Microphone off";
    }
  }

  // --- joining, reconnecting, leaving ---------------------------------------------------------
  async function join(attempt = 0) {
    retry = null;
    const r = new LK.Room({ adaptiveStream: false, dynacast: false });
    room = window.lkRoom = r;
    r.on(LK.RoomEvent.TrackSubscribed, onTrack)
      .on(LK.RoomEvent.TrackUnsubscribed, (track) => track.detach())
      .on(LK.RoomEvent.ParticipantDisconnected, (p) => {
        if (isTutor(p)) { tutorAnalyser = null; status("waiting for the tutor…"); }
      })
      .on(LK.RoomEvent.AudioPlaybackStatusChanged, showUnmute)
      .on(LK.RoomEvent.ConnectionQualityChanged, (quality, p) => {
        if (p === r.localParticipant) setQuality(quality);
      })
      .on(LK.RoomEvent.Reconnecting, () => {
        setState("reconnecting");
        setQuality("lost");
        status("Connection lost, reconnecting…", true);
      })
      .on(LK.RoomEvent.Reconnected, () => {
        ui.reconnects++;
        setState("connected");
        status(ui.tutor ? `your tutor: ${ui.tutor}` : "waiting for the tutor…");
      })
      .on(LK.RoomEvent.Disconnected, (reason) => {
        if (r !== room) return;
        tutorAnalyser = micAnalyser = null;
        ui.micOn = false;
        if (left) return;
        if (ENDED.has(reason)) {
          setState("ended");
          status("The lesson has ended.");
          $("leave").classList.add("hidden");
          return;
        }
        setState("reconnecting");
        setQuality("lost");
        status("Connection lost, joining again…", true);
        retry = setTimeout(() => join(1), 1000);
      });
    r.registerTextStreamHandler("lk.transcription", onTranscription);
    setState(attempt ? "reconnecting" : "connecting");
    try {
      // measuring reads the received audio through an encoded-frame transform (measure.js)
      await r.connect(q.get("url"), q.get("token"),
                      crop ? { rtcConfig: { encodedInsertableStreams: true } } : {});
    } catch (e) {
      if (r !== room || left) return;
      window.avRecord.error = String(e);
      ui.errors.push(`connect: ${e}`);
      if (e && e.reason === LK.ConnectionErrorReason.NotAllowed) {
        setState("failed");
        status(`could not join: ${e.message || e} (ask for a new lesson link)`, true);
        return;
      }
      const wait = Math.min(15000, 1000 * 2 ** attempt);
      status(`could not join (${e.message || e}); trying again in ${wait / 1000} s…`, true);
      retry = setTimeout(() => join(attempt + 1), wait);
      return;
    }
    ui.joins++;
    if (attempt) ui.reconnects++;
    setState("connected");
    window.avRecord.ready = true;
    $("leave").classList.remove("hidden");
    $("rejoin").classList.add("hidden");
    if (!ui.tutor) status("waiting for the tutor…");
    showUnmute();
    if (!crop) $("mic").disabled = false;
    if (wantMic) await setMic(true);
  }

  async function leave() {
    left = true;
    clearTimeout(retry);
    setState("left");
    if (room) await room.disconnect();
    status("You left the lesson.");
    $("leave").classList.add("hidden");
    $("rejoin").classList.remove("hidden");
    $("mic").disabled = true;
    $("rejoin").focus();
  }

  $("mic").addEventListener("click", () => setMic(!ui.micOn));
  $("leave").addEventListener("click", leave);
  $("rejoin").addEventListener("click", () => { left = false; join(); });
  $("unmute").addEventListener("click", async () => {
    await room.startAudio();
    if (audioCtx) await audioCtx.resume();
    showUnmute();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key.toLowerCase() === "m" && !e.ctrlKey && !e.metaKey && !e.altKey
        && !$("mic").disabled && !(e.target instanceof HTMLInputElement)) {
      setMic(!ui.micOn);
    }
  });
  join();
})();
