// A real headless Chromium (Debian's `chromium` package) driven by playwright-core, for the
// status page. Playwright's own browser downloads are never used: the system binary is given
// explicitly, with the flags that keep it off the network (no component updates, sync, QUIC…).
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, type Browser } from 'playwright-core'
import { makeTempDir, removeTempDir } from './proc.js'

export const CHROMIUM = '/usr/bin/chromium'

export interface TestBrowser {
  browser: Browser
  /** Temp dir for the profile, downloads and screenshots; removed by close() unless keepDir. */
  dir: string
  close(opts?: { keepDir?: boolean }): Promise<void>
}

export function haveChromium(): boolean {
  return existsSync(CHROMIUM)
}

export async function launchChromium(): Promise<TestBrowser> {
  const dir = await makeTempDir()
  try {
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      // Playwright owns the process; a hung launch must not hang the test.
      timeout: 30_000,
      downloadsPath: join(dir, 'downloads'),
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-default-apps',
        '--disable-extensions',
        '--metrics-recording-only',
        '--disable-dev-shm-usage',
      ],
      env: { ...process.env, HOME: dir, XDG_CONFIG_HOME: join(dir, '.config'), XDG_CACHE_HOME: join(dir, '.cache') },
    })
    let closed = false
    return {
      browser,
      dir,
      async close(opts = {}) {
        if (closed) return
        closed = true
        await browser.close().catch(() => {})
        if (!opts.keepDir) await removeTempDir(dir)
      },
    }
  } catch (e) {
    await removeTempDir(dir)
    throw e
  }
}
