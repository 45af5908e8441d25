// Plays the demo page in headless Debian Chromium: `node play.mjs URL PLAYERS SECONDS`.
//
// Opens PLAYERS tabs on URL (the demo page at the edge's root), waits until
// each plays, watches them for SECONDS and prints one JSON line: for each
// player how far playback advanced, how often it stalled after it began, its
// fatal hls.js errors and the segments it loaded with their Cache-Status.
// The page's hls.js comes from the demo origin's local copy (through the
// edge); should it fall back to the CDN, npm's copy answers instead. Any
// other request off this machine is refused.

import { createRequire } from "node:module";
import { LOCAL, launch } from "./chromium.mjs";

const [url, playersArg, secondsArg] = process.argv.slice(2);
const players = Number(playersArg);
const seconds = Number(secondsArg);
if (!url || !(players > 0) || !(seconds > 0)) {
  console.error("usage: node play.mjs URL PLAYERS SECONDS");
  process.exit(2);
}
const hlsJs = createRequire(import.meta.url).resolve("hls.js/dist/hls.min.js");

const browser = await launch([
  // Every tab is a player in the foreground: no throttling of hidden ones.
  "--autoplay-policy=no-user-gesture-required",
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
]);
try {
  const context = await browser.newContext();
  await context.route(
    (u) => !LOCAL.test(u.href),
    (route) =>
      route.request().url().endsWith("/hls.min.js")
        ? route.fulfill({ path: hlsJs, contentType: "application/javascript" })
        : route.abort(),
  );
  const pages = [];
  for (let i = 0; i < players; i++) pages.push(await context.newPage());
  const logs = pages.map(() => []);
  pages.forEach((page, i) => page.on("console", (m) => logs[i].push(`${m.type()}: ${m.text()}`)));
  await Promise.all(pages.map((page) => page.goto(url)));

  const read = (page) =>
    page.evaluate(() => {
      const video = document.getElementById("player");
      const demo = window.outpostDemo;
      return { time: video.currentTime, stalls: demo.stalled(), blips: demo.blips, fatal: demo.fatal, segments: demo.segments };
    });
  // Start: every player has begun (bounded: 30 s).
  await Promise.all(
    pages.map((page) =>
      page.waitForFunction(() => window.outpostDemo?.playing && document.getElementById("player").currentTime > 0, null, {
        timeout: 30_000,
        polling: 100,
      }),
    ),
  );
  const start = await Promise.all(pages.map(read));
  const begun = Date.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const end = await Promise.all(pages.map(read));
  const watched = (Date.now() - begun) / 1000;
  const result = end.map((e, i) => ({
    advanced: e.time - start[i].time,
    stalls: e.stalls - start[i].stalls,
    blips: e.blips - start[i].blips,
    fatal: e.fatal,
    segments: e.segments,
    console: logs[i].filter((l) => l.startsWith("error")),
  }));
  console.log(JSON.stringify({ watched, players: result }));
} finally {
  await browser.close();
}
