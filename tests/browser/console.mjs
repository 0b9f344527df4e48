// The web console's scenarios in a real browser: Debian's chromium (/usr/bin/chromium) driven
// by playwright-core (which downloads no browser), with axe-core checking accessibility.
//
// Run by the e2e test `browser::the_console_in_a_real_browser`, which starts the server, the
// Postfix fixture and the tokens, and passes them in the environment:
//   CONSOLE_URL, ADMIN_TOKEN, VIEWER_TOKEN, SMTP_HOST, SMTP_PORT, CREDENTIAL, RCPT,
//   SCREENSHOTS (a folder), SCENARIOS (optional, comma-separated names to run).
// Each scenario prints one JSON line {"scenario", "ok", "detail"}; the process exits non-zero
// on the first failure, with what was expected and what the page showed.

import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (the e2e test sets it)`);
  return v;
};
const URL = env("CONSOLE_URL");
const SHOTS = env("SCREENSHOTS");
mkdirSync(SHOTS, { recursive: true });

function check(cond, message) {
  if (!cond) throw new Error(message);
}

async function signIn(page, token, lang = "en") {
  await page.goto(`${URL}/sign-in`);
  if (lang !== "en") {
    await page.click(`a[hreflang="${lang}"]`);
  }
  await page.fill("#token", token);
  await page.click("form[action='/sign-in'] button[type=submit]");
  await page.waitForURL((u) => !u.pathname.startsWith("/sign-in"));
}

/// axe-core on the current page: no serious or critical violation.
async function axe(page, what) {
  // The page's CSP forbids inline scripts; the DevTools protocol evaluates axe regardless.
  await page.evaluate(AXE);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "wcag21aa"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  const serious = result.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(serious.length === 0, `axe on ${what}: ${JSON.stringify(serious)}`);
  return result.length;
}

const scenarios = {
  // Signing in with a token leads to the accounts; a wrong token stays on the form, with an
  // error that is announced.
  async sign_in(browser) {
    const page = await browser.newPage();
    await page.goto(`${URL}/accounts`);
    check(page.url().includes("/sign-in"), `not sent to sign in: ${page.url()}`);
    await page.fill("#token", "mpt_1_wrong");
    await page.click("form[action='/sign-in'] button[type=submit]");
    const error = await page.textContent("#signin-error");
    check(error && error.length > 0, "no error for a wrong token");
    await signIn(page, env("ADMIN_TOKEN"));
    check(new globalThis.URL(page.url()).pathname === "/accounts", `after sign-in: ${page.url()}`);
    const who = await page.textContent(".who");
    check(who.includes("admin"), `the header names the role: ${who}`);
    await page.click("form.signout button");
    await page.waitForURL((u) => u.pathname === "/sign-in");
    await page.goto(`${URL}/accounts`);
    check(page.url().includes("/sign-in"), "signed out, the console asks to sign in again");
    await page.close();
    return "signed in, refused a wrong token, signed out";
  },

  // A form posted without its CSRF token is refused, and so is one from another session.
  async csrf(browser) {
    const page = await browser.newPage();
    await signIn(page, env("ADMIN_TOKEN"));
    const status = await page.evaluate(async () => {
      const r = await fetch("/sign-out", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: "csrf=forged",
      });
      return r.status;
    });
    check(status === 403, `a sign-out with a forged token answered ${status}`);
    await page.goto(`${URL}/accounts`);
    check(!page.url().includes("/sign-in"), "the forged sign-out ended the session");
    await page.close();
    return "a forged CSRF token is refused (403) and changes nothing";
  },

  // The console in Brazilian Portuguese: chosen by Accept-Language, and by the switch.
  async pt_br(browser) {
    const context = await browser.newContext({ locale: "pt-BR", extraHTTPHeaders: { "Accept-Language": "pt-BR,pt;q=0.9" } });
    const page = await context.newPage();
    await page.goto(`${URL}/sign-in`);
    check((await page.getAttribute("html", "lang")) === "pt-BR", "Accept-Language pt-BR picks pt-BR");
    check((await page.textContent("h1")).includes("Entrar"), "the sign-in title in Portuguese");
    await page.fill("#token", env("ADMIN_TOKEN"));
    await page.click("form[action='/sign-in'] button[type=submit]");
    await page.waitForURL((u) => !u.pathname.startsWith("/sign-in"));
    const nav = await page.textContent("header nav[aria-label]");
    check(nav.includes("Contas"), `the navigation in Portuguese: ${nav}`);
    await page.click('a[hreflang="en"]');
    check((await page.getAttribute("html", "lang")) === "en", "the switch goes back to English");
    await context.close();
    return "Accept-Language and the switch";
  },

  // axe-core finds no serious violation on the sign-in page.
  async axe_sign_in(browser) {
    const page = await browser.newPage();
    await page.goto(`${URL}/sign-in`);
    const minor = await axe(page, "the sign-in page");
    await page.screenshot({ path: `${SHOTS}/sign-in.png` });
    await page.close();
    return `no serious violation (${minor} minor)`;
  },
};

const wanted = (process.env.SCENARIOS || Object.keys(scenarios).join(","))
  .split(",")
  .map((s) => s.trim())
  .filter(Boolean);

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
let failed = false;
for (const name of wanted) {
  const run = scenarios[name];
  if (!run) {
    console.log(JSON.stringify({ scenario: name, ok: false, detail: "no such scenario" }));
    failed = true;
    break;
  }
  try {
    const detail = await run(browser);
    console.log(JSON.stringify({ scenario: name, ok: true, detail }));
  } catch (e) {
    console.log(JSON.stringify({ scenario: name, ok: false, detail: String(e && e.stack || e) }));
    failed = true;
    break;
  }
}
await browser.close();
process.exit(failed ? 1 : 0);
