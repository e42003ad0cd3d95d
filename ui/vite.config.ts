import react from "@vitejs/plugin-react";
import type { ProxyOptions } from "vite";
import { defineConfig } from "vitest/config";

const SERVER = "http://127.0.0.1:8080";

// The server refuses requests whose Origin is not its public URL (CSRF and
// cross-site WebSocket protection), so the dev proxy presents the server's own
// origin instead of the Vite dev server's.
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

export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
  },
  server: {
    proxy: {
      "/api": toServer(),
      "/auth": toServer(),
      "/ws": toServer(true),
      "/healthz": toServer(),
    },
  },
  test: {
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
    css: true,
    restoreMocks: true,
  },
});
