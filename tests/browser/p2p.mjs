// Viewers in one swarm, in headless Debian Chromium: p2p-media-loader with
// hls.js, the edge as the HTTP source, a WebTorrent tracker on loopback
// (bittorrent-tracker). `node p2p.mjs PAGE_URL` prints one JSON line with
// three scenes:
// - alone: WebRTC is unavailable in the page; the stream plays from the edge;
// - swarm: a seeder, then a viewer who takes segments from it, each checked
//   against the edge's hash list;
// - tamper: a fake peer that flips a byte of every segment it uploads, then
//   an honest viewer, who must reject those and fetch them from the edge;
// - stall: a peer that sends the first 16 KiB of a segment and goes quiet,
//   then a viewer who must finish that segment from the edge with a range
//   request, and check the joined segment against the hash list.

import { LOCAL, launch } from "./chromium.mjs";
import Server from "bittorrent-tracker/server";

const [page] = process.argv.slice(2);
if (!page) {
  console.error("usage: node p2p.mjs PAGE_URL");
  process.exit(2);
}

const tracker = new Server({ udp: false, http: true, ws: true, stats: false });
await new Promise((done) => tracker.listen(0, "127.0.0.1", done));
const announce = `ws://127.0.0.1:${tracker.http.address().port}`;

const browser = await launch([
  "--autoplay-policy=no-user-gesture-required",
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
  // Peers on one machine: loopback ICE candidates, as plain addresses.
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
]);

async function viewer(query, { noWebRtc = false } = {}) {
  const context = await browser.newContext();
  await context.route((u) => !LOCAL.test(u.href), (route) => route.abort());
  if (noWebRtc) {
    await context.addInitScript(() => {
      delete window.RTCPeerConnection;
      delete window.webkitRTCPeerConnection;
    });
  }
  const tab = await context.newPage();
  const logs = [];
  const requests = [];
  // What this viewer asked of the edge for segments, ranges included, and
  // what came back.
  tab.on("response", (r) => {
    if (!r.url().endsWith(".ts")) return;
    const range = r.request().headers()["range"] ?? null;
    requests.push({ uri: r.url().split("/").pop(), range, status: r.status(), contentRange: r.headers()["content-range"] ?? null });
  });
  tab.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  tab.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  await tab.goto(`${page}?tracker=${encodeURIComponent(announce)}${query}`);
  return { tab, logs, requests, context };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function state(v) {
  const empty = { http: 0, p2p: 0, accepted: [], rejected: [], uploaded: 0, errors: [], fatal: [] };
  const r = { ...empty, ...(await v.tab.evaluate(() => ({ ...window.report, played: window.played?.() ?? 0 }))) };
  return { ...r, requests: v.requests, logs: v.logs.slice(-8) };
}
async function until(v, test, ms) {
  const end = Date.now() + ms;
  let s = await state(v);
  while (!test(s) && Date.now() < end) {
    await sleep(250);
    s = await state(v);
  }
  return s;
}

const out = {};
try {
  const alone = await viewer("", { noWebRtc: true });
  out.alone = await until(alone, (s) => s.played >= 6, 30000);
  await alone.context.close();

  const seeder = await viewer("");
  out.seeder = await until(seeder, (s) => s.http > 0 && s.played >= 2, 30000);
  await sleep(3000);
  const leecher = await viewer("");
  out.leecher = await until(leecher, (s) => s.accepted.length >= 3 && s.played >= 4, 40000);
  await seeder.context.close();
  await leecher.context.close();

  const fake = await viewer("&tamper");
  out.fake = await until(fake, (s) => s.http > 0 && s.played >= 2, 30000);
  await sleep(3000);
  const honest = await viewer("");
  out.honest = await until(honest, (s) => s.rejected.length >= 1 && s.played >= 6, 40000);
  out.fake = await state(fake);
  await fake.context.close();
  await honest.context.close();

  const staller = await viewer("&stall");
  out.staller = await until(staller, (s) => s.http > 0 && s.played >= 2, 30000);
  await sleep(3000);
  const resumer = await viewer("&checkhttp");
  const resumed = (s) => s.requests.some((r) => r.range && r.status === 206);
  out.resumer = await until(resumer, (s) => resumed(s) && s.played >= 6, 40000);
  out.staller = await state(staller);
  await staller.context.close();
  await resumer.context.close();
} finally {
  console.log(JSON.stringify(out));
  await browser.close();
  tracker.close();
}
