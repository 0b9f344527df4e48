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

  // The settings form: a field error appears next to its field and nothing is created; fixed,
  // the account is created and listed.
  async create_account(browser) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await signIn(page, env("ADMIN_TOKEN"));
    await page.goto(`${URL}/accounts/new`);
    await page.fill("#account_name", "Browser relay");
    await page.fill("#sender_email", "not-an-address");
    await page.fill("#host", env("SMTP_HOST"));
    await page.fill("#port", env("SMTP_PORT"));
    await page.selectOption("#security", "none");
    await page.click("[data-testid=save]");
    await page.waitForSelector("#sender_email-error");
    check((await page.getAttribute("#sender_email", "aria-invalid")) === "true", "the field is marked invalid");
    check((await page.inputValue("#host")) === env("SMTP_HOST"), "the other values are kept");
    await page.screenshot({ path: `${SHOTS}/settings-form.png`, fullPage: true });
    await axe(page, "the settings form with an error");
    const other = await context.newPage();
    await other.goto(`${URL}/accounts?name=Browser`);
    check((await other.locator("[data-testid=account-row]").count()) === 0, "nothing was created");
    await other.close();
    await page.fill("#sender_email", "Alerts <alerts@mailplane.test>");
    await page.click("[data-testid=save]");
    await page.waitForURL((u) => u.pathname === "/accounts");
    await page.goto(`${URL}/accounts?name=Browser`);
    check((await page.locator("[data-testid=account-row]").count()) === 1, "the account is listed");
    await context.close();
    return "a field error next to its field, then created";
  },

  // The report: search by name, 30 a page, paging that keeps the filter in the URL.
  async report_paging(browser) {
    const page = await browser.newPage();
    await signIn(page, env("ADMIN_TOKEN"));
    await page.goto(`${URL}/accounts`);
    await page.fill("#f-name", "Bulk");
    await page.click("[data-testid=search-submit]");
    await page.waitForURL((u) => u.searchParams.get("name") === "Bulk");
    const seen = [];
    for (let n = 1; ; n++) {
      const rows = await page.locator("[data-testid=account-row] td:nth-child(2)").allTextContents();
      check(rows.every((r) => r.includes("Bulk")), `page ${n} holds only the filter's accounts`);
      seen.push(...rows);
      if (n === 1) {
        check(rows.length === 30, `30 per page, not ${rows.length}`);
        await page.screenshot({ path: `${SHOTS}/accounts-report.png`, fullPage: true });
        await axe(page, "the accounts report");
      }
      const next = page.locator("[data-testid=next]");
      if ((await next.count()) === 0) break;
      await next.click();
      await page.waitForLoadState();
      check(new globalThis.URL(page.url()).searchParams.get("name") === "Bulk", "the filter stays in the URL");
    }
    check(seen.length === 100 && new Set(seen).size === 100, `100 accounts over the pages, got ${seen.length}`);
    await page.close();
    return "100 accounts in pages of 30, filter kept";
  },

  // Download CSV gives the report's filter as CSV.
  async download_csv(browser) {
    const context = await browser.newContext({ acceptDownloads: true });
    const page = await context.newPage();
    await signIn(page, env("ADMIN_TOKEN"));
    await page.goto(`${URL}/accounts?name=Bulk%2000`);
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.click("[data-testid=report-actions] summary").then(() => page.click("[data-testid=download-csv]")),
    ]);
    const path = await download.path();
    const lines = readFileSync(path, "utf8").trim().split(/\r?\n/);
    check(lines.length === 10, `a header and the 9 accounts named "Bulk 00…": ${lines.length} lines`);
    check(lines.slice(1).every((l) => l.includes("Bulk 00")), "only the filter's accounts");
    await context.close();
    return `${lines.length - 1} rows`;
  },

  // The Test Email window to the real Postfix: the phases appear live, then the verdict.
  async test_window(browser) {
    const page = await browser.newPage();
    await signIn(page, env("ADMIN_TOKEN"));
    await page.goto(`${URL}/accounts?name=Browser`);
    await page.click("[data-testid=account-row] [data-testid=test]");
    check((await page.inputValue("#subject")) === "TEST MESSAGE!", "the seed's default subject");
    check((await page.inputValue("#body")).includes("ATTENTION: THIS IS A TEST MESSAGE!"), "the seed's default message");
    await page.fill("#to", env("RCPT"));
    await page.click("[data-testid=send-test]");
    await page.waitForSelector("[data-testid=phase]");
    await page.screenshot({ path: `${SHOTS}/test-window.png`, fullPage: true });
    await page.waitForSelector("[data-testid=verdict-result]", { timeout: 30000 });
    const phases = await page.locator("[data-testid=phase]").count();
    check(phases >= 4, `the phases appeared (${phases})`);
    const verdict = await page.getAttribute("[data-testid=verdict-result]", "class");
    check(verdict.includes("ok"), `the test succeeded: ${await page.textContent("[data-testid=verdict]")}`);
    await axe(page, "the test window");
    await page.click("[data-testid=nav-history]");
    check((await page.locator("[data-testid=test-row]").count()) >= 1, "the test is in the history");
    await page.close();
    return `${phases} phases, then the verdict`;
  },

  // Mid-run: a relay that accepts the connection and never greets keeps the test in its
  // greeting phase; the phases done so far are on the page, live, and no verdict yet.
  async test_window_mid_run(browser) {
    const page = await browser.newPage();
    await signIn(page, env("ADMIN_TOKEN"));
    await page.goto(`${URL}/accounts?name=Silent`);
    await page.click("[data-testid=account-row] [data-testid=test]");
    await page.fill("#to", env("RCPT"));
    await page.click("[data-testid=send-test]");
    await page.waitForSelector("[data-testid=phase-running]");
    const done = await page.locator("[data-testid=phase]").count();
    check(done >= 2, `the lookup and the connection are shown done (${done})`);
    check((await page.locator("[data-testid=verdict-result]").count()) === 0, "no verdict yet");
    await page.screenshot({ path: `${SHOTS}/test-window-mid-run.png`, fullPage: true });
    await page.close();
    return `${done} phases done, the greeting running`;
  },

  // The same screens in Brazilian Portuguese.
  async pt_br_accounts(browser) {
    const context = await browser.newContext({ locale: "pt-BR", extraHTTPHeaders: { "Accept-Language": "pt-BR" } });
    const page = await context.newPage();
    await signIn(page, env("ADMIN_TOKEN"));
    await page.goto(`${URL}/accounts`);
    check((await page.textContent("h1")).includes("Relatório de contas"), `the report's title: ${await page.textContent("h1")}`);
    await page.goto(`${URL}/accounts?name=Browser`);
    await page.click("[data-testid=account-row] [data-testid=test]");
    check((await page.textContent("[data-testid=send-test]")).includes("Enviar"), "the send button");
    check((await page.inputValue("#subject")).length > 0, "a default subject");
    await page.fill("#to", env("RCPT_PT"));
    await page.click("[data-testid=send-test]");
    await page.waitForSelector("[data-testid=verdict-result]", { timeout: 30000 });
    const verdict = await page.textContent("[data-testid=verdict-result]");
    check(verdict.includes("Sucesso"), `the verdict in Portuguese: ${verdict}`);
    await page.screenshot({ path: `${SHOTS}/test-window-pt-BR.png`, fullPage: true });
    await context.close();
    return "Relatório de contas, Enviar, a test to Postfix: Sucesso";
  },

  // A viewer sees no Edit button, and a forged POST is refused.
  async viewer(browser) {
    const page = await browser.newPage();
    await signIn(page, env("VIEWER_TOKEN"));
    await page.goto(`${URL}/accounts?name=Bulk`);
    check((await page.locator("[data-testid=account-row]").count()) > 0, "the viewer sees the report");
    for (const control of ["edit", "delete", "set-default", "new-account"]) {
      check((await page.locator(`[data-testid=${control}]`).count()) === 0, `no ${control} for a viewer`);
    }
    const id = await page.getAttribute("[data-testid=account-row]", "data-id");
    const status = await page.evaluate(async (id) => {
      const csrf = document.querySelector("input[name=csrf]").value;
      const r = await fetch(`/accounts/${id}/default`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: `csrf=${encodeURIComponent(csrf)}`,
      });
      return r.status;
    }, id);
    check(status === 403, `the viewer's forged set-default answered ${status}`);
    await page.close();
    return "no edit controls; a forged POST is 403";
  },

  // Two people edit the same account: the second save conflicts and offers to reload.
  async stale_edit(browser) {
    const context = await browser.newContext();
    const first = await context.newPage();
    await signIn(first, env("ADMIN_TOKEN"));
    await first.goto(`${URL}/accounts?name=Browser`);
    await first.click("[data-testid=account-row] [data-testid=edit]");
    const second = await context.newPage();
    await second.goto(first.url());
    await second.fill("#footer_text", "changed by someone else");
    await second.click("[data-testid=save]");
    await second.waitForURL((u) => u.pathname === "/accounts");
    await first.fill("#footer_text", "my own change");
    await first.click("[data-testid=save]");
    await first.waitForSelector("[data-testid=conflict]");
    check((await first.locator("[data-testid=reload]").count()) === 1, "a reload link");
    await context.close();
    return "the stale save conflicts";
  },

  // A POST without the form's CSRF token changes nothing.
  async csrf_forms(browser) {
    const page = await browser.newPage();
    await signIn(page, env("ADMIN_TOKEN"));
    await page.goto(`${URL}/accounts`);
    const status = await page.evaluate(async () => {
      const r = await fetch("/accounts/new", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: "account_name=Forged&sender_email=f%40mailplane.test&host=h.mailplane.test",
      });
      return r.status;
    });
    check(status === 403, `a create without the CSRF token answered ${status}`);
    await page.goto(`${URL}/accounts?name=Forged`);
    check((await page.locator("[data-testid=account-row]").count()) === 0, "nothing was created");
    await page.close();
    return "refused, nothing created";
  },

  // The keyboard alone: sign in, skip to the content, open the actions menu, reach a row's
  // Edit link and follow it.
  async keyboard(browser) {
    const page = await browser.newPage();
    await page.goto(`${URL}/sign-in`);
    const focused = () => page.evaluate(() => {
      const e = document.activeElement;
      return e ? (e.id || e.getAttribute("data-testid") || e.getAttribute("href") || e.tagName) : "";
    });
    for (let i = 0; i < 10 && (await focused()) !== "token"; i++) await page.keyboard.press("Tab");
    check((await focused()) === "token", "Tab reaches the token field");
    await page.keyboard.type(env("ADMIN_TOKEN"));
    await page.keyboard.press("Enter");
    await page.waitForURL((u) => u.pathname === "/accounts");
    await page.keyboard.press("Tab");
    check((await focused()) === "#main", `the first Tab is the skip link, not ${await focused()}`);
    await page.keyboard.press("Enter");
    check((await focused()) === "main", `the skip link moves to the content: ${await focused()}`);
    const inMenu = () => page.evaluate(() => !!document.activeElement.closest("[data-testid=report-actions]"));
    for (let i = 0; i < 40 && !(await inMenu()); i++) await page.keyboard.press("Tab");
    check(await inMenu(), "Tab reaches the actions menu");
    await page.keyboard.press("Enter");
    check(await page.evaluate(() => document.querySelector("[data-testid=report-actions]").open), "Enter opens the actions menu");
    await page.keyboard.press("Tab");
    check((await focused()) === "new-account", `the menu's first item is New: ${await focused()}`);
    for (let i = 0; i < 60 && (await focused()) !== "edit"; i++) await page.keyboard.press("Tab");
    check((await focused()) === "edit", "Tab reaches a row's Edit link");
    await page.keyboard.press("Enter");
    await page.waitForURL((u) => u.pathname.endsWith("/edit"));
    await page.close();
    return "sign-in, skip link, actions menu, Edit by keyboard";
  },

  // axe-core on the other pages.
  async axe_pages(browser) {
    const page = await browser.newPage();
    await signIn(page, env("ADMIN_TOKEN"));
    const report = [];
    for (const path of ["/accounts", "/accounts/new", "/credentials", "/credentials/new", "/connectors", "/messages", "/audit"]) {
      await page.goto(`${URL}${path}`);
      report.push(`${path}: ${await axe(page, path)} minor`);
    }
    await page.close();
    return report.join(", ");
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
