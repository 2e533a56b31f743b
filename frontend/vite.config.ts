// Vite config (bundled by Vite itself; not part of `tsc -p tsconfig.json`, which covers src/ only).
//
// `npm run dev` serves the SPA on :5173 and proxies /api to the agent's HTTP listener, so the
// same-origin `POST /api/token` works in development exactly as it does when the agent binary
// serves frontend/dist. Override the target with AGENT_HTTP=http://host:port npm run dev.
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

const agent = process.env.AGENT_HTTP ?? 'http://127.0.0.1:3000';

export default defineConfig({
  plugins: [react()],
  // Relative asset URLs: dist/ works whether the agent mounts it at / or under a prefix.
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: true,
    target: 'es2022',
    // livekit-client alone is ~500 kB minified; one chunk is fine for a local app.
    chunkSizeWarningLimit: 1500,
  },
  server: {
    host: '127.0.0.1',
    port: 5173,
    proxy: { '/api': { target: agent, changeOrigin: true } },
  },
  preview: {
    host: '127.0.0.1',
    port: 4173,
    proxy: { '/api': { target: agent, changeOrigin: true } },
  },
});
