// The REST API as the page uses it: every call carries the token from
// session storage as a bearer token; errors become ApiError with the
// problem's detail.

const TOKEN_KEY = "plexus-token";

/** An API answer that was not a success. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** The token this tab logged in with, or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Keeps the token for this tab only. */
export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

/** Forgets the token. */
export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** One API call; resolves to the parsed JSON body (null when empty). */
export async function call(method, path, body) {
  const headers = { Authorization: "Bearer " + token() };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const detail = json && (json.detail || json.title);
    throw new ApiError(response.status, detail || response.statusText);
  }
  return json;
}

/** Every item of a paged listing, following `next_after`. */
export async function listAll(path) {
  const items = [];
  let after = null;
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await call("GET", path + sep + "limit=1000" + (after ? "&after=" + after : ""));
    items.push(...page.items);
    if (!page.next_after) return items;
    after = page.next_after;
  }
}

/** Like listAll, but an empty list when the token may not list `path`. */
export async function listIfAllowed(path) {
  try {
    return await listAll(path);
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return null;
    throw error;
  }
}
