import { existsSync, readFileSync } from "node:fs";
import type { ServerResponse } from "node:http";
import { isAbsolute, resolve } from "node:path";
import react from "@vitejs/plugin-react";
import { defineConfig, type Connect, type Plugin, type ProxyOptions } from "vite";

// The pgcast server this example talks to, through the proxy below.
const SERVER = (process.env.PGCAST_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");
const REPO_ROOT = resolve(import.meta.dirname, "../..");

// The Pusher key is public (every browser gets it), but it is pgcast's: the one set with
// PGCAST_PUSHER_KEY, or the one pgcast generated into its data directory. It is looked up
// on every request, so the page works whichever of pgcast and this server started first.
function pusherKey(): string | null {
  const given = process.env.VITE_PGCAST_KEY || process.env.PGCAST_PUSHER_KEY;
  if (given) return given;
  // `make run` starts pgcast at the repository's root, so a relative data dir is relative to it.
  const dataDir = process.env.PGCAST_DATA_DIR || ".pgcast";
  const file = resolve(isAbsolute(dataDir) ? dataDir : resolve(REPO_ROOT, dataDir), "pusher.json");
  if (!existsSync(file)) return null;
  try {
    const key: unknown = JSON.parse(readFileSync(file, "utf8")).key;
    return typeof key === "string" ? key : null;
  } catch {
    return null;
  }
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  response.statusCode = status;
  response.setHeader("Content-Type", "application/json");
  response.setHeader("Cache-Control", "no-store");
  response.end(JSON.stringify(body));
}

// The page asks for its Echo key at run time, so one build serves any pgcast.
const echoConfig: Connect.NextHandleFunction = (request, response, next) => {
  if (request.url?.split("?")[0] !== "/echo-config.json") return next();
  const key = pusherKey();
  if (key === null) {
    sendJson(response, 503, {
      error: {
        code: "no_pusher_key",
        message:
          "pgcast's Pusher key is unknown: set VITE_PGCAST_KEY (pgcast's PGCAST_PUSHER_KEY), " +
          "or PGCAST_DATA_DIR to the data directory holding pgcast's pusher.json",
      },
    });
    return;
  }
  sendJson(response, 200, { key });
};

function echoConfigPlugin(): Plugin {
  return {
    name: "pgcast-echo-config",
    configureServer: (server) => void server.middlewares.use(echoConfig),
    configurePreviewServer: (server) => void server.middlewares.use(echoConfig),
  };
}

// pgcast refuses writes and WebSocket upgrades whose Origin is not its public URL (CSRF
// and cross-site WebSocket protection), so the proxy presents pgcast's own origin. The
// browser still sends pgcast's session cookie: to the browser, everything is this origin.
function toServer(ws = false): ProxyOptions {
  return {
    target: SERVER,
    ws,
    configure(proxy) {
      proxy.on("proxyReq", (request) => {
        if (request.getHeader("origin")) request.setHeader("origin", SERVER);
      });
      proxy.on("proxyReqWs", (request) => {
        if (request.getHeader("origin")) request.setHeader("origin", SERVER);
      });
    },
  };
}

const proxy = {
  "/app": toServer(true),
  "/broadcasting": toServer(),
  "/api": toServer(),
  "/auth": toServer(),
};

export default defineConfig({
  plugins: [react(), echoConfigPlugin()],
  build: { outDir: "dist", emptyOutDir: true },
  server: { host: "127.0.0.1", port: 5174, proxy },
  preview: { host: "127.0.0.1", port: 5175, proxy },
});
