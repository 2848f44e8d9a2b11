// The try-it page as static files, for the dev launcher to hand to auth-service as
// plain GET routes. Nothing in production imports this: the page exists only in dev.
// page/app.js is page/app.ts bundled for the browser by `deno task gen`, and
// `deno task check` fails when it is stale.

export interface WebAsset {
  contentType: string;
  body: Uint8Array<ArrayBuffer>;
}

const FILES: Record<string, [file: string, contentType: string]> = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/app.js": ["app.js", "text/javascript; charset=utf-8"],
  "/style.css": ["style.css", "text/css; charset=utf-8"],
};

// The page holds a session token, so it runs nothing but its own script and style, talks
// only to its own origin, and cannot be framed by another site.
const PAGE_HEADERS = {
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; " +
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "referrer-policy": "no-referrer",
  "x-content-type-options": "nosniff",
};

/** Path → file, read once: the launcher serves these bytes for the life of the process. */
export function webAssets(): Map<string, WebAsset> {
  return new Map(
    Object.entries(FILES).map(([path, [file, contentType]]) => [
      path,
      { contentType, body: Deno.readFileSync(new URL(`page/${file}`, import.meta.url)) },
    ]),
  );
}

/** The same files as GET handlers by exact path, with the headers the page relies on. */
export function webRoutes(): Record<string, () => Response> {
  const routes: Record<string, () => Response> = {};
  for (const [path, asset] of webAssets()) {
    routes[path] = () =>
      new Response(asset.body, { headers: { "content-type": asset.contentType, ...PAGE_HEADERS } });
  }
  return routes;
}
