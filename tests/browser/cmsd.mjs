// Plays a live DASH stream with dash.js in headless Debian Chromium and
// prints what the player received of the edge's CMSD-Dynamic:
// `node cmsd.mjs URL SECONDS` (URL: the page, served through the edge).
//
// Prints one JSON line: `received`, the raw header of each response as the
// player's response interceptor saw it, and `parsed`, the values dash.js
// itself parsed and kept in its metrics for video segments.

import { LOCAL, launch } from "./chromium.mjs";

const [url, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
if (!url || !(seconds > 0)) {
  console.error("usage: node cmsd.mjs URL SECONDS");
  process.exit(2);
}

const browser = await launch([
  "--autoplay-policy=no-user-gesture-required",
]);
try {
  const context = await browser.newContext();
  await context.route((u) => !LOCAL.test(u.href), (route) => route.abort());
  const page = await context.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  await page.goto(url);
  const deadline = Date.now() + seconds * 1000;
  let report = { received: [], parsed: [] };
  while (Date.now() < deadline) {
    await page.waitForTimeout(500);
    report = await page.evaluate(() => ({ received: window.received, parsed: window.parsed() }));
    if (report.parsed.length >= 3) break;
  }
  report.logs = logs.slice(-20);
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
