// Debian's Chromium as every browser test starts it: headless, with what
// would reach off this machine turned off (`--disable-background-networking`
// and the rest), plus the test's own `extra` flags.

import { chromium } from "playwright-core";

// What a test lets its pages ask for: this machine only (the edge, the
// origin, a tracker); anything else is refused with `context.route`.
export const LOCAL = /^(https?|wss?):\/\/(127\.0\.0\.1|\[::1\]|localhost)[:/]/;

export function launch(extra = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...extra,
    ],
  });
}
