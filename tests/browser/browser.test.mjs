// The register browser in a real browser: headless Debian Chromium driven by playwright-core.
// Started by tests/browser/run.sh with BASE_URL (a server over the shipped registers) and
// SCREENSHOTS (where each page's screenshot goes). No test framework: each step checks what it
// must and the first failure stops the run with a non-zero exit.
//
// The journeys: home → ODS register → type "densham" (results within 300 ms of the last
// keystroke) → A81001 → its history → the diff of 2019-10-01 and 2020-01-01 (54 additions);
// ICD-10 from chapter X down to J45.9; a ValueSet, the search across registers and an error page;
// the same pages with JavaScript switched off and on a 375 px wide screen. axe-core runs on every
// page: no serious or critical violation is allowed. No page may break its Content-Security-Policy.

import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const BASE = process.env.BASE_URL || "http://127.0.0.1:8080";
const SHOTS = process.env.SCREENSHOTS || "target/browser-screenshots";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SEARCH_WITHIN_MS = 300;

mkdirSync(SHOTS, { recursive: true });

let checks = 0;
function check(condition, what) {
  checks += 1;
  if (!condition) {
    throw new Error(`check failed: ${what}`);
  }
}

const shots = [];
async function screenshot(page, name, description) {
  const file = join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  shots.push({ file, description });
}

// axe-core, evaluated in the page through the DevTools protocol (not a script tag, which the
// page's CSP rightly refuses); serious and critical violations fail the run.
async function axe(page, name) {
  await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ["violations"] }),
  );
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of result.violations) {
    const nodes = v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join("; ");
    console.log(`  axe ${name}: ${v.impact} ${v.id} (${v.nodes.length}): ${v.help} [${nodes}]`);
  }
  check(bad.length === 0, `${name}: no serious or critical axe violations (${bad.map((v) => v.id).join(", ")})`);
}

// Every console error (a CSP violation is one) and page error fails the run.
function watch(page, errors) {
  page.on("console", (m) => {
    // A page that is itself a 404 (on purpose) logs its own status; anything else counts.
    if (m.type() === "error" && m.location().url !== page.url()) {
      errors.push(`${page.url()}: console: ${m.text()}`);
    }
  });
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
}

async function noHorizontalScroll(page, name) {
  const { scroll, width } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    width: window.innerWidth,
  }));
  check(scroll <= width, `${name}: fits a ${width} px wide screen (page is ${scroll} px wide)`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu"],
  });
  const errors = [];
  try {
    const desktop = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await desktop.newPage();
    watch(page, errors);

    // Home.
    let response = await page.goto(`${BASE}/`);
    check(response.status() === 200, "home answers 200");
    const csp = response.headers()["content-security-policy"] || "";
    check(csp.includes("frame-ancestors 'none'") && !csp.includes("unsafe-inline"), "home has a strict CSP");
    check((await page.locator("h1").textContent()) === "Registers", "home heading");
    check(await page.locator('a[href="/registers/ods-organization-code"]').count() === 1, "ODS listed");
    await axe(page, "home");
    await screenshot(page, "01-home", "Home: the table of registers (title, custodian, URL, latest version, versions, concepts, licence), then ValueSets and ConceptMaps");

    // ODS register, search as you type.
    await page.click('a[href="/registers/ods-organization-code"]');
    await page.waitForURL(/\/registers\/ods-organization-code$/);
    check((await page.locator("h1").textContent()) === "ODS Organisation Code", "ODS heading");
    check(await page.locator('a[href*="/diff?from=2019-10-01&to=2020-01-01"]').count() === 1, "timeline links the 2019-10 → 2020-01 diff");
    await axe(page, "register");
    await screenshot(page, "02-register-ods", "ODS register: metadata, declared properties, the timeline of seven versions with added/removed/changed counts, the first page of codes");
    const search = page.locator("#q");
    await search.focus();
    await search.pressSequentially("densham", { delay: 40 });
    const typed = Date.now();
    const hit = page.locator('#results a[href="/registers/ods-organization-code/concepts/A81001"]');
    await hit.waitFor({ timeout: 5000 });
    const took = Date.now() - typed;
    console.log(`  search-as-you-type: results ${took} ms after the last keystroke`);
    check(took <= SEARCH_WITHIN_MS, `results within ${SEARCH_WITHIN_MS} ms of the last keystroke (${took} ms)`);
    check(page.url().includes("q=densham"), "the address keeps the search");
    await screenshot(page, "03-register-search", "ODS register after typing \"densham\": one result, A81001 THE DENSHAM SURGERY");

    // A81001 and its history.
    await hit.click();
    await page.waitForURL(/\/concepts\/A81001$/);
    check((await page.locator("h1").textContent()).includes("THE DENSHAM SURGERY"), "A81001 heading");
    const rows = page.locator('section[aria-labelledby="history"] tbody tr');
    check(await rows.count() >= 2, "A81001 has a history row per release");
    check((await rows.first().textContent()).includes("added"), "first history row: added");
    // Its commissioner, now 16C (an ICB); the history shows the move from 00K.
    check(await page.locator('section[aria-labelledby="hierarchy"] a[href="/registers/ods-organization-code/concepts/16C"]').count() === 1, "A81001 links its commissioner 16C");
    check((await page.locator('section[aria-labelledby="history"]').textContent()).includes("00K → 16C"), "the history shows the commissioner's change 00K → 16C");
    check((await page.locator("pre.copy").textContent()).startsWith("curl "), "the curl command is shown");
    await axe(page, "concept");
    await screenshot(page, "04-concept-a81001", "A81001: display, status, dates, its commissioner 16C as parent, properties with Codings linked, the history table (one row per release), the $lookup URL and curl");

    // The diff of 2019-10-01 and 2020-01-01, picked with the form.
    await page.goto(`${BASE}/registers/ods-organization-code/diff`);
    await page.selectOption("#from", "2019-10-01");
    await page.selectOption("#to", "2020-01-01");
    await page.click('form.pick button[type="submit"]');
    await page.waitForURL(/from=2019-10-01&to=2020-01-01/);
    const added = (await page.locator('[data-count="added"]').textContent()).trim();
    check(added === "54", `the 2019-10-01 → 2020-01-01 diff has 54 additions (${added})`);
    check(await page.locator("table.diff tbody tr").count() > 0, "the diff lists concepts");
    await axe(page, "diff");
    await screenshot(page, "05-diff", "Diff 2019-10-01 → 2020-01-01: 54 added, counts by property, the first page of added concepts");

    // ICD-10: chapter X down to J45.9, following links.
    await page.goto(`${BASE}/`);
    await page.click('a[href="/registers/icd-10"]');
    await page.waitForURL(/\/registers\/icd-10$/);
    await page.goto(`${BASE}/registers/icd-10?q=respiratory+system`);
    await page.click('#results a[href="/registers/icd-10/concepts/X"]');
    await page.waitForURL(/\/concepts\/X$/);
    for (const code of ["J40-J47", "J45", "J45.9"]) {
      await page.click(`section[aria-labelledby="hierarchy"] a[href="/registers/icd-10/concepts/${code}"]`);
      await page.waitForURL(new RegExp(`/concepts/${code.replace(".", "\\.")}$`));
    }
    check((await page.locator("h1").textContent()) === "J45.9 Asthma, unspecified", "walked down to J45.9");
    check(await page.locator('section[aria-labelledby="hierarchy"] a[href="/registers/icd-10/concepts/J45"]').count() === 1, "J45.9 links its parent J45");
    await axe(page, "concept J45.9");
    await screenshot(page, "06-concept-j45-9", "J45.9 Asthma, unspecified: reached from chapter X through J40-J47 and J45; its parent, properties and history");

    // A ValueSet, the search across registers, an error page.
    response = await page.goto(`${BASE}/valuesets/ods-gp-practices-00k`);
    check(response.status() === 200, "ValueSet page answers 200");
    check((await page.locator("ul.rules").textContent()).includes("RE4"), "the rule is in words");
    await axe(page, "value set");
    await screenshot(page, "07-valueset-00k", "ValueSet ods-gp-practices-00k: its rule in words (RE4 is 00K) and its expansion, paged, with a filter box");
    response = await page.goto(`${BASE}/search?q=asthma`);
    check(response.status() === 200, "search answers 200");
    check(await page.locator('a[href="/registers/icd-10/concepts/J45"]').count() >= 1, "search finds J45");
    await axe(page, "search");
    await screenshot(page, "08-search-asthma", "Search across registers for \"asthma\": matches grouped by register");
    response = await page.goto(`${BASE}/registers/icd-10/concepts/NOT-A-CODE`);
    check(response.status() === 404, "an unknown code is a 404");
    check((await page.locator("h1").textContent()) === "No such code", "the 404 page says so");
    await axe(page, "no such code");
    await screenshot(page, "09-no-such-code", "No such code: a 404 page with the reason, as the FHIR API words it");
    response = await page.goto(`${BASE}/registers/ods-organization-code?date=2001-01-01`);
    check(response.status() === 404, "no release on that date is a 404");
    await screenshot(page, "10-no-release-on-date", "No release in force on 2001-01-01: a 404 page naming the first release");

    // Without JavaScript: the search form submits and the results are the same.
    const nojs = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 1280, height: 900 } });
    const plain = await nojs.newPage();
    watch(plain, errors);
    await plain.goto(`${BASE}/registers/ods-organization-code`);
    await plain.fill("#q", "densham");
    await plain.press("#q", "Enter");
    await plain.waitForURL(/q=densham/);
    check(await plain.locator('#results a[href="/registers/ods-organization-code/concepts/A81001"]').count() === 1, "without JavaScript the search still finds A81001");
    await screenshot(plain, "11-no-javascript-search", "ODS register searched for \"densham\" with JavaScript off (the form was submitted)");
    await plain.goto(`${BASE}/registers/ods-organization-code/concepts/A81001`);
    check(await plain.locator('section[aria-labelledby="history"] tbody tr').count() >= 2, "without JavaScript the history shows");
    await nojs.close();

    // A 375 px wide phone screen.
    const phone = await browser.newContext({ viewport: { width: 375, height: 812 }, isMobile: true, hasTouch: true });
    const small = await phone.newPage();
    watch(small, errors);
    for (const [path, name] of [
      ["/", "home"],
      ["/registers/ods-organization-code", "register"],
      ["/registers/ods-organization-code/concepts/A81001", "concept"],
      ["/registers/ods-organization-code/diff?from=2019-10-01&to=2020-01-01", "diff"],
    ]) {
      await small.goto(`${BASE}${path}`);
      await noHorizontalScroll(small, `${name} at 375 px`);
      await axe(small, `${name} at 375 px`);
    }
    await small.goto(`${BASE}/registers/ods-organization-code/concepts/A81001`);
    await screenshot(small, "12-phone-concept", "A81001 on a 375 px wide phone screen: one column, wide tables scroll inside their frames");
    await phone.close();

    check(errors.length === 0, `no console or page errors (CSP included):\n${errors.join("\n")}`);
  } finally {
    await browser.close();
  }
  console.log(`browser tests: ${checks} checks passed; screenshots:`);
  for (const s of shots) {
    console.log(`  ${s.file}: ${s.description}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
