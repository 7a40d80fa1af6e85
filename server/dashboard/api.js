// The API with the bearer token: the token lives in sessionStorage (this tab, until it closes)
// and goes in the Authorization header only, never in a URL (the server refuses those).

const KEY = "gd-token";

export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
  }
}

export const token = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

function headers(extra = {}) {
  const value = token.get();
  return value ? { ...extra, Authorization: `Bearer ${value}` } : extra;
}

// GET or POST `path` (with `query` as URL parameters, `body` as JSON); the parsed JSON answer.
export async function api(path, { query, body, method } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const init = { method: method || (body === undefined ? "GET" : "POST"), headers: headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const answer = await response.json().catch(() => null);
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) throw new ApiError(response.status, answer);
  return answer;
}

// GET `path` as a Blob (an image), with the token in the header like every call; errors as
// `api` raises them.
export async function blob(path) {
  const response = await fetch(new URL(path, location.origin), { headers: headers() });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  return response.blob();
}

// Server-Sent Events read with fetch(), which, unlike EventSource, sends the Authorization
// header. Calls `onMessage({event, data, id})` per message, `onState("live" | "retrying" |
// "off")`; reconnects after `retry` ms (the server may change it) with the last event id, as
// EventSource would. Returns a function that stops it.
export function subscribe(path, { onMessage, onState, onUnauthorized }) {
  const stop = new AbortController();
  let lastId = "";
  let retry = 2000;

  async function once() {
    const extra = { Accept: "text/event-stream" };
    if (lastId) extra["Last-Event-ID"] = lastId;
    const response = await fetch(path, { headers: headers(extra), signal: stop.signal });
    if (response.status === 401) throw new Unauthorized();
    if (!response.ok || !response.body) throw new ApiError(response.status, null);
    onState("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let message = { event: "message", data: [], id: "" };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop(); // an unfinished line waits for the next chunk
      for (const line of lines) {
        if (line === "") {
          if (message.id) lastId = message.id;
          if (message.data.length) {
            onMessage({ event: message.event, data: message.data.join("\n"), id: message.id });
          }
          message = { event: "message", data: [], id: "" };
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the server's keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") message.data.push(text);
        else if (field === "event") message.event = text;
        else if (field === "id") message.id = text;
        else if (field === "retry" && /^\d+$/.test(text)) retry = Number(text);
      }
    }
  }

  (async () => {
    while (!stop.signal.aborted) {
      try {
        await once();
      } catch (e) {
        if (stop.signal.aborted) break;
        if (e instanceof Unauthorized) {
          onState("off");
          onUnauthorized();
          return;
        }
      }
      if (stop.signal.aborted) break;
      onState("retrying");
      await new Promise((resolve) => setTimeout(resolve, retry));
    }
    onState("off");
  })();
  return () => stop.abort();
}
